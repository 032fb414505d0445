"""MMSegmentation's training and test transforms as Albumentations transforms, and pipelines from config lists.

Albumentations does the flipping, padding and composing; the transforms here exist because none of its own
labels every pixel as MMSegmentation's definition does (`A.RandomScale`, `A.LongestMaxSize`, `A.ColorJitter`
resize or jitter differently), and results are only comparable when it does. Masks are always resized with
nearest-neighbour interpolation, so no transform creates a label value. All randomness comes from the
transform's own generators, which `Compose` seeds (see `seed_pipeline`).

Speed (docs/benchmarks.md), with outputs identical to the plain definitions: `RandomResizeCrop` replaces
`RandomResize` + `RandomCrop` and resizes only the part of the image the crop reads (with a dataset's
`decoder: png_top_rows` it also decodes only those rows); `PhotoMetricDistortion` applies its steps as look-up
tables; `cat_max_ratio` counts labels with OpenCV's histogram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from omegaconf import ListConfig

from src.data.io import label_counts


def rescale_size(hw: tuple[int, int], scale: Sequence[int]) -> tuple[int, int]:
    """The (h, w) that fits `hw` into a box of long edge max(scale) and short edge min(scale), ratio kept.

    `mmcv.rescale_size`: the factor is min(long / long edge, short / short edge), sizes rounded half up.
    """
    h, w = hw
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_then_crop(
    img: np.ndarray,
    out_hw: tuple[int, int],
    box: tuple[int, int, int, int],
    nearest: bool,
    src_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """`cv2.resize(img, out_hw)[y0:y1, x0:x1]`, bit for bit, computing only what the crop needs.

    Bilinear: OpenCV maps output pixel x to source (x + 0.5) / scale - 0.5 from the image's origin; resizing the
    top-left part that the crop reads with the same factors (`fx`, `fy`, not a size) keeps that mapping (two
    source pixels of margin keep the borders' clamping out of the crop). Nearest: OpenCV reads source
    floor(x / scale), gathered directly. `src_hw`: the whole image's size when `img` holds only its top
    `source_rows(...)` rows.
    """
    y0, y1, x0, x1 = box
    h, w = src_hw if src_hw is not None else img.shape[:2]
    out_h, out_w = out_hw
    if (out_h, out_w) == (h, w):
        return img[y0:y1, x0:x1]
    if nearest:
        # cv2: ifx = 1. / inv_scale_x; sx = cvFloor(x * ifx), clamped to the last column
        ys = nearest_source_index(np.arange(y0, y1), out_h, h)
        xs = nearest_source_index(np.arange(x0, x1), out_w, w)
        return np.take(np.take(img, ys, axis=0), xs, axis=1)
    part = _bilinear_part((h, w), out_hw, box)
    if part is not None:
        out = cv2.resize(
            img[: part[0], : part[1]], None, fx=out_w / w, fy=out_h / h, interpolation=cv2.INTER_LINEAR
        )
        if out.shape[0] >= y1 and out.shape[1] >= x1:  # else (not expected) never return a short crop
            return out[y0:y1, x0:x1]
    # the part would be nearly everything: the plain call, on the whole image
    if img.shape[0] < h:
        raise ValueError(f"resize_then_crop: {img.shape[0]} of {h} rows given; the plain resize needs all")
    return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]


def _bilinear_part(
    src_hw: tuple[int, int], out_hw: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[int, int] | None:
    """The (rows, columns) of the source's top-left part whose resize holds the crop, or None when the plain
    resize of the whole image is used (the part would be nearly everything, or, not expected, too small)."""
    h, w = src_hw
    out_h, out_w = out_hw
    y1, x1 = box[1], box[3]
    need_h = min(h, math.floor((y1 - 0.5) * h / out_h - 0.5) + 3)
    need_w = min(w, math.floor((x1 - 0.5) * w / out_w - 0.5) + 3)
    if need_h * need_w > 0.9 * h * w:
        return None
    # the size cv2.resize gives the part for fx, fy (rounded half to even, as cvRound; round() does the same)
    if round(need_h * (out_h / h)) < y1 or round(need_w * (out_w / w)) < x1:
        return None
    return need_h, need_w


def source_rows(src_hw: tuple[int, int], out_hw: tuple[int, int], box: tuple[int, int, int, int]) -> int:
    """How many top rows of an image of size `src_hw` the bilinear `resize_then_crop(img, out_hw, box)` reads."""
    if tuple(out_hw) == tuple(src_hw):
        return box[1]
    part = _bilinear_part(src_hw, out_hw, box)
    return src_hw[0] if part is None else part[0]


def nearest_source_index(index: np.ndarray, out_n: int, src_n: int) -> np.ndarray:
    """The source index OpenCV's `INTER_NEAREST` reads for output `index` along an axis of `src_n` -> `out_n`."""
    return np.minimum(np.floor(index * (1.0 / (out_n / src_n))).astype(np.intp), src_n - 1)


def nearest_source_rows(src_h: int, out_h: int, y1: int) -> int:
    """How many top rows of a mask of `src_h` rows the nearest `resize_then_crop` to `out_h` rows reads for a
    crop ending at row `y1` (its gather's last source row, plus one)."""
    if out_h == src_h or y1 <= 0:
        return max(y1, 1)
    return int(nearest_source_index(np.asarray(y1 - 1), out_h, src_h)) + 1


def _resize(img: np.ndarray, out_hw: tuple[int, int], interpolation: int) -> np.ndarray:
    if tuple(img.shape[:2]) == tuple(out_hw):
        return img
    return cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=interpolation)


