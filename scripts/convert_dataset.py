"""Convert a dataset's release (archive or extracted folder) into the layout its config reads.

python scripts/convert_dataset.py stanford_background ../shared/data/iccv09Data.tar.gz [--out data/stanford_background]
python scripts/convert_dataset.py drive training.zip test.zip      [--out data/DRIVE]   (or the DRIVE/ folder)
python scripts/convert_dataset.py chase_db1 CHASEDB1.zip           [--out data/CHASE_DB1]
python scripts/convert_dataset.py stare stare-images.tar labels-ah.tar  [--out data/STARE]
python scripts/convert_dataset.py hrf healthy.zip healthy_manualsegm.zip glaucoma.zip ...  [--out data/HRF]
python scripts/convert_dataset.py cityscapes [data/cityscapes] [--nproc 8]          (in place)
python scripts/convert_dataset.py voc_aug VOCtrainval_11-May-2012.tar benchmark.tgz [--out data/VOCdevkit]
python scripts/convert_dataset.py camvid_colour [data/CamVid32]                     (in place)

Each subcommand is one function of `src/data/converters/`; see its module for the exact output layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from src.utils.errors import Described, describe, format_block, run_script


def _stanford(args: argparse.Namespace) -> dict:
    from src.data.converters.stanford_background import convert_stanford_background

    return convert_stanford_background(args.source, args.out, seed=args.seed)["counts"]


def _retinal(args: argparse.Namespace) -> dict:
    from src.data.converters import chase_db1, drive, hrf, stare

    convert = {
        "drive": drive.convert_drive,
        "chase_db1": chase_db1.convert_chase_db1,
        "stare": stare.convert_stare,
        "hrf": hrf.convert_hrf,
    }[args.command]
    return convert(args.sources, args.out)["counts"]


def _cityscapes(args: argparse.Namespace) -> dict:
    from src.data.converters.cityscapes import convert_cityscapes

    return {"labelTrainIds written": convert_cityscapes(args.root, nproc=args.nproc)}


def _voc_aug(args: argparse.Namespace) -> dict:
    from src.data.converters.voc_aug import AUG_LEN, DEFAULT_OUT, convert_voc_aug

    counts = convert_voc_aug(args.devkit, args.sbd, out=args.out, nproc=args.nproc)
    args.out = args.out or (DEFAULT_OUT if Path(args.devkit).is_file() else args.devkit)
    print(f"aug.txt: {counts['aug']} ids (MMSegmentation's count on the full data: {AUG_LEN})")
    return counts


def _camvid(args: argparse.Namespace) -> dict:
    from src.data.converters.colour_masks import convert_camvid

    return convert_camvid(args.root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="DATASET")

    p = sub.add_parser("stanford_background", help="iccv09Data.tar.gz (or its folder)")
    p.add_argument("source", help="iccv09Data.tar.gz or the extracted iccv09Data/ folder")
    p.add_argument("--out", default="data/stanford_background")
    p.add_argument("--seed", type=int, default=0, help="seed of the 4:1 train/val split (default 0)")
    p.set_defaults(run=_stanford)

    retinal = {
        "drive": ("training.zip and test.zip, or the DRIVE/ folder", "data/DRIVE"),
        "chase_db1": ("CHASEDB1.zip or its folder", "data/CHASE_DB1"),
        "stare": ("stare-images.tar and labels-ah.tar, or their folders", "data/STARE"),
        "hrf": ("the six HRF zips (images and _manualsegm), or their folders", "data/HRF"),
    }
    for name, (what, out) in retinal.items():
        p = sub.add_parser(name, help=what)
        p.add_argument("sources", nargs="+", help=what)
        p.add_argument("--out", default=out, help=f"output folder (default: {out})")
        p.set_defaults(run=_retinal)

    p = sub.add_parser("cityscapes", help="gtFine labelIds -> labelTrainIds, in place")
    p.add_argument(
        "root", nargs="?", default="data/cityscapes", help="holds gtFine/ (default: data/cityscapes)"
    )
    p.add_argument("--nproc", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(run=_cityscapes)

    p = sub.add_parser("voc_aug", help="Pascal VOC 2012 + SBD -> SegmentationClassAug, aug.txt")
    p.add_argument("devkit", help="VOCdevkit folder (holding VOC2012/) or VOCtrainval_11-May-2012.tar")
    p.add_argument("sbd", help="benchmark_RELEASE folder or benchmark.tgz")
    p.add_argument(
        "--out", default=None, help="where archives are extracted (default data/VOCdevkit); folders: in place"
    )
    p.add_argument("--nproc", type=int, default=1, help="worker processes for the .mat files (default 1)")
    p.set_defaults(run=_voc_aug)

    p = sub.add_parser("camvid_colour", help="CamVid 32-class colour masks -> index masks, in place")
    p.add_argument(
        "root", nargs="?", default="data/CamVid32", help="holds class_dict.csv (default: data/CamVid32)"
    )
    p.set_defaults(run=_camvid)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        counts = args.run(args)
    except (FileNotFoundError, ValueError) as e:  # a missing, truncated or bad release: one short block
        print(format_block(describe(e) or Described("input", str(e))), file=sys.stderr)
        return 1
    where = getattr(args, "out", None) or args.root
    print(f"converted {args.command}: {json.dumps(counts)} -> {Path(where).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
