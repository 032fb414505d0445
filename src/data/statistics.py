"""Statistics of a dataset split read straight from its files, without the pipeline.

Why: before training, find every broken sample in one pass (not one per crashed run), and see the class balance
that decides whether the loss needs class weights. Masks go through the dataset's own `load_mask` (its label
mapping and checks); image sizes come from the file header unless `decode_images` is set.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Group
from rich.progress import track
from rich.table import Table
from rich.text import Text

from src.data.io import load_image

log = logging.getLogger(__name__)

# Where the weights go: the decode head's first loss (conf/model/*.yaml), as a YAML path and as an override key.
CLASS_WEIGHT_PATH = "model.decode_head.losses[0].class_weight"
CLASS_WEIGHT_OVERRIDE = "model.decode_head.losses.0.class_weight"
_EXIF_ORIENTATION = 0x0112


@dataclass
class Problem:
    """One bad sample: its files and what is wrong (the dataset's own error message, naming the file)."""

    image: str
    mask: str
    message: str


@dataclass
class SplitStats:
    """Counts of one split. Frequencies are shares of the labelled (non-ignored) pixels; `present_pixels[c]` is
    the number of labelled pixels of the images where class c appears (the denominator of SegNet's freq)."""

    split: str
    classes: list[str]
    ignore_index: int = 255
    num_samples: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> number of images
    pixel_counts: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    image_counts: list[int] = field(default_factory=list)
    present_pixels: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def labelled_pixels(self) -> int:
        return int(sum(self.pixel_counts))

    @property
    def frequencies(self) -> list[float]:
        total = self.labelled_pixels
        return [c / total if total else 0.0 for c in self.pixel_counts]

    @property
    def ignore_fraction(self) -> float:
        total = self.labelled_pixels + self.ignore_pixels
        return self.ignore_pixels / total if total else 0.0

    @property
    def unseen_classes(self) -> list[str]:
        return [name for name, n in zip(self.classes, self.pixel_counts) if n == 0]

    @property
    def class_weights(self) -> list[float]:
        return median_frequency_weights(self.pixel_counts, self.present_pixels)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values, the derived ones included."""
        out = dataclasses.asdict(self)
        for key in ("labelled_pixels", "frequencies", "ignore_fraction", "unseen_classes", "class_weights"):
            out[key] = getattr(self, key)
        return out


def median_frequency_weights(pixel_counts: Any, present_pixels: Any) -> list[float]:
    """SegNet's median-frequency balancing: w_c = median(freq) / freq_c, where freq_c = pixels of c / pixels of
    the images where c is present. The median runs over the classes that have pixels; a class with none gets 0."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = np.asarray(present_pixels, dtype=np.float64)
    seen = counts > 0
    weights = np.zeros_like(counts)
    if seen.any():
        freq = counts[seen] / present[seen]
        weights[seen] = np.median(freq) / freq
    return [float(w) for w in weights]


def leaf_datasets(dataset: Any) -> list[Any]:
    """The folder datasets inside `dataset`: itself, or the parts of a (nested) `ConcatDataset`."""
    if hasattr(dataset, "datasets"):
        return [leaf for part in dataset.datasets for leaf in leaf_datasets(part)]
    if not (hasattr(dataset, "samples") and hasattr(dataset, "load_mask")):
        raise TypeError(
            f"{type(dataset).__name__}: expected a BaseSegDataset (with `samples` and `load_mask`) "
            "or a ConcatDataset of them"
        )
    return [dataset]


def image_hw(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header, as `load_image` (OpenCV, EXIF rotation applied) gives it;
    falls back to decoding it when Pillow cannot read the header (raising `load_image`'s error)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            # only JPEG: for PNG, Pillow decodes the pixels to find an eXIf chunk
            if im.format == "JPEG" and im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
        return h, w
    except (OSError, Image.DecompressionBombError):
        return tuple(load_image(path).shape[:2])


def scan_dataset(
    dataset: Any, split: str = "", decode_images: bool = False, progress: bool = False
) -> SplitStats:
    """Count the classes of every sample of `dataset` (a folder dataset or a ConcatDataset of them), collecting
    bad samples as problems and going on; logs a warning naming the classes that never appear."""
    leaves = leaf_datasets(dataset)
    classes = list(leaves[0].metainfo["classes"])
    for leaf in leaves[1:]:
        if list(leaf.metainfo["classes"]) != classes:
            raise ValueError(
                f"split '{split}': its parts have different classes "
                f"({classes} and {list(leaf.metainfo['classes'])}); concatenated datasets must share them"
            )
    num = len(classes)
    ignore_index = int(getattr(leaves[0], "ignore_index", 255))
    pixel_counts = np.zeros(num, dtype=np.int64)
    image_counts = np.zeros(num, dtype=np.int64)
    present_pixels = np.zeros(num, dtype=np.int64)
    ignore_pixels = 0
    sizes: Counter[str] = Counter()
    problems: list[Problem] = []
    items = [(leaf, img, ann) for leaf in leaves for img, ann in leaf.samples]
    for leaf, img, ann in track(items, description=f"scanning {split}", disable=not progress, transient=True):
        try:
            hw = load_image(img).shape[:2] if decode_images else image_hw(img)
            mask = leaf.load_mask(ann, hw)
        except (ValueError, OSError) as err:
            problems.append(Problem(str(img), str(ann), str(err)))
            continue
        bins = np.bincount(np.asarray(mask).ravel(), minlength=num)
        counts = bins[:num]
        ignore_pixels += int(bins[ignore_index]) if ignore_index < len(bins) else 0
        present = counts > 0
        pixel_counts += counts
        image_counts += present
        present_pixels[present] += int(counts.sum())
        sizes[f"{hw[1]}x{hw[0]}"] += 1
    stats = SplitStats(
        split=split,
        classes=classes,
        ignore_index=ignore_index,
        num_samples=len(items),
        image_sizes=dict(sizes.most_common()),
        pixel_counts=pixel_counts.tolist(),
        ignore_pixels=ignore_pixels,
        image_counts=image_counts.tolist(),
        present_pixels=present_pixels.tolist(),
        problems=problems,
    )
    if stats.unseen_classes and len(problems) < len(items):
        log.warning(f"split '{split}': classes {stats.unseen_classes} never appear (class weight 0)")
    return stats


def scan_split(
    datamodule: Any, split: str, decode_images: bool = False, progress: bool = False
) -> tuple[SplitStats, Any]:
    """Build the split's dataset and scan it: (stats, dataset). When the dataset cannot be built (missing
    folder, mask or split file) the error is the split's one problem and the dataset is None."""
    try:
        dataset = datamodule.split_dataset(split)
    except (FileNotFoundError, ValueError) as err:
        stats = SplitStats(split=split, classes=list(datamodule.classes))
        stats.problems.append(Problem("", "", f"split '{split}': {err}"))
        return stats, None
    return scan_dataset(dataset, split, decode_images=decode_images, progress=progress), dataset


def format_report(stats: SplitStats, max_problems: int = 20) -> Group:
    """A rich table of the split's classes (pixels, frequency, images, median-frequency weight), its image sizes
    and ignored share, then its problems (the first `max_problems`)."""
    title = f"{stats.split}: {stats.num_samples} samples, {len(stats.problems)} with problems"
    if not stats.pixel_counts:  # the split's dataset could not be built: nothing was counted
        return Group(Text(title, style="bold"), *_problem_lines(stats, max_problems))
    table = Table(title=title)
    for name in ("#", "Class", "Pixels", "Freq (%)", "Images", "MFB weight"):
        table.add_column(name, justify="left" if name == "Class" else "right", no_wrap=True)
    rows = zip(stats.classes, stats.pixel_counts, stats.frequencies, stats.image_counts, stats.class_weights)
    for i, (name, pixels, freq, images, weight) in enumerate(rows):
        style = "yellow" if pixels == 0 else None
        table.add_row(
            str(i), name, f"{pixels:,}", f"{100 * freq:.2f}", str(images), f"{weight:.4f}", style=style
        )
    table.add_section()
    ignored = f"{100 * stats.ignore_fraction:.2f} of all"
    table.add_row(
        str(stats.ignore_index), "(ignored)", f"{stats.ignore_pixels:,}", ignored, "", "", style="dim"
    )
    sizes = [f"{size} ({n} images)" for size, n in list(stats.image_sizes.items())[:4]]
    more = len(stats.image_sizes) - len(sizes)
    table.caption = "image sizes (WxH): " + (", ".join(sizes) or "-") + (f", {more} more" if more > 0 else "")
    parts: list[Any] = [table]
    if stats.unseen_classes and stats.labelled_pixels:
        parts.append(Text(f"never seen (weight 0): {', '.join(stats.unseen_classes)}", style="yellow"))
    return Group(*parts, *_problem_lines(stats, max_problems))


def _problem_lines(stats: SplitStats, max_problems: int) -> list[Text]:
    if not stats.problems:
        return []
    lines = [Text(f"{len(stats.problems)} problem(s) in '{stats.split}':", style="bold red")]
    lines += [Text(f"  - {p.message}", style="red") for p in stats.problems[:max_problems]]
    if len(stats.problems) > max_problems:
        lines.append(Text(f"  ... and {len(stats.problems) - max_problems} more", style="red"))
    return lines


def format_class_weights(stats: SplitStats, digits: int = 4) -> str:
    """The split's median-frequency weights, YAML-ready for the decode head's first loss, and as an override."""
    values = ", ".join(f"{w:.{digits}f}" for w in stats.class_weights)
    return (
        f"# median-frequency class weights of '{stats.split}' (SegNet), for {CLASS_WEIGHT_PATH}:\n"
        f"class_weight: [{values}]\n"
        f"# or on the command line: '++{CLASS_WEIGHT_OVERRIDE}=[{values.replace(' ', '')}]'"
    )
