"""One read-only view over a dataset release, whether it is a folder, a .zip or a .tar(.gz).

Converters match files by their path inside the release (a regex on a posix path), so they never extract
everything to disk first and never care which form they got. A folder's members are named with the
folder's own name first (`DRIVE/training/images/21_training.tif` for `.../DRIVE`), so that a pattern
written for the archive also matches the extracted folder.
"""

from __future__ import annotations

import gzip
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from src.utils.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


#: what a truncated or corrupt archive raises while it is read (the tar/zip, gzip, xz and zlib layers)
CORRUPT_ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


@contextmanager
def reading_archive(path: Path) -> Iterator[None]:
    """Turn the archive libraries' errors (`tarfile.ReadError: unexpected end of data`, ...) into one message
    naming the file and what to do."""
    try:
        yield
    except CORRUPT_ARCHIVE_ERRORS as err:
        raise DataError(
            f"archive '{path}' is truncated or corrupt ({type(err).__name__}: {err})",
            hint="download it again (an interrupted download leaves a short file): `python "
            "scripts/download_dataset.py <name>` verifies the published checksum; or compare `sha256sum "
            f"{path}` with the one its authors publish",
        ) from err


class Source:
    """Base class: `members()` lists the files, `read()` returns one file's bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def members(self) -> list[str]:
        raise NotImplementedError

    def read(self, member: str) -> bytes:
        raise NotImplementedError

    def where(self, member: str) -> str:
        """How a message names the member: the file path, or `archive:member`."""
        return f"{self.path}:{member}"

    def iter_files(self, keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
        """(member, bytes) of every member that `keep` accepts, in one pass (cheapest for a .tar.gz)."""
        for member in self.members():
            if keep(member):
                yield member, self.read(member)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"


class FolderSource(Source):
    def members(self) -> list[str]:
        root = self.path.parent
        return sorted(p.relative_to(root).as_posix() for p in self.path.rglob("*") if p.is_file())

    def read(self, member: str) -> bytes:
        return (self.path.parent / member).read_bytes()

    def where(self, member: str) -> str:
        return str(self.path.parent / member)


class ZipSource(Source):
    def members(self) -> list[str]:
        with reading_archive(self.path), zipfile.ZipFile(self.path) as zf:
            return sorted(i.filename for i in zf.infolist() if not i.is_dir())

    def read(self, member: str) -> bytes:
        with reading_archive(self.path), zipfile.ZipFile(self.path) as zf:
            return zf.read(member)


class TarSource(Source):
    def members(self) -> list[str]:
        with reading_archive(self.path), tarfile.open(self.path, "r:*") as tf:
            return sorted(m.name for m in tf.getmembers() if m.isfile())

    def read(self, member: str) -> bytes:
        with reading_archive(self.path), tarfile.open(self.path, "r:*") as tf:
            f = tf.extractfile(member)
            if f is None:
                raise FileNotFoundError(f"'{member}' is not a regular file in '{self.path}'")
            return f.read()

    def iter_files(self, keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
        # Sequential: a compressed tar cannot seek backwards without decompressing again from the start.
        with reading_archive(self.path), tarfile.open(self.path, "r|*") as tf:
            for m in tf:
                if m.isfile() and keep(m.name):
                    f = tf.extractfile(m)
                    if f is not None:
                        yield m.name, f.read()


def open_source(path: str | Path, what: str = "dataset release") -> Source:
    """A Source for a folder, .zip or .tar(.gz/.bz2/.xz); a clear error when the path is missing or unknown."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} '{path}' does not exist (expected an archive or its extracted folder)"
        )
    if path.is_dir():
        return FolderSource(path)
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    if tarfile.is_tarfile(path):
        return TarSource(path)
    raise ValueError(
        f"{what} '{path}' is neither a folder nor a readable archive ({', '.join(ARCHIVE_SUFFIXES)})"
    )
