"""Loss, LR and mIoU curves of one or several runs as a PNG (MMSegmentation's analyze_logs.py).

python scripts/analyze_logs.py logs/train/runs/<run>/<time> --out curves.png
python scripts/analyze_logs.py logs/train/multiruns/<time>/*/ --keys train/loss val/mIoU --legend a b c d
python scripts/analyze_logs.py <run dir> --source tensorboard --keys 'lr-*' 'val/IoU/*' --title "per class"

Each argument is a run folder (its csv/metrics.csv or tensorboard/ events are read; the CSV log first, unless
--source says) or a log file itself. Keys are metric names or glob patterns, one panel each.
"""

from __future__ import annotations

import argparse
import sys

from src.tools.log_analysis import DEFAULT_KEYS, load_scalars, plot_curves, run_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders, or metrics.csv / TensorBoard event files")
    parser.add_argument(
        "--keys", nargs="+", default=list(DEFAULT_KEYS), help=f"default: {' '.join(DEFAULT_KEYS)}"
    )
    parser.add_argument(
        "--legend", nargs="+", default=None, help="one label per run (default: the run folders)"
    )
    parser.add_argument("--source", default="auto", choices=["auto", "csv", "tensorboard"])
    parser.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if args.legend is not None and len(args.legend) != len(args.runs):
        parser.error(f"--legend has {len(args.legend)} labels for {len(args.runs)} runs")
    try:
        runs = []
        for i, path in enumerate(args.runs):
            scalars, kind, log = load_scalars(path, args.source)
            label = args.legend[i] if args.legend else run_label(log)
            print(f"{label}: {kind} log {log} ({len(scalars)} scalars)")
            runs.append((label, scalars))
        out = plot_curves(runs, args.keys, args.out, args.title)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"analyze_logs: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
