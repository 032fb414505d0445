"""Picture grids of a dataset, to look at before training: the "photo wall" of images with their masks, and
the training pipeline's random outcomes per sample (MMSegmentation's `tools/analysis_tools/browse_dataset.py`).

Masks are blended in their palette colours; ignored pixels (the ignore index, 255) are left unblended and
hatched with white diagonal lines, so that an ignore band or padding stands out from every class colour.
Samples that cannot be read are skipped (the statistics in `src.data.statistics` report them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.io import load_image
from src.data.statistics import leaf_datasets
from src.serve.visualization import caption, grid, hatch, overlay, with_legend

IGNORE_COLOR = (255, 255, 255)


def draw_sample(
    image: np.ndarray, mask: np.ndarray, palette: list, opacity: float = 0.5, ignore_index: int = 255
) -> np.ndarray:
    """The image with its mask blended in, ignored pixels unblended and hatched."""
    return hatch(overlay(image, mask, palette, opacity), np.asarray(mask) == ignore_index, IGNORE_COLOR)


def photo_wall(
    dataset: Any,
    n: int = 16,
    ncols: int = 4,
    opacity: float = 0.5,
    shuffle: bool = False,
    seed: int = 0,
    max_side: int | None = 256,
    legend: bool = True,
) -> np.ndarray:
    """A grid of the first (or, with `shuffle`, random) `n` samples as stored (no pipeline), each captioned
    with its file name and shrunk to `max_side` px at most, with a legend of the classes to the right."""
    samples = _samples(dataset)
    order = np.random.default_rng(seed).permutation(len(samples)) if shuffle else range(len(samples))
    tiles = []
    for k in order:
        if len(tiles) == n:
            break
        leaf, i = samples[k]
        img_path, ann_path = leaf.samples[i]
        try:
            image = load_image(img_path)
            mask = leaf.load_mask(ann_path, image.shape[:2])
        except (ValueError, OSError):
            continue
        image, mask = _shrink(image, mask, max_side)
        tile = draw_sample(image, mask, leaf.metainfo["palette"], opacity, _ignore_index(leaf))
        tiles.append(caption(tile, Path(img_path).name))
    if not tiles:
        raise ValueError(f"photo_wall: none of the {len(samples)} samples could be read")
    return _with_legend(grid(tiles, ncols), samples[0][0]) if legend else grid(tiles, ncols)


def pipeline_grid(
    dataset: Any,
    n: int = 4,
    repeats: int = 3,
    opacity: float = 0.5,
    seed: int = 0,
    show_original: bool = True,
    max_side: int | None = 256,
    legend: bool = True,
) -> np.ndarray:
    """One row per sample (the first `n`): the stored image (with `show_original`), then `repeats` outputs of the
    dataset's training pipeline (`dataset[i]`, a new random draw each), captioned with their size (WxH).
    The pipeline is seeded with `seed` where it can be (Albumentations' `set_random_seed`), for a repeatable
    picture."""
    samples = _samples(dataset)
    for leaf in leaf_datasets(dataset):
        if getattr(leaf, "test_mode", False):
            raise ValueError(
                f"pipeline_grid shows the training pipeline, but {type(leaf).__name__} "
                f"('{leaf.img_dir}') is in test_mode, where the mask is not transformed"
            )
        if hasattr(leaf.pipeline, "set_random_seed"):
            leaf.pipeline.set_random_seed(seed)
    tiles, rows = [], 0
    for leaf, i in samples:
        if rows == n:
            break
        palette, ignore_index = leaf.metainfo["palette"], _ignore_index(leaf)
        img_path, ann_path = leaf.samples[i]
        try:
            row = []
            if show_original:
                image = load_image(img_path)
                mask = leaf.load_mask(ann_path, image.shape[:2])
                tile = draw_sample(*_shrink(image, mask, max_side), palette, opacity, ignore_index)
                row.append(caption(tile, Path(img_path).name))
            for r in range(repeats):
                item = leaf[i]
                image = _to_uint8(item["inputs"].numpy().transpose(1, 2, 0))
                mask = item["masks"].numpy()
                h, w = mask.shape[:2]
                tile = draw_sample(*_shrink(image, mask, max_side), palette, opacity, ignore_index)
                row.append(caption(tile, f"aug {r + 1}: {w}x{h}"))
        except (ValueError, OSError):
            continue
        tiles += row
        rows += 1
    if not tiles:
        raise ValueError(f"pipeline_grid: none of the {len(samples)} samples could be read")
    ncols = repeats + int(show_original)
    return _with_legend(grid(tiles, ncols), samples[0][0]) if legend else grid(tiles, ncols)


def _samples(dataset: Any) -> list[tuple[Any, int]]:
    samples = [(leaf, i) for leaf in leaf_datasets(dataset) for i in range(len(leaf))]
    if not samples:
        raise ValueError(f"{type(dataset).__name__}: the dataset has no samples")
    return samples


def _ignore_index(leaf: Any) -> int:
    return int(getattr(leaf, "ignore_index", 255))


def _shrink(image: np.ndarray, mask: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Image (area-averaged) and mask (nearest) scaled so that the longer side is at most `max_side`."""
    h, w = mask.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, mask
    size = (max(1, round(w * max_side / max(h, w))), max(1, round(h * max_side / max(h, w))))
    mask = cv2.resize(np.asarray(mask).astype(np.uint16), size, interpolation=cv2.INTER_NEAREST)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), mask


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """A pipeline output for display: uint8 as is, anything else (a normalised image) stretched to 0..255."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    image = image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / max(hi - lo, 1e-6) * 255).round().astype(np.uint8)


def _with_legend(image: np.ndarray, leaf: Any) -> np.ndarray:
    classes = [*leaf.metainfo["classes"], f"ignore ({_ignore_index(leaf)})"]
    return with_legend(image, classes, [*leaf.metainfo["palette"], list(IGNORE_COLOR)])
