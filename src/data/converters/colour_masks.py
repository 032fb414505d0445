"""Colour masks -> index masks through a palette, and CamVid's 32-class colour release.

Each palette colour maps to its row's index among the kept classes (ignored names removed), an ignored name's
colour to 255. A colour not in the palette is an error naming the file and the colour: silently mapping it
to "ignore" would hide a wrong palette.

CamVid (Kaggle's 32-class "CamVid" layout)::

    <root>/class_dict.csv                      name,r,g,b (32 rows, Void among them)
    <root>/{train,val,test}/<name>.png         images
    <root>/{train,val,test}_labels/<name>_L.png  colour masks
 -> <root>/{train,val,test}_annot/<name>.png   uint8 index masks: the 31 classes 0..30 in CSV order, Void 255
    <root>/classes.txt                         the 31 class names, one per line
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from src.data.converters.writers import IGNORE_INDEX, write_mask_png, write_text

CAMVID_SPLITS = ("train", "val", "test")


def read_class_dict(path: str | Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and RGB colours from a `name,r,g,b` CSV (CamVid's `class_dict.csv`), in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Class dictionary '{path}' does not exist (expected a name,r,g,b CSV)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names, palette = [], []
    for i, row in enumerate(rows, start=2):
        try:
            names.append(row["name"].strip())
            palette.append(tuple(int(row[c]) for c in ("r", "g", "b")))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(
                f"'{path}' line {i}: expected columns name,r,g,b with integer colours, got {row}"
            ) from None
    if not names:
        raise ValueError(f"'{path}' lists no classes (expected a header name,r,g,b and one row per class)")
    return names, palette


def colour_lut(
    palette: Sequence[Sequence[int]], names: Sequence[str], ignore_names: Sequence[str] = ("Void",)
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sorted packed colours (`r << 16 | g << 8 | b`), their class indices, and the kept class names."""
    if len(palette) != len(names):
        raise ValueError(f"{len(names)} class names but {len(palette)} palette colours")
    kept = [n for n in names if n not in ignore_names]
    codes, indices = [], []
    for name, (r, g, b) in zip(names, palette):
        codes.append((int(r) << 16) | (int(g) << 8) | int(b))
        indices.append(IGNORE_INDEX if name in ignore_names else kept.index(name))
    codes_arr = np.array(codes, dtype=np.int64)
    if len(set(codes)) != len(codes):
        dup = sorted({tuple(palette[i]) for i, c in enumerate(codes) if codes.count(c) > 1})
        raise ValueError(f"The palette gives one colour to several classes: {dup}")
    order = np.argsort(codes_arr)
    return codes_arr[order], np.array(indices, dtype=np.uint8)[order], kept


def colour_to_index(rgb: np.ndarray, codes: np.ndarray, indices: np.ndarray, where: str) -> np.ndarray:
    """An RGB `[H, W, 3]` colour mask as a uint8 index mask, through `colour_lut`'s tables."""
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(codes, packed), 0, len(codes) - 1)
    unknown = codes[pos] != packed
    if unknown.any():
        values, counts = np.unique(packed[unknown], return_counts=True)
        top = int(values[np.argmax(counts)])
        colour = ((top >> 16) & 255, (top >> 8) & 255, top & 255)
        raise ValueError(
            f"Colour mask '{where}' has {int(unknown.sum())} pixels in {len(values)} colours that are not "
            f"in the palette, e.g. RGB {colour} ({int(counts.max())} pixels)"
        )
    return indices[pos]


def convert_colour_masks(
    src_dir: str | Path,
    out_dir: str | Path,
    palette: Sequence[Sequence[int]],
    names: Sequence[str],
    suffix_in: str = "_L.png",
    suffix_out: str = ".png",
    ignore_names: Sequence[str] = ("Void",),
) -> int:
    """Convert every `<name><suffix_in>` in `src_dir` into `out_dir/<name><suffix_out>`; returns the count."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"Colour mask folder '{src_dir}' does not exist")
    files = sorted(src_dir.glob(f"*{suffix_in}"))
    if not files:
        raise FileNotFoundError(f"No '*{suffix_in}' colour masks in '{src_dir}'")
    codes, indices, _ = colour_lut(palette, names, ignore_names)
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"Cannot read colour mask '{path}'")
        mask = colour_to_index(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), codes, indices, str(path))
        write_mask_png(out_dir / (path.name[: -len(suffix_in)] + suffix_out), mask)
    return len(files)


def convert_camvid(root: str | Path, ignore_names: Sequence[str] = ("Void",)) -> dict[str, int]:
    """CamVid's `{split}_labels/<name>_L.png` -> `{split}_annot/<name>.png` and `classes.txt`, in place."""
    root = Path(root)
    names, palette = read_class_dict(root / "class_dict.csv")
    counts = {}
    for split in CAMVID_SPLITS:
        if (root / f"{split}_labels").is_dir():
            counts[split] = convert_colour_masks(
                root / f"{split}_labels", root / f"{split}_annot", palette, names, ignore_names=ignore_names
            )
    if not counts:
        raise FileNotFoundError(f"CamVid root '{root}' has none of {[f'{s}_labels/' for s in CAMVID_SPLITS]}")
    write_text(root / "classes.txt", [n for n in names if n not in ignore_names])
    return counts