class RandomResize(A.DualTransform):
    """MMSegmentation's `RandomResize(scale, ratio_range, keep_ratio)`.

    A ratio r ~ U(ratio_range) scales the `(w, h)` box `scale` to `(int(w * r), int(h * r))`; the image then fits
    it keeping its aspect ratio (`keep_ratio`, may upscale) or is resized to it exactly. Masks: nearest.
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
            raise ValueError(
                f"{type(self).__name__}: scale={list(scale)}; expected two positive sizes (w, h)"
            )
        if ratio_range is not None and (len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]):
            raise ValueError(
                f"RandomResize: ratio_range={list(ratio_range)}; expected (low, high), 0 < low <= high"
            )
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = tuple(float(r) for r in ratio_range) if ratio_range is not None else None
        self.keep_ratio = keep_ratio

    def draw_out_hw(self, hw: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        """The output (h, w) of an image of size `hw`, for one ratio drawn from `rng`."""
        scale = self.scale
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = rng.random() * (high - low) + low
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        return rescale_size(hw, scale) if self.keep_ratio else (int(scale[1]), int(scale[0]))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"out_hw": self.draw_out_hw(params["shape"][:2], self.random_generator)}

    def apply(self, img: np.ndarray, out_hw: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return _resize(img, out_hw, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, out_hw: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return _resize(mask, out_hw, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range", "keep_ratio")


class Resize(RandomResize):
    """MMSegmentation's test-time `Resize(scale, keep_ratio)`: `RandomResize` without the random ratio, e.g.
    `scale: [2048, 1024]` for Cityscapes."""

    def __init__(self, scale: Sequence[int], keep_ratio: bool = True, p: float = 1.0) -> None:
        super().__init__(scale, None, keep_ratio, p)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "keep_ratio")


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

    def _draw(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        y = int(rng.integers(0, max(h - ch, 0) + 1))
        x = int(rng.integers(0, max(w - cw, 0) + 1))
        return y, min(y + ch, h), x, min(x + cw, w)

    def choose_box(
        self,
        hw: tuple[int, int],
        window: Callable[[tuple[int, int, int, int]], np.ndarray] | None,
        rng: np.random.Generator,
    ) -> tuple[int, int, int, int]:
        """A crop box (y0, y1, x0, x1) of an image of size `hw`; `window(box)` gives the mask under a box
        (None: no mask, so no `cat_max_ratio` check)."""
        box = self._draw(*hw, rng)
        if self.cat_max_ratio < 1.0 and window is not None:
            for _ in range(10):
                counts = label_counts(window(box))
                if self.ignore_index < len(counts):
                    counts[self.ignore_index] = 0
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._draw(*hw, rng)
        return box

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        window = None if mask is None else (lambda b: mask[b[0] : b[1], b[2] : b[3]])
        return {"box": self.choose_box(params["shape"][:2], window, self.random_generator)}

    def apply(  # masks too (DualTransform's apply_to_mask)
        self, img: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        return img[box[0] : box[1], box[2] : box[3]]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_size", "cat_max_ratio", "ignore_index")


class RandomResizeCrop(A.DualTransform):
    """`RandomResize` then `RandomCrop` in one step, with the same result, named in a config in their place:

        - _target_: src.data.transforms.RandomResizeCrop
          resize: {_target_: src.data.transforms.RandomResize, scale: [2048, 1024], ratio_range: [0.5, 2.0]}
          crop: {_target_: src.data.transforms.RandomCrop, crop_size: [512, 1024], cat_max_ratio: 0.75}

    The ratio, then the crop (and its `cat_max_ratio` re-draws) are drawn in the same order as the two
    transforms draw them; then only the crop is computed (`resize_then_crop`).
    """

    def __init__(self, resize: RandomResize, crop: RandomCrop, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.resize, self.crop = resize, crop
        # what readers of a pipeline look for on its resize (tests, pipeline grids)
        self.scale, self.ratio_range, self.keep_ratio = resize.scale, resize.ratio_range, resize.keep_ratio
        self.crop_size, self.cat_max_ratio = crop.crop_size, crop.cat_max_ratio

    # the dataset may pass the image and mask undecoded: `image_rows` / `mask_rows`, readers of their top rows
    # (`PngTopRows`, `MaskTopRows`) with their `placeholder` as `image` / `mask`; only the rows read are decoded
    reads_image_rows = True
    reads_mask_rows = True

    @property
    def targets_as_params(self) -> list[str]:
        return ["mask"] if self.crop.cat_max_ratio < 1.0 else []

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        rng = self.random_generator
        src_hw = params["shape"][:2]
        out_hw = self.resize.draw_out_hw(src_hw, rng)
        mask = data.get("mask")
        mask_rows = data.get("mask_rows")
        if mask_rows is None or mask is None or mask is not mask_rows.placeholder:
            mask_rows = None
        # the last box looked at and the mask under it: the chosen box's is the crop
        last: list = [None, None]

        def window(b: tuple[int, int, int, int]) -> np.ndarray:
            if mask_rows is None:
                crop = resize_then_crop(mask, out_hw, b, nearest=True)
            else:  # the mask's top rows, as many as this box reads
                top = mask_rows(nearest_source_rows(src_hw[0], out_hw[0], b[1]))
                crop = resize_then_crop(top, out_hw, b, nearest=True, src_hw=src_hw)
            last[:] = [b, crop]
            return crop

        box = self.crop.choose_box(out_hw, None if mask is None else window, rng)
        if mask_rows is not None and last[0] != box:  # no cat_max_ratio check: the crop itself
            window(box)
        params = {"out_hw": out_hw, "box": box, "mask_crop": last[1] if last[0] == box else None}
        reader = data.get("image_rows")
        if reader is not None and data.get("image") is reader.placeholder:  # decode the rows the crop reads
            params["image_top"] = reader(source_rows(src_hw, out_hw, box))
        return params

    def apply(
        self,
        img: np.ndarray,
        out_hw: tuple[int, int] = (0, 0),
        box: tuple = (0, 0, 0, 0),
        image_top: np.ndarray | None = None,
        **params: Any,
    ) -> np.ndarray:
        if image_top is not None:  # the top rows of the image `img` stands for
            return resize_then_crop(image_top, out_hw, box, nearest=False, src_hw=img.shape[:2])
        return resize_then_crop(img, out_hw, box, nearest=False)

    def apply_to_mask(
        self,
        mask: np.ndarray,
        out_hw: tuple[int, int] = (0, 0),
        box: tuple = (0, 0, 0, 0),
        mask_crop: np.ndarray | None = None,
        **params: Any,
    ) -> np.ndarray:
        if mask_crop is not None and mask_crop.shape[:2] == (box[1] - box[0], box[3] - box[2]):
            return mask_crop  # computed for the cat_max_ratio check
        return resize_then_crop(mask, out_hw, box, nearest=True)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("resize", "crop")


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """MMSegmentation's `PhotoMetricDistortion` on uint8 RGB images: brightness (+U(-delta, delta)), contrast
    (xU(range)) here or last, saturation (S xU(range)), hue (H + randint(-delta, delta) mod 180), each with
    probability 1/2."""

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
        # Every step maps a uint8 value to a uint8 value: the float32 formula evaluated on the 256 levels gives
        # the same output as on every pixel, and brightness + contrast compose into one table.
        levels = np.arange(256, dtype=np.uint8)
        table = levels
        if beta is not None:
            table = self._convert(table, beta=beta)
        if contrast_first and alpha is not None:
            table = self._convert(table, alpha=alpha)
        if table is not levels:
            img = cv2.LUT(img, table)
        if saturation is not None or hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            h_table = levels if hue is None else ((levels.astype(np.int64) + hue) % 180).astype(np.uint8)
            s_table = levels if saturation is None else self._convert(levels, alpha=saturation)
            hsv = cv2.LUT(hsv, np.stack([h_table, s_table, levels], axis=-1)[None])
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and alpha is not None:
            img = cv2.LUT(img, self._convert(levels, alpha=alpha))
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def build_pipeline(spec: Any) -> Callable[..., dict] | None:
    """An `A.Compose` of a config's list of (instantiated) transforms, as listed; None for None or an empty list;
    any other callable pipeline as given."""
    if spec is None:
        return None
    if (isinstance(spec, Sequence) and not isinstance(spec, str)) or isinstance(spec, ListConfig):
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

    Albumentations 2 seeds a `Compose` once from OS entropy, so workers would all draw the same augmentations
    and runs would not repeat; `torch.initial_seed()` (set per worker by Lightning) makes them distinct and
    reproducible.
    """
    if hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(int(torch.initial_seed() if seed is None else seed) % 2**32)
