"""The training progress bar, showing the loss without a host-device synchronisation per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar


class LossProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar plus the current value of `keys` (default `train/loss`).

    Logging the loss with `prog_bar=True` would make Lightning convert it to a Python number after every batch
    (`_LoggerConnector.on_batch_end`), which on a GPU waits for the step to finish: a host-device sync per step.
    Logged without `prog_bar`, the value is read here from `trainer.callback_metrics`, only when the bar refreshes
    (every `refresh_rate` batches, the logging interval in `conf/runtime/default.yaml`).
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        keys: Sequence[str] = ("train/loss",),
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.keys = tuple(keys)

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        for key in self.keys:
            value = trainer.callback_metrics.get(key)
            if value is not None:
                metrics[key] = float(value)
        return metrics
