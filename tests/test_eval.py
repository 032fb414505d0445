"""`src.eval`: tables, confusion matrix, prediction PNGs (reduce_zero_label undone), overlays, panels, TTA,
component statistics and format_only, on the tiny checkpoint; checked against the API and hand computations."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.data.io import load_image, load_mask
from src.serve.connected_components import component_areas
from src.serve.segmenter import Segmenter
from src.serve.writers import to_label_ids
from tests.helpers import TinyRun, run_eval, write_checkpoint

PER_CLASS = ["IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"]


def _test_masks(run: TinyRun) -> list[np.ndarray]:
    return [load_mask(run.data_root / "ann_dir" / "test" / p.name) for p in run.test_images]


def test_eval_saves_tables_confusion_matrix_predictions_and_panels(tiny_run: TinyRun, tmp_path):
    run_dir, out_dir, show_dir = tmp_path / "run", tmp_path / "pred", tmp_path / "show"
    report = run_eval(
        run_dir, tiny_run.ckpt, "batch_size=2", f"out_dir={out_dir}", f"show_dir={show_dir}", "panels=true",
        "components=true",
    )  # fmt: skip
    classes = Segmenter.from_checkpoint(tiny_run.ckpt).classes
    # the confusion matrix counts every labelled pixel of the test masks once (rows: ground truth)
    saved = json.loads((run_dir / "confusion_matrix.json").read_text())
    cm = np.asarray(saved["matrix"])
    masks = _test_masks(tiny_run)
    assert cm.sum() == sum(int((m != 255).sum()) for m in masks)
    np.testing.assert_array_equal(cm.sum(1), [sum(int((m == c).sum()) for m in masks) for c in range(6)])
    norm = np.asarray(saved["normalized"])
    labelled = cm.sum(1) > 0
    np.testing.assert_allclose(norm[labelled].sum(1), 1.0)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 0
    # the per-class IoU follows from the matrix (hand computation) and is in every table
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    rows = json.loads((run_dir / "metrics.json").read_text())["per_class"]
    assert [r["class"] for r in rows] == classes
    for row, value in zip(rows, iou):
        assert set(PER_CLASS) <= set(row)
        assert row["IoU"] == pytest.approx(value, nan_ok=True)
    assert report["summary"]["mIoU"] == pytest.approx(np.nanmean(iou))
    header = next(csv.reader(open(run_dir / "per_class.csv")))
    assert header == ["class", *PER_CLASS]
    assert (
        "| Class | IoU | Acc | Dice | Fscore | Precision | Recall |" in (run_dir / "per_class.md").read_text()
    )
    # the predictions are the API's masks for the same images; panels are image | ground truth | prediction
    api = Segmenter.from_checkpoint(tiny_run.ckpt)(tiny_run.test_images)
    for name, mask in zip(api.names, api.masks):
        np.testing.assert_array_equal(load_mask(out_dir / "pred" / f"{name}.png"), mask)
        assert load_image(show_dir / f"{name}.png").shape[1] > 3 * 32
    # component statistics of predictions and labels (hand count with the same OpenCV labelling)
    comp = {r["class"]: r for r in csv.DictReader(open(run_dir / "components.csv"))}
    gt_discs = sum(component_areas(m, 6)[1].size for m in masks)
    pred_discs = sum(component_areas(m, 6)[1].size for m in api.masks)
    assert int(comp["disc"]["gt_count"]) == gt_discs and int(comp["disc"]["pred_count"]) == pred_discs


def test_eval_with_tta_gives_the_api_tta_masks(tiny_run: TinyRun, tmp_path):
    out_dir = tmp_path / "pred"
    report = run_eval(tmp_path / "run", tiny_run.ckpt, "tta=true", f"out_dir={out_dir}", "batch_size=4")
    api = Segmenter.from_checkpoint(tiny_run.ckpt, tta=True)(tiny_run.test_images)
    plain = Segmenter.from_checkpoint(tiny_run.ckpt)(tiny_run.test_images)
    assert any((a != b).any() for a, b in zip(api.masks, plain.masks)), "TTA changes some pixels"
    for name, mask in zip(api.names, api.masks):
        np.testing.assert_array_equal(load_mask(out_dir / "pred" / f"{name}.png"), mask)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["tta"] is True
    assert 0.0 <= report["summary"]["mIoU"] <= 1.0


def _variant(run: TinyRun, tmp_path: Path, **test_dataset: object) -> Path:
    """A checkpoint whose dataset config differs in the test split's keys (and prepares nothing)."""
    config = json.loads(json.dumps(run.config))
    config["dataset"]["prepare"] = None
    config["dataset"]["test_dataset"].update(test_dataset)
    return write_checkpoint(tmp_path / "variant.ckpt", config)


def test_reduce_zero_label_is_undone_in_the_written_predictions(tiny_run: TinyRun, tmp_path):
    ckpt = _variant(tiny_run, tmp_path, reduce_zero_label=True)
    out_dir = tmp_path / "pred"
    run_eval(tmp_path / "run", ckpt, f"out_dir={out_dir}")
    api = Segmenter.from_checkpoint(ckpt)(tiny_run.test_images)
    for name, mask in zip(api.names, api.masks):
        np.testing.assert_array_equal(load_mask(out_dir / "pred" / f"{name}.png"), mask.astype(np.int64) + 1)
    np.testing.assert_array_equal(to_label_ids(np.array([[0, 4, 255]], np.uint8), True), [[1, 5, 0]])
    np.testing.assert_array_equal(to_label_ids(np.array([[0, 4]], np.uint8), False), [[0, 4]])


def test_format_only_reads_no_masks_writes_one_png_per_image_and_no_metrics(tiny_run: TinyRun, tmp_path):
    root = tmp_path / "unlabelled"
    shutil.copytree(tiny_run.data_root / "img_dir" / "test", root / "img_dir" / "test")  # images only
    (root / "test.txt").write_text("test_0001\ntest_0003\n")
    ckpt = _variant(tiny_run, tmp_path, data_root=str(root), split="test.txt", reduce_zero_label=True)
    out_dir, run_dir = tmp_path / "pred", tmp_path / "run"
    report = run_eval(
        run_dir, ckpt, "format_only=true", f"out_dir={out_dir}", f"show_dir={tmp_path / 'show'}"
    )
    written = sorted(p.name for p in (out_dir / "pred").glob("*.png"))
    assert written == ["test_0001.png", "test_0003.png"] and report["predictions"] == 2
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "confusion_matrix.json").exists()
    images = [root / "img_dir" / "test" / n for n in written]
    for path, mask in zip(images, Segmenter.from_checkpoint(ckpt)(images).masks):
        np.testing.assert_array_equal(load_mask(out_dir / "pred" / path.name), mask.astype(np.int64) + 1)
        assert (tmp_path / "show" / path.name).is_file()
    with pytest.raises(ValueError, match="format_only=true writes the predictions: give out_dir"):
        run_eval(run_dir, ckpt, "format_only=true")


def test_eval_of_a_checkpoint_for_another_class_count_is_a_clear_error(tiny_run: TinyRun, tmp_path):
    config = json.loads(json.dumps(tiny_run.config))
    config["model"]["decode_head"]["num_classes"] = 4
    ckpt = write_checkpoint(tmp_path / "four.ckpt", config)
    with pytest.raises(ValueError, match="has 6 classes but the checkpoint's model predicts 4"):
        run_eval(tmp_path / "run", ckpt)
