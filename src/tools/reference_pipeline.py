"""A plain PIL/OpenCV version of MMSegmentation's Cityscapes training pipeline: the yardstick of
`scripts/benchmark_data.py --reference`.

The steps of MMSegmentation 1.x (`LoadImageFromFile`, `LoadAnnotations`, `RandomResize`, `RandomCrop` with
`cat_max_ratio`, `RandomFlip`, `PhotoMetricDistortion`, padding, `PackSegInputs`), written the simple way it
writes them: decode every pixel (OpenCV for the image, Pillow for the mask), resize the whole image, count
labels with `np.unique`, distort colours in float32 one step at a time (two HSV round trips), copy into
tensors. Its time per image on this machine came within a few per cent of MMSegmentation 1.2.2's own pipeline
(docs/benchmarks.md), so a ratio to it stands for a ratio to MMSegmentation without installing it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

STEPS = (
    "decode image",
    "decode mask",
    "RandomResize",
    "RandomCrop",
    "flip",
    "PhotoMetricDistortion",
    "pad",
    "to tensor + collate",
)


class ReferencePipeline:
    """Args:
    samples: (image path, mask path) pairs.
    scale: RandomResize's (w, h) box; ratio_range: its ratio range.
    crop_size: (h, w); cat_max_ratio, ignore_index: RandomCrop's.
    seed: of the generator that draws every random choice.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        scale: Sequence[int] = (2048, 1024),
        ratio_range: Sequence[float] = (0.5, 2.0),
        crop_size: Sequence[int] = (512, 1024),
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.scale, self.ratio_range = tuple(scale), tuple(ratio_range)
        self.crop_size, self.cat_max_ratio, self.ignore_index = tuple(crop_size), cat_max_ratio, ignore_index
        self.rng = np.random.default_rng(seed)
        self.times = dict.fromkeys(STEPS, 0.0)  # thread CPU seconds per step, summed over samples
        self.count = 0

    # ---------------------------------------------------------------- steps
    def _resize(self, img: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ratio = self.rng.uniform(*self.ratio_range)
        long_edge, short_edge = max(self.scale) * ratio, min(self.scale) * ratio
        h, w = img.shape[:2]
        factor = min(int(long_edge) / max(h, w), int(short_edge) / min(h, w))
        size = (int(w * factor + 0.5), int(h * factor + 0.5))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        seg = cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST)
        return img, seg

    def _crop(self, img: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ch, cw = self.crop_size
        h, w = seg.shape

        def draw() -> tuple[int, int]:
            return int(self.rng.integers(0, max(h - ch, 0) + 1)), int(
                self.rng.integers(0, max(w - cw, 0) + 1)
            )

        y, x = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                labels, counts = np.unique(seg[y : y + ch, x : x + cw], return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y, x = draw()
        return img[y : y + ch, x : x + cw], seg[y : y + ch, x : x + cw]

    def _flip(self, img: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() < 0.5:
            return np.flip(img, axis=1), np.flip(seg, axis=1)
        return img, seg

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _photometric(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.integers(2):
            img = self._convert(img, beta=rng.uniform(-32, 32))
        mode = rng.integers(2)
        if mode == 1 and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(0.5, 1.5))
        if rng.integers(2):  # saturation: its own HSV round trip
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = self._convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if rng.integers(2):  # hue: another one
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-18, 18)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if mode == 0 and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(0.5, 1.5))
        return img

    def _pad(self, img: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ph, pw = self.crop_size[0] - img.shape[0], self.crop_size[1] - img.shape[1]
        if ph > 0 or pw > 0:
            ph, pw = max(ph, 0), max(pw, 0)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
            seg = np.pad(seg, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        return img, seg

    # ----------------------------------------------------------------- run
    def sample(self, index: int) -> dict[str, Any]:
        """One training sample, timing each step (thread CPU time, into `self.times`)."""
        img_path, seg_path = self.samples[index % len(self.samples)]
        tick = time.thread_time()

        def lap(step: str) -> None:
            nonlocal tick
            now = time.thread_time()
            self.times[step] += now - tick
            tick = now

        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)  # BGR, as mmcv's cv2 backend
        lap("decode image")
        with Image.open(seg_path) as im:
            seg = np.array(im)
        lap("decode mask")
        img, seg = self._resize(img, seg)
        lap("RandomResize")
        img, seg = self._crop(img, seg)
        lap("RandomCrop")
        img, seg = self._flip(img, seg)
        lap("flip")
        img = self._photometric(img)
        lap("PhotoMetricDistortion")
        img, seg = self._pad(img, seg)
        lap("pad")
        out = {
            "inputs": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "masks": torch.from_numpy(seg[None].astype(np.int64)),
        }
        lap("to tensor + collate")
        self.count += 1
        return out

    def batch(self, indices: Sequence[int]) -> dict[str, list]:
        samples = [self.sample(i) for i in indices]
        return {key: [s[key] for s in samples] for key in ("inputs", "masks")}
