"""Train one recipe with MMSegmentation's own Runner and with this project, side by side, and compare.

    python scripts/compare_with_mmseg.py train drive --mmseg-python /path/to/mmseg-venv/bin/python \\
        [--iters 500] [--seeds 0 1 2] [--jobs 2] [--threads 1] [--device cpu] [--out comparisons]
    python scripts/compare_with_mmseg.py train stanford ... [--iters 400] [--seeds 0 1]
    python scripts/compare_with_mmseg.py predict convnext --mmseg-python ... [--image photo.png]

`train`: both sides train the case's recipe on the same converted data for the same reduced budget (the schedule
shortened to it: `max_iters` and the poly decay's end), one process each with `--threads` threads, and test once
at the end. Before training, the recipe each side will run is compared field by field (`src.recipes`). It prints
the test metric per seed with mean and range, seconds per iteration, writes `summary.json`, `table.md` and
`loss.png` (both loss curves) under `--out/<case>/`. A run that finished is not run again (an interrupted
comparison continues); `--iters` as MMSegmentation's full schedule on GPUs: `--iters 40000 --device cuda`.

Cases:
- drive: UNet-S5-D16 + FCN, `experiment=unet_drive` = MMSegmentation's configs/unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py;
- stanford: PSPNet-R18-D8 from scratch on Stanford Background (8 classes, 256x256 crops, batch 8) as
  `experiment=pspnet_stanford_background model=pspnet_r18-d8`, and in MMSegmentation as its "new dataset" tutorial
  builds it (the Cityscapes PSPNet-R18 config with the dataset, classes, crop and pipelines replaced).

`predict`: a checkpoint made by MMSegmentation (its model of that config, initialised by MMSegmentation with
random BatchNorm statistics so that the output is not flat, saved with its config in `meta` as MMEngine's Runner
does) is predicted by MMSegmentation's `inference_model` and by this project's `Segmenter` (which reads the test
mode from the checkpoint); it prints the share of equal pixels, also with this project's model in whole mode.

MMSegmentation is installed outside the project (its own Python, `../shared/mmseg/README.md` says how);
`--mmseg-python` or `$MMSEG_PYTHON` points at it. The data come from `--source` (DRIVE's folder or zips,
`iccv09Data.tar.gz`; default `$SEGKIT_SHARED_DATA`, else `../shared/data`), converted once into `--out/data/`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEGKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MMSEG_SIDE = ROOT / "scripts" / "tools" / "mmseg_side.py"  # runs in MMSegmentation's Python

STANFORD_CLASSES = ["sky", "tree", "road", "grass", "water", "bldg", "mntn", "fg obj"]
STANFORD_PALETTE = [
    [128, 128, 128],
    [129, 127, 38],
    [120, 69, 125],
    [53, 125, 34],
    [0, 11, 123],
    [118, 20, 12],
    [122, 81, 25],
    [241, 134, 51],
]


@dataclass
class Case:
    name: str
    dataset: str  # converter name (scripts/convert_dataset.py)
    source: str  # under the shared data folder
    ours: list[str]  # src.train overrides
    mmseg_config: str
    metric: str  # the compared test metric
    iters: int
    seeds: list[int]
    mmseg_set: dict = field(default_factory=dict)  # dotted config keys replaced on MMSegmentation's side
    mmseg_dataset: dict | None = None  # a folder dataset registered on MMSegmentation's side


def stanford_mmseg_set(data_root: str) -> tuple[dict, dict]:
    """The tutorial's changes to the Cityscapes PSPNet-R18-D8 config, with this project's Stanford recipe."""
    crop = [256, 256]
    scale = [320, 240]
    train = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations"},
        {"type": "RandomResize", "scale": scale, "ratio_range": [0.5, 2.0], "keep_ratio": True},
        {"type": "RandomCrop", "crop_size": crop, "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
        {"type": "PackSegInputs"},
    ]
    test = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "LoadAnnotations"},
        {"type": "PackSegInputs"},
    ]

    def dataset(split: str, pipeline: list) -> dict:
        return {
            "type": "StanfordBackgroundDataset",
            "data_root": data_root,
            "data_prefix": {"img_path": "images", "seg_map_path": "labels"},
            "ann_file": f"splits/{split}.txt",
            "pipeline": pipeline,
        }

    settings = {
        "model.pretrained": None,  # from scratch
        "model.decode_head.num_classes": 8,
        "model.auxiliary_head.num_classes": 8,
        "model.data_preprocessor.size": crop,
        "crop_size": crop,
        "train_pipeline": train,
        "test_pipeline": test,
        "train_dataloader.batch_size": 8,
        "train_dataloader.dataset": dataset("train", train),
        "val_dataloader.dataset": dataset("val", test),
        "test_dataloader.dataset": dataset("val", test),
    }
    registered = {
        "type": "StanfordBackgroundDataset",
        "classes": STANFORD_CLASSES,
        "palette": STANFORD_PALETTE,
        "img_suffix": ".jpg",
        "seg_map_suffix": ".png",
    }
    return settings, registered


CASES = {
    "drive": Case(
        "drive",
        "drive",
        "DRIVE",
        ["experiment=unet_drive"],
        "configs/unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py",
        "mDice",
        500,
        [0, 1, 2],
    ),
    "stanford": Case(
        "stanford",
        "stanford_background",
        "iccv09Data.tar.gz",
        ["experiment=pspnet_stanford_background", "model=pspnet_r18-d8", "model.backbone.pretrained=false"],
        "configs/pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
        "mIoU",
        400,
        [0, 1],
    ),
}


# ------------------------------------------------------------------------------------------------ running
def convert(case: Case, source: Path, out: Path) -> Path:
    target = out / "data" / case.name
    if (target / "meta.json").is_file() or (target / "images").is_dir():
        return target
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert_dataset.py"),
            case.dataset,
            str(source),
            "--out",
            str(target),
        ],
        check=True,
    )
    return target


def our_overrides(case: Case, data_root: Path, iters: int, seed: int, run_dir: Path, args) -> list[str]:
    return [
        *case.ours,
        f"dataset.data_root={data_root}",
        f"schedule.max_steps={iters}",
        f"schedule.val_interval={iters}",
        f"schedule.ckpt_interval={iters}",
        "+runtime.trainer.limit_val_batches=0",  # no validation while training: one test at the end
        "optimized_metric=null",
        f"seed={seed}",
        "runtime.precision=32",  # MMSegmentation's fp32, for equal arithmetic and a fair speed
        f"runtime.num_workers={args.workers}",
        f"runtime.trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "runtime.log_interval=10",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]


def run_ours(case: Case, data_root: Path, iters: int, seed: int, out: Path, args) -> dict:
    run_dir = out / "ours" / f"seed{seed}"
    record = run_dir / "results.json"
    if not record.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        log = out / "ours" / f"seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "src.train", *our_overrides(case, data_root, iters, seed, run_dir, args)]
        with open(log, "w") as f:
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    result = json.loads(record.read_text())
    metrics = {k.split("/", 1)[1]: 100 * v for k, v in result["metrics"].items() if k.startswith("test/")}
    losses = _csv_losses(run_dir / "csv" / "metrics.csv")
    return {"metrics": metrics, "s_per_iter": result["train_time_s"] / iters, "loss": losses}


def run_mmseg(case: Case, data_root: Path, iters: int, seed: int, out: Path, args) -> dict:
    work = out / "mmseg" / f"seed{seed}"
    if not (work / "result.json").is_file():
        settings = dict(case.mmseg_set)
        spec = {
            "config": case.mmseg_config,
            "data_root": str(data_root),
            "iters": iters,
            "seed": seed,
            "work_dir": str(work),
            "threads": args.threads,
            "num_workers": args.workers,
            "device": args.device,
            "log_interval": 10,
            "set": settings,
            "dataset": case.mmseg_dataset,
        }
        work.mkdir(parents=True, exist_ok=True)
        (work / "spec.json").write_text(json.dumps(spec, indent=1))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        with open(out / "mmseg" / f"seed{seed}.log", "w") as f:
            subprocess.run(
                [args.mmseg_python, str(MMSEG_SIDE), "train", str(work / "spec.json")],
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                check=True,
            )
    result = json.loads((work / "result.json").read_text())
    scalars = sorted(work.glob("*/vis_data/scalars.json"))
    losses, times = [], []
    for line in scalars[-1].read_text().splitlines() if scalars else []:
        row = json.loads(line)
        if "loss" in row and "iter" in row:
            losses.append((int(row["iter"]), float(row["loss"])))
            times.append(float(row["time"]))
    return {"metrics": result["metrics"], "s_per_iter": result["train_seconds"] / iters, "loss": losses}


def _csv_losses(path: Path) -> list[tuple[int, float]]:
    import csv

    if not path.is_file():
        return []
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return [(int(r["step"]) + 1, float(r["train/loss"])) for r in rows]


# --------------------------------------------------------------------------------------------- the recipes
def same_recipe(case: Case, data_root: Path, iters: int, out: Path, args) -> list[str]:
    """The fields where the two sides' recipes differ (`src.recipes`), from MMSegmentation's config as run."""
    from src.recipes.compare import differences
    from src.recipes.mmseg import mmseg_recipe
    from src.recipes.ours import our_recipe
    from src.recipes.targets import compose_train

    dumped = sorted((out / "mmseg").glob("seed*/config.json"))
    if not dumped:
        return ["(MMSegmentation's config not written yet)"]
    overrides = our_overrides(case, data_root, iters, 0, out / "unused", args)
    ours = our_recipe(compose_train([o for o in overrides if not o.startswith("hydra.")]))
    theirs = mmseg_recipe(json.loads(dumped[0].read_text()))
    # run-control fields set differently on purpose: no validation, the launch, the compared metric
    skipped = ("schedule.val_interval", "schedule.ckpt_interval", "batch.gpus", "metric")
    return [str(d) for d in differences(ours, theirs) if d.field not in skipped]


# ------------------------------------------------------------------------------------------------- report
def summarise(case: Case, results: dict, iters: int, recipe_diff: list[str], out: Path, args) -> dict:
    def stats(side: str) -> dict:
        values = [r["metrics"][case.metric] for r in results[side].values()]
        speeds = [r["s_per_iter"] for r in results[side].values()]
        return {
            "per_seed": {str(s): round(r["metrics"][case.metric], 2) for s, r in results[side].items()},
            "mean": round(statistics.fmean(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
            "s_per_iter": round(statistics.fmean(speeds), 3),
        }

    summary = {
        "case": case.name,
        "metric": case.metric,
        "iters": iters,
        "seeds": list(results["ours"]),
        "threads": args.threads,
        "device": args.device,
        "ours": stats("ours"),
        "mmseg": stats("mmseg"),
        "recipe_differences": recipe_diff,
        "date": time.strftime("%Y-%m-%d"),
    }
    summary["within_0.5_of_mmseg_lowest"] = summary["ours"]["mean"] >= summary["mmseg"]["min"] - 0.5
    lines = [
        f"| {case.name} ({iters} iterations) | seeds | {case.metric} per seed | mean | range | s/iter |",
        "|---|---|---|---|---|---|",
    ]
    for side, label in (("mmseg", "MMSegmentation 1.2.2"), ("ours", "this project")):
        s = summary[side]
        per = ", ".join(f"{v:.2f}" for v in s["per_seed"].values())
        lines.append(
            f"| {label} | {', '.join(s['per_seed'])} | {per} | {s['mean']:.2f} | {s['min']:.2f}-{s['max']:.2f} "
            f"| {s['s_per_iter']:.3f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_losses(case, results, out / "loss.png")
    print("\n".join(lines))
    print(f"recipe differences: {recipe_diff or 'none'}")
    return summary


def plot_losses(case: Case, results: dict, path: Path, window: int = 5) -> None:
    """Both sides' training loss per seed, each as the mean of `window` consecutive logged values (every 10
    iterations: a 50-iteration mean). This project logs the loss of the logged iteration, MMSegmentation the
    mean of its last `log_processor.window_size` iterations (10 in its configs, 1 in runs of
    `scripts/tools/mmseg_side.py` since 2026-12-07): the running mean puts the two on one footing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for side, colour, label in (
        ("mmseg", "tab:blue", "MMSegmentation"),
        ("ours", "tab:orange", "this project"),
    ):
        for i, (_, r) in enumerate(sorted(results[side].items())):
            if len(r["loss"]) >= window:
                steps, values = (np.asarray(v, dtype=float) for v in zip(*r["loss"]))
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(
                    steps[window - 1 :],
                    smooth,
                    color=colour,
                    alpha=0.8,
                    lw=1.2,
                    label=label if i == 0 else None,
                )
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (decode + auxiliary)")
    ax.set_title(f"{case.name}: training loss per seed, mean over {10 * window} iterations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- CLI
def train_case(args) -> int:
    case = CASES[args.case]
    iters = args.iters or case.iters
    seeds = args.seeds or case.seeds
    out = Path(args.out) / case.name
    source = Path(args.source) if args.source else SHARED_DATA / case.source
    data_root = Path(args.data_root) if args.data_root else convert(case, source, Path(args.out))
    if case.name == "stanford":
        case.mmseg_set, case.mmseg_dataset = stanford_mmseg_set(str(data_root))
    jobs = [(side, seed) for seed in seeds for side in ("mmseg", "ours")]
    runner = {"ours": run_ours, "mmseg": run_mmseg}
    results: dict = {"ours": {}, "mmseg": {}}

    def run(job):
        side, seed = job
        start = time.perf_counter()
        result = runner[side](case, data_root, iters, seed, out, args)
        print(
            f"{side} seed {seed}: {case.metric} {result['metrics'][case.metric]:.2f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        return job, result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (side, seed), result in pool.map(run, jobs):
            results[side][seed] = result
    summarise(case, results, iters, same_recipe(case, data_root, iters, out, args), out, args)
    return 0


def predict_case(args) -> int:
    import numpy as np
    from PIL import Image

    from src.serve.segmenter import Segmenter

    out = Path(args.out) / f"predict_{args.config_name}"
    out.mkdir(parents=True, exist_ok=True)
    image = Path(args.image)
    spec = {"config": PREDICT_CONFIGS[args.config_name][0], "image": str(image), "out": str(out), "seed": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    if not (out / "pred.npy").is_file():
        subprocess.run([args.mmseg_python, str(MMSEG_SIDE), "predict", str(out / "spec.json")], check=True)
    theirs = np.load(out / "pred.npy")
    model, dataset = PREDICT_CONFIGS[args.config_name][1:]
    rgb = np.asarray(Image.open(image).convert("RGB"))
    report = {}
    for label, source in (("checkpoint's test_cfg", "checkpoint"), ("whole (the model config's)", "config")):
        seg = Segmenter.from_checkpoint(out / "mmseg.pth", model=model, dataset=dataset, test_cfg_from=source)
        if source == "config":
            seg.segmentor.test_cfg = {"mode": "whole"}
        ours = seg(rgb).masks[0]
        report[label] = {"mode": seg.segmentor.test_cfg.get("mode"), "equal": float((ours == theirs).mean())}
        print(f"{label}: mode {report[label]['mode']}, {100 * report[label]['equal']:.3f}% of pixels equal")
    (out / "agreement.json").write_text(json.dumps(report, indent=1))
    return 0


# config name -> (MMSegmentation config, our model, our dataset)
PREDICT_CONFIGS = {
    "convnext": (
        "configs/convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py",
        "upernet_convnext-t",
        "ade20k",
    ),
    "segformer_cityscapes": (
        "configs/segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py",
        "segformer_mit-b0",
        "cityscapes",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a case on both sides and compare")
    train.add_argument("case", choices=sorted(CASES))
    train.add_argument("--iters", type=int, default=None, help="the budget (default: the case's)")
    train.add_argument("--seeds", type=int, nargs="+", default=None)
    train.add_argument("--jobs", type=int, default=2, help="runs at once (each with --threads threads)")
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--workers", type=int, default=1, help="DataLoader workers per run")
    train.add_argument("--source", default=None, help="the raw dataset (folder, zips or archive)")
    train.add_argument("--data-root", default=None, help="an already converted dataset folder")
    predict = sub.add_parser("predict", help="an MMSegmentation checkpoint predicted by both")
    predict.add_argument("config_name", choices=sorted(PREDICT_CONFIGS))
    predict.add_argument("--image", default=str(ROOT.parent / "shared" / "mmseg" / "stanford_0000047.png"))
    for p in (train, predict):
        p.add_argument(
            "--mmseg-python", default=os.environ.get("MMSEG_PYTHON"), help="MMSegmentation's python"
        )
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
        p.add_argument("--out", default="comparisons")
    args = parser.parse_args(argv)
    if not args.mmseg_python:
        parser.error(
            "give --mmseg-python (or $MMSEG_PYTHON): the python of an environment with MMSegmentation"
        )
    return train_case(args) if args.command == "train" else predict_case(args)


if __name__ == "__main__":
    raise SystemExit(main())
