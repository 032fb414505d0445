"""How training writes its checkpoints: atomically (`AtomicCheckpointIO`, a Lightning plugin), and the cleanup of
what an interrupted save left behind. The engine's side of checkpoints; reading them is `src.loading.checkpoint`'s, which
needs no Lightning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.utils.errors import DiskFullError, free_space, human_bytes, space_error
from src.utils.files import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write through `src.utils.files.atomic_file` (`<path>.<pid>.tmp`, fsync, then rename): Lightning's
    `TorchCheckpointIO` writes in place, so an interrupted save could corrupt `last.ckpt`, the file a resume needs.

    A save that fails for space (torch: `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`)
    keeps the previous checkpoints and raises `DiskFullError` naming the path and the free space."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        size = 0
        try:
            with atomic_file(path, fsync=True) as f:
                try:
                    torch.save(checkpoint, f)
                finally:
                    size = os.fstat(f.fileno()).st_size  # what reached the file, for the message
        except BaseException as err:
            space = space_error(err)
            if space is not None or "inline_container" in str(err):
                cause = space.strerror if space is not None else f"write failed ({str(err).splitlines()[0]})"
                raise DiskFullError(
                    f"Saving checkpoint '{path}' failed after {human_bytes(size)} were written: {cause}. "
                    f"{free_space(path.parent)}. The earlier checkpoints in that folder are unchanged.",
                ) from err
            raise


def remove_stale_tmp(folders: list[str | Path]) -> list[Path]:
    """Delete the temporary files that interrupted saves left in `folders` (`*.ckpt.<pid>.tmp` whose process is
    gone, and `*.ckpt.tmp` of earlier versions); returns them. Files of a save still running are kept."""
    removed = []
    for folder in {Path(f) for f in folders}:
        for tmp in folder.glob("*.ckpt*.tmp") if folder.is_dir() else []:
            pid = tmp.name[: -len(".tmp")].rsplit(".", 1)[-1]
            if pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid))):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
