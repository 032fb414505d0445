"""Exponential moving average of the weights: Lightning's `EMAWeightAveraging`, with three fixes for this project.

Lightning (2.6) keeps the averaged copy, swaps it in for validation, writes it as the checkpoint's `state_dict`
(the raw weights go to `current_model_state`, restored on resume) and copies it into the model when training
ends, so the test after `fit`, `src.eval` and inference all use the EMA weights. Fixed here:

- `trainer.test(ckpt_path=...)` after `fit` would put the raw weights back (`on_load_checkpoint` restores
  `current_model_state`): only a resumed `fit` does that here;
- a checkpoint written during validation (a preemption) would store the swapped weights the wrong way round:
  on an exception the weights are swapped back first (checkpoint callbacks run after all others);
- torch's `AveragedModel.update_parameters` reads its device-side counter twice per update, two host syncs per
  training step on a GPU: `HostCountedAveragedModel` reads it once per fit, then counts on the host.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype


class EMA(EMAWeightAveraging):
    """Args: see `lightning.pytorch.callbacks.EMAWeightAveraging` (`decay`, `update_every_n_steps`,
    `update_starting_at_step`, `device`, `use_buffers`: BatchNorm statistics are averaged too by default)."""

    def __init__(self, decay: float = 0.9998, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"runtime.callbacks.ema.decay={decay}: expected a value in (0, 1), e.g. 0.9998")
        super().__init__(decay=decay, **kwargs)
        self._swapped = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(self._average_model) is AveragedModel:
            self._average_model.__class__ = HostCountedAveragedModel

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


class HostCountedAveragedModel(AveragedModel):
    """torch's `AveragedModel` whose `update_parameters` does not synchronise the host with the device.

    torch evaluates `bool(n_averaged == 0)` and `n_averaged > 0` at every update; here whether the average is
    empty is read once (the first update after construction or a resume), then tracked on the host. The
    arithmetic is torch's."""

    _host_empty: bool | None = None

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._host_empty is None:
            self._host_empty = bool(self.n_averaged == 0)  # once
        if self.use_buffers:
            own = itertools.chain(self.module.parameters(), self.module.buffers())
            src = itertools.chain(model.parameters(), model.buffers())
        else:
            own, src = self.parameters(), model.parameters()
        own_detached, src_detached = [], []
        for p_averaged, p_model in zip(own, src, strict=False):
            own_detached.append(p_averaged.detach())
            src_detached.append(p_model.detach().to(p_averaged.device))
        if self._host_empty:
            for p_averaged, p_model in zip(own_detached, src_detached):
                p_averaged.copy_(p_model)
        elif self.avg_fn is not None and self.multi_avg_fn is None:
            for p_averaged, p_model in zip(own_detached, src_detached):
                p_averaged.copy_(self.avg_fn(p_averaged, p_model, self.n_averaged.to(p_averaged.device)))
        else:
            multi_avg_fn = self.multi_avg_fn or get_swa_multi_avg_fn()  # torch's default: the running mean
            grouped = _group_tensors_by_device_and_dtype([own_detached, src_detached])
            for (device, _), ([own_group, src_group], _) in grouped.items():
                multi_avg_fn(own_group, src_group, self.n_averaged.to(device))
        if not self.use_buffers:
            for b_averaged, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
                b_averaged.detach().copy_(b_model.detach().to(b_averaged.device))
        self.n_averaged += 1
        self._host_empty = False
