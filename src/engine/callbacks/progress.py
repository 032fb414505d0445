"""The training progress bar: iterations as MMSegmentation prints them, the loss without a per-step host sync.

For an iteration-based schedule (`max_steps`, no epoch budget: every schedule here) the training line reads

    Iter 120/400 | ETA 0:01:23 | 3.10 it/s | loss 0.412 | lr 9.1e-3

(the optimiser step, not the batch; ETA and it/s from the time per iteration since training started, validation
time left out), in one tqdm line on a terminal and as a log line every refresh when the output is a file (no
carriage-return updates in `make train > log`). Epoch-based runs keep Lightning's `Epoch N` bar.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Sequence
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from src.utils.logging import get_logger

log = get_logger(__name__)


class LossProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar plus the current value of `keys` (default `train/loss`), and iterations.

    `prog_bar=True` would make Lightning read the loss back to the host after every batch (a sync per step on a
    GPU); here it is read from `trainer.callback_metrics` only when the bar refreshes. The learning rate is the
    first parameter group's, a Python number (no sync).

    Args:
        refresh_rate: iterations between refreshes (and between log lines when the output is not a terminal).
        keys: logged metrics to show (`train/` dropped from their names).
        iterations: show iterations (`None`: when the Trainer runs by `max_steps` with no epoch limit).
        log_lines: print a log line per refresh instead of the tqdm line (`None`: when stdout is not a terminal).
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        keys: Sequence[str] = ("train/loss",),
        iterations: bool | None = None,
        log_lines: bool | None = None,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.keys = tuple(keys)
        self.iterations = iterations
        self.log_lines = log_lines
        self._iter_mode = False
        self._last_step = -1
        self._t0 = 0.0  # wall clock at the first iteration's end
        self._step0 = 0
        self._paused = 0.0  # validation seconds since then (not training time)
        self._val_start: float | None = None
        self._log_lines = False
        self._started = False

    # ------------------------------------------------------------------ values
    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        for key in self.keys:
            value = trainer.callback_metrics.get(key)
            if value is not None:
                metrics[key] = float(value)
        return metrics

    def iteration_line(self, trainer: Trainer, now: float | None = None) -> str:
        """`Iter 120/400 | ETA 0:01:23 | 3.10 it/s | loss 0.412 | lr 9.1e-3` for the trainer's current state."""
        step, total = trainer.global_step, trainer.max_steps
        parts = [f"Iter {step}/{total}"]
        now = time.perf_counter() if now is None else now
        done, seconds = step - self._step0, now - self._t0 - self._paused
        if done > 0 and seconds > 0:
            rate = done / seconds
            eta = datetime.timedelta(seconds=round(max(total - step, 0) / rate))
            parts += [f"ETA {eta}", f"{rate:.3g} it/s"]
        for key in self.keys:
            value = trainer.callback_metrics.get(key)
            if value is not None:  # a tensor: converting it is the one host-device sync, once per refresh
                parts.append(f"{key.removeprefix('train/')} {float(value):.4g}")
        lr = _first_lr(trainer)
        if lr is not None:
            parts.append(f"lr {_short_exp(lr)}")
        return " | ".join(parts)

    # ------------------------------------------------------------ training bar
    def _uses_iterations(self, trainer: Trainer) -> bool:
        if self.iterations is not None:
            return self.iterations
        return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._iter_mode = self._uses_iterations(trainer)
        if not self._iter_mode:
            super().on_train_start(trainer, pl_module)
            return
        log_lines = self.log_lines if self.log_lines is not None else not sys.stdout.isatty()
        if log_lines:  # no bar at all (a disabled tqdm prints nothing)
            bar = Tqdm(disable=True)
        else:
            bar = self.init_train_tqdm()
            bar.bar_format = "{desc}"
            bar.total, bar.initial, bar.n = trainer.max_steps, trainer.global_step, trainer.global_step
        self.train_progress_bar = bar
        self._log_lines = log_lines
        self._last_step = trainer.global_step
        self._step0, self._t0, self._paused = trainer.global_step, time.perf_counter(), 0.0
        self._started = False

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        if not self._iter_mode:
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._iter_mode:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        step = trainer.global_step
        if step == self._last_step:  # accumulating gradients: not an iteration yet
            return
        self._last_step = step
        if not self._started:  # time from the end of the first iteration: start-up is not training speed
            self._started = True
            self._step0, self._t0, self._paused = step, time.perf_counter(), 0.0
        if not self.is_enabled or not (step % self.refresh_rate == 0 or step == trainer.max_steps):
            return
        line = self.iteration_line(trainer)
        if self._log_lines:
            log.info(line)
        else:
            bar = self.train_progress_bar
            bar.n = step
            bar.set_description_str(line, refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._iter_mode:
            super().on_train_epoch_end(trainer, pl_module)

    def init_validation_tqdm(self) -> Tqdm:
        if self._iter_mode and self._log_lines:  # log lines, no carriage-return bars in the file
            return Tqdm(disable=True)
        return super().init_validation_tqdm()

    # ---------------------------------------------------- validation pauses
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._iter_mode and trainer.state.fn == "fit":
            self._val_start = time.perf_counter()
        super().on_validation_start(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._iter_mode and self._val_start is not None:
            self._paused += time.perf_counter() - self._val_start
            self._val_start = None
            # the base class would write a postfix (reading every logged metric) that the line does not show
            self.val_progress_bar.close()
            self.reset_dataloader_idx_tracker()
            return
        super().on_validation_end(trainer, pl_module)


def _first_lr(trainer: Trainer) -> float | None:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _short_exp(value: float) -> str:
    """9.1e-3 rather than 9.1e-03 (MMSegmentation's logs print the LR this way)."""
    mantissa, _, exponent = f"{value:.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}"
