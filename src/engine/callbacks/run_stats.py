"""Training memory and inference speed of a run, the two cost columns of MMSegmentation's model-zoo tables.

- memory: the peak during `fit`: `torch.cuda.max_memory_allocated` on a GPU (MMSegmentation's "Mem (GB)"), the
  process's peak RSS on a CPU (Linux `VmHWM`, reset at the start so each run of a sweep is measured alone).
- speed: test images per second on this process (rank zero's under DDP, one device's as MMSegmentation's fps),
  each test batch timed without data loading, the first left out as warm-up when there are more.

`src.train` writes `stats` into the run record (`results.json`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

GIB = 1024**3


class RunStats(Callback):
    """Args:
    warmup_batches: test batches left out of the speed (when the test split has more batches than this).
    """

    def __init__(self, warmup_batches: int = 1) -> None:
        self.warmup_batches = warmup_batches
        self.stats: dict[str, Any] = {}
        self._batch_start = 0.0
        self._timed: list[tuple[int, float]] = []

    # ---------------------------------------------------------------- memory
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_peak_rss()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        device = pl_module.device
        if device.type == "cuda":
            self.stats["train_memory_gb"] = torch.cuda.max_memory_allocated(device) / GIB
            self.stats["train_memory_kind"] = "cuda_max_allocated"
            self.stats["device"] = torch.cuda.get_device_name(device)
        else:
            self.stats["train_memory_gb"] = peak_rss_bytes() / GIB
            self.stats["train_memory_kind"] = "cpu_peak_rss"
            self.stats["device"] = device.type

    # ----------------------------------------------------------------- speed
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._timed = []

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        _synchronize(pl_module.device)
        self._batch_start = time.perf_counter()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        _synchronize(pl_module.device)
        self._timed.append((len(batch["inputs"]), time.perf_counter() - self._batch_start))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._timed:
            return
        timed = self._timed[self.warmup_batches :] if len(self._timed) > self.warmup_batches else self._timed
        images, seconds = sum(n for n, _ in timed), sum(s for _, s in timed)
        self.stats["test_fps"] = images / seconds if seconds > 0 else None
        self.stats["test_images_timed"] = images
        self.stats["test_batch_size"] = self._timed[0][0]


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (`VmHWM`, or `getrusage` where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
