"""One error path for the entry points and scripts: a user's mistake is one short block, a bug keeps its traceback.

Bad input (a `UserError` below, a missing file, a `ValueError`/`KeyError` raised by the project's own code, a
config interpolation error, a full disk; unwrapped first when PyTorch wrapped it in a DataLoader worker's
message) is printed once as `Error (<kind>): <message>`, `What to do: <hint>`, `Traceback: <run log>`, and the
process exits with code 1. The traceback always goes to the run folder's log, to the console only with
`HYDRA_FULL_ERROR=1` (or `SEGKIT_DEBUG=1`). Any other error keeps its traceback, printed once.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException, InstantiationException

#: the package and scripts folders: a ValueError raised from a frame in here carries a message for a person
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_PROJECT_DIRS = (str(PROJECT_ROOT / "src") + os.sep, str(PROJECT_ROOT / "scripts") + os.sep)

#: errors of the OS that mean "no room": disk full, file size limit (RLIMIT_FSIZE, a file system's maximum), quota
SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}

MAX_MESSAGE_LINES = 20
WIDTH = 110


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint, disk): shown as a short block without traceback.

    `hint` says what to do. Subclasses are also `ValueError`s/`OSError`s so that existing `except ValueError`
    code and tests keep working. One positional argument, so the type survives a DataLoader worker (PyTorch
    rebuilds worker exceptions as `type(message)`)."""

    kind = "input"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(UserError, ValueError):
    kind = "config"


class DataError(UserError, ValueError):
    kind = "data"


class CheckpointError(UserError, ValueError):
    kind = "checkpoint"


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (still a `FileNotFoundError` for callers)."""

    kind = "file"


class DiskFullError(UserError, OSError):
    kind = "disk"

    def __str__(self) -> str:  # OSError's own __str__ would print the args tuple
        return str(self.args[0]) if self.args else ""


@dataclass
class Described:
    """What the block shows: kind, message, hint."""

    kind: str
    message: str
    hint: str | None = None


# ----------------------------------------------------------------------------------------------- recognition
_WORKER_HEAD = re.compile(
    r"^Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback[^\n]*\n", re.S
)
_FRAME = re.compile(r'^  File "([^"]+)", line \d+')


def unwrap_worker_message(message: str) -> tuple[str, str, str | None] | None:
    """(exception type name, original message, file of the raising frame) from PyTorch's wrapped worker
    message; None when `message` is not one."""
    head = _WORKER_HEAD.match(message)
    if head is None:
        return None
    lines = message[head.end() :].splitlines()
    last_frame, start = None, None
    for i, line in enumerate(lines):
        frame = _FRAME.match(line)
        if frame:
            last_frame, start = frame.group(1), None
        elif start is None and last_frame is not None and line and not line.startswith(" "):
            start = i  # the first unindented line after the last frame: "Type: message"
    if start is None:
        return None
    first = lines[start]
    type_name, _, text = first.partition(": ")
    body = "\n".join([text, *lines[start + 1 :]]).strip()
    return type_name.rsplit(".", 1)[-1], body, last_frame


def _raised_in_project(exc: BaseException) -> bool:
    frames = list(traceback.walk_tb(exc.__traceback__))
    return bool(frames) and _in_project(frames[-1][0].f_code.co_filename)


def _in_project(filename: str | None) -> bool:
    return bool(filename) and str(filename).startswith(_PROJECT_DIRS) and ".venv" not in str(filename)


def space_error(exc: BaseException) -> OSError | None:
    """The OSError (ENOSPC, EFBIG, EDQUOT) behind `exc`, following `__cause__`/`__context__`: torch.save reports
    a failed write as `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`, the OSError is its
    context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(path: str | Path) -> str:
    """'12.3 MB free on <mount folder>' for the existing folder nearest to `path`."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{human_bytes(usage.free)} free of {human_bytes(usage.total)} at '{folder}'"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


_DEFAULT_HINTS = {
    "config": "Fix the value on the command line (key=value) or in its YAML file; "
    "`python -m src.train --cfg job` prints the composed config.",
    "file": "Check the path; a relative path is taken from the folder the command was started in.",
    "data": "Fix or remove the file named above; `python scripts/check_dataset.py dataset=<name>` lists every "
    "bad file of a dataset.",
    "disk": "Free space (or raise the file size limit, `ulimit -f`), then resume with resume=true: "
    "the previous checkpoints were kept.",
}


def describe(exc: BaseException) -> Described | None:
    """The block for a user error, or None for an error that needs its traceback (a bug, an unforeseen case)."""
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, UserError):
        return Described(exc.kind, str(exc), exc.hint or _DEFAULT_HINTS.get(exc.kind))
    # a KeyError's str() is the repr of its message
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    worker = unwrap_worker_message(text)
    if worker is not None:
        type_name, message, origin = worker
        user_kinds = {
            c.__name__: c.kind for c in (UserError, ConfigError, DataError, CheckpointError, DiskFullError)
        }
        if type_name in user_kinds:
            kind = user_kinds[type_name]
            return Described(kind, message, _DEFAULT_HINTS.get(kind))
        if type_name in ("FileNotFoundError", "ValueError", "KeyError") and _in_project(origin):
            kind = "file" if type_name == "FileNotFoundError" else "data"
            return Described(kind, f"{message} (in a DataLoader worker)", _DEFAULT_HINTS[kind])
        return None
    space = space_error(exc)
    if space is not None:
        where = f" '{space.filename}'" if space.filename else ""
        return Described("disk", f"{space.strerror or space}{where}", _DEFAULT_HINTS["disk"])
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return Described("file", str(exc), None if _raised_in_project(exc) else _DEFAULT_HINTS["file"])
    if isinstance(exc, OmegaConfBaseException):
        return Described("config", str(exc).strip(), _DEFAULT_HINTS["config"])
    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        return describe(exc.__cause__)  # Hydra's wrapper around an error raised while building a `_target_`
    if isinstance(exc, (ValueError, KeyError)) and _raised_in_project(exc):
        return Described("input", text, None)
    return None


# ----------------------------------------------------------------------------------------------- reporting
def full_error_requested() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HYDRA_FULL_ERROR", "SEGKIT_DEBUG"))


def format_block(info: Described, log_file: str | Path | None = None) -> str:
    """The short block: at most MAX_MESSAGE_LINES lines of message, then what to do and where the traceback is."""
    lines: list[str] = []
    for para in info.message.strip().splitlines() or [""]:
        lines.extend(textwrap.wrap(para, WIDTH - 2, break_on_hyphens=False, break_long_words=False) or [""])
    if len(lines) > MAX_MESSAGE_LINES:
        lines = [
            *lines[: MAX_MESSAGE_LINES - 1],
            f"... ({len(lines) - MAX_MESSAGE_LINES + 1} more lines in the log)",
        ]
    out = [f"Error ({info.kind}): {lines[0]}", *(f"  {line}" for line in lines[1:])]
    if info.hint:
        out += textwrap.wrap(
            f"What to do: {info.hint}",
            WIDTH,
            initial_indent="  ",
            subsequent_indent="    ",
            break_long_words=False,
        )
    if log_file:
        out.append(f"  Traceback: in {log_file} (HYDRA_FULL_ERROR=1 prints it here)")
    else:
        out.append("  Traceback: rerun with HYDRA_FULL_ERROR=1 to print it")
    return "\n".join(out)


def log_traceback_to_files(exc: BaseException, fallback_dir: str | Path | None = None) -> str | None:
    """Write the full traceback to the log files of the root logger's file handlers (Hydra's `<task>.log` in the
    run folder) and not to the console; without such a handler, to `<fallback_dir>/error.log`. Returns the file."""
    record = logging.LogRecord(
        "segkit.errors", logging.ERROR, __file__, 0, "Failed with this traceback:", None,
        (type(exc), exc, exc.__traceback__),
    )  # fmt: skip
    written = None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.handle(record)
                handler.flush()
                written = written or handler.baseFilename
            except Exception:  # the log must never hide the error itself
                pass
    if written is None and fallback_dir is not None:
        try:
            path = Path(fallback_dir) / "error.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                traceback.print_exception(type(exc), exc, exc.__traceback__, file=f)
            written = str(path)
        except OSError:
            pass
    return written


def _hydra_value(key: str) -> Any:
    """A value of the running Hydra job's config (`mode`, `runtime.output_dir`), None outside one or where it
    cannot be read: the error path must not fail."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        return OmegaConf.select(HydraConfig.get(), key) if HydraConfig.initialized() else None
    except Exception:
        return None


