"""MMSegmentation's training and test transforms as Albumentations transforms, and pipelines from config lists.

Albumentations does the flipping, padding and composing; the four transforms here exist because none of
Albumentations' own matches MMSegmentation's definition, and results are only comparable when every pixel is
labelled the same way:

- `RandomResize`: MMSegmentation samples a ratio and rescales the image to fit a (long, short) edge box
  (`mmcv.imrescale`); `A.RandomScale` scales by a factor of the current size, `A.LongestMaxSize` fits one edge.
- `Resize`: the test-time `Resize(scale, keep_ratio=True)`, the same box fit without the random ratio.
- `RandomCrop`: `cat_max_ratio` re-draws the crop (up to 10 times) while one class covers more than that share
  of the labelled pixels; a crop is never larger than the image (padding comes after, with 255 for masks).
- `PhotoMetricDistortion`: additive brightness, multiplicative contrast, multiplicative saturation and a hue
  shift, each with probability 1/2, contrast first or last (`A.ColorJitter` uses different parametrisations).

Masks are always resized with nearest-neighbour interpolation, so no transform creates a label value.
All randomness comes from the transform's own generators, which `Compose` seeds (see `seed_pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch


def rescale_size(hw: tuple[int, int], scale: Sequence[int]) -> tuple[int, int]:
    """The (h, w) that fits `hw` into a box of long edge max(scale) and short edge min(scale), ratio kept.

    `mmcv.rescale_size`: the factor is min(long / long edge, short / short edge), sizes rounded half up.
    """
    h, w = hw
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def _resize_pair(img: np.ndarray, out_hw: tuple[int, int], nearest: bool) -> np.ndarray:
    if tuple(img.shape[:2]) == tuple(out_hw):
        return img
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=interp)


def _target_hw(hw: tuple[int, int], scale: Sequence[int], keep_ratio: bool) -> tuple[int, int]:
    if keep_ratio:
        return rescale_size(hw, scale)
    # MMSegmentation's scale is (w, h)
    return int(scale[1]), int(scale[0])


class _ResizeBase(A.DualTransform):
    """Shared resizing: bilinear for images, nearest for masks (no new label values)."""

    def apply(self, img: np.ndarray, out_hw: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return _resize_pair(img, out_hw, nearest=False)

    def apply_to_mask(self, mask: np.ndarray, out_hw: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return _resize_pair(mask, out_hw, nearest=True)


class Resize(_ResizeBase):
    """MMSegmentation's `Resize(scale, keep_ratio)`: fit into the (long, short) box, or resize to (w, h) exactly.

    Args:
        scale: `(w, h)` as MMSegmentation writes it (e.g. `[2048, 1024]` for Cityscapes).
        keep_ratio: fit the box keeping the aspect ratio (may upscale), else resize to exactly `scale`.
    """

    def __init__(self, scale: Sequence[int], keep_ratio: bool = True, p: float = 1.0) -> None:
        super().__init__(p=p)
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"Resize: scale={list(scale)}; expected two positive sizes (w, h)")
        self.scale = tuple(int(s) for s in scale)
        self.keep_ratio = keep_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"out_hw": _target_hw(params["shape"][:2], self.scale, self.keep_ratio)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "keep_ratio")


class RandomResize(_ResizeBase):
    """MMSegmentation's `RandomResize(scale, ratio_range, keep_ratio)`.

    A ratio r ~ U(ratio_range) scales the target box to `(int(w * r), int(h * r))`; the image is then resized
    as `Resize` does (fit the box with `keep_ratio`, else exactly).
    """

    def __init__(
        self,
        scale: Sequence[int],
        ratio_range: Sequence[float] | None = (0.5, 2.0),
        keep_ratio: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"RandomResize: scale={list(scale)}; expected two positive sizes (w, h)")
        if ratio_range is not None and (len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]):
            raise ValueError(
                f"RandomResize: ratio_range={list(ratio_range)}; expected (low, high), 0 < low <= high"
            )
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = tuple(float(r) for r in ratio_range) if ratio_range is not None else None
        self.keep_ratio = keep_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        scale = self.scale
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = self.random_generator.random() * (high - low) + low
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        return {"out_hw": _target_hw(params["shape"][:2], scale, self.keep_ratio)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range", "keep_ratio")


class RandomCrop(A.DualTransform):
    """MMSegmentation's `RandomCrop(crop_size, cat_max_ratio)`.

    A crop of `crop_size` (h, w), clipped to the image; while one class covers more than `cat_max_ratio` of the
    crop's labelled pixels (255 not counted), another crop is drawn, at most 10 times. Follow it with
    `A.PadIfNeeded(..., fill_mask=255)` to pad small images up to the crop.
    """

    def __init__(
        self, crop_size: Sequence[int], cat_max_ratio: float = 1.0, ignore_index: int = 255, p: float = 1.0
    ) -> None:
        super().__init__(p=p)
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"RandomCrop: crop_size={list(crop_size)}; expected two positive sizes (h, w)")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index

    @property
    def targets_as_params(self) -> list[str]:
        return ["mask"] if self.cat_max_ratio < 1.0 else []

    def _draw(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        y = int(self.random_generator.integers(0, max(h - ch, 0) + 1))
        x = int(self.random_generator.integers(0, max(w - cw, 0) + 1))
        return y, min(y + ch, h), x, min(x + cw, w)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        box = self._draw(h, w)
        mask = data.get("mask")
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(10):
                crop = mask[box[0] : box[1], box[2] : box[3]]
                counts = np.bincount(crop.ravel().astype(np.int64), minlength=256)
                if self.ignore_index < len(counts):
                    counts[self.ignore_index] = 0
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._draw(h, w)
        return {"box": box}

    def apply(
        self, img: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        return img[box[0] : box[1], box[2] : box[3]]

    def apply_to_mask(
        self, mask: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        return mask[box[0] : box[1], box[2] : box[3]]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_size", "cat_max_ratio", "ignore_index")


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """MMSegmentation's `PhotoMetricDistortion` on uint8 RGB images.

    In order: brightness (+U(-delta, delta)), then contrast (xU(range)) either here or last, saturation
    (S channel xU(range)), hue (H + randint(-delta, delta) mod 180); each step applied with probability 1/2.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        coin = lambda: bool(rng.integers(2))  # noqa: E731
        return {
            "beta": float(rng.uniform(-self.brightness_delta, self.brightness_delta)) if coin() else None,
            "contrast_first": bool(rng.integers(2)),
            "alpha": float(rng.uniform(*self.contrast_range)) if coin() else None,
            "saturation": float(rng.uniform(*self.saturation_range)) if coin() else None,
            "hue": int(rng.integers(-self.hue_delta, self.hue_delta)) if coin() else None,
        }

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def apply(
        self,
        img: np.ndarray,
        beta: float | None = None,
        contrast_first: bool = True,
        alpha: float | None = None,
        saturation: float | None = None,
        hue: int | None = None,
        **params: Any,
    ) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"PhotoMetricDistortion expects uint8 RGB images, got {img.dtype} {img.shape}")
        if beta is not None:
            img = self._convert(img, beta=beta)
        if contrast_first and alpha is not None:
            img = self._convert(img, alpha=alpha)
        if saturation is not None or hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            if saturation is not None:
                hsv[..., 1] = self._convert(hsv[..., 1], alpha=saturation)
            if hue is not None:
                hsv[..., 0] = (hsv[..., 0].astype(int) + hue) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and alpha is not None:
            img = self._convert(img, alpha=alpha)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def build_pipeline(spec: Any) -> Callable[..., dict] | None:
    """An `A.Compose` from a config's list of transforms (already instantiated), or the pipeline as given.

    Accepts None / an empty list (no transforms), a list of transforms, or any callable pipeline.
    """
    if spec is None:
        return None
    if isinstance(spec, A.BaseCompose):
        return spec
    if (isinstance(spec, Sequence) and not isinstance(spec, str)) or type(spec).__name__ == "ListConfig":
        items = list(spec)
        for i, t in enumerate(items):
            if not callable(t):
                raise TypeError(
                    f"pipeline item {i} is {t!r}; expected a transform (a config with `_target_:`, "
                    "e.g. `_target_: albumentations.HorizontalFlip`)"
                )
        return A.Compose(items) if items else None
    if callable(spec):
        return spec
    raise TypeError(f"pipeline is {spec!r}; expected a list of transforms or a callable")


def seed_pipeline(pipeline: Any, seed: int | None = None) -> None:
    """Seed an Albumentations pipeline's generators (from torch's seed by default).

    Albumentations 2 seeds a `Compose` once from OS entropy, so DataLoader workers would all draw the same
    augmentations and runs would not repeat; seeding from `torch.initial_seed()` (which Lightning's
    `seed_everything` and each worker's seed determine) makes them distinct per worker and reproducible.
    """
    if hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(int(torch.initial_seed() if seed is None else seed) % 2**32)
