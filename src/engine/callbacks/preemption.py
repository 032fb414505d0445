"""Preemption safety: on SIGTERM (or SIGUSR1) finish the current batch, write a checkpoint, stop.

Lightning (2.6) turns SIGTERM into `SIGTERMException` after the current batch on every DDP rank, and on SLURM
saves an `hpc_ckpt_*.ckpt` and requeues on SIGUSR1; it saves nothing on SIGTERM and ignores SIGUSR1 elsewhere.
This callback adds both: on a `SIGTERMException` during `fit` every rank calls `trainer.save_checkpoint`
(rank 0 writes), and SIGUSR1, when nothing else handles it, becomes SIGTERM. `src.train` then exits with
`PREEMPTED_EXIT_CODE`; `resume=true` continues from the newest checkpoint.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.utils.logging import get_logger

log = get_logger(__name__)

# 128 + SIGTERM, what a shell reports for a process ended by SIGTERM: the run stopped on request, not finished
PREEMPTED_EXIT_CODE = 143


class PreemptionCheckpoint(Checkpoint):
    """Args:
    dirpath: folder of the checkpoint (the run's `checkpoints/`).
    filename: its name without `.ckpt`; overwritten by each preemption of the run.
    """

    def __init__(self, dirpath: str | Path, filename: str = "preempted") -> None:
        if not filename:
            raise ValueError("runtime.callbacks.preemption.filename: expected a non-empty file name")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.saved_path: Path | None = None
        self._previous_sigusr1: Any = None

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its handlers (it would not install its SLURM handler over ours)
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, _sigusr1_as_sigterm)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self.saved_path = self.ckpt_path
        log.info(f"Stopped by a signal at step {trainer.global_step}; checkpoint: {self.ckpt_path}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None


def _sigusr1_as_sigterm(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
