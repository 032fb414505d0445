"""Runs that start from a checkpoint's weights (load_from, resume) never fetch pretrained weights: the
checkpoint overwrites them, so such a run must work offline even when the config asks for ImageNet weights."""

from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra

from src.train import train
from tests.helpers import compose_cfg


def test_load_from_does_not_fetch_pretrained_weights(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [
        *trained_run.overrides,
        "model.backbone.pretrained=true",  # offline and not cached: fetching would fail
        f"load_from={trained_run.ckpt}",
        "schedule.max_steps=1",
        "test=false",
    ]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert metrics["ckpt_path"]


def test_without_a_start_checkpoint_the_pretrained_fetch_is_tried(trained_run, tmp_path, monkeypatch):
    """The counter-check: the same config without load_from does try to fetch, and fails offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [
        *trained_run.overrides,
        "model.backbone.pretrained=true",
        "schedule.max_steps=1",
        "test=false",
    ]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    try:
        # (Hydra wraps the backbone's PretrainedWeightsError; the entry point prints it as one block)
        with pytest.raises(Exception, match="are not available(.|\n)*model.backbone.pretrained=false"):
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
