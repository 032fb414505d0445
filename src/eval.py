"""Evaluate a checkpoint: `python -m src.eval ckpt_path=<file> [split=test] [tta=true] [out_dir=...] [show_dir=...]`.

Metrics are computed at each image's original resolution (as MMSegmentation scores) and saved in the run
directory: the per-class table (printed, and `metrics.json`, `per_class.csv`, `per_class.md`), the confusion
matrix (`confusion_matrix.json` raw counts, `confusion_matrix.png` rows normalised to 1) and, with
`components=true`, connected-component statistics per class (`components.csv`, `components.json`).

`out_dir` receives the predicted masks as PNGs with `reduce_zero_label` undone (MMSegmentation's submission
format for ADE20K), `show_dir` colour overlays (or image | ground truth | prediction panels, `panels=true`), and
`format_only=true` only writes predictions, for test sets without labels.
"""

from __future__ import annotations

import csv
import inspect
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import rich
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.table import Table
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.components import ComponentStats
from src.data.datasets.base import seg_collate
from src.data.io import load_image
from src.data.transforms import build_pipeline
from src.inference import Segmenter, load_model, resolve_backend
from src.metrics import SegMetrics
from src.utils import resolvers  # noqa: F401
from src.utils.config_check import EVAL_RULES, check_config
from src.utils.errors import report_errors
from src.utils.logging import get_logger
from src.utils.rich_utils import print_metrics_table
from src.utils.task import extras
from src.visualization import normalized_confusion, overlay, plot_confusion_matrix, prediction_panel
from src.weights.zoo import apply_zoo_weights, zoo_command_line

log = get_logger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_datamodule(dataset_cfg: DictConfig, batch_size: int, num_workers: int) -> Any:
    """The datamodule of a dataset config, with eval's loader settings, its data prepared."""
    dataset_cfg = dataset_cfg.copy()
    with open_dict(dataset_cfg):
        dataset_cfg.val_batch_size = batch_size
        dataset_cfg.num_workers = num_workers
        dataset_cfg.persistent_workers = False
    datamodule = instantiate(dataset_cfg)
    datamodule.prepare_data()
    return datamodule


def to_label_ids(mask: np.ndarray, reduce_zero_label: bool) -> np.ndarray:
    """Training labels -> the dataset's stored labels: with `reduce_zero_label`, k -> k + 1 and ignore -> 0."""
    if not reduce_zero_label:
        return mask
    out = mask.astype(np.int64) + 1
    out[mask == 255] = 0
    return out.astype(np.uint8 if out.max(initial=0) <= 255 else np.uint16)


