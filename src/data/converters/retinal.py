"""What the retinal-vessel converters (DRIVE, CHASE_DB1, STARE, HRF) share: find, pair, split, decode, write.

Each dataset module only declares how its release names images and labels (two path regexes), how an
image's key is formed, and which keys go to training; this module does the rest.

Layout written (MMSegmentation's, which the dataset configs read)::

    <out>/images/{training,validation}/<image name>.png        RGB
    <out>/annotations/{training,validation}/<label name>.png   uint8: 0 background, 1 vessel
    <out>/meta.json                                            sources, counts, split rule

Labels are binarised with `pixel > 127 -> 1` (MMSegmentation's `// 128`: some released masks are not
exactly {0, 255}). Images and labels are decoded with PIL, which reads TIFF, GIF (OpenCV cannot), PPM and
JPEG; a member ending in `.gz` (STARE) is gunzipped first.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from src.data.converters.sources import Source, match_members, open_source
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


@dataclass(frozen=True)
class Sample:
    """An image/label pair and where it goes: `images/<split>/<image_name>.png` and its annotation."""

    split: str
    image: Member
    label: Member
    image_name: str
    label_name: str


def open_sources(paths: Sequence[str | Path], what: str) -> list[Source]:
    if not paths:
        raise ValueError(f"{what}: no input given (expected the release archives or their folder)")
    return [open_source(p, f"{what} release") for p in paths]


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
        for source, name, m in match_members(list(sources), pattern):
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
            stacklevel=2,
        )
    return {k: (images[k], labels[k]) for k in sorted(labels, key=str)}


def first_n_training(keys: Sequence[Hashable], n_train: int) -> dict[Hashable, str]:
    """The first `n_train` keys in sorted order -> training, the rest -> validation."""
    ordered = sorted(keys, key=str)
    return {k: SPLITS[0] if i < n_train else SPLITS[1] for i, k in enumerate(ordered)}


def read_rgb(member: Member) -> np.ndarray:
    return np.array(_open(member).convert("RGB"))


def read_vessels(member: Member) -> np.ndarray:
    """A vessel mask as uint8 {0, 1}: grey (or the palette's grey, for GIF) > 127 -> 1."""
    grey = np.array(_open(member).convert("L"))
    return (grey > 127).astype(np.uint8)


def _open(member: Member) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(member.read()))
        img.load()
    except (UnidentifiedImageError, OSError, EOFError) as e:
        raise ValueError(f"Cannot decode '{member.where}' as an image ({e})") from None
    return img


def write_samples(
    samples: Sequence[Sample], out: str | Path, dataset: str, sources: Sequence[Source]
) -> dict:
    """Decode, check and write every sample; write and return `meta.json`."""
    out = Path(out)
    counts = dict.fromkeys(SPLITS, 0)
    for s in samples:
        image, label = read_rgb(s.image), read_vessels(s.label)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{dataset}: label '{s.label.where}' is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                f"image '{s.image.where}' is {image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        write_rgb_png(out / "images" / s.split / f"{s.image_name}.png", image)
        write_mask_png(out / "annotations" / s.split / f"{s.label_name}.png", label)
        counts[s.split] += 1
    meta = {
        "dataset": dataset,
        "sources": [str(Path(src.path).resolve()) for src in sources],
        "classes": ["background", "vessel"],
        "label_rule": "pixel > 127 -> 1 (vessel), else 0",
        "counts": counts,
    }
    write_json(out / "meta.json", meta)
    return meta
