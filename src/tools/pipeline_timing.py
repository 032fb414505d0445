"""Timers for `scripts/benchmark_data.py`: `step_times` replays a dataset's `__getitem__` one step at a time
and sums each step's thread CPU time (so that the breakdown is the same on a busy machine as on an idle one);
`time_batches` times whole batches (wall clock and process CPU time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.converters.writers import write_mask_png
from src.data.datasets.base import seg_collate


def step_times(dataset: Any, indices: list[int]) -> dict[str, float]:
    """Thread CPU seconds per sample of each step of `dataset`'s training sample (a `BaseSegDataset`): decode
    the image, decode and check the mask (also when the first transform decodes their top rows), each
    transform, the tensors and the collate."""
    totals: dict[str, float] = {}

    def add(step: str, seconds: float) -> None:
        totals[step] = totals.get(step, 0.0) + seconds

    transforms = list(getattr(dataset.pipeline, "transforms", []))
    for index in indices:
        img_path, ann_path = dataset.samples[index % len(dataset.samples)]
        t0 = time.thread_time()  # as __getitem__: the first transform may decode the top rows only
        image, rows = dataset.decode_image(img_path)
        t1 = time.thread_time()
        mask, mask_rows = dataset.decode_mask(ann_path, image.shape[:2])
        t2 = time.thread_time()
        add("decode image", t1 - t0)
        add("decode mask", t2 - t1)
        data = {"image": image, "mask": mask}
        if rows is not None:
            data["image_rows"] = rows = _TimedReader(rows)
        if mask_rows is not None:
            data["mask_rows"] = mask_rows = _TimedReader(mask_rows)
        readers = {"decode image": rows, "decode mask": mask_rows}
        for t in transforms:  # each transform alone, as Compose calls it
            t0 = time.thread_time()
            data = t(**data)
            seconds = time.thread_time() - t0
            for step, reader in readers.items():  # decoding inside the transform counts as decoding
                if reader is not None and reader.seconds:
                    add(step, reader.seconds)
                    seconds -= reader.seconds
                    reader.seconds = 0.0
            add(type(t).__name__, seconds)
        t0 = time.thread_time()
        # what BaseSegDataset.__getitem__ and the collate do with the result
        inputs, masks = dataset.to_tensors(data["image"], data["mask"])
        seg_collate([{"inputs": inputs, "masks": masks, "metas": {}}])
        add("to tensor + collate", time.thread_time() - t0)
    return {k: v / len(indices) for k, v in totals.items()}


class _TimedReader:
    """A `PngTopRows` (or `MaskTopRows`) reader that sums the thread CPU seconds of its decoding."""

    def __init__(self, reader: Any) -> None:
        self.reader, self.placeholder, self.seconds = reader, reader.placeholder, 0.0

    def __call__(self, rows: int) -> np.ndarray:
        start = time.thread_time()
        out = self.reader(rows)
        self.seconds += time.thread_time() - start
        return out


def time_batches(next_batch: Callable[[], Any], batches: int, batch_size: int) -> dict[str, float]:
    """Draw `batches` batches: images/s (wall clock) and process CPU milliseconds per image."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next_batch()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * batch_size
    return {
        "images": images,
        "seconds": wall,
        "images_per_s": images / wall,
        "cpu_ms_per_image": 1e3 * cpu / images,
    }


def cycle(loader: Any) -> Iterator[Any]:
    """Batches of `loader` without end (a new epoch when one ends)."""
    while True:
        yield from loader


def write_synthetic_cityscapes(data_dir: Path, n: int, seed: int = 0) -> Path:
    """`n` random 2048x1024 images with blocky 19-class masks (+ 255) in Cityscapes' layout.

    The masks are written as this project's Cityscapes converter writes `labelTrainIds` (`write_mask_png`: the
    PNG Up filter on every row; cityscapesscripts' Pillow writes them much the same), the images with OpenCV's
    defaults (the Sub filter on every row: a faster decode than Pillow's or libpng's Paeth rows, so the
    conservative choice for how much a whole-image decode costs).
    """
    rng = np.random.default_rng(seed)
    root = data_dir / "cityscapes"
    for split in ("train", "val"):
        img_dir = root / "leftImg8bit" / split / "synthcity"
        ann_dir = root / "gtFine" / split / "synthcity"
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n if split == "train" else 1):
            # smooth image content (compresses like a photo, not like noise) and 64x64 label blocks
            small = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
            image = cv2.resize(small, (2048, 1024), interpolation=cv2.INTER_CUBIC)
            labels = rng.choice(np.r_[np.arange(19), 255], size=(16, 32)).astype(np.uint8)
            mask = cv2.resize(labels, (2048, 1024), interpolation=cv2.INTER_NEAREST)
            stem = f"synthcity_{i:06d}_000019"
            cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), image)
            write_mask_png(ann_dir / f"{stem}_gtFine_labelTrainIds.png", mask)
    return root
