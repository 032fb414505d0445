"""callbacks=early_stopping: Lightning's EarlyStopping on optimized_metric, patience counted in validations."""

from __future__ import annotations

from lightning.pytorch.callbacks import EarlyStopping

from src.loading.checkpoint import read_checkpoint
from src.train import train
from src.utils.instantiators import instantiate_callbacks


def test_early_stopping_config_monitors_the_optimized_metric(make_train_cfg):
    cfg = make_train_cfg("callbacks=early_stopping", "optimized_metric=val/mDice")
    es = cfg.runtime.callbacks.early_stopping
    assert es.monitor == "val/mDice" and es.mode == "max" and es.check_on_train_epoch_end is False
    # with another optional callback at once
    both = make_train_cfg("callbacks=[ema,early_stopping]")
    assert {"ema", "early_stopping"} <= set(both.runtime.callbacks)
    built = [cb for cb in instantiate_callbacks(both.runtime.callbacks) if isinstance(cb, EarlyStopping)]
    assert len(built) == 1


def test_early_stopping_stops_after_patience_validations(make_train_cfg):
    # an improvement must exceed min_delta=1.0 (impossible for a fraction): the first validation sets the best,
    # the next `patience`=2 do not improve, so training stops at the 3rd validation, iteration 3 of 20
    cfg = make_train_cfg(
        "callbacks=early_stopping",
        "runtime.callbacks.early_stopping.patience=2",
        "runtime.callbacks.early_stopping.min_delta=1.0",
        "schedule.max_steps=20",
        "schedule.val_interval=1",
        "schedule.ckpt_interval=20",
        "test=false",
    )
    metrics = train(cfg)
    ckpt = read_checkpoint(metrics["ckpt_path"])
    assert ckpt["global_step"] == 3
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    assert state["wait_count"] == 2 and state["patience"] == 2
