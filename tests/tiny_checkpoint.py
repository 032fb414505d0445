"""A checkpoint in seconds: a tiny randomly initialised segmentor saved the way training saves one (weights under
`segmentor.`, the resolved config, classes and palette), over the tiny shapes dataset of `tests/conftest.py`.

Eval, inference and visualisation tests need a self-describing checkpoint but not a trained model; training
even the smallest config model takes ~20 s on the test machine, this takes well under one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import TINY_TRAIN, compose_cfg


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
        "backbone": {"_target_": "tests.tiny_checkpoint.TinyBackbone", "channels": 8},
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


_RUNS: dict[str, TinyRun] = {}


def make_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The tiny dataset and checkpoint, made once per test session (the generator takes seconds) and shared
    by every test module that asks (each wraps this in its own fixture). Read-only: tests that change data or
    config copy them."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("tiny_run")
        config = tiny_config(root / "data", root / "train_run")
        data_root = prepare_data(config)
        _RUNS["run"] = TinyRun(config, write_checkpoint(root / "tiny.ckpt", config), data_root)
    return _RUNS["run"]
