"""Results table of a sweep (or of any folder of runs), as MMSegmentation's model-zoo tables.

python scripts/collect_results.py logs/train/multiruns/<time>            # -> <dir>/results.md, <dir>/results.csv
python scripts/collect_results.py logs/train/runs --split val --out-md table.md --out-csv table.csv

Reads the `results.json` every `python -m src.train` run writes into its run folder (src/engine/results.py) and prints
one row per run: method, backbone, crop size, iterations, training memory, inference fps on the test split,
mIoU and mDice in percent, and the config overrides that reproduce the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.engine.results import collect, common_overrides, markdown_table, table_rows, write_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root", help="a sweep folder (logs/train/multiruns/<time>) or any folder of run folders"
    )
    parser.add_argument("--split", default="test", choices=["test", "val"], help="metrics of (default: test)")
    parser.add_argument("--out-md", default=None, help="Markdown table file (default: <root>/results.md)")
    parser.add_argument("--out-csv", default=None, help="CSV file (default: <root>/results.csv)")
    args = parser.parse_args(argv)
    try:
        records = collect(args.root)
    except (FileNotFoundError, ValueError) as e:
        print(f"collect_results: {e}", file=sys.stderr)
        return 2
    rows = table_rows(records, args.split)
    table = markdown_table(rows, args.split, common_overrides(records))
    out_md = Path(args.out_md) if args.out_md else Path(args.root) / "results.md"
    out_csv = Path(args.out_csv) if args.out_csv else Path(args.root) / "results.csv"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(table)
    write_csv(rows, out_csv)
    print(table)
    print(f"{len(rows)} runs; written to {out_md} and {out_csv}")
    return 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
