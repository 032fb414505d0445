"""The model zoo: MMSegmentation's published checkpoints by name (`conf/zoo.yaml`), downloaded once and verified.

    entry = zoo_entry("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024")   # url, sha256 prefix, model, dataset
    path = fetch(entry)                                                # $SEGKIT_CACHE/zoo/<file name>

A file is downloaded once into `$SEGKIT_CACHE/zoo/` (default `~/.cache/segkit/zoo/`) by `src.utils.download`,
which only gives it its name once its SHA-256 prefix matches; a file already there is verified once (remembered in
`<file>.sha256`) and used without network. Without network the error names the URL and where to put the file.

`python -m src.weights.zoo` lists the table (and what is cached); `python -m src.weights.zoo fetch <name>`
downloads one entry.
"""

from __future__ import annotations

import difflib
import os
import sys
import urllib.error
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.utils.download import ChecksumError, download_file, file_digest
from src.utils.errors import ConfigError, UserError

ZOO_FILE = Path(__file__).resolve().parents[2] / "conf" / "zoo.yaml"
ZOO_PREFIX = "zoo:"  # `load_from=zoo:<name>`: a zoo entry where a weights file is expected
DEFAULT_CACHE = "~/.cache/segkit"
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation (connect, each read): a closed network fails in seconds
REQUIRED = ("url", "sha256", "model", "dataset")


class ZooError(ConfigError):
    """A zoo name that is not in the table, or a table entry that is malformed."""


