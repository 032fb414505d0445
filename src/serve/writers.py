"""Result files, written the same way by `src.eval`, the test report after training
(`src.engine.callbacks.test_outputs`) and the inference API (`src.serve.segmenter`):

- metrics: `metrics.json` (the caller's `info`, the means and the per-class rows), `per_class.csv`,
  `per_class.md` (one Markdown table, also what TensorBoard shows);
- the confusion matrix: `confusion_matrix.json` (raw pixel counts and rows normalised to 1), `confusion_matrix.png`;
- predictions: class-index PNGs (`write_mask`, with `reduce_zero_label` undone by `to_label_ids`) and colour
  overlays or panels (`write_rgb`, `PredictionWriter`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.io import load_image
from src.metrics import PER_CLASS_KEYS
from src.serve.visualization import normalized_confusion, overlay, plot_confusion_matrix, prediction_panel
from src.utils.files import atomic_write_text
from src.utils.formatting import percent
from src.utils.logging import get_logger

log = get_logger(__name__)


# ------------------------------------------------------------------ metrics
def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV (written atomically), the first row's keys as header; the folder is made."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def markdown_table(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, float]) -> str:
    """Per-class metrics in percent as a Markdown table, the means below it (NaN shown as '-')."""
    keys = [k for k in PER_CLASS_KEYS if k in rows[0]]
    lines = ["| Class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + " | ".join([str(r["class"])] + [percent(r[k]) for k in keys]) + " |" for r in rows]
    lines += ["", " | ".join(f"{k}: {percent(v)}" for k, v in summary.items())]
    return "\n".join(lines) + "\n"


def save_metrics(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, float],
    info: Mapping[str, Any] | None = None,
) -> None:
    """`metrics.json` (`info`, e.g. checkpoint, split and TTA, then `summary` and `per_class`), `per_class.csv`
    and `per_class.md` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**(info or {}), "summary": dict(summary), "per_class": list(rows)}
    atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2))
    write_csv(out / "per_class.csv", rows)
    atomic_write_text(out / "per_class.md", markdown_table(rows, summary))
    log.info(f"Metrics saved in {out} (metrics.json, per_class.csv, per_class.md)")


def save_confusion_matrix(out: str | Path, confmat: np.ndarray, classes: Sequence[str]) -> None:
    """`confusion_matrix.json` (raw pixel counts and row-normalised) and `confusion_matrix.png` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "classes": list(classes),
        "rows": "ground truth",
        "columns": "prediction",
        "matrix": np.asarray(confmat).astype(int).tolist(),
        "normalized": normalized_confusion(confmat).tolist(),
    }
    atomic_write_text(out / "confusion_matrix.json", json.dumps(payload))
    plot_confusion_matrix(confmat, list(classes), str(out / "confusion_matrix.png"))
    log.info(f"Confusion matrix saved in {out} (confusion_matrix.png, confusion_matrix.json)")


# -------------------------------------------------------------- predictions
def to_label_ids(mask: np.ndarray, reduce_zero_label: bool, ignore_index: int = 255) -> np.ndarray:
    """Training labels -> the dataset's stored labels: with `reduce_zero_label`, k -> k + 1 and ignore -> 0."""
    if not reduce_zero_label:
        return mask
    out = mask.astype(np.int64) + 1
    out[mask == ignore_index] = 0
    return out.astype(np.uint8 if out.max(initial=0) <= 255 else np.uint16)


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """A class-index map as a PNG (8 or 16 bit by its dtype); the folder is made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask)
    return path


def write_rgb(path: str | Path, image: np.ndarray) -> Path:
    """An RGB picture (overlay, panel) as an image file; the folder is made."""
    return write_mask(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


class PredictionWriter:
    """Writes, per image, what `out_dir` and `show_dir` ask for (either may be None).

    `out_dir/pred/<name>.png`: class indices (as the dataset stores labels: `reduce_zero_label` undone);
    `show_dir/<name>.png`: the prediction overlaid on the image, or (`panels`) image | ground truth | prediction.
    """

    def __init__(
        self,
        out_dir: str | Path | None,
        show_dir: str | Path | None,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        reduce_zero_label: bool = False,
        opacity: float = 0.5,
        panels: bool = False,
        ignore_index: int = 255,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir else None
        self.show_dir = Path(show_dir) if show_dir else None
        self.classes, self.palette = list(classes), palette
        self.reduce_zero_label, self.opacity, self.panels = reduce_zero_label, opacity, panels
        self.ignore_index = ignore_index

    @property
    def active(self) -> bool:
        return self.out_dir is not None or self.show_dir is not None

    def __call__(
        self,
        pred: np.ndarray,
        img_path: str | Path,
        gt: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> None:
        name = Path(img_path).stem
        if self.out_dir is not None:
            labels = to_label_ids(pred, self.reduce_zero_label, self.ignore_index)
            write_mask(self.out_dir / "pred" / f"{name}.png", labels)
        if self.show_dir is not None:
            image = load_image(img_path) if image is None else image
            if self.panels:
                vis = prediction_panel(
                    image, pred, self.palette, self.classes, gt=gt, opacity=self.opacity,
                    ignore_index=self.ignore_index,
                )  # fmt: skip
            else:
                vis = overlay(image, pred, self.palette, self.opacity)
            write_rgb(self.show_dir / f"{name}.png", vis)
