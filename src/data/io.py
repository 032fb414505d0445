"""Reading images and index masks, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def load_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image `[H, W, 3]`; grey images are expanded to three channels."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(_unreadable(path, "image"))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_mask(path: str | Path) -> np.ndarray:
    """An index mask `[H, W]` (uint8 or uint16) exactly as stored: no colour conversion, no scaling.

    Read with Pillow, as MMSegmentation reads segmentation maps: a palette-mode PNG (Pascal VOC) gives its
    indices, where OpenCV would expand it to colours.
    """
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for missing / truncated / non-images
        raise ValueError(_unreadable(path, "mask")) from exc
    if mask.dtype == np.int32:  # Pillow's "I" mode (16-bit PNGs on some versions)
        mask = mask.astype(np.uint16) if mask.min(initial=0) >= 0 and mask.max(initial=0) < 65536 else mask
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.ndim == 3:
        raise ValueError(
            f"Mask '{path}' has {mask.shape[2]} channels; expected a single-channel index mask "
            "(class index per pixel, 255 = ignore). Convert colour masks with their palette first."
        )
    return mask


def _unreadable(path: str | Path, what: str) -> str:
    path = Path(path)
    if not path.exists():
        return f"{what.capitalize()} '{path}' does not exist"
    return f"Cannot read {what} '{path}' ({path.stat().st_size} bytes): the file is corrupt or not an image"