class ZooDownloadError(UserError, RuntimeError):
    """A zoo file that could not be downloaded, or whose checksum does not match (shown as one short block by
    the entry points, `src/utils/errors.py`)."""

    kind = "download"


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint: where it is, its SHA-256 prefix, and the configs that build its model here."""

    name: str
    url: str
    sha256: str
    model: str
    dataset: str
    mmseg_config: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    schedule: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name

    def train_overrides(self) -> list[str]:
        """The command-line overrides that compose this entry's MMSegmentation recipe for `src.train`
        (`recipe=<name>`): its model, dataset and schedule, its own overrides, and the config it reproduces."""
        groups = [f"model={self.model}", f"dataset={self.dataset}"]
        groups += [f"schedule={self.schedule}"] if self.schedule else []
        config = [f"mmseg_config={self.mmseg_config}"] if self.mmseg_config else []
        return [*groups, *self.overrides, *config]

    def eval_overrides(self) -> list[str]:
        """The overrides `src.eval` / `src.infer` use with `weights=<name>`: the model and dataset, and the
        entry's own overrides of the model (its test mode, as its MMSegmentation config's `test_cfg`); the
        dataset ones (batch, crop) are for training."""
        own = [o for o in self.overrides if o.lstrip("+~").startswith("model.")]
        return [f"model={self.model}", f"dataset={self.dataset}", *own]


# ----------------------------------------------------------------------------------------------- the table
def load_zoo(path: str | Path | None = None) -> dict[str, ZooEntry]:
    """The zoo table by name: `path`, else `$SEGKIT_ZOO` (a table of your own), else `conf/zoo.yaml`; ZooError
    names the entry and key that are wrong."""
    path = zoo_file(path)
    table = yaml.safe_load(path.read_text()) or {}
    if not isinstance(table, Mapping):
        raise ZooError(f"{path}: expected a mapping of zoo names to entries")
    zoo = {}
    for name, spec in table.items():
        missing = [k for k in REQUIRED if not (isinstance(spec, Mapping) and spec.get(k))]
        if missing:
            raise ZooError(f"{path}: entry '{name}' lacks {missing} (each entry needs {list(REQUIRED)})")
        sha = str(spec["sha256"]).lower()
        if len(sha) < 8 or any(c not in "0123456789abcdef" for c in sha):
            raise ZooError(f"{path}: entry '{name}': sha256='{sha}' is not a hex prefix of 8 or more digits")
        known = {f for f in ZooEntry.__dataclass_fields__ if f != "name"}
        extra = sorted(set(spec) - known)
        if extra:
            raise ZooError(f"{path}: entry '{name}': unknown keys {extra} (known: {sorted(known)})")
        overrides = spec.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ZooError(f"{path}: entry '{name}': overrides must be a list of key=value strings")
        zoo[str(name)] = ZooEntry(
            name=str(name),
            **{
                **spec,
                "sha256": sha,
                "metrics": dict(spec.get("metrics") or {}),
                "overrides": tuple(overrides),
            },
        )
    return zoo


def zoo_file(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("SEGKIT_ZOO") or ZOO_FILE)


def zoo_entry(name: str, path: str | Path | None = None) -> ZooEntry:
    """The entry called `name` (a `zoo:` prefix is accepted); ZooError with the closest names otherwise."""
    name = name[len(ZOO_PREFIX) :] if name.startswith(ZOO_PREFIX) else name
    zoo = load_zoo(path)
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ZooError(
            f"weights='{name}' is not in the model zoo ({zoo_file(path)}){hint}",
            hint="`python -m src.weights.zoo` lists the names (MMSegmentation's model names)",
        )
    return zoo[name]


# ----------------------------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """`$SEGKIT_CACHE`, or `~/.cache/segkit`: where downloaded weights live (zoo files under `zoo/`)."""
    return Path(os.environ.get("SEGKIT_CACHE") or DEFAULT_CACHE).expanduser()


def cached_file(entry: ZooEntry) -> Path:
    """Where the entry's file is (or will be) kept: `<cache>/zoo/<the URL's file name>`."""
    return cache_dir() / "zoo" / entry.filename


def _verified(path: Path, prefix: str) -> bool:
    """Whether the file at `path` has a SHA-256 starting with `prefix`. Hashing a 200 MB file takes a second or
    two, so a match is remembered in `<file>.sha256` (valid while the file's size and mtime are unchanged)."""
    stamp = path.with_name(path.name + ".sha256")
    key = f"{path.stat().st_size} {path.stat().st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().split("\n")[0] == key:
        return stamp.read_text().split("\n")[1].startswith(prefix)
    digest = file_digest(path)
    if digest.startswith(prefix):
        stamp.write_text(f"{key}\n{digest}\n")
        return True
    return False


# -------------------------------------------------------------------------------------------- downloading
def fetch(
    entry: ZooEntry | str,
    progress: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    zoo_path: str | Path | None = None,
) -> Path:
    """The verified local file of a zoo entry (or name), downloading it once into the cache.

    A file already in the cache whose SHA-256 does not start with the entry's prefix is removed (it is
    corrupt or another file) and downloaded again; a download that does not match is refused and left nowhere.
    Raises ZooDownloadError, with the URL and the path to put the file at by hand, when it cannot be fetched.
    """
    entry = zoo_entry(entry, zoo_path) if isinstance(entry, str) else entry
    target = cached_file(entry)
    if target.is_file():
        if _verified(target, entry.sha256):
            return target
        print(
            f"{target}: its SHA-256 does not start with {entry.sha256} (a corrupt or different file): "
            "removed, downloading it again",
            file=sys.stderr,
        )
        target.unlink()
    try:
        download_file(entry.url, target, entry.sha256, "sha256", timeout=timeout, progress=progress)
    except ChecksumError as err:
        raise ZooDownloadError(
            f"Refused the download of zoo weights '{entry.name}': {err}. The server sent another file than the one "
            f"published (retry later, or check the URL in {zoo_file()})."
        ) from err
    except (urllib.error.URLError, OSError, ValueError) as err:  # no route, DNS, refused, timeout, HTTP error
        raise ZooDownloadError(_no_download_message(entry, target, err)) from err
    _verified(target, entry.sha256)  # remember the checksum just checked
    return target


def _no_download_message(entry: ZooEntry, target: Path, err: BaseException) -> str:
    """Plain lines (the entry points wrap and indent them, `src/utils/errors.py`); URL and path on lines of their
    own so that they can be copied."""
    reason = getattr(err, "reason", None) or err
    return (
        f"Cannot download the zoo weights '{entry.name}' ({reason}) from\n"
        f"{entry.url}\n"
        f"Download the file elsewhere (a browser, or curl -LO <url>) and put it at\n"
        f"{target}\n"
        f"then run the same command again: the file is used from there, without network. (The folder is "
        f"$SEGKIT_CACHE/zoo, default {DEFAULT_CACHE}/zoo; the file's SHA-256 must start with {entry.sha256}.)"
    )


# ------------------------------------------------------------------------------------- weights references
def resolve_weights(value: str | Path) -> tuple[Path, ZooEntry | None]:
    """A weights reference as a local file: `zoo:<name>` is fetched (its entry returned too); a path is a path."""
    if isinstance(value, str) and value.startswith(ZOO_PREFIX):
        entry = zoo_entry(str(value))
        return fetch(entry), entry
    return Path(value), None


def zoo_command_line(argv: Sequence[str], key: str = "weights") -> list[str]:
    """A command line with a zoo entry's overrides put in front of the user's own, so that Hydra composes the
    entry's config groups and the user's overrides (`model.test_cfg.mode=whole`, `dataset.data_root=...`) win:

    - `weights=<name>` (`src.eval`, `src.infer`): the entry's model and dataset, and its test mode;
    - `recipe=<name>` (`src.train`, `key="recipe"`): its whole MMSegmentation recipe (`ZooEntry.train_overrides`).

    A group the user selects (`model=...`) keeps the user's choice; overrides already on the line are not
    repeated (a DDP launcher re-runs the expanded line). An unknown name is left for the command to report."""
    names = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"{key}=")]
    if not names or not names[-1]:
        return list(argv)
    try:
        entry = zoo_entry(names[-1])
    except ZooError:
        return list(argv)
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv[1:] if "=" in a}
    groups = ("model", "dataset", "schedule")
    expansion = entry.train_overrides() if key == "recipe" else entry.eval_overrides()
    added = [
        o
        for o in expansion
        if o not in argv[1:] and not (o.split("=", 1)[0] in groups and o.split("=", 1)[0] in given)
    ]
    return [argv[0], *added, *argv[1:]]


def apply_zoo_weights(cfg: Any) -> Any:
    """`weights=<zoo name>` of `src.eval` / `src.infer`: sets `ckpt_path` to the entry's verified cached file
    (downloaded once). The model and dataset are the entry's, selected on the command line by
    `zoo_command_line` (from Python: compose with `ZooEntry.eval_overrides()`, or use `Segmenter.from_zoo`).
    Returns `cfg` (changed in place); without `weights`, unchanged."""
    from omegaconf import OmegaConf, open_dict

    name = cfg.get("weights")
    if not name:
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise ConfigError(
                "no weights to use: give ckpt_path=<checkpoint file> or weights=<zoo name> "
                "(python -m src.weights.zoo lists the zoo)"
            )
        return cfg
    if not OmegaConf.is_missing(cfg, "ckpt_path") and cfg.get("ckpt_path"):
        raise ConfigError(
            f"weights={name} and ckpt_path={cfg.ckpt_path}: give one (weights names a zoo checkpoint, ckpt_path "
            "a file)"
        )
    entry = zoo_entry(str(name))
    absent = [
        f"{k}={v}" for k, v in (("model", entry.model), ("dataset", entry.dataset)) if cfg.get(k) is None
    ]
    if absent:
        raise ConfigError(
            f"weights={name} needs {' '.join(absent)} in the composed config (the command line adds them; "
            "from Python, compose with them or use Segmenter.from_zoo)"
        )
    path = fetch(entry)
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
    return cfg


# -------------------------------------------------------------------------------------------------- CLI
def _cli(argv: list[str]) -> int:
    """`python -m src.weights.zoo [list]` prints the table; `fetch <name>...` downloads; `path <name>` prints
    where the file goes."""
    command, names = (argv[0], argv[1:]) if argv else ("list", [])
    if command == "list":
        zoo = load_zoo()
        print(f"{len(zoo)} checkpoints in {zoo_file()}; cache {cache_dir() / 'zoo'} (* = downloaded)")
        for e in zoo.values():
            figures = ", ".join(f"{k} {v}" for k, v in e.metrics.items())
            flag = "*" if cached_file(e).is_file() else " "
            print(f"{flag} {e.name:70s} model={e.model} dataset={e.dataset} ({figures})")
        return 0
    if command in ("fetch", "path") and names:
        for name in names:
            entry = zoo_entry(name)
            print(fetch(entry) if command == "fetch" else cached_file(entry))
        return 0
    print(__doc__.split("\n\n")[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    from src.utils.errors import run_script

    raise SystemExit(run_script(lambda: _cli(sys.argv[1:])))  # a user error: one short block, exit code 1