class PredictionWriter:
    """Writes, per image, what `out_dir` and `show_dir` ask for.

    `out_dir/pred/<name>.png`: class indices (as the dataset stores labels: `reduce_zero_label` undone);
    `show_dir/<name>.png`: the prediction overlaid on the image, or (`panels`) image | ground truth | prediction.
    """

    def __init__(self, cfg: DictConfig, classes: list[str], palette: list, reduce_zero_label: bool) -> None:
        self.out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else None
        self.show_dir = Path(cfg.show_dir) if cfg.get("show_dir") else None
        self.classes, self.palette = classes, palette
        self.opacity = cfg.get("opacity", 0.5)
        self.panels = cfg.get("panels", False)
        self.reduce_zero_label = reduce_zero_label
        for folder in (self.out_dir and self.out_dir / "pred", self.show_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

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
            cv2.imwrite(
                str(self.out_dir / "pred" / f"{name}.png"), to_label_ids(pred, self.reduce_zero_label)
            )
        if self.show_dir is not None:
            image = load_image(img_path) if image is None else image
            if self.panels:
                vis = prediction_panel(image, pred, self.palette, self.classes, gt=gt, opacity=self.opacity)
            else:
                vis = overlay(image, pred, self.palette, self.opacity)
            cv2.imwrite(str(self.show_dir / f"{name}.png"), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    apply_zoo_weights(cfg)  # weights=<zoo name>: ckpt_path = its verified file in $SEGKIT_CACHE/zoo
    device = resolve_device(cfg.device)
    # backend=onnxruntime | torch_export | torchscript (or a .onnx / .pt2 / .torchscript ckpt_path): the exported
    # model through this same loop (src.export)
    # model=<name> dataset=<name>: an MMSegmentation checkpoint's (or replacing a checkpoint's own)
    segmentor, meta = load_model(
        cfg.ckpt_path, device, cfg.get("backend", "auto"), cfg.get("model"), cfg.get("dataset")
    )
    dataset_cfg = cfg.dataset if cfg.get("dataset") else OmegaConf.create(meta["config"]).dataset
    datamodule = build_datamodule(dataset_cfg, cfg.batch_size, cfg.num_workers)
    if len(datamodule.classes) != segmentor.num_classes:
        raise ValueError(
            f"dataset '{datamodule.name}' has {len(datamodule.classes)} classes but the checkpoint's model "
            f"predicts {segmentor.num_classes}"
        )
    if cfg.get("format_only", False):
        return format_only(cfg, segmentor, datamodule, device)

    dataset = datamodule.build_split(cfg.split, pipeline=datamodule.test_pipeline, test_mode=True)
    classes, palette = list(datamodule.classes), datamodule.palette
    writer = PredictionWriter(cfg, classes, palette, bool(_dataset_attr(dataset, "reduce_zero_label", False)))
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=seg_collate
    )
    # the dataset config's ignore label (a checkpoint from before the key existed: SegDataModule's 255)
    metric = SegMetrics(segmentor.num_classes, ignore_index=datamodule.ignore_index, class_names=classes).to(
        device
    )
    components = (ComponentStats(classes), ComponentStats(classes)) if cfg.get("components") else None
    desc = f"eval {cfg.split}" + (" (TTA)" if cfg.get("tta") else "")
    for batch in tqdm(loader, desc=desc, unit="batch"):
        metas = batch["metas"]
        per_image = segmentor.predict_images(
            [x.to(device) for x in batch["inputs"]],
            [m["img_shape"] for m in metas],
            [m["ori_shape"] for m in metas],
            tta=cfg.get("tta", False),
        )
        for lg, mask, m in zip(per_image, batch["masks"], metas):
            pred = lg.argmax(0)
            metric.update(pred, mask.to(device))
            if writer.active or components:
                pred_np, gt_np = pred.to(torch.uint8).cpu().numpy(), mask.numpy()
                writer(pred_np, m["img_path"], gt=gt_np)
                if components:
                    components[0].update(pred_np)
                    components[1].update(gt_np)
    results = metric.compute()
    rows, summary = metric.per_class_table(results), metric.summary(results)
    out = Path(cfg.paths.output_dir)
    title = f"{datamodule.name} {cfg.split}: {Path(cfg.ckpt_path).name}" + (
        " (TTA)" if cfg.get("tta") else ""
    )
    print_metrics_table(rows, summary, title=title)
    save_results(out, rows, summary, cfg)
    confmat = metric.confmat.cpu().numpy()
    save_confusion_matrix(out, confmat, classes)
    report: dict[str, Any] = {"summary": summary, "per_class": rows, "confusion_matrix": confmat}
    if components:
        report["components"] = save_components(out, components[0], components[1])
    return report


def format_only(cfg: DictConfig, segmentor: Any, datamodule: Any, device: torch.device) -> dict[str, Any]:
    """Predict every image of the split and write the PNGs; no labels are read and no metric is computed."""
    if not cfg.get("out_dir"):
        raise ValueError("format_only=true writes the predictions: give out_dir=<folder>")
    images, reduce_zero_label = split_images(datamodule, cfg.split)
    classes, palette = list(datamodule.classes), datamodule.palette
    writer = PredictionWriter(cfg, classes, palette, reduce_zero_label)
    seg = Segmenter(
        segmentor,
        classes,
        palette,
        build_pipeline(datamodule.test_pipeline),
        device,
        cfg.batch_size,
        tta=cfg.get("tta", False),
    )
    components = ComponentStats(classes) if cfg.get("components") else None
    for start in tqdm(range(0, len(images), cfg.batch_size), desc=f"predict {cfg.split}", unit="batch"):
        paths = images[start : start + cfg.batch_size]
        arrays = [load_image(p) for p in paths]
        for path, image, (mask, _) in zip(paths, arrays, seg.predict_arrays(arrays)):
            writer(mask, path, image=image)
            if components is not None:
                components.update(mask)
    log.info(f"format_only: {len(images)} predictions written to {Path(cfg.out_dir) / 'pred'}; no metrics")
    report: dict[str, Any] = {"predictions": len(images), "out_dir": str(cfg.out_dir)}
    if components is not None:
        report["components"] = save_components(Path(cfg.paths.output_dir), components, None)
    return report


def split_images(datamodule: Any, split: str) -> tuple[list[Path], bool]:
    """The image files of a split, and its `reduce_zero_label`, from the split's dataset config alone.

    `BaseSegDataset` requires a mask for every image, which a test set without labels does not have, so the
    list is made here from the keys the dataset reads (`data_root`, `img_dir`, `img_suffix`, `split` file),
    taking the dataset class's defaults for the keys its config leaves out.
    """
    fns = getattr(datamodule, "dataset_fns", {}).get(split)
    if not fns:
        raise ValueError(f"split='{split}': the dataset config has no such split (train, val or test)")
    paths: list[Path] = []
    reduce_zero_label = False
    for fn in fns:
        kw = _dataset_kwargs(fn)
        root = Path(kw["data_root"])
        img_dir, suffix = root / kw.get("img_dir", ""), kw.get("img_suffix", ".jpg")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"split '{split}': image folder '{img_dir}' does not exist")
        if kw.get("split"):
            split_file = Path(kw["split"]) if Path(kw["split"]).is_absolute() else root / kw["split"]
            if not split_file.is_file():
                raise FileNotFoundError(f"split '{split}': split file '{split_file}' does not exist")
            names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
            found = [img_dir / f"{n}{suffix}" for n in names]
            missing = [p for p in found if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"split '{split}': {len(missing)} listed images are missing, e.g. {missing[0]}"
                )
        else:
            found = sorted(img_dir.rglob(f"*{suffix}"))
        if not found:
            raise FileNotFoundError(f"split '{split}': no '*{suffix}' images in '{img_dir}'")
        paths += found
        reduce_zero_label = bool(kw.get("reduce_zero_label", False))
    return paths, reduce_zero_label


