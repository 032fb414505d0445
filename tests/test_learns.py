"""Training learns: 60 steps from scratch, through `src.train.train`, score well above chance on the test split.

The model is a config model cut small, so that 60 steps take seconds: timm's resnet10t up to its stride-4 level
(deep stem and one basic block, `out_indices=[1]`) under a 32-channel FCN head, no auxiliary head; AdamW at 3e-3
decaying linearly to 0, one LR for all. At stride 4 the 64 px scenes keep their small objects (the former
config, the whole resnet10t dilated to stride 8 on 48 px scenes, cost ~10x more per step and reached ~1.5x chance).

Chance is computed from the test labels alone, never from the model: the better of guessing each pixel's class
at random from the class frequencies and always answering the most frequent class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from src.data.io import load_mask
from src.metrics import SegMetrics
from src.train import train
from tests.helpers import TINY_TRAIN, compose_cfg

MARGIN = 3.0  # test mIoU >= MARGIN x chance (11 training seeds: 3.8x to 4.6x)
LEARNS = [
    # 32 training and 16 test scenes of 64 px (objects of 6 to 29 px), trained on whole images
    "dataset.prepare.num_train=32",
    "dataset.prepare.num_test=16",
    "dataset.prepare.image_size=64",
    "dataset.crop_size=[64,64]",
    "dataset.batch_size=8",
    "model.backbone.model_name=resnet10t",
    "model.backbone.out_indices=[1]",
    "model/auxiliary_head=none",
    "model.decode_head.channels=32",
    "model.decode_head.dropout_ratio=0.0",
    "schedule=adamw_poly_40k",
    "schedule.lr=0.003",
    "schedule.warmup_iters=0",
    "schedule.paramwise=null",
    "schedule.max_steps=60",
    "schedule.val_interval=60",
    "schedule.ckpt_interval=60",
]


def class_frequencies(masks: list[np.ndarray], num_classes: int, ignore_index: int = 255) -> np.ndarray:
    labels = np.concatenate([m[m != ignore_index].ravel() for m in masks])
    return np.bincount(labels, minlength=num_classes)[:num_classes] / labels.size


def chance_miou(freq: np.ndarray) -> float:
    """The mIoU of the better model-free guess, over the classes present (absent ones drop out, as in the metric):
    drawing each pixel's class from `freq` (expected IoU of class c: p_c / (2 - p_c)), or always answering the
    most frequent class (IoU p_max for it, 0 for the others)."""
    p = freq[freq > 0]
    return max(float(np.mean(p / (2 - p))), float(p.max() / p.size))


@pytest.mark.parametrize("freq", [[0.4, 0.2, 0.15, 0.1, 0.1, 0.05], [0.9, 0.05, 0.05, 0.0, 0.0, 0.0]])
def test_chance_miou_is_the_metric_of_the_better_guess(freq):
    """On labels drawn from `freq`, the project's metric scores the two guesses as `chance_miou` says."""
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=(4, 250, 250), p=freq)
    labels[:, :10] = 255
    p = class_frequencies(list(labels), 6)
    scores = []
    for guess in (rng.choice(6, size=labels.shape, p=p), np.full(labels.shape, p.argmax())):
        metric = SegMetrics(num_classes=6)
        metric.update(torch.from_numpy(guess), torch.from_numpy(labels))
        scores.append(float(metric.compute()["mIoU"]))
    assert chance_miou(p) == pytest.approx(max(scores), abs=0.003), scores


@pytest.mark.usefixtures("one_thread")
def test_sixty_steps_beat_chance_by_a_wide_margin(tmp_path: Path) -> None:
    cfg = compose_cfg("train", [*TINY_TRAIN, f"paths.data_dir={tmp_path}", *LEARNS], tmp_path / "run")
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    masks = [load_mask(p) for p in sorted((Path(cfg.dataset.data_root) / "ann_dir" / "test").glob("*.png"))]
    chance = chance_miou(class_frequencies(masks, cfg.dataset.num_classes, cfg.dataset.ignore_index))
    assert metrics["test/mIoU"] >= MARGIN * chance, (metrics["test/mIoU"], chance)
