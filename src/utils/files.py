"""File-system primitives shared by everything that writes what a user keeps: atomic writes, an inter-process
lock, and swapping a set of folders in at once.

Why: a run or a conversion stopped half way (Ctrl-C, a full disk, a killed job) must never leave a truncated
file that a later run takes for a finished one, and two processes preparing the same data (DDP ranks, parallel
test workers) must not write it twice at the same time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | Path, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: the block writes `<path>.<pid>.tmp` beside it, which then replaces
    `path` (atomic on one file system; `fsync`: on disk first); if the block or the rename fails, the temporary
    file is removed and `path` is left as it was. The parent folders are created. The pid tells a cleanup which
    temporary files a live process still owns (`src.engine.callbacks.checkpoint_io.remove_stale_tmp`); the `.tmp`
    suffix keeps a leftover out of every `*.png` / `*.json` glob."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through `atomic_file`."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of `text` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def swap_in(new: Path, root: Path, names: Iterable[str], marker: str, trash: Path) -> None:
    """Replace the entries `names` of `root` by those of `new`, moving the old ones into `trash` (a new folder on
    the same file system). `marker` (a file that says the set is complete) is removed from `root` first and moved
    in last, so a reader that checks it never sees a half-replaced set."""
    (root / marker).unlink(missing_ok=True)
    trash.mkdir()
    for name in names:
        if (root / name).exists() or (root / name).is_symlink():
            os.replace(root / name, trash / name)
        os.replace(new / name, root / name)
    os.replace(new / marker, root / marker)
