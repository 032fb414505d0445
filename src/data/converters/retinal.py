"""What the retinal-vessel converters (DRIVE, CHASE_DB1, STARE, HRF) share: find, pair, split, decode, write.

Each dataset module only declares how its release names images and labels (two path regexes), how an
image's key is formed, and which keys go to training. Written (MMSegmentation's layout)::

    <out>/images/{training,validation}/<image stem>.png        RGB
    <out>/annotations/{training,validation}/<label name>.png   uint8: 0 background, 1 vessel
    <out>/meta.json                                            sources, counts, label rule

Labels are binarised with `pixel > 127 -> 1` (MMSegmentation's `// 128`: some released masks are not
exactly {0, 255}). Files are decoded with PIL, which reads TIFF and GIF (OpenCV cannot); a member ending in
`.gz` (STARE) is gunzipped first.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from src.data.converters.sources import Source, open_source
from src.data.converters.writers import write_json, write_mask_png, write_rgb_png

SPLITS = ("training", "validation")


@dataclass(frozen=True)
class Member:
    """One file inside one release (folder or archive)."""

    source: Source
    name: str

    @property
    def where(self) -> str:
        return self.source.where(self.name)

    @property
    def stem(self) -> str:
        """The file name without its extensions (`im0001.ah.ppm.gz` -> `im0001.ah`)."""
        name = self.name.rsplit("/", 1)[-1]
        name = name[:-3] if name.endswith(".gz") else name
        return name.rsplit(".", 1)[0]

    def read(self) -> bytes:
        data = self.source.read(self.name)
        return gzip.decompress(data) if self.name.endswith(".gz") else data


def find_pairs(
    sources: Sequence[Source],
    image_re: re.Pattern[str],
    label_re: re.Pattern[str],
    key: Callable[[re.Match[str]], Hashable],
    what: str,
) -> dict[Hashable, tuple[Member, Member]]:
    """Image and label members paired by `key(match)`, sorted by key.

    A label without its image, or two files for one key, is an error; an image without a label is skipped
    with a warning (DRIVE's test.zip from grand-challenge ships without `1st_manual`).
    """
    found: dict[str, dict[Hashable, Member]] = {"image": {}, "label": {}}
    for kind, pattern in (("image", image_re), ("label", label_re)):
        for source in sources:
            for name in source.members():
                if not (m := pattern.search(name)):
                    continue
                k, member = key(m), Member(source, name)
                if k in found[kind]:
                    raise ValueError(
                        f"{what}: two {kind}s for '{k}': '{found[kind][k].where}' and '{member.where}'"
                    )
                found[kind][k] = member
    images, labels = found["image"], found["label"]
    where = ", ".join(f"'{s.path}'" for s in sources)
    if not images:
        raise FileNotFoundError(f"{what}: no image matching {image_re.pattern!r} in {where}")
    orphans = sorted((labels[k].where for k in set(labels) - set(images)), key=str)
    if orphans:
        raise FileNotFoundError(f"{what}: {len(orphans)} labels have no image, e.g. '{orphans[0]}'")
    unlabelled = sorted((images[k].where for k in set(images) - set(labels)), key=str)
    if unlabelled:
        warnings.warn(
            f"{what}: skipped {len(unlabelled)} images with no label matching {label_re.pattern!r}, "
            f"e.g. '{unlabelled[0]}'",
            stacklevel=3,
        )
    return {k: (images[k], labels[k]) for k in sorted(labels, key=str)}


def first_n_training(
    keys: Sequence[Hashable], n_train: int, group: Callable[[Hashable], Hashable] = lambda key: None
) -> dict[Hashable, str]:
    """The first `n_train` keys of each `group(key)`, in sorted order, -> training; the rest -> validation."""
    taken: Counter[Hashable] = Counter()
    split = {}
    for k in sorted(keys, key=str):
        split[k] = SPLITS[0] if taken[group(k)] < n_train else SPLITS[1]
        taken[group(k)] += 1
    return split


def _open(member: Member) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(member.read()))
        img.load()
    except (UnidentifiedImageError, OSError, EOFError) as e:
        raise ValueError(f"Cannot decode '{member.where}' as an image ({e})") from None
    return img


def convert_retinal(
    sources: Sequence[str | Path],
    out: str | Path,
    dataset: str,
    image_re: re.Pattern[str],
    label_re: re.Pattern[str],
    key: Callable[[re.Match[str]], Hashable],
    split_of: Callable[[list[Hashable]], dict[Hashable, str]],
    label_name: Callable[[Member, Member], str] = lambda image, label: label.stem,
) -> dict:
    """Pair the release's files by `key`, split the keys (`split_of`), decode, check and write every pair as
    `images/<split>/<image stem>.png` and `annotations/<split>/<label_name>.png`; returns meta.json's content."""
    if not sources:
        raise ValueError(f"{dataset}: no input given (expected the release archives or their folder)")
    srcs = [open_source(p, f"{dataset} release") for p in sources]
    pairs = find_pairs(srcs, image_re, label_re, key, dataset)
    split = split_of(list(pairs))
    out = Path(out)
    counts = dict.fromkeys(SPLITS, 0)
    for k, (img, lbl) in pairs.items():
        image = np.array(_open(img).convert("RGB"))
        label = (np.array(_open(lbl).convert("L")) > 127).astype(np.uint8)  # GIF: its palette's grey
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{dataset}: label '{lbl.where}' is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                f"image '{img.where}' is {image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        write_rgb_png(out / "images" / split[k] / f"{img.stem}.png", image)
        write_mask_png(out / "annotations" / split[k] / f"{label_name(img, lbl)}.png", label)
        counts[split[k]] += 1
    meta = {
        "dataset": dataset,
        "sources": [str(Path(src.path).resolve()) for src in srcs],
        "classes": ["background", "vessel"],
        "label_rule": "pixel > 127 -> 1 (vessel), else 0",
        "counts": counts,
    }
    write_json(out / "meta.json", meta)
    return meta
