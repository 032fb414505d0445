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

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import rich
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.data.datasets.base import seg_collate
from src.data.io import load_image
from src.data.transforms import build_pipeline
from src.loading.sources import load_model, resolve_backend
from src.metrics import SegMetrics
from src.serve.connected_components import ComponentStats
from src.serve.segmenter import Segmenter, prediction_model, resolve_device, test_cfg_source
from src.serve.writers import PredictionWriter, save_confusion_matrix, save_metrics, write_csv
from src.utils import resolvers  # noqa: F401
from src.utils.config_check import EVAL_RULES, check_config
from src.utils.errors import report_errors
from src.utils.logging import get_logger
from src.utils.rich_utils import print_metrics_table
from src.utils.task import extras
from src.weights.zoo import apply_zoo_weights, zoo_command_line

log = get_logger(__name__)


def build_datamodule(dataset_cfg: DictConfig, batch_size: int, num_workers: int | str) -> Any:
    """The datamodule of a dataset config, with eval's loader settings, its data prepared."""
    datamodule = instantiate(
        dataset_cfg, val_batch_size=batch_size, num_workers=num_workers, persistent_workers=False
    )
    datamodule.prepare_data()
    return datamodule


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    apply_zoo_weights(cfg)  # weights=<zoo name>: ckpt_path = its verified file in $SEGKIT_CACHE/zoo
    device = resolve_device(cfg.device)
    # backend=onnxruntime | torch_export | torchscript (or a .onnx / .pt2 / .torchscript ckpt_path): the exported
    # model through this same loop (src.serve.export)
    # model=<name> dataset=<name>: an MMSegmentation checkpoint's (or replacing a checkpoint's own)
    segmentor, meta = load_model(
        cfg.ckpt_path,
        device,
        cfg.get("backend", "auto"),
        cfg.get("model"),
        cfg.get("dataset"),
        test_cfg_from=test_cfg_source(),  # an MMSegmentation checkpoint: its own test mode, unless set here
    )
    segmentor = prediction_model(segmentor, cfg.get("fold_bn", True), cfg.get("compile", False))
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
    classes = list(datamodule.classes)
    first = getattr(dataset, "datasets", [dataset])[0]  # a concatenated split: its first part
    writer = _prediction_writer(cfg, datamodule, bool(getattr(first, "reduce_zero_label", False)))
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, num_workers=datamodule.loader_workers(), collate_fn=seg_collate
    )
    # the dataset config's ignore label (a checkpoint from before the key existed: SegDataModule's 255)
    metric = SegMetrics(segmentor.num_classes, datamodule.ignore_index, classes).to(device)
    components = (ComponentStats(classes), ComponentStats(classes)) if cfg.get("components") else None
    tta_note = " (TTA)" if cfg.get("tta") else ""
    for batch in tqdm(loader, desc=f"eval {cfg.split}{tta_note}", unit="batch"):
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
    report: dict[str, Any] = metric.report()
    rows, summary = report["per_class"], report["summary"]
    report["confusion_matrix"] = confmat = report["confusion_matrix"].numpy()
    out = Path(cfg.paths.output_dir)
    print_metrics_table(
        rows, summary, title=f"{datamodule.name} {cfg.split}: {Path(cfg.ckpt_path).name}{tta_note}"
    )
    info = {
        "ckpt_path": str(cfg.ckpt_path),
        "backend": resolve_backend(cfg.ckpt_path, cfg.get("backend", "auto")),
        "split": cfg.split,
        "tta": OmegaConf.to_container(cfg.tta) if isinstance(cfg.get("tta"), DictConfig) else cfg.get("tta"),
    }
    save_metrics(out, rows, summary, info)
    save_confusion_matrix(out, confmat, classes)
    if components:
        report["components"] = save_components(out, components[0], components[1])
    return report


def _prediction_writer(cfg: DictConfig, datamodule: Any, reduce_zero_label: bool) -> PredictionWriter:
    """What `out_dir` (class-index PNGs) and `show_dir` (overlays, or panels with `panels=true`) ask for."""
    return PredictionWriter(
        cfg.get("out_dir"),
        cfg.get("show_dir"),
        datamodule.classes,
        datamodule.palette,
        reduce_zero_label=reduce_zero_label,
        opacity=cfg.get("opacity", 0.5),
        panels=cfg.get("panels", False),
        ignore_index=datamodule.ignore_index,
    )


def format_only(cfg: DictConfig, segmentor: Any, datamodule: Any, device: torch.device) -> dict[str, Any]:
    """Predict every image of the split and write the PNGs; no labels are read and no metric is computed."""
    if not cfg.get("out_dir"):
        raise ValueError("format_only=true writes the predictions: give out_dir=<folder>")
    images, reduce_zero_label = split_images(datamodule, cfg.split)
    classes, palette = list(datamodule.classes), datamodule.palette
    writer = _prediction_writer(cfg, datamodule, reduce_zero_label)
    seg = Segmenter(
        segmentor,
        classes,
        palette,
        build_pipeline(datamodule.test_pipeline),
        device,
        cfg.batch_size,
        tta=cfg.get("tta", False),
        fold_bn=False,  # `segmentor` is the prediction model already (folded and compiled as asked)
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
    """The image files of a split, and its `reduce_zero_label`: the split's datasets, listed by their own scan
    without masks (a test set without labels has none)."""
    dataset = datamodule.build_split(split, with_masks=False)
    parts = getattr(dataset, "datasets", [dataset])
    return [img for part in parts for img, _ in part.samples], bool(parts[0].reduce_zero_label)


def save_components(out: Path, pred: ComponentStats, gt: ComponentStats | None) -> list[dict[str, Any]]:
    """Print and save (`components.csv`, `components.json`) the component statistics of predictions (and labels)."""
    rows = []
    for i, row in enumerate(pred.table()):
        merged = {"class": row["class"]} | {f"pred_{k}": v for k, v in row.items() if k != "class"}
        if gt is not None:
            merged |= {f"gt_{k}": v for k, v in gt.table()[i].items() if k != "class"}
        rows.append(merged)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "components.csv", rows)
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, EVAL_RULES)
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    sys.argv = zoo_command_line(sys.argv)  # weights=<zoo name> selects the entry's model and dataset configs
    main()
