"""Data-loading throughput of a dataset's training pipeline: images/s for each number of workers.

python scripts/benchmark_data.py [dataset=cityscapes] [paths.data_dir=...] [key=value ...]
    [--workers 0 1 2] [--batches 20] [--warmup 2] [--synthetic 24] [--json out.json]
    [--mmseg] [--rounds 3] [--breakdown 12] [--cv2-threads 0]

`key=value` arguments are Hydra overrides of conf/train.yaml (default `dataset=cityscapes`); `--flags` are this
script's. The loader is the one training uses (the datamodule's train DataLoader: shuffling, collate, pinned
memory, worker seeding), so the figure is what the model is fed at, decode + pipeline + collate included.
With `--synthetic N` (the default when the dataset's folder is absent) it first writes N random images and masks
of Cityscapes' size (2048x1024) in the dataset's layout under a temporary data folder, so the decode cost is real.
Prints images/s and images/s per worker; whether loading starves training is this figure against the
training throughput of `scripts/benchmark.py`.

`--mmseg` also times MMSegmentation's own pipeline (installed outside the project: `src/tools/mmseg_pipeline.py`
says how) in this process, alternated with ours round by round (so that a busy machine slows both alike), on the
same files, and prints both images/s, CPU ms per image and their ratio. `--breakdown N` prints where a sample's
time goes, step by step (decode image, decode mask, each transform, to tensor + collate), in thread CPU ms over N
samples. Every pipeline runs in this process as in a DataLoader worker: PyTorch on one thread (`--torch-threads
1`) and OpenCV single-threaded (`--cv2-threads 0`), as `seed_worker` sets them; the header says so (why it
matters: docs/benchmarks.md, "Threads").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from src.tools.pipeline_timing import cycle, step_times, time_batches, write_synthetic_cityscapes
from src.utils import resolvers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    parser.add_argument("--warmup", type=int, default=2, help="batches drawn before timing (worker start-up)")
    parser.add_argument(
        "--synthetic", type=int, default=None, help="write N random Cityscapes-sized samples and use them"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--mmseg",
        action="store_true",
        help="also time MMSegmentation's own pipeline (installed outside the project: src/tools/mmseg_pipeline.py)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated ours/MMSegmentation rounds (--mmseg)"
    )
    parser.add_argument(
        "--breakdown", type=int, default=12, help="samples timed step by step (0: no per-step table)"
    )
    parser.add_argument(
        "--cv2-threads", type=int, default=0, help="cv2.setNumThreads in this process (0: single-threaded)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch.set_num_threads in this process (1: as in a DataLoader worker)",
    )
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown flags {unknown}; Hydra overrides are key=value")
    if not any(o.startswith("dataset=") for o in overrides):
        overrides = ["dataset=cityscapes", *overrides]
    return args, overrides


def time_loader(datamodule, workers: int, batches: int, warmup: int) -> dict:
    datamodule.num_workers = workers
    datamodule.persistent_workers = False
    loader = datamodule.train_dataloader()
    if len(loader) < warmup + 1:
        raise SystemExit(
            f"the training split has {len(loader)} batches of {datamodule.batch_size}; need more than --warmup "
            f"{warmup} (use --synthetic N with a larger N, or a smaller --warmup)"
        )
    it = cycle(loader)  # a small split starts another epoch (workers restart; counted, as in training)
    for _ in range(warmup):
        next(it)
    times = []
    start = tick = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        now = time.perf_counter()
        times.append(now - tick)
        tick = now
    total = tick - start
    n_images = len(batch["inputs"])  # a list of images or a stacked tensor
    images = batches * n_images
    return {
        "workers": workers,
        "batches": batches,
        "batch_size": n_images,
        "seconds": total,
        "images_per_s": images / total,
        "images_per_s_per_worker": images / total / max(workers, 1),
        "median_batch_s": statistics.median(times),
    }


def compare_with_mmseg(datamodule, batches: int, rounds: int, warmup: int) -> dict:
    """Ours (the training DataLoader, in this process) and MMSegmentation's own pipeline with the same settings on
    the same files, alternated `rounds` times; the ratio of ours to it, round by round."""
    from src.tools.mmseg_pipeline import MMSegPipeline  # needs MMSegmentation on PYTHONPATH

    datamodule.num_workers = 0
    datamodule.persistent_workers = False
    batch_size = datamodule.batch_size
    ours_batches = cycle(datamodule.train_dataloader())
    mmseg = MMSegPipeline(datamodule.split_dataset("train"))
    order = np.random.default_rng(1)
    draws = {
        "ours": lambda: next(ours_batches),
        "mmseg": lambda: mmseg.batch(order.integers(0, len(mmseg.samples), batch_size).tolist()),
    }
    for _ in range(warmup):
        for draw in draws.values():
            draw()
    runs = [
        {name: time_batches(draw, batches, batch_size) for name, draw in draws.items()} for _ in range(rounds)
    ]
    ratios = [r["ours"]["images_per_s"] / r["mmseg"]["images_per_s"] for r in runs]
    result = {"batch_size": batch_size, "rounds": runs, "versions": mmseg.versions}
    for name in draws:
        result[f"{name}_images_per_s"] = statistics.median(r[name]["images_per_s"] for r in runs)
        result[f"{name}_cpu_ms_per_image"] = statistics.median(r[name]["cpu_ms_per_image"] for r in runs)
    result.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
    result["cpu_ratio_median"] = statistics.median(
        r["mmseg"]["cpu_ms_per_image"] / r["ours"]["cpu_ms_per_image"] for r in runs
    )
    return result


def print_comparison(result: dict, console: Console) -> None:
    table = Table(
        title=f"ours vs MMSegmentation (one process, batch {result['batch_size']}, rounds alternated)"
    )
    for col in ("pipeline", "images/s", "CPU ms / image"):
        table.add_column(col, justify="right")
    for name, label in (("ours", "ours"), ("mmseg", f"MMSegmentation ({result['versions']})")):
        table.add_row(
            label, f"{result[f'{name}_images_per_s']:.2f}", f"{result[f'{name}_cpu_ms_per_image']:.1f}"
        )
    console.print(table)
    console.print(
        f"ours / MMSegmentation: {result['ratio_median']:.2f}x images/s (median of {len(result['rounds'])} rounds, "
        f"{result['ratio_min']:.2f}-{result['ratio_max']:.2f}); {result['cpu_ratio_median']:.2f}x less CPU time"
    )


def print_breakdown(result: dict, console: Console) -> None:
    table = Table(
        title=f"where a training sample's time goes: thread CPU ms per image, {result['samples']} samples"
    )
    table.add_column("step")
    table.add_column("ours", justify="right")
    for step, seconds in [*result["ours"].items(), ("total", sum(result["ours"].values()))]:
        table.add_row(step, f"{1e3 * seconds:.2f}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
        data_root = Path(str(cfg.dataset.get("data_root") or ""))
        if not args.synthetic and cfg.dataset.name == "cityscapes" and not data_root.exists():
            print(f"'{data_root}' is absent: timing 24 synthetic Cityscapes-sized samples (--synthetic 24)")
            args.synthetic = 24
        tmp = tempfile.TemporaryDirectory(prefix="benchmark_data_") if args.synthetic else None
        if tmp is not None:
            cfg = compose(config_name="train", overrides=[*overrides, f"paths.data_dir={tmp.name}"])
    if args.synthetic:
        if cfg.dataset.name != "cityscapes":
            raise SystemExit(f"--synthetic writes Cityscapes' layout; dataset={cfg.dataset.name} was given")
        write_synthetic_cityscapes(Path(tmp.name), args.synthetic)
    cv2.setNumThreads(args.cv2_threads)
    torch.set_num_threads(args.torch_threads)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")
    console = Console()
    # every pipeline timed in this process runs as in a DataLoader worker
    console.print(
        f"as in a loader worker: torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}"
    )

    rows = [time_loader(datamodule, w, args.batches, args.warmup) for w in args.workers]
    table = Table(
        title=f"{cfg.dataset.name} training pipeline: batch {datamodule.batch_size}, crop "
        f"{list(cfg.dataset.crop_size)}, {torch.get_num_threads()} torch threads"
    )
    for col in ("workers", "images/s", "images/s per worker", "median s/batch"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["workers"]),
            f"{r['images_per_s']:.2f}",
            f"{r['images_per_s_per_worker']:.2f}",
            f"{r['median_batch_s']:.3f}",
        )
    console.print(table)
    report = {"dataset": cfg.dataset.name, "overrides": overrides, "rows": rows}
    if args.mmseg:
        report["mmseg"] = compare_with_mmseg(datamodule, args.batches, args.rounds, args.warmup)
        print_comparison(report["mmseg"], console)
    if args.breakdown:  # per-step thread CPU seconds per sample of our training pipeline
        dataset = datamodule.split_dataset("train")
        step_times(dataset, [0])  # warm-up (first calls allocate)
        report["breakdown"] = {
            "samples": args.breakdown,
            "ours": step_times(dataset, list(range(args.breakdown))),
        }
        print_breakdown(report["breakdown"], console)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
