"""Check a dataset before training: statistics, bad files, class weights and picture grids.

python scripts/check_dataset.py [dataset=shapes] [paths.data_dir=...] [key=value ...]
    [--splits train val test] [--out DIR] [--num 16] [--repeats 3] [--shuffle] [--decode-images]

`key=value` arguments are Hydra overrides of conf/train.yaml; `--flags` are this script's. Per split it prints
a table of class pixels, frequencies, images per class and median-frequency weights, and every bad file (all of
them, not just the first); it writes `photo_wall_<split>.png`, `pipeline_train.png` (the training pipeline's
random outcomes) and `stats.json` to `--out` (default: logs/check_dataset/<dataset name>).
Exit status 1 when any sample has a problem, so that it can gate a pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from rich.console import Console

from src.data.statistics import format_class_weights, format_report, scan_split
from src.serve.browse import photo_wall, pipeline_grid
from src.utils import resolvers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's flags, and the Hydra overrides (`key=value`, `+key=value`, `~key`) among the arguments."""
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=None, help="default: logs/check_dataset/<dataset name>")
    parser.add_argument("--num", type=int, default=16, help="images on each photo wall")
    parser.add_argument("--ncols", type=int, default=4, help="columns of the photo walls")
    parser.add_argument("--pipeline-num", type=int, default=4, help="samples (rows) of the pipeline grid")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline outcomes per sample")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--shuffle", action="store_true", help="random samples on the walls, not the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decode-images", action="store_true", help="decode every image (slower, finds truncation)"
    )
    args = parser.parse_args([a for a in argv if a not in overrides])
    return args, overrides


def save(image, path: Path) -> str:
    Image.fromarray(image).save(path)
    return path.name


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    out = args.out or Path(cfg.paths.log_dir) / "check_dataset" / str(cfg.dataset.name)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(soft_wrap=True)  # long paths stay whole, for grep and copy-paste
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()

    report: dict = {"dataset": cfg.dataset.name, "data_root": cfg.dataset.get("data_root"), "splits": {}}
    scanned, written = {}, []
    for split in args.splits:
        stats, dataset = scan_split(datamodule, split, decode_images=args.decode_images, progress=True)
        console.print()
        console.print(format_report(stats))
        report["splits"][split] = stats.to_dict()
        scanned[split] = stats
        if dataset is None or len(stats.problems) == stats.num_samples:
            continue  # nothing readable to draw
        wall = photo_wall(dataset, args.num, args.ncols, args.opacity, shuffle=args.shuffle, seed=args.seed)
        written.append(save(wall, out / f"photo_wall_{split}.png"))
        if split == "train":
            grid = pipeline_grid(dataset, args.pipeline_num, args.repeats, args.opacity, seed=args.seed)
            written.append(save(grid, out / "pipeline_train.png"))
    weights_from = scanned.get("train") or next(iter(scanned.values()), None)
    if weights_from is not None and weights_from.labelled_pixels:
        console.print(format_class_weights(weights_from), markup=False, highlight=False)
        report["class_weight"] = {"split": weights_from.split, "values": weights_from.class_weights}
    num_problems = sum(len(s["problems"]) for s in report["splits"].values())
    report["num_problems"] = num_problems
    (out / "stats.json").write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}: {', '.join([*written, 'stats.json'])}", highlight=False)
    if num_problems:
        console.print(f"[bold red]{num_problems} problem(s): see above or stats.json[/]")
    return 1 if num_problems else 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
