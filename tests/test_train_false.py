"""`python -m src.train train=false [ckpt_path=<file>]`: a test run, of a checkpoint or of the new weights. Both
used to end in a TypeError inside the test report callback (no checkpoint path to name in its files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from src.eval import evaluate
from src.train import train
from tests.helpers import TrainedRun, compose_cfg


def _test_only(run: TrainedRun, out: Path, *overrides: str) -> dict:
    cfg = compose_cfg("train", [*run.overrides, "train=false", *overrides], out)
    try:
        return train(cfg)
    finally:
        GlobalHydra.instance().clear()


def test_train_false_with_ckpt_path_tests_that_checkpoint(trained_run: TrainedRun, tmp_path: Path) -> None:
    metrics = _test_only(trained_run, tmp_path / "run", f"ckpt_path={trained_run.ckpt}")
    eval_cfg = compose_cfg(
        "eval", [f"ckpt_path={trained_run.ckpt}", "num_workers=0", "device=cpu"], tmp_path / "eval"
    )
    GlobalHydra.instance().clear()
    report = evaluate(eval_cfg)
    # the checkpoint's weights were tested (not the new model's): the same figures as src.eval of that file
    for key in ("aAcc", "mIoU", "mAcc"):
        assert metrics[f"test/{key}"] == pytest.approx(report["summary"][key], abs=1e-6), key
    saved = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
    assert saved["ckpt_path"] == str(trained_run.ckpt)
    assert saved["summary"]["mIoU"] == pytest.approx(report["summary"]["mIoU"], abs=1e-6)


def test_train_false_without_checkpoint_tests_the_new_weights(
    trained_run: TrainedRun, tmp_path: Path
) -> None:
    metrics = _test_only(trained_run, tmp_path / "run")
    assert metrics["ckpt_path"] is None  # nothing trained, nothing saved
    saved = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
    assert saved["ckpt_path"] is None
    assert saved["summary"]["aAcc"] == pytest.approx(metrics["test/aAcc"], abs=1e-6)
    for name in ("per_class.csv", "per_class.md", "confusion_matrix.json", "confusion_matrix.png"):
        assert (tmp_path / "run" / "test" / name).stat().st_size > 0, name
