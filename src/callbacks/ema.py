"""Exponential moving average of the weights: Lightning's `EMAWeightAveraging`, with two fixes for this project.

Lightning (2.6) already keeps the averaged copy (torch's `AveragedModel`), swaps it in for validation, writes it
as the checkpoint's `state_dict` (the raw weights go to `current_model_state`, restored on resume) and copies it
into the model when training ends, so testing after `fit`, `src.eval` and inference (which read `state_dict`)
all use the EMA weights. This subclass only fixes what it gets wrong here:

- loading a checkpoint for `trainer.test(ckpt_path=...)` after `fit` would put the raw weights back into the
  model (its `on_load_checkpoint` restores `current_model_state` whenever the averaged model exists): only a
  resumed `fit` does that here, a test keeps the EMA weights of `state_dict`;
- a checkpoint written while validation runs (a preemption) would store the swapped weights the wrong way
  round: on an exception during validation the weights are swapped back before any checkpoint callback runs
  (checkpoint callbacks run after all others).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Args: see `lightning.pytorch.callbacks.EMAWeightAveraging` (`decay`, `update_every_n_steps`,
    `update_starting_at_step`, `device`, `use_buffers`: BatchNorm statistics are averaged too by default)."""

    def __init__(self, decay: float = 0.9998, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"runtime.callbacks.ema.decay={decay}: expected a value in (0, 1), e.g. 0.9998")
        super().__init__(decay=decay, **kwargs)
        self._swapped = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._swapped = self._average_model is not None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        self._swapped = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._swapped:
            self._swap_models(pl_module)  # the training weights back in the model, the average in its copy
            self._swapped = False

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
