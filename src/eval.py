"""Evaluate a checkpoint: `python -m src.eval ckpt_path=<file> [split=test] [out_dir=...] [show_dir=...]`.

Metrics are computed at each image's original resolution (as MMSegmentation scores), printed as a per-class
table and saved as JSON, CSV and Markdown in the run directory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.checkpoint import load_segmentor
from src.data.datasets.base import seg_collate
from src.data.io import load_image
from src.inference import Segmenter
from src.metrics import SegMetrics
from src.utils import resolvers  # noqa: F401
from src.utils.logging import get_logger
from src.utils.rich_utils import print_metrics_table
from src.utils.task import extras
from src.visualization import overlay

log = get_logger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_eval_dataset(
    dataset_cfg: DictConfig, split: str, batch_size: int, num_workers: int
) -> tuple[Any, Any]:
    """The datamodule and the dataset of `split` in test mode (test pipeline, masks at original size)."""
    dataset_cfg = dataset_cfg.copy()
    with open_dict(dataset_cfg):
        dataset_cfg.val_batch_size = batch_size
        dataset_cfg.num_workers = num_workers
        dataset_cfg.persistent_workers = False
    datamodule = instantiate(dataset_cfg)
    datamodule.prepare_data()
    dataset = datamodule.build_split(split, pipeline=datamodule.test_pipeline, test_mode=True)
    return datamodule, dataset


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    segmentor, meta = load_segmentor(cfg.ckpt_path, device)
    dataset_cfg = cfg.dataset if cfg.get("dataset") else OmegaConf.create(meta["config"]).dataset
    datamodule, dataset = build_eval_dataset(dataset_cfg, cfg.split, cfg.batch_size, cfg.num_workers)
    if len(datamodule.classes) != segmentor.num_classes:
        raise ValueError(
            f"dataset '{datamodule.name}' has {len(datamodule.classes)} classes but the checkpoint's model "
            f"predicts {segmentor.num_classes}"
        )
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=seg_collate
    )
    metric = SegMetrics(segmentor.num_classes, class_names=datamodule.classes).to(device)
    for batch in tqdm(loader, desc=f"eval {cfg.split}", unit="batch"):
        metas = batch["metas"]
        per_image = segmentor.predict_images(
            [x.to(device) for x in batch["inputs"]],
            [m["img_shape"] for m in metas],
            [m["ori_shape"] for m in metas],
        )
        for lg, mask, m in zip(per_image, batch["masks"], metas):
            pred = lg.argmax(0)
            metric.update(pred, mask.to(device))
            if cfg.out_dir or cfg.show_dir:
                _save_prediction(cfg, datamodule.palette, pred.to(torch.uint8).cpu().numpy(), m)
    results = metric.compute()
    rows, summary = metric.per_class_table(results), metric.summary(results)
    print_metrics_table(rows, summary, title=f"{datamodule.name} {cfg.split}: {Path(cfg.ckpt_path).name}")
    save_results(Path(cfg.paths.output_dir), rows, summary, cfg)
    return {"summary": summary, "per_class": rows}


def _save_prediction(cfg: DictConfig, palette: list, mask: Any, meta: dict[str, Any]) -> None:
    name = Path(meta["img_path"]).stem
    if cfg.out_dir:
        Segmenter.save(Path(cfg.out_dir), name, mask, None)
    if cfg.show_dir:
        vis = overlay(load_image(meta["img_path"]), mask, palette, cfg.opacity)
        Segmenter.save(Path(cfg.show_dir), name, mask, vis)


def save_results(out: Path, rows: list[dict], summary: dict[str, float], cfg: DictConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"ckpt_path": str(cfg.ckpt_path), "split": cfg.split, "summary": summary, "per_class": rows}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keys = [k for k in rows[0] if k != "class"]
    lines = ["| Class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + " | ".join([r["class"]] + [f"{100 * r[k]:.2f}" for k in keys]) + " |" for r in rows]
    lines += ["", " | ".join(f"{k}: {100 * v:.2f}" for k, v in summary.items())]
    (out / "per_class.md").write_text("\n".join(lines) + "\n")
    log.info(f"Metrics saved in {out} (metrics.json, per_class.csv, per_class.md)")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
