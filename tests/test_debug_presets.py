"""The debug presets (conf/debug/): each runs on the tiny synthetic set in seconds and leaves a run that says it
was a debug run (task_name "debug" in its config and run record, so its folder is logs/debug/...)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from src.loading.checkpoint import read_checkpoint
from src.train import train
from tests.helpers import CONF_DIR


def _record(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def _debug_run(cfg) -> dict:
    assert cfg.task_name == "debug" and "debug" in cfg.tags
    assert cfg.runtime.num_workers == 0 and cfg.runtime.trainer.detect_anomaly is True
    assert list(cfg.logger) == ["csv"]
    metrics = train(cfg)
    assert _record(cfg)["task_name"] == "debug"
    return metrics


def test_debug_runs_go_to_their_own_log_folder():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["debug=limit"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.task_name == "debug"
    # unresolved: resolving the run dir would create it
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert "${paths.log_dir}/${task_name}/runs/" in run_dir


def test_fdr_runs_one_batch_of_each_stage(make_train_cfg):
    cfg = make_train_cfg("debug=fdr")
    metrics = _debug_run(cfg)
    # fast_dev_run: a single step, one validation batch and the test
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and 0.0 <= metrics["test/mIoU"] <= 1.0
    assert not list((Path(cfg.paths.output_dir) / "checkpoints").glob("iter_*.ckpt"))
    if metrics["ckpt_path"]:  # Lightning 2.6 still writes last.ckpt when fit ends (save_last)
        assert read_checkpoint(metrics["ckpt_path"])["global_step"] == 1


def test_overfit_trains_on_the_same_batches(make_train_cfg):
    cfg = make_train_cfg(
        "debug=overfit", "dataset.prepare.num_train=16", "schedule.max_steps=6", "test=false"
    )
    assert cfg.runtime.trainer.overfit_batches == 3
    metrics = _debug_run(cfg)
    assert metrics["ckpt_path"] is not None
    # 16 images in batches of 4 would give 4 batches per epoch; overfit_batches keeps 3, so 6 steps are 2 epochs
    ckpt = read_checkpoint(metrics["ckpt_path"])
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1


def test_limit_runs_few_batches(make_train_cfg):
    cfg = make_train_cfg("debug=limit", "runtime.trainer.limit_train_batches=1", "schedule.max_steps=2")
    metrics = _debug_run(cfg)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and 0.0 <= metrics["test/mIoU"] <= 1.0


def test_profiler_writes_its_report_in_the_run_folder(make_train_cfg):
    cfg = make_train_cfg("debug=profiler", "schedule.max_steps=2")
    _debug_run(cfg)
    report = Path(cfg.paths.output_dir) / "profiler" / "fit-profile.txt"
    assert report.is_file()
    text = report.read_text()
    assert "run_training_batch" in text and "Total" in text


@pytest.mark.parametrize("preset", ["fdr", "overfit", "limit", "profiler"])
def test_presets_compose_with_an_experiment(preset, tmp_path):
    from tests.helpers import compose_cfg

    cfg = compose_cfg("train", ["experiment=unet_drive", f"debug={preset}"], tmp_path)
    assert cfg.task_name == "debug" and cfg.model.name == "unet-s5-d16_fcn"
