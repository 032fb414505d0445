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

Speed (`scripts/benchmark_data.py`, docs/benchmarks.md), with outputs identical to the plain definitions:
- `RandomResizeCrop(resize, crop)`, named in a config in place of the two (`conf/dataset/_base_/mmseg.yaml`),
  draws the same random numbers in the same order and resizes only the top-left part of the image that holds
  the crop (bit-identical to resizing everything, then cropping: see `resize_then_crop`); with a dataset's
  `decoder: png_top_rows` it is given PNG readers and decodes only the rows above the crop's last source row
  (all of an 8-bit grey mask only when a `cat_max_ratio` re-draw reads further down);
- `PhotoMetricDistortion` applies its uint8 -> uint8 steps as look-up tables (the same float32 formula
  evaluated once per grey level instead of once per pixel);
- `RandomCrop`'s `cat_max_ratio` counts labels with OpenCV's histogram instead of a 64-bit `bincount`.
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
    top-left part of the image that the crop reads, with the same scale factors (`fx`, `fy`, not a size), keeps
    that mapping, so the crop's pixels are the same (two source pixels of margin keep the right and bottom
    borders' clamping out of the crop). Nearest: OpenCV's `INTER_NEAREST` reads source floor(x / scale),
    gathered directly. Checked against the full resize in tests/data/test_transforms.py.

    `src_hw`: the size of the whole image when `img` holds only its top `source_rows(...)` rows (a partly
    decoded image); the result is the same as from the whole image.
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
    if part is None:  # nearly everything: the plain call (on the whole image)
        if img.shape[0] < h:
            raise ValueError(
                f"resize_then_crop: {img.shape[0]} of {h} rows given; the plain resize needs all"
            )
        return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    need_h, need_w = part
    out = cv2.resize(img[:need_h, :need_w], None, fx=out_w / w, fy=out_h / h, interpolation=cv2.INTER_LINEAR)
    # not expected (`_bilinear_part` predicts the size): never return a short crop
    if out.shape[0] < y1 or out.shape[1] < x1:
        if img.shape[0] < h:
            raise ValueError(f"resize_then_crop: a {out.shape[:2]} part cannot hold the crop {box}")
        return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    return out[y0:y1, x0:x1]


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

    def draw_out_hw(self, hw: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        """The output (h, w) of an image of size `hw`, for one ratio drawn from `rng`."""
        scale = self.scale
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = rng.random() * (high - low) + low
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        return _target_hw(hw, scale, self.keep_ratio)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"out_hw": self.draw_out_hw(params["shape"][:2], self.random_generator)}

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

    def _draw(self, h: int, w: int, rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
        rng = self.random_generator if rng is None else rng
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


class RandomResizeCrop(A.DualTransform):
    """`RandomResize` then `RandomCrop` in one step, with the same result, named in a config in their place:

        - _target_: src.data.transforms.RandomResizeCrop
          resize: {_target_: src.data.transforms.RandomResize, scale: [2048, 1024], ratio_range: [0.5, 2.0]}
          crop: {_target_: src.data.transforms.RandomCrop, crop_size: [512, 1024], cat_max_ratio: 0.75}


    The ratio, then the crop (and its `cat_max_ratio` re-draws, on the resized mask) are drawn from this
    transform's generator in the same order as the two transforms draw them from `Compose`'s shared one; then
    only the crop is computed (`resize_then_crop`): the image is resized as far as the crop reaches, the mask's
    crop is gathered directly. At a ratio of 2 that skips most of a 4096x2048 resize.
    """

    def __init__(self, resize: RandomResize, crop: RandomCrop, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.resize, self.crop = resize, crop
        # what readers of a pipeline look for on its resize (tests, pipeline grids)
        self.scale, self.ratio_range, self.keep_ratio = resize.scale, resize.ratio_range, resize.keep_ratio
        self.crop_size, self.cat_max_ratio = crop.crop_size, crop.cat_max_ratio

    # the dataset may pass the image undecoded (`reads_image_rows`): `image_rows`, a reader of its top rows
    # (`src.data.io.PngTopRows`), with its `placeholder` as `image`; only the rows the crop reads are decoded.
    # Likewise the mask (`reads_mask_rows`): `mask_rows` (`MaskTopRows`) decodes the rows the first crop reads,
    # and all of them only when a `cat_max_ratio` re-draw reads below those
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
        # Every step maps a uint8 value to a uint8 value, so each is a 256-entry table: the float32 formula is
        # evaluated on the 256 grey levels, and brightness + contrast compose into one table (same output as
        # converting every pixel, one pass instead of four float round trips).
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
    """An `A.Compose` of a config's list of transforms (already instantiated), as listed, or the pipeline as given.

    Accepts None / an empty list (no transforms), a list of transforms, or any callable pipeline."""
    if spec is None:
        return None
    if isinstance(spec, A.BaseCompose):
        return spec
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

    Albumentations 2 seeds a `Compose` once from OS entropy, so DataLoader workers would all draw the same
    augmentations and runs would not repeat; seeding from `torch.initial_seed()` (which Lightning's
    `seed_everything` and each worker's seed determine) makes them distinct per worker and reproducible.
    """
    if hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(int(torch.initial_seed() if seed is None else seed) % 2**32)