def _dataset_kwargs(fn: Any) -> dict[str, Any]:
    """The keyword arguments a dataset partial would be built with: its class's defaults, then its own."""
    if not (isinstance(fn, partial) and isinstance(fn.func, type)):
        raise ValueError(
            f"format_only needs the split's dataset as a config partial (`_partial_: true`), got {fn!r}"
        )
    kwargs: dict[str, Any] = {}
    for klass in reversed(fn.func.__mro__):
        if "__init__" in vars(klass):
            for name, param in inspect.signature(klass.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    kwargs[name] = param.default
    kwargs.update(fn.keywords)
    if "data_root" not in kwargs:
        raise ValueError(f"the dataset config of {fn.func.__name__} has no data_root")
    return kwargs


def _dataset_attr(dataset: Any, name: str, default: Any) -> Any:
    """An attribute of a dataset, or of the first part of a concatenated one."""
    parts = getattr(dataset, "datasets", [dataset])
    return getattr(parts[0], name, default)


def save_results(out: Path, rows: list[dict], summary: dict[str, float], cfg: DictConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "ckpt_path": str(cfg.ckpt_path),
        "backend": resolve_backend(cfg.ckpt_path, cfg.get("backend", "auto")),
        "split": cfg.split,
        "tta": OmegaConf.to_container(cfg.tta) if isinstance(cfg.get("tta"), DictConfig) else cfg.get("tta"),
        "summary": summary,
        "per_class": rows,
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    _write_csv(out / "per_class.csv", rows)
    keys = [k for k in rows[0] if k != "class"]
    lines = ["| Class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + " | ".join([r["class"]] + [f"{100 * r[k]:.2f}" for k in keys]) + " |" for r in rows]
    lines += ["", " | ".join(f"{k}: {100 * v:.2f}" for k, v in summary.items())]
    (out / "per_class.md").write_text("\n".join(lines) + "\n")
    log.info(f"Metrics saved in {out} (metrics.json, per_class.csv, per_class.md)")


def save_confusion_matrix(out: Path, confmat: np.ndarray, classes: list[str]) -> None:
    """`confusion_matrix.json` (raw pixel counts and row-normalised) and `confusion_matrix.png`."""
    payload = {
        "classes": classes,
        "rows": "ground truth",
        "columns": "prediction",
        "matrix": confmat.astype(int).tolist(),
        "normalized": normalized_confusion(confmat).tolist(),
    }
    (out / "confusion_matrix.json").write_text(json.dumps(payload))
    plot_confusion_matrix(confmat, classes, str(out / "confusion_matrix.png"))
    log.info(f"Confusion matrix saved in {out} (confusion_matrix.png, confusion_matrix.json)")


def save_components(out: Path, pred: ComponentStats, gt: ComponentStats | None) -> list[dict[str, Any]]:
    """Print and save (`components.csv`, `components.json`) the component statistics of predictions (and labels)."""
    rows = []
    for i, row in enumerate(pred.table()):
        merged = {"class": row["class"]} | {f"pred_{k}": v for k, v in row.items() if k != "class"}
        if gt is not None:
            merged |= {f"gt_{k}": v for k, v in gt.table()[i].items() if k != "class"}
        rows.append(merged)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "components.csv", rows)
    (out / "components.json").write_text(json.dumps({"images": pred.num_images, "per_class": rows}, indent=2))
    # printed narrow (one line per class and source) so that it fits a terminal; the files have one row per class
    table = Table(title=f"Connected components per class ({pred.num_images} images; areas in pixels)")
    for key in ("class", "in", "count", "per image", "min area", "mean area", "max area"):
        table.add_column(key, justify="left" if key in ("class", "in") else "right", no_wrap=True)
    sources = [("pred", "pred")] + ([("gt", "label")] if gt is not None else [])
    formats = {
        "count": "{:d}",
        "per_image": "{:.2f}",
        "area_min": "{:.0f}",
        "area_mean": "{:.1f}",
        "area_max": "{:.0f}",
    }
    for row in rows:
        for prefix, label in sources:
            cells = [_fmt(row[f"{prefix}_{k}"], f) for k, f in formats.items()]
            table.add_row(row["class"] if prefix == "pred" else "", label, *cells)
    rich.print(table)
    log.info(f"Component statistics saved in {out} (components.csv, components.json)")
    return rows


def _fmt(value: Any, fmt: str) -> str:
    return "-" if isinstance(value, float) and value != value else fmt.format(value)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, EVAL_RULES)
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    sys.argv = zoo_command_line(sys.argv)  # weights=<zoo name> selects the entry's model and dataset configs
    main()
