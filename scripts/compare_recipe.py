"""Compare what a training run of this project would do with an MMSegmentation config, field by field.

    python scripts/compare_recipe.py experiment=unet_drive
    python scripts/compare_recipe.py recipe=segformer_mit-b0_8xb1-160k_cityscapes-1024x1024
    python scripts/compare_recipe.py experiment=pspnet_cityscapes model=pspnet_r101-d8 --mmseg-config my.json
    python scripts/compare_recipe.py --all            # every experiment and zoo entry (what the test checks)

The arguments are `src.train` overrides (`recipe=<zoo name>` expands as it does there). The MMSegmentation side is
`--mmseg-config` (a resolved config as JSON, `mmengine.Config.fromfile(path).to_dict()`, or a config text without
`_base_`), else the config the run names (`mmseg_config`) in `$SEGKIT_MMSEG_REF/configs/` (default
`../shared/mmseg`). Prints every differing field, marks those docs/reproduction.md allows (with its reason), and
exits 1 when a difference is not allowed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from src.recipes.compare import differences, read_allowed, show
from src.recipes.mmseg import mmseg_recipe, read_mmseg_config
from src.recipes.ours import our_recipe
from src.recipes.targets import compose_train, recipe_targets
from src.weights.zoo import zoo_command_line

ROOT = Path(__file__).resolve().parents[1]

REF = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg"))


def compare(name: str, overrides: list[str], mmseg_config: str | Path | None, verbose: bool = True) -> int:
    """Print the differences of one recipe; the number not allowed."""
    cfg = compose_train(overrides)
    path = (
        Path(mmseg_config) if mmseg_config else REF / "configs" / f"{Path(str(cfg.mmseg_config)).stem}.json"
    )
    if not mmseg_config and not cfg.get("mmseg_config"):
        raise SystemExit(f"{name}: names no MMSegmentation config (mmseg_config): give --mmseg-config")
    if not path.is_file():
        raise SystemExit(
            f"{name}: no MMSegmentation config at {path} (give --mmseg-config or set SEGKIT_MMSEG_REF)"
        )
    diffs = differences(
        our_recipe(cfg), mmseg_recipe(read_mmseg_config(path), Path(str(cfg.mmseg_config)).stem)
    )
    rows = read_allowed()
    bad = 0
    print(f"{name} vs {path.name}: {len(diffs)} differing field(s)")
    for d in diffs:
        row = next((r for r in rows if r.allows(name, d)), None)
        bad += row is None
        if verbose or row is None:
            why = f"allowed: {row.why}" if row else "NOT ALLOWED (docs/reproduction.md lists no reason)"
            print(f"  {d.field}: here {show(d.ours)}, MMSegmentation {show(d.theirs)}\n    {why}")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "overrides", nargs="*", help="src.train overrides (experiment=..., recipe=..., model=...)"
    )
    parser.add_argument("--mmseg-config", default=None, help="MMSegmentation's resolved config (.json)")
    parser.add_argument("--all", action="store_true", help="every experiment and zoo entry")
    args = parser.parse_args(argv)
    if args.all:
        bad = sum(compare(t.name, list(t.overrides), None, verbose=False) for t in recipe_targets())
        print(f"{bad} difference(s) not allowed")
        return 1 if bad else 0
    if not args.overrides:
        parser.error("give src.train overrides (e.g. experiment=unet_drive) or --all")
    overrides = zoo_command_line(["compare", *args.overrides], key="recipe")[1:]
    overrides = [o for o in overrides if not o.startswith("recipe=")]
    named = [o.split("=", 1)[1] for o in args.overrides if o.startswith(("experiment=", "recipe="))]
    name = named[-1] if named else " ".join(args.overrides)  # the allowed-differences rows name recipes so
    return 1 if compare(name, overrides, args.mmseg_config) else 0


if __name__ == "__main__":
    raise SystemExit(main())
