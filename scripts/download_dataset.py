"""Download a dataset's public release files (checksum-verified) and print the command that converts them.

python scripts/download_dataset.py --list
python scripts/download_dataset.py stanford_background [--out data/]

Datasets behind a registration page (Cityscapes, DRIVE) print where to get the files and where to put them.
"""

from __future__ import annotations

import argparse
import sys

from src.data.converters.download import REGISTRY, describe, download


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", nargs="?", choices=sorted(REGISTRY), help="dataset to download")
    parser.add_argument("--out", default="data", help="folder the files go into (default: data/)")
    parser.add_argument("--list", action="store_true", help="list the datasets, their files and checksums")
    args = parser.parse_args(argv)
    if args.list:
        print(describe())
        return 0
    if args.name is None:
        parser.error("give a dataset name, or --list")
    try:
        download(args.name, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
