"""Helpers shared by the tests (not a test module; the fixtures that use them are in `tests/conftest.py`, the export
tests' own in `tests/export_helpers.py`). Test modules import from here, never from each other.

Hydra configs composed the way the entry points compose them, on tiny synthetic data (`compose_cfg`,
`TINY_TRAIN`, `SMALL_MODEL`), and a checkpoint in seconds: a tiny randomly initialised segmentor saved the way
training saves one (weights under `segmentor.`, the resolved config, classes and palette). Also: callbacks added
to a config (`with_callbacks`) and entry points run in this process with their exit code and output (`run_entry`).

Eval, inference and visualisation tests need a self-describing checkpoint but not a trained model; training
even the smallest config model takes ~20 s on the test machine, this takes well under one.
"""

from __future__ import annotations

import copy
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

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
    "runtime.precision=32-true",  # not `auto`: the same numbers on every machine (auto: tests/utils/test_precision.py)
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


class TinyBackbone(nn.Module):
    """3x3 conv at stride 2 + BN + ReLU: a real (not per-pixel, not flip-invariant) feature extractor."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.body(x)]


def tiny_model_cfg(num_classes: int = 6, tta: dict | None = None) -> dict[str, Any]:
    return {
        "_target_": "src.models.EncoderDecoder",
        "name": "tiny",
        "backbone": {"_target_": "tests.helpers.TinyBackbone", "channels": 8},
        "decode_head": {
            "_target_": "src.models.heads.FCNHead",
            "in_channels": 8,
            "channels": 8,
            "num_classes": num_classes,
            "num_convs": 1,
            "concat_input": False,
            "dropout_ratio": 0.0,
            "in_index": -1,
        },
        "test_cfg": {"mode": "whole", "tta": tta or {"scales": [0.75, 1.0, 1.5], "flip": True}},
    }


def tiny_config(data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The resolved training config of the tiny shapes run, with the tiny model, as a plain dict."""
    cfg = compose_cfg("train", [*TINY_TRAIN, f"paths.data_dir={data_dir}"], out_dir)
    GlobalHydra.instance().clear()
    config = OmegaConf.to_container(cfg, resolve=True)
    config["model"] = tiny_model_cfg()
    return config


def write_checkpoint(path: Path, config: dict[str, Any], seed: int = 0) -> Path:
    """Build the config's model with seeded random weights and save it as `src.train` does."""
    torch.manual_seed(seed)
    model = instantiate(config["model"])
    with torch.no_grad():
        for m in model.modules():  # BN statistics that are not the identity, so they matter
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.decode_head.conv_seg.bias.zero_()  # no class favoured: (seed 0) several classes are predicted
    datamodule = instantiate(config["dataset"])
    meta = {
        "config": copy.deepcopy(config),
        "classes": list(datamodule.classes),
        "palette": [list(c) for c in datamodule.palette],
    }
    state = {f"segmentor.{k}": v for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "segkit": meta}, path)
    return path


def prepare_data(config: dict[str, Any]) -> Path:
    """Generate the tiny shapes dataset of the config; returns its root."""
    datamodule = instantiate(config["dataset"])
    datamodule.prepare_data()
    return Path(config["dataset"]["data_root"])


@dataclass(frozen=True)
class TinyRun:
    config: dict[str, Any]  # the resolved config stored in the checkpoint
    ckpt: Path
    data_root: Path  # the shapes dataset: img_dir/{train,val,test}, ann_dir/...

    @property
    def test_images(self) -> list[Path]:
        return sorted((self.data_root / "img_dir" / "test").glob("*.png"))


@dataclass(frozen=True)
class TrainedRun:
    """A finished `src.train` run (2 steps of the small model on the tiny shapes data), shared read-only."""

    overrides: list[str]  # its training overrides (data folder included): compose again to test or resume it
    ckpt: Path  # its last checkpoint
    data_root: Path  # the shapes dataset: img_dir/{train,val,test}, ann_dir/...
    metrics: dict[str, Any]  # what train() returned


def run_eval(run_dir: Path, ckpt: Path, *overrides: str) -> dict:
    """`src.eval` in this process on the CPU without workers, its files in `run_dir`; returns its report."""
    from src.eval import evaluate

    cfg = compose_cfg("eval", [f"ckpt_path={ckpt}", "num_workers=0", "device=cpu", *overrides], run_dir)
    GlobalHydra.instance().clear()
    return evaluate(cfg)


class RecordSteps(Callback):
    """A callback that records the global step at the start of every training batch (class-level `seen`: reset
    it before a run)."""

    seen: list[int] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        RecordSteps.seen.append(trainer.global_step)


class AsList(nn.Module):
    """A backbone that hands the image to the head as its one feature level."""

    def forward(self, x):
        return [x]


def with_callbacks(cfg: DictConfig, *callbacks: type) -> DictConfig:
    """Add callback classes (importable: defined at a module's top level) to the config's runtime callbacks."""
    with open_dict(cfg):
        for cls in callbacks:
            cfg.runtime.callbacks[f"test_{cls.__name__}"] = {
                "_target_": f"{cls.__module__}.{cls.__qualname__}"
            }
    return cfg


# ------------------------------------------------------------------- entry points run in this process
MAX_LINES = 40  # an error's whole output stays under this many lines


def run_entry(
    main, args: list[str], root: Path, capfd, monkeypatch, config: str = "train"
) -> tuple[int, str]:
    """Run a `@hydra.main` entry point in this process as `python -m <module> *args` would; returns its exit
    code and its whole output (stdout + stderr). Logging is restored afterwards (Hydra reconfigures it).

    The function under `@hydra.main` is decorated again with the absolute config folder: imported (not run as
    `__main__`), Hydra would look for `../conf` as a Python package."""
    entry = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config)(main.__wrapped__)
    monkeypatch.setenv("SEGKIT_ROOT", str(root))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("SEGKIT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["entry", *args])
    root_logger = logging.getLogger()
    saved = (root_logger.handlers[:], root_logger.level)
    try:
        try:
            entry()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        root_logger.handlers[:] = saved[0]
        root_logger.setLevel(saved[1])
    captured = capfd.readouterr()
    return code, captured.out + captured.err


def train_args(data_dir: Path, *overrides: str) -> list[str]:
    return [*TINY_TRAIN, f"paths.data_dir={data_dir}", *SMALL_MODEL, *overrides]


def assert_short_error(code: int, out: str, *must_contain: str) -> None:
    """Exit code 1, each text in the output (the block wraps long lines: compared with whitespace collapsed),
    fewer than MAX_LINES lines and no traceback."""
    assert code == 1, out[-3000:]
    flat = " ".join(out.split())
    for text in must_contain:
        assert " ".join(text.split()) in flat, f"{text!r} not in:\n{out[-3000:]}"
    assert len(out.splitlines()) < MAX_LINES, out
    assert "Traceback (most recent call last)" not in out, out


def to_mmseg_names(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state-dict names -> MMSegmentation's for a ResNet-V1c (deep stem) model with one auxiliary head."""
    out = {}
    for name, value in ours.items():
        name = re.sub(r"^backbone\.body\.conv1\.(\d)\.", r"backbone.stem.\1.", name)
        name = re.sub(r"^backbone\.body\.bn1\.", "backbone.stem.7.", name)
        name = re.sub(r"^backbone\.body\.", "backbone.", name)
        name = re.sub(r"^auxiliary_heads\.0\.", "auxiliary_head.", name)
        out[name] = value.clone()
    return out
