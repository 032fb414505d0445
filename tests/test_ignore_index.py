"""One ignore label, the dataset config's: a dataset whose masks mark unlabelled pixels with 254
(`dataset.ignore_index=254`) trains (the losses skip 254: a cross-entropy target of 254 with 6 classes would
fail), validates, tests and evaluates with 254 skipped by every metric, checked against hand counts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from src.data.io import load_mask
from src.eval import evaluate
from src.train import train
from tests.helpers import TINY_TRAIN, compose_cfg

IGNORE = 254


def _relabel_ignore(data_root: Path) -> None:
    """Every mask: the generator's ignore label 255 -> 254, and a 6x6 block in the top-left corner set to 254
    too, so that every image has ignored pixels where the model predicts something."""
    for path in sorted((data_root / "ann_dir").rglob("*.png")):
        mask = load_mask(path)
        mask[mask == 255] = IGNORE
        mask[:6, :6] = IGNORE
        cv2.imwrite(str(path), mask)


def _hand_aacc(pred_dir: Path, ann_dir: Path) -> float:
    """Pixel accuracy over the labelled pixels (label != 254), from the written predictions and the masks."""
    correct = labelled = 0
    for ann in sorted(ann_dir.glob("*.png")):
        gt, pred = load_mask(ann), load_mask(pred_dir / ann.name)
        keep = gt != IGNORE
        correct += int((pred[keep] == gt[keep]).sum())
        labelled += int(keep.sum())
    return correct / labelled


def test_ignore_index_254_from_dataset_to_loss_metrics_and_eval(tmp_path: Path) -> None:
    overrides = [
        *TINY_TRAIN,
        f"paths.data_dir={tmp_path / 'data'}",
        f"dataset.ignore_index={IGNORE}",
        "model.backbone.model_name=resnet10t",
        "schedule.max_steps=2",
        "schedule.val_interval=2",
    ]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    data_root = Path(cfg.dataset.data_root)
    instantiate(cfg.dataset).prepare_data()  # generated once (meta.json); the relabelled masks are kept
    _relabel_ignore(data_root)
    assert cfg.model.data_preprocessor.seg_pad_val == IGNORE
    assert cfg.model.decode_head.ignore_index == IGNORE  # the head gives it to its losses
    head = instantiate(cfg.model.decode_head)(in_channels=8)
    assert all(loss.ignore_index == IGNORE for loss in head.losses)

    # with the default ignore label, 254 is a label outside the 6 classes: refused, not silently counted
    default_cfg = compose_cfg("train", [*overrides[:-4], "dataset.ignore_index=255"], tmp_path / "run255")
    with pytest.raises(ValueError, match=r"254"):
        instantiate(default_cfg.dataset).build_split("test")[0]

    metrics = train(cfg)  # a CE target of 254 that is not ignored fails here (out of the 6 classes)
    GlobalHydra.instance().clear()
    ckpt = metrics["ckpt_path"]
    reports = {}
    for split in ("val", "test"):
        out = tmp_path / f"eval_{split}"
        eval_cfg = compose_cfg(
            "eval",
            [f"ckpt_path={ckpt}", "num_workers=0", "device=cpu", f"split={split}", f"out_dir={out / 'pred'}"],
            out,
        )
        GlobalHydra.instance().clear()
        reports[split] = evaluate(eval_cfg)
        hand = _hand_aacc(out / "pred" / "pred", data_root / "ann_dir" / split)
        assert reports[split]["summary"]["aAcc"] == pytest.approx(hand, abs=1e-6)
        confmat = np.asarray(reports[split]["confusion_matrix"])
        masks = [load_mask(p) for p in sorted((data_root / "ann_dir" / split).glob("*.png"))]
        assert confmat.sum() == sum(int((m != IGNORE).sum()) for m in masks)
        assert json.loads((out / "metrics.json").read_text())["summary"]["aAcc"] == pytest.approx(hand)
    # the module's validation (after the last step) and test metrics skip the same pixels as eval
    assert metrics["val/aAcc"] == pytest.approx(reports["val"]["summary"]["aAcc"], abs=1e-6)
    assert metrics["test/aAcc"] == pytest.approx(reports["test"]["summary"]["aAcc"], abs=1e-6)
