"""Stanford Background (Gould et al., ICCV 2009) from its release `iccv09Data.tar.gz` to index masks.

Input: the archive (read in one streaming pass, nothing extracted) or the extracted `iccv09Data/` folder,
holding `images/<id>.jpg` and `labels/<id>.regions.txt` (an integer matrix of the image's size;
0..7 = the classes below, negative = unknown).

Output (`conf/dataset/stanford_background.yaml` relies on it exactly)::

    <out>/images/<id>.jpg      the release's JPEG, byte for byte
    <out>/labels/<id>.png      uint8 index mask: 0..7, 255 = unknown
    <out>/splits/train.txt     ids, sorted, one per line
    <out>/splits/val.txt
    <out>/meta.json            source, counts, split seed and rule

The release has no official split: ours, like MMSegmentation's tutorial, is a random 4:1 split, made
deterministic by `split_ids` (572 train and 143 val of the 715).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image

from src.data.converters.sources import open_source
from src.data.converters.writers import IGNORE_INDEX, write_bytes, write_json, write_mask_png, write_text

CLASSES = ("sky", "tree", "road", "grass", "water", "bldg", "mntn", "fg obj")
IMAGE_RE = re.compile(r"(?:^|/)images/(?P<id>[^/]+)\.jpg$")
LABEL_RE = re.compile(r"(?:^|/)labels/(?P<id>[^/]+)\.regions\.txt$")


def parse_regions(text: bytes, where: str) -> np.ndarray:
    """A `.regions.txt` matrix as int16 `[H, W]`; a ragged or non-integer matrix names the file."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    width = len(lines[0].split()) if lines else 0
    try:
        values = np.array(text.split(), dtype=np.int16)
    except ValueError as e:
        raise ValueError(f"Label matrix '{where}' has a non-integer value ({e})") from None
    if not lines or values.size != len(lines) * width:
        raise ValueError(
            f"Label matrix '{where}' is not rectangular: {values.size} values in {len(lines)} rows "
            f"(the first row has {width})"
        )
    return values.reshape(len(lines), width)


def regions_to_mask(regions: np.ndarray, where: str) -> np.ndarray:
    """Negative (unknown) -> 255; 0..7 kept; anything else is an error naming the file."""
    bad = regions[regions >= len(CLASSES)]
    if bad.size:
        raise ValueError(
            f"Label matrix '{where}' has values {sorted(set(bad.tolist()))[:10]}; "
            f"expected 0..{len(CLASSES) - 1} or negative (unknown)"
        )
    return np.where(regions < 0, IGNORE_INDEX, regions).astype(np.uint8)


def split_ids(ids: list[str], seed: int = 0, train_fraction: float = 0.8) -> tuple[list[str], list[str]]:
    """Sorted ids shuffled with `random.Random(seed)`: the first `int(train_fraction * n)` are train."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_train = int(train_fraction * len(order))
    return sorted(order[:n_train]), sorted(order[n_train:])


def convert_stanford_background(
    source: str | Path, out: str | Path, seed: int = 0, train_fraction: float = 0.8
) -> dict:
    """Convert the release at `source` (archive or folder) into `out`; returns the meta written to meta.json."""
    src = open_source(source, "Stanford Background release")
    out = Path(out)
    images: dict[str, tuple[str, bytes]] = {}
    labels: dict[str, tuple[str, np.ndarray]] = {}  # uint8 masks: 4x smaller than the text
    for member, data in src.iter_files(lambda m: bool(IMAGE_RE.search(m) or LABEL_RE.search(m))):
        if m := IMAGE_RE.search(member):
            images[m["id"]] = (member, data)
        else:
            where = src.where(member)
            labels[LABEL_RE.search(member)["id"]] = (
                member,
                regions_to_mask(parse_regions(data, where), where),
            )
    if not images:
        raise FileNotFoundError(
            f"No 'images/<id>.jpg' in '{src.path}': expected the iccv09Data release (archive or folder)"
        )
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label or no_image:
        raise FileNotFoundError(
            f"'{src.path}': {len(no_label)} images without 'labels/<id>.regions.txt' {no_label[:5]} and "
            f"{len(no_image)} label files without 'images/<id>.jpg' {no_image[:5]}"
        )
    unknown = 0
    for key in sorted(images):
        img_member, jpg = images[key]
        lbl_member, mask = labels[key]
        width, height = Image.open(io.BytesIO(jpg)).size
        if mask.shape != (height, width):
            raise ValueError(
                f"Label matrix '{src.where(lbl_member)}' is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                f"its image '{src.where(img_member)}' is {width}x{height}; expected the image's size"
            )
        unknown += int((mask == IGNORE_INDEX).sum())
        write_bytes(out / "images" / f"{key}.jpg", jpg)
        write_mask_png(out / "labels" / f"{key}.png", mask)
    train, val = split_ids(list(images), seed, train_fraction)
    write_text(out / "splits" / "train.txt", train)
    write_text(out / "splits" / "val.txt", val)
    meta = {
        "dataset": "Stanford Background (iccv09Data)",
        "source": str(Path(source).resolve()),
        "classes": list(CLASSES),
        "ignore_index": IGNORE_INDEX,
        "counts": {"images": len(images), "train": len(train), "val": len(val)},
        "unknown_pixels": unknown,
        "split": {
            "seed": seed,
            "train_fraction": train_fraction,
            "rule": "sorted ids shuffled with random.Random(seed); first int(train_fraction * n) are train",
        },
    }
    write_json(out / "meta.json", meta)
    return meta
