"""One downloader for every file the project fetches (zoo checkpoints, dataset releases): a progress bar, a
timeout, resume of an interrupted download, a checksum, and the file's name taken only once it is verified.

    download_file(url, target, checksum="2966598c", algorithm="sha256")   # a prefix of the digest is enough

The bytes go to `<target>.part`; a `.part` left by an interrupted download is continued with an HTTP Range
request (a server that ignores it sends the whole file, which then replaces the part). Written here rather than
taken from `torch.hub.download_url_to_file`: that one has no timeout, no resume and SHA-256 prefixes only (the
dataset releases publish MD5 sums).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file whose digest is not the published one (the part is removed)."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def download_file(
    url: str,
    target: str | Path,
    checksum: str | None = None,
    algorithm: str = "sha256",
    timeout: float = 20.0,
    progress: bool = True,
) -> Path:
    """`url` saved as `target` (its folder created), resuming `<target>.part`; `checksum` (the hex digest or a
    prefix of it) is verified before the rename, and a mismatch removes the part and raises ChecksumError.
    Network errors (`urllib.error.URLError`, `OSError`, a timeout after `timeout` seconds of silence) propagate
    with the part kept, so the next call continues it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = done > 0 and getattr(response, "status", 200) == 206
        total = response.headers.get("Content-Length")
        total = (int(total) + (done if resumed else 0)) if total else None
        bar = _progress(target.name, total, done if resumed else 0) if progress else None
        with open(part, "ab" if resumed else "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()
    if checksum is not None:
        actual = file_digest(part, algorithm)
        if not actual.startswith(checksum.lower()):
            part.unlink()
            raise ChecksumError(
                f"the {algorithm} of '{target.name}' from {url} is {actual}, expected {checksum}: the download is "
                "corrupt or the file changed on the server (nothing was kept)"
            )
    os.replace(part, target)
    return target


def _progress(name: str, total: int | None, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
