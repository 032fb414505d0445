"""Training learns: 60 steps of a small FCN on a small shapes set score well above chance on the test split.

Chance is the mIoU of guessing each pixel's class from the class frequencies of the test labels (the expected
IoU of class c is p_c / (2 - p_c)) or of always answering the most frequent class, whichever is higher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from src.data.io import load_mask
from src.train import train
from tests.conftest import SMALL_MODEL, TINY_TRAIN, compose_cfg

STEPS = [
    "dataset.prepare.num_train=32",
    "dataset.prepare.num_test=16",
    "dataset.prepare.image_size=48",
    "dataset.crop_size=[48,48]",
    "dataset.batch_size=8",
    "model.decode_head.channels=32",
    "model.auxiliary_head.channels=16",
    "schedule=adamw_poly_40k",
    "schedule.lr=0.003",
    "schedule.warmup_iters=0",
    "schedule.max_steps=60",
    "schedule.val_interval=60",
    "schedule.ckpt_interval=60",
]


def chance_miou(masks: list[np.ndarray], num_classes: int, ignore_index: int = 255) -> float:
    labels = np.concatenate([m[m != ignore_index].ravel() for m in masks])
    p = np.bincount(labels, minlength=num_classes)[:num_classes] / labels.size
    by_frequency = float(np.mean(p / (2 - p)))
    majority = float(p.max() / num_classes)  # IoU p_max for that class, 0 for the others
    return max(by_frequency, majority)


@pytest.mark.slow  # ~40 s of training and ~100 s of data generation on a loaded 2-core machine (see the report)
def test_sixty_steps_beat_chance_by_a_wide_margin(tmp_path: Path) -> None:
    cfg = compose_cfg(
        "train", [*TINY_TRAIN, f"paths.data_dir={tmp_path}", *SMALL_MODEL, *STEPS], tmp_path / "run"
    )
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    masks = [load_mask(p) for p in sorted((Path(cfg.dataset.data_root) / "ann_dir" / "test").glob("*.png"))]
    chance = chance_miou(masks, 6)
    assert 0.1 < chance < 0.2  # mostly background: about 1/6 of the background share
    assert metrics["test/mIoU"] > 1.4 * chance, (metrics["test/mIoU"], chance)
