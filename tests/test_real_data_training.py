"""The real-data experiments, converted from the shared releases and trained for a few dozen steps (slow).

The data folder is `$SEGKIT_SHARED_DATA`, by default `<repo>/../shared/data`; each test skips when its release
is absent. Backbones start from random weights (no download here), so these check that the experiment's data,
pipeline, model, schedule and evaluation fit together and learn, not the published figures.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from src.data.converters.drive import convert_drive
from src.data.converters.stanford_background import convert_stanford_background
from src.train import train
from tests.helpers import compose_cfg

pytestmark = pytest.mark.slow

SHARED = Path(os.environ.get("SEGKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

QUICK = [
    "runtime.num_workers=0",
    "runtime.log_interval=1",
    "runtime.trainer.enable_progress_bar=false",
    "runtime.trainer.enable_model_summary=false",
    "~runtime.callbacks.progress_bar",
    "logger=csv",
    "print_config=false",
    "test=false",
]


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"'{path}' is absent (set SEGKIT_SHARED_DATA to the shared data folder)")
    return path


def losses(out: Path) -> list[float]:
    rows = csv.DictReader(open(out / "csv" / "metrics.csv"))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def run(tmp_path: Path, overrides: list[str]) -> tuple[dict, list[float]]:
    out = tmp_path / "run"
    try:
        metrics = train(compose_cfg("train", [*QUICK, *overrides], out))
    finally:
        GlobalHydra.instance().clear()
    return metrics, losses(out)


def test_pspnet_stanford_background_learns(tmp_path):
    root = tmp_path / "stanford_background"
    convert_stanford_background(shared("iccv09Data.tar.gz"), root)
    # validate on the first 40 of the 143 validation images (minutes less on 2 cores)
    val = root / "splits" / "val.txt"
    val.write_text("\n".join(val.read_text().split()[:40]) + "\n")
    metrics, loss = run(
        tmp_path,
        [
            "experiment=pspnet_stanford_background",
            f"paths.data_dir={tmp_path}",
            "model=pspnet_r18-d8",  # the experiment's R50 is the same code, 4x slower on 2 cores
            "model.backbone.pretrained=false",
            "dataset.batch_size=4",
            "schedule.max_steps=40",
            "schedule.val_interval=40",
            "schedule.ckpt_interval=40",
        ],
    )
    classes = ["sky", "tree", "road", "grass", "water", "bldg", "mntn", "fg obj"]
    assert {f"val/IoU/{c}" for c in classes} <= set(metrics)
    assert 0.0 < metrics["val/mIoU"] <= 1.0 and 0.0 < metrics["val/aAcc"] <= 1.0
    assert len(loss) == 40 and np.isfinite(loss).all()
    assert np.mean(loss[-10:]) < np.mean(loss[:10]), loss


def test_unet_drive_learns(tmp_path):
    root = tmp_path / "DRIVE"
    convert_drive([shared("DRIVE")], root)
    # validate on 3 of the 20 test images: the sliding window runs the UNet on 196 windows of each
    for split in ("images", "annotations"):
        for path in sorted((root / split / "validation").glob("*.png"))[3:]:
            path.unlink()
    metrics, loss = run(
        tmp_path,
        [
            "experiment=unet_drive",
            f"paths.data_dir={tmp_path}",
            "schedule.max_steps=30",
            "schedule.val_interval=30",
            "schedule.ckpt_interval=30",
        ],
    )
    # validation is the experiment's sliding window (64x64, stride 42) over test images of 565x584
    assert {"val/mDice", "val/Dice/vessel", "val/Dice/background"} <= set(metrics)
    assert 0.0 < metrics["val/mDice"] <= 1.0
    assert len(loss) == 30 and np.isfinite(loss).all()
    assert np.mean(loss[-10:]) < np.mean(loss[:10]), loss
