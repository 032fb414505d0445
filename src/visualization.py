"""Colour masks, overlays and legends, as MMSegmentation's `SegLocalVisualizer` and the seed tutorial draw them."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def colorize(
    mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """An RGB image `[H, W, 3]` with each class index painted in its palette colour (ignore/unknown in black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = np.asarray(ignore_color, dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut[: len(pal)] = pal
    return lut[np.asarray(mask).astype(np.int64).clip(0, 255)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    opacity: float = 0.5,
    num_classes: int | None = None,
) -> np.ndarray:
    """Blend the colour mask into an RGB image; pixels outside the classes (ignore, 255) keep the image."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"overlay: image is {image.shape[:2]} but mask is {mask.shape[:2]}")
    num_classes = len(palette) if num_classes is None else num_classes
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    colour = colorize(mask, palette)
    valid = (np.asarray(mask) < num_classes)[..., None]
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colour.astype(np.float32)
    return np.where(valid, blended.round().clip(0, 255).astype(np.uint8), image)


def legend(
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Sequence[int] | None = None,
    row_height: int = 20,
    width: int = 180,
) -> np.ndarray:
    """A legend image (RGB): one swatch and name per class (only `present` ones when given)."""
    idx = list(range(len(classes))) if present is None else [int(i) for i in present if 0 <= i < len(classes)]
    img = np.full((max(1, len(idx)) * row_height + 4, width, 3), 255, dtype=np.uint8)
    for row, c in enumerate(idx):
        y = 2 + row * row_height
        cv2.rectangle(
            img, (4, y + 2), (4 + row_height - 4, y + row_height - 2), tuple(int(v) for v in palette[c]), -1
        )
        cv2.rectangle(img, (4, y + 2), (4 + row_height - 4, y + row_height - 2), (0, 0, 0), 1)
        cv2.putText(
            img,
            str(classes[c]),
            (row_height + 6, y + row_height - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return img


def with_legend(
    image: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Sequence[int] | None = None,
) -> np.ndarray:
    """The image with a legend to its right (padded to the taller of the two)."""
    leg = legend(classes, palette, present)
    h = max(image.shape[0], leg.shape[0])
    canvas = np.full((h, image.shape[1] + leg.shape[1], 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    canvas[: leg.shape[0], image.shape[1] :] = leg
    return canvas
