"""The training progress: `Iter 120/400 | ETA | it/s | loss | lr` for iteration schedules, loss read per refresh."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from src.engine.callbacks.progress import LossProgressBar, _short_exp


class CountingLoss:
    """A logged loss whose conversion to a Python number is counted (on a GPU, each one is a host sync)."""

    def __init__(self, value: float) -> None:
        self.value, self.reads = value, 0

    def __float__(self) -> float:
        self.reads += 1
        return self.value


def fake_trainer(step: int, max_steps: int, loss, lr: float = 9.1e-3):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return SimpleNamespace(
        global_step=step, max_steps=max_steps, max_epochs=-1, callback_metrics={"train/loss": loss},
        optimizers=[optimizer],
    )  # fmt: skip


def test_iteration_line_reads_as_mmsegmentation_users_expect():
    bar = LossProgressBar()
    bar._step0, bar._t0, bar._paused = 0, 100.0, 0.0
    trainer = fake_trainer(120, 400, torch.tensor(0.412))
    # 120 iterations in 38.71 s: 3.1 it/s, 280 left: 90 s
    line = bar.iteration_line(trainer, now=100.0 + 120 / 3.1)
    assert line == "Iter 120/400 | ETA 0:01:30 | 3.1 it/s | loss 0.412 | lr 9.1e-3"


def test_validation_time_is_not_training_time():
    bar = LossProgressBar()
    bar._step0, bar._t0, bar._paused = 100, 0.0, 20.0  # 40 s since, 20 of them validating
    line = bar.iteration_line(fake_trainer(140, 400, torch.tensor(1.0)), now=40.0)
    assert "| 2 it/s |" in line and "ETA 0:02:10" in line


@pytest.mark.parametrize(
    ("value", "text"), [(9.1e-3, "9.1e-3"), (0.01, "1.0e-2"), (2.5e-05, "2.5e-5"), (1.5, "1.5e0")]
)
def test_learning_rate_in_short_exponent_form(value, text):
    assert _short_exp(value) == text


def test_the_loss_is_read_only_at_refresh_iterations():
    bar = LossProgressBar(refresh_rate=5, log_lines=True)
    loss = CountingLoss(0.5)
    trainer = fake_trainer(0, 20, loss)
    bar._trainer = trainer
    bar._iter_mode, bar._log_lines = True, True
    for step in range(1, 21):
        trainer.global_step = step
        bar.on_train_batch_end(trainer, None, None, None, step - 1)
    assert loss.reads == 4  # steps 5, 10, 15, 20: not one per step


def test_a_fit_by_max_steps_logs_iteration_lines(tmp_path, caplog):
    bar = LossProgressBar(refresh_rate=2, log_lines=True, keys=())
    trainer = L.Trainer(
        max_steps=6, callbacks=[bar], logger=False, enable_checkpointing=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="src.engine.callbacks.progress"):
        trainer.fit(BoringModel())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Iter ")]
    assert [line.split(" | ")[0] for line in lines] == ["Iter 2/6", "Iter 4/6", "Iter 6/6"]
    assert all("it/s" in line and "ETA" in line and "lr 1.0e-1" in line for line in lines), lines


def test_an_epoch_budget_keeps_lightnings_epoch_bar(tmp_path):
    bar = LossProgressBar(refresh_rate=1)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, callbacks=[bar], logger=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert not bar._iter_mode
    assert bar.train_progress_bar.desc.startswith("Epoch 0")
