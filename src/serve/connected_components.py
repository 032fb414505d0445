"""Connected-component statistics per class: how many separate objects a mask holds, and how large they are.

Counting instances in a semantic mask (glomeruli per kidney section, cells per slide) is what the glomeruli
tutorial does with the predictions; OpenCV's `connectedComponentsWithStats` does the labelling and the areas.
`ComponentStats` accumulates them over many masks (a split, a folder) into one table per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np


def component_areas(mask: np.ndarray, num_classes: int, connectivity: int = 8) -> dict[int, np.ndarray]:
    """Areas (pixel counts) of the connected components of each class `0..num_classes-1` in an index mask.

    Pixels of other values (the ignore index 255) belong to no class, so they separate components.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity={connectivity}: expected 4 or 8")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"component_areas: expected an index mask [H, W], got shape {mask.shape}")
    out: dict[int, np.ndarray] = {}
    for c in range(num_classes):
        binary = (mask == c).astype(np.uint8)
        if not binary.any():
            out[c] = np.zeros(0, dtype=np.int64)
            continue
        _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity)
        out[c] = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)  # label 0 is everything else
    return out


class ComponentStats:
    """Per class over all masks given to `update`: number of components, per image, and min/mean/max area.

    Args:
        classes: class names, in index order.
        connectivity: 8 (diagonal neighbours join, OpenCV's default) or 4.
        min_area: components smaller than this many pixels are not counted (speckle).
    """

    def __init__(self, classes: Sequence[str], connectivity: int = 8, min_area: int = 0) -> None:
        self.classes = [str(c) for c in classes]
        self.connectivity = connectivity
        self.min_area = min_area
        self.areas: list[list[np.ndarray]] = [[] for _ in self.classes]
        self.num_images = 0

    def update(self, mask: np.ndarray) -> None:
        for c, areas in component_areas(mask, len(self.classes), self.connectivity).items():
            self.areas[c].append(areas[areas >= self.min_area])
        self.num_images += 1

    def table(self) -> list[dict[str, Any]]:
        """One row per class: `class`, `count`, `per_image` (mean count), `area_min`, `area_mean`, `area_max`
        (areas in pixels; NaN when the class has no component)."""
        rows = []
        for name, parts in zip(self.classes, self.areas):
            areas = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            nan = float("nan")
            rows.append(
                {
                    "class": name,
                    "count": int(areas.size),
                    "per_image": areas.size / self.num_images if self.num_images else nan,
                    "area_min": float(areas.min()) if areas.size else nan,
                    "area_mean": float(areas.mean()) if areas.size else nan,
                    "area_max": float(areas.max()) if areas.size else nan,
                }
            )
        return rows