def print_block(exc: BaseException, log_file: str | None = None) -> bool:
    """Print the block of a user error (True) or nothing (False: the caller lets the error go on, with its
    traceback, as it does for any error with HYDRA_FULL_ERROR=1)."""
    info = describe(exc)
    if info is None or full_error_requested():
        return False
    print(format_block(info, log_file), file=sys.stderr, flush=True)
    return True


def in_multirun() -> bool:
    """Whether this process runs one job of a Hydra multirun (`-m`)."""
    from hydra.types import RunMode

    return _hydra_value("mode") == RunMode.MULTIRUN


class ReportedError(CompactHydraException):
    """A user error already shown as a block: Hydra prints a compact exception's message only."""


def report_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a `@hydra.main` function (put it under `@hydra.main`): a user error becomes the block and exit
    code 1 (in a multirun: the block, then the sweep goes on and ends with exit code 1, as Hydra does for any
    failed job); any other error is logged to the run log and raised on to Hydra, which prints its traceback
    once."""

    @functools.wraps(task)
    def wrap(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not print_block(exc, log_traceback_to_files(exc, _hydra_value("runtime.output_dir"))):
                raise
            if in_multirun():
                # Hydra records the failed job and goes on with the sweep; at its end it prints this one line
                raise ReportedError(f"a job failed ({type(exc).__name__}, shown above)") from None
            raise SystemExit(1) from None

    return wrap


def run_script(main: Callable[[], Any]) -> int:
    """`raise SystemExit(run_script(main))` for the argparse scripts: the same block and exit code 1 for a
    user error (traceback only with HYDRA_FULL_ERROR=1 / SEGKIT_DEBUG=1: scripts have no run folder)."""
    try:
        code = main()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not print_block(exc):
            raise
        return 1
    return code if isinstance(code, int) else 0
