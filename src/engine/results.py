"""Run records and results tables, as MMSegmentation's model-zoo tables.

`src.train` writes a record, `results.json`, into every run folder: what the run was (method, backbone, crop,
iterations, batch, devices, Hydra config name and overrides) and what it measured (final metrics, and the
training memory and test speed of `RunStats`). `collect` reads the records under a folder (a sweep, or all of
`logs/train/runs`), `markdown_table` / `write_csv` lay them out (`scripts/collect_results.py`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.utils.files import atomic_write_text

RECORD_NAME = "results.json"
RECORD_VERSION = 1
#: keys every record must have (the table's columns come from them)
REQUIRED_KEYS = ("run_name", "method", "backbone", "crop", "iters", "metrics")
TABLE_COLUMNS = (
    "Method",
    "Backbone",
    "Crop Size",
    "Lr schd",
    "Mem (GB)",
    "Inf time (fps)",
    "mIoU",
    "mDice",
    "config",
)


def split_model_name(name: str) -> tuple[str, str]:
    """(method, backbone) from a model config name, MMSegmentation's `{algo}_{backbone}` convention.

    `pspnet_r18-d8` -> (pspnet, r18-d8); `smp_unet_r18` -> (unet, r18) (the smp architecture and encoder);
    `unet-s5-d16_fcn` -> (fcn, unet-s5-d16) (MMSegmentation's UNet configs name the backbone first).
    """
    parts = str(name).split("_")
    if parts[0] == "smp" and len(parts) >= 3:
        return parts[1], "_".join(parts[2:])
    if len(parts) >= 2 and parts[0].startswith("unet-"):
        return "_".join(parts[1:]), parts[0]
    if len(parts) >= 2:
        return parts[0], "_".join(parts[1:])
    return str(name), "-"


def hydra_job_info() -> dict[str, Any]:
    """The Hydra job's config name, overrides, experiment and job number (sweeps); empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = hc.runtime.get("choices") or {}
    mode = hc.get("mode")
    return {
        "config_name": hc.job.get("config_name"),
        "overrides": list(hc.overrides.task),
        "experiment": choices.get("experiment"),
        "mode": getattr(mode, "name", None if mode is None else str(mode)),
        "job_num": hc.job.get("num") if getattr(mode, "name", "") == "MULTIRUN" else None,
    }


def build_run_record(
    cfg: DictConfig, metrics: dict[str, Any], stats: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of a finished run: its identity (from the config and Hydra) and its measurements."""
    model_name = str(cfg.model.get("name") or cfg.model._target_.rsplit(".", 1)[-1])
    method, backbone = split_model_name(model_name)
    crop = (
        OmegaConf.to_container(cfg.dataset.crop_size, resolve=True) if cfg.dataset.get("crop_size") else None
    )
    trainer = cfg.runtime.trainer
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "run_name": cfg.get("run_name"),
        "task_name": cfg.get("task_name"),  # "debug" for the debug presets (conf/debug/)
        "run_dir": str(cfg.paths.output_dir),
        "model": model_name,
        "method": method,
        "backbone": backbone,
        "dataset": cfg.dataset.get("name"),
        "crop": "x".join(str(c) for c in crop) if isinstance(crop, list) else crop,
        "iters": int(cfg.schedule.max_steps),
        "batch_size": int(cfg.dataset.batch_size),
        "devices": trainer.get("devices"),
        "num_nodes": trainer.get("num_nodes", 1),
        "lr": cfg.schedule.get("lr"),
        "seed": cfg.get("seed"),
        "optimized_metric": cfg.get("optimized_metric"),
        "mmseg_config": cfg.get("mmseg_config"),  # the MMSegmentation config the run reproduces, if any
        "config_file": str(Path(cfg.paths.output_dir) / "config.yaml"),
        **hydra_job_info(),
        **stats,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
    }
    return record | (extra or {})


def write_run_record(record: dict[str, Any], run_dir: str | Path) -> Path:
    return atomic_write_text(
        Path(run_dir) / RECORD_NAME, json.dumps(record, indent=2, default=str, allow_nan=True) + "\n"
    )


# ------------------------------------------------------------------ reading
def load_record(path: str | Path) -> dict[str, Any]:
    """One record, checked: a file that is not JSON or lacks a key of `REQUIRED_KEYS` is an error naming both."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON run record ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object (a run record), got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(
            f"{path}: run record lacks {missing}; expected the keys {list(REQUIRED_KEYS)} that src.train writes"
        )
    if not isinstance(record["metrics"], dict):
        raise ValueError(f"{path}: 'metrics' must map metric names to numbers, got {record['metrics']!r}")
    record["_path"] = str(path)
    return record


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every run record under `root` (recursively), sweep jobs in job order, other runs by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; expected a sweep folder or a folder of run folders")
    paths = sorted(root.rglob(RECORD_NAME))
    if not paths:
        raise FileNotFoundError(
            f"{root}: no run records ({RECORD_NAME}) in this folder or below; every `python -m src.train` run "
            "writes one into its run folder when it ends (a sweep: logs/train/multiruns/<time>/)"
        )
    records = [load_record(p) for p in paths]
    return sorted(records, key=lambda r: (_job_order(r), _natural(r["_path"])))


def _job_order(record: dict[str, Any]) -> int:
    num = record.get("job_num")
    return int(num) if isinstance(num, int) else 1 << 30


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# ------------------------------------------------------------------- tables
def metric(record: dict[str, Any], name: str, split: str = "test") -> tuple[float | None, str | None]:
    """`<split>/<name>`, else the last validation's `val/<name>`; (value, the split it came from)."""
    for source in dict.fromkeys((split, "val")):
        value = record["metrics"].get(f"{source}/{name}")
        if isinstance(value, int | float) and not math.isnan(value):
            return float(value), source
    return None, None


def common_overrides(records: list[dict[str, Any]]) -> list[str]:
    """The overrides every run of several has (a sweep's fixed ones); none for a single run."""
    if len(records) < 2:
        return []
    first = list(records[0].get("overrides") or [])
    return [o for o in first if all(o in (r.get("overrides") or []) for r in records[1:])]


def table_rows(records: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """One row per run with the table's columns as numbers (metrics in percent) and where they came from.

    `config` holds the overrides that tell the run apart from the others (a sweep's parameters); the ones they
    all share are in `common_overrides`."""
    common = set(common_overrides(records))
    rows = []
    for r in records:
        miou, miou_split = metric(r, "mIoU", split)
        mdice, _ = metric(r, "mDice", split)
        rows.append(
            {
                "Method": r["method"],
                "Backbone": r["backbone"],
                "Crop Size": r["crop"],
                "Lr schd": r["iters"],
                "Mem (GB)": r.get("train_memory_gb"),
                "mem_kind": r.get("train_memory_kind"),
                "Inf time (fps)": r.get("test_fps"),
                "mIoU": None if miou is None else 100 * miou,
                "mDice": None if mdice is None else 100 * mdice,
                "split": miou_split,
                "config": " ".join(o for o in r.get("overrides") or [] if o not in common) or "(defaults)",
                "overrides": " ".join(r.get("overrides") or []),
                "run_name": r["run_name"],
                "run_dir": str(Path(r["_path"]).parent),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], split: str = "test", common: Sequence[str] = ()) -> str:
    """MMSegmentation's model-zoo layout; metrics in percent, taken from `split` (a `†` marks a run that has
    no such metrics, shown with its last validation's instead); `common`: the overrides of every run, noted
    below the table."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    cpu = fallback = False
    for row in rows:
        mem = _num(row["Mem (GB)"])
        if row["mem_kind"] == "cpu_peak_rss" and mem != "-":
            mem += "*"
            cpu = True
        mark = ""
        if row["split"] is not None and row["split"] != split:
            mark, fallback = "†", True
        cells = [
            str(row["Method"]),
            str(row["Backbone"]),
            str(row["Crop Size"]),
            str(row["Lr schd"]),
            mem,
            _num(row["Inf time (fps)"]),
            _num(row["mIoU"]) + mark,
            _num(row["mDice"]) + mark,
            f"`{row['config']}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"mIoU and mDice in percent on the {split} split."]
    if fallback:
        notes.append(f"†: the run has no {split} metrics; its last validation's.")
    if cpu:
        notes.append("*: peak resident memory of the CPU process (not GPU memory).")
    if common:
        notes.append("Overrides of every run: `" + " ".join(common) + "`.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The table's rows as CSV (`src.serve.writers.write_csv`, the one CSV writer)."""
    from src.serve.writers import write_csv as _write_csv  # lazily: it brings OpenCV and the plotting along

    _write_csv(path, rows)


def _num(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
