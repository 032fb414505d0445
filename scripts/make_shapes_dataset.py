"""Generate the built-in "shapes" dataset (what training does by itself when it is missing).

python scripts/make_shapes_dataset.py --root data/shapes [--num-train 400 --image-size 128 --seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.data.synthetic import ensure_shapes_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data/shapes", help="output folder (default: data/shapes)")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    made = ensure_shapes_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"{'generated' if made else 'already up to date'}: {Path(args.root).resolve()}")
    return 0


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
