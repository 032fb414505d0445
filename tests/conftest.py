"""Shared fixtures: Hydra configs composed the way the entry points compose them, on tiny synthetic data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.utils import resolvers  # noqa: F401

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# A training run that takes seconds: 32 px shapes, a handful of images, a few steps, no workers.
TINY_TRAIN = [
    "dataset.prepare.num_train=8",
    "dataset.prepare.num_val=4",
    "dataset.prepare.num_test=4",
    "dataset.prepare.image_size=32",
    "dataset.crop_size=[32,32]",
    "dataset.batch_size=4",
    "dataset.val_batch_size=4",
    "schedule.max_steps=4",
    "schedule.val_interval=2",
    "schedule.ckpt_interval=2",
    "runtime.num_workers=0",
    "runtime.precision=32-true",  # not `auto`: the same numbers on every machine (auto: tests/test_precision.py)
    "runtime.log_interval=1",
    "runtime.trainer.enable_model_summary=false",
    "runtime.trainer.enable_progress_bar=false",
    "~runtime.callbacks.progress_bar",
    "logger=csv",
    "print_config=false",
]
# the smallest config model (timm's resnet10t under the default FCN head): trains a step in about a second
SMALL_MODEL = ["model.backbone.model_name=resnet10t"]


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose like `@hydra.main` does, with `${hydra:...}` resolvable (HydraConfig set) and the run dir given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_train_cfg(tmp_path: Path, data_dir: Path):
    """A factory: tiny training config with extra overrides, each run in its own output dir."""
    counter = {"n": 0}

    def make(*overrides: str) -> DictConfig:
        counter["n"] += 1
        out = tmp_path / f"run{counter['n']}"
        return compose_cfg("train", [*TINY_TRAIN, f"paths.data_dir={data_dir}", *overrides], out)

    yield make
    GlobalHydra.instance().clear()


@dataclass(frozen=True)
class TrainedRun:
    """A finished `src.train` run (2 steps of the small model on the tiny shapes data), shared read-only."""

    overrides: list[str]  # its training overrides (data folder included): compose again to test or resume it
    ckpt: Path  # its last checkpoint
    data_root: Path  # the shapes dataset: img_dir/{train,val,test}, ann_dir/...
    metrics: dict[str, Any]  # what train() returned


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One real training run per test session, for the tests that need a trained checkpoint and its run."""
    from src.train import train

    root = tmp_path_factory.mktemp("trained_run")
    steps = ["schedule.max_steps=2", "schedule.val_interval=2", "schedule.ckpt_interval=2"]
    overrides = [*TINY_TRAIN, f"paths.data_dir={root / 'data'}", *SMALL_MODEL, *steps]
    cfg = compose_cfg("train", overrides, root / "run")
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return TrainedRun(overrides, Path(metrics["ckpt_path"]), Path(cfg.dataset.data_root), metrics)
