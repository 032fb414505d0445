"""Atomic writers for converted datasets: PNG images, index masks, text lists and JSON.

Atomic (`src.utils.files.atomic_write_bytes`) so that a conversion stopped half way never leaves a truncated
PNG that a later run, or a dataset scan, takes for a finished file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.utils.files import atomic_write_bytes as write_bytes  # creates the parent folders

IGNORE_INDEX = 255


def write_text(path: str | Path, lines: Iterable[str]) -> Path:
    """One item per line, each line ending with a newline."""
    return write_bytes(path, "".join(f"{line}\n" for line in lines).encode())


def write_json(path: str | Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_rgb_png(path: str | Path, rgb: np.ndarray) -> Path:
    """An RGB uint8 `[H, W, 3]` image as a PNG (converted to OpenCV's BGR order before encoding)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an RGB uint8 [H, W, 3] image, got {rgb.dtype} {rgb.shape}")
    return _write_png(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


# Index masks are written with PNG's "Up" filter (a mask row mostly repeats the one above): files 10x smaller and
# twice as fast to decode as with OpenCV's default "Sub" (docs/benchmarks.md), as Pillow writes them. An OpenCV
# without the filter flag gets compression level 9, with which libpng mostly picks Up.
MASK_PNG_PARAMS = (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    if hasattr(cv2, "IMWRITE_PNG_FILTER")
    else [cv2.IMWRITE_PNG_COMPRESSION, 9]
)


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """A single-channel uint8 index mask (class index per pixel, 255 = ignore) as a greyscale PNG."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"{path}: expected a uint8 [H, W] index mask, got {mask.dtype} {mask.shape}")
    return _write_png(path, mask, MASK_PNG_PARAMS)


def _write_png(path: str | Path, array: np.ndarray, params: list[int] | None = None) -> Path:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array), params or [])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode '{path}' as PNG")
    return write_bytes(path, buf.tobytes())


def map_in_processes(work: Callable[[Any], Any], items: Sequence[Any], nproc: int, chunksize: int) -> None:
    """`work(item)` for every item (each writes its own files), in a pool of `nproc` processes when `nproc > 1`."""
    if nproc > 1:
        with Pool(nproc) as pool:
            for _ in pool.imap_unordered(work, items, chunksize=chunksize):
                pass
    else:
        for item in items:
            work(item)
