"""MMSegmentation's transforms as Albumentations transforms, and every configured training pipeline."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.data.transforms import (
    PhotoMetricDistortion,
    RandomCrop,
    RandomResize,
    RandomResizeCrop,
    Resize,
    build_pipeline,
    nearest_source_rows,
    rescale_size,
    resize_then_crop,
    source_rows,
)
from tests.helpers import compose_cfg

DATASET_CONFIGS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "dataset").glob("*.yaml"))


def compose(*transforms, seed=0) -> A.Compose:
    return A.Compose(list(transforms), seed=seed)


@pytest.mark.parametrize(
    ("hw", "scale", "expected"),
    [
        ((1024, 2048), (2048, 1024), (1024, 2048)),  # Cityscapes at its own scale
        ((480, 640), (2048, 512), (512, 683)),  # ADE20K: the short edge bounds it
        ((240, 320), (2048, 512), (512, 683)),  # upscales too, as mmcv.imrescale
        ((584, 565), (584, 565), (584, 565)),  # DRIVE
        ((100, 1000), (2048, 512), (205, 2048)),  # the long edge bounds it
    ],
)
def test_rescale_size_is_mmcv_box_fit(hw, scale, expected):
    assert rescale_size(hw, scale) == expected


def test_resize_keep_ratio_and_exact():
    img = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    out = compose(Resize(scale=(2048, 512)))(image=img, mask=mask)
    assert out["image"].shape == (512, 683, 3) and out["mask"].shape == (512, 683)
    out = compose(Resize(scale=(64, 32), keep_ratio=False))(image=img, mask=mask)
    assert out["image"].shape == (32, 64, 3)


def test_random_resize_stays_in_the_ratio_box():
    t = compose(RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0)), seed=3)
    img = np.zeros((240, 320, 3), np.uint8)
    shorts = []
    for _ in range(50):
        out = t(image=img, mask=img[..., 0])
        h, w = out["image"].shape[:2]
        assert out["mask"].shape == (h, w)
        assert abs(w / h - 320 / 240) < 0.02  # aspect kept
        shorts.append(h)
    # short edge bounded by 512 * r with r in [0.5, 2]: in [256, 1024], and both halves of the range drawn
    assert 256 <= min(shorts) and max(shorts) <= 1024
    assert min(shorts) < 512 < max(shorts)


def test_random_crop_clips_to_small_images_and_pads_after():
    img = np.full((50, 60, 3), 7, np.uint8)
    mask = np.ones((50, 60), np.uint8)
    t = compose(
        RandomCrop(crop_size=(64, 64)),
        A.PadIfNeeded(min_height=64, min_width=64, position="top_left", fill=0, fill_mask=255),
    )
    out = t(image=img, mask=mask)
    assert out["mask"].shape == (64, 64)
    assert (
        (out["mask"][:50, :60] == 1).all()
        and (out["mask"][50:] == 255).all()
        and (out["mask"][:, 60:] == 255).all()
    )
    assert (out["image"][:50, :60] == 7).all() and (out["image"][50:] == 0).all()


def _has_both(mask) -> bool:
    return len(np.unique(mask[mask != 255])) > 1


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    # class 1 only in the last 10 columns: 5 of 81 crop positions keep class 0 under 75 %
    mask = np.zeros((10, 100), np.uint8)
    mask[:, 90:] = 1
    img = np.zeros((10, 100, 3), np.uint8)

    def share_with_both(ratio: float) -> float:
        t = compose(RandomCrop(crop_size=(10, 20), cat_max_ratio=ratio), seed=1)
        return np.mean([_has_both(t(image=img, mask=mask)["mask"]) for _ in range(300)])

    plain, balanced = share_with_both(1.0), share_with_both(0.75)
    assert plain < 0.15  # ~ 14 / 81 crops include any class-1 column
    assert balanced > 0.35  # ~ 1 - (76/81)^10 of the crops are redrawn until balanced


def test_cat_max_ratio_does_not_count_ignored_pixels():
    # everything but one column is ignored: the labelled pixels are 50/50, so the first crop is kept
    mask = np.full((4, 8), 255, np.uint8)
    mask[0, 0], mask[1, 0] = 0, 1
    t = compose(RandomCrop(crop_size=(4, 8), cat_max_ratio=0.75))
    assert (t(image=np.zeros((4, 8, 3), np.uint8), mask=mask)["mask"] == mask).all()


def test_photometric_steps_match_mmsegmentation_formulas():
    t = PhotoMetricDistortion()
    img = np.array([[[10, 100, 250]]], np.uint8)
    none = dict(beta=None, alpha=None, saturation=None, hue=None)
    assert (t.apply(img, **{**none, "beta": 10.0}) == [[[20, 110, 255]]]).all()  # additive, clipped
    assert (t.apply(img, **{**none, "alpha": 2.0}) == [[[20, 200, 255]]]).all()  # multiplicative, clipped
    grey = t.apply(img, **{**none, "saturation": 0.0})
    assert grey[0, 0, 0] == grey[0, 0, 1] == grey[0, 0, 2]  # no saturation left
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert (
        t.apply(red, **{**none, "hue": 60}) == [[[0, 255, 0]]]
    ).all()  # +120 degrees (OpenCV H is deg / 2)


def test_photometric_distortion_varies_and_keeps_the_mask():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (16, 16), dtype=np.uint8)
    t = compose(PhotoMetricDistortion())
    outs = [t(image=img, mask=mask) for _ in range(8)]
    assert all((o["mask"] == mask).all() and o["image"].dtype == np.uint8 for o in outs)
    assert len({o["image"].tobytes() for o in outs}) > 4


def test_build_pipeline_accepts_lists_and_rejects_non_transforms():
    assert build_pipeline(None) is None and build_pipeline([]) is None
    pipe = build_pipeline([A.HorizontalFlip(p=1.0)])
    assert isinstance(pipe, A.Compose)
    assert (pipe(image=np.arange(6, dtype=np.uint8).reshape(1, 2, 3))["image"][0, 0] == [3, 4, 5]).all()
    with pytest.raises(TypeError, match="pipeline item 1"):
        build_pipeline([A.HorizontalFlip(), {"type": "RandomFlip"}])


def _train_pipeline(name: str, tmp_path: Path) -> A.Compose:
    cfg = compose_cfg("train", [f"dataset={name}", f"paths.data_dir={tmp_path}"], tmp_path)
    spec = OmegaConf.to_container(cfg.dataset.train_pipeline, resolve=True)
    return build_pipeline(instantiate(spec))


def _labelled_pair(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A mask with a few labels and 255 patches, and an image whose red channel says where label 1 is."""
    h, w = hw
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2] = rng.choice([0, 2])
    cv2.rectangle(mask, (w // 4, h // 4), (w // 2, 3 * h // 4), 1, -1)  # the drawn shape: label 1
    mask[: h // 8, : w // 8] = 255
    image = np.full((h, w, 3), 30, np.uint8)
    image[mask == 1] = (230, 30, 30)
    return image, mask


def _input_sizes_and_upscale(pipe: A.Compose) -> tuple[list[tuple[int, int]], float]:
    """Test image sizes near the dataset's own resize scale (at most 1200 px a side, so HRF stays fast), and the
    largest factor the pipeline's resizes can enlarge them by: bilinear edges blur over about that many pixels."""
    sizes, upscale = [(240, 320), (97, 131), (512, 384)], 1.0
    resizes = [t for t in pipe.transforms if hasattr(t, "scale") and hasattr(t, "keep_ratio")]
    for t in resizes:
        fitted = [rescale_size(hw, t.scale) for hw in sizes]
        sizes = [rescale_size(hw, (1200, 1200)) if max(hw) > 1200 else hw for hw in fitted]
        ratio = max(t.ratio_range) if getattr(t, "ratio_range", None) else 1.0
        upscale = max(max(max(t.scale) / max(hw), min(t.scale) / min(hw)) * ratio for hw in sizes)
    return sizes, upscale


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_every_training_pipeline_keeps_labels_and_alignment(name, tmp_path):
    pipe = _train_pipeline(name, tmp_path)
    if pipe is None:
        pytest.skip(f"dataset={name} has no training transforms")
    geometric = A.Compose([t for t in pipe.transforms if not isinstance(t, A.ImageOnlyTransform)], seed=0)
    pipe.set_random_seed(0)
    rng = np.random.default_rng(0)
    sizes, upscale = _input_sizes_and_upscale(pipe)
    # away from edges (bilinear image vs nearest mask) the shape is where the mask says it is; the edge band
    # is as wide as the largest enlargement; pixels by the crop's border may be next to an edge outside it
    kernel = np.ones((2 * int(np.ceil(upscale)) + 3,) * 2, np.uint8)
    for hw in sizes:
        for _ in range(3):
            image, mask = _labelled_pair(rng, hw)
            out = pipe(image=image, mask=mask)
            assert out["image"].dtype == np.uint8 and out["image"].shape[:2] == out["mask"].shape
            assert set(np.unique(out["mask"])) <= set(np.unique(mask)) | {255}, name

            out = geometric(image=image, mask=mask)
            red, m = out["image"][..., 0].astype(int), out["mask"]
            erode = partial(cv2.erode, kernel=kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
            inner = erode((m == 1).astype(np.uint8)).astype(bool)
            outer = erode(((m != 1) & (m != 255)).astype(np.uint8)).astype(bool)
            assert inner.any() or outer.any(), f"{name}: nothing left to compare at {hw}"
            assert (red[inner] > 200).all() and (red[outer] < 60).all(), (name, hw, upscale)


# ----------------------------------------------------------------- speed paths: same output as the plain ones
def _photo_float(img, beta=None, contrast_first=True, alpha=None, saturation=None, hue=None):
    """PhotoMetricDistortion written pixel by pixel in float32, as MMSegmentation's `convert` does."""

    def convert(x, a=1.0, b=0.0):
        return np.clip(x.astype(np.float32) * a + b, 0, 255).astype(np.uint8)

    if beta is not None:
        img = convert(img, b=beta)
    if contrast_first and alpha is not None:
        img = convert(img, a=alpha)
    if saturation is not None or hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        if saturation is not None:
            hsv[..., 1] = convert(hsv[..., 1], a=saturation)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0].astype(int) + hue) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and alpha is not None:
        img = convert(img, a=alpha)
    return img


def test_photometric_lookup_tables_equal_the_float_formulas():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    t = compose(PhotoMetricDistortion(), seed=4).transforms[0]
    for _ in range(64):
        params = t.get_params()
        assert (t.apply(img, **params) == _photo_float(img, **params)).all(), params
    # the extremes of each range, every step on
    for first in (True, False):
        params = dict(beta=-32.0, contrast_first=first, alpha=1.5, saturation=0.5, hue=-18)
        assert (t.apply(img, **params) == _photo_float(img, **params)).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_then_crop_equals_resizing_everything_then_cropping(channels):
    rng = np.random.default_rng(channels)
    for trial in range(80):
        h, w = int(rng.integers(20, 160)), int(rng.integers(20, 160))
        shape = (h, w) if channels == 1 else (h, w, channels)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        # ratios 0.5 and 2 exactly (OpenCV's special 2x paths) and random ones
        ratio = [0.5, 2.0, 1.0][trial] if trial < 3 else float(rng.uniform(0.3, 2.5))
        out_h, out_w = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
        ch, cw = min(out_h, int(rng.integers(1, 64))), min(out_w, int(rng.integers(1, 64)))
        y0, x0 = int(rng.integers(0, out_h - ch + 1)), int(rng.integers(0, out_w - cw + 1))
        box = (y0, y0 + ch, x0, x0 + cw)
        for nearest, interp in ((False, cv2.INTER_LINEAR), (True, cv2.INTER_NEAREST)):
            full = cv2.resize(img, (out_w, out_h), interpolation=interp)[y0 : y0 + ch, x0 : x0 + cw]
            part = resize_then_crop(img, (out_h, out_w), box, nearest=nearest)
            assert part.shape == full.shape and (part == full).all(), (trial, h, w, ratio, box, nearest)


def test_resize_then_crop_from_the_top_source_rows_alone_is_the_same():
    """Given only the `source_rows` top rows of the image (a partly decoded PNG) and the whole image's size,
    the bilinear crop is the full resize's crop; fewer rows than the whole image for most crops."""
    rng = np.random.default_rng(3)
    fewer = 0
    for trial in range(150):
        h, w = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ratio = [0.5, 2.0, 1.0][trial] if trial < 3 else float(rng.uniform(0.3, 2.5))
        out_h, out_w = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
        ch, cw = min(out_h, int(rng.integers(1, 96))), min(out_w, int(rng.integers(1, 96)))
        y0, x0 = int(rng.integers(0, out_h - ch + 1)), int(rng.integers(0, out_w - cw + 1))
        box = (y0, y0 + ch, x0, x0 + cw)
        rows = source_rows((h, w), (out_h, out_w), box)
        assert 1 <= rows <= h
        fewer += rows < h
        full = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[y0 : y0 + ch, x0 : x0 + cw]
        top = np.ascontiguousarray(img[:rows])  # a copy: nothing below `rows` can be read
        part = resize_then_crop(top, (out_h, out_w), box, nearest=False, src_hw=(h, w))
        assert part.shape == full.shape and (part == full).all(), (trial, h, w, ratio, box, rows)
    assert fewer > 75  # the saving is real for most crops


def test_fused_resize_crop_equals_the_two_transforms_drawing_the_same_numbers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    mask = cv2.resize(rng.integers(0, 4, (6, 10), dtype=np.uint8), (150, 90), interpolation=cv2.INTER_NEAREST)
    resize = RandomResize(scale=(300, 150), ratio_range=(0.5, 2.0))
    crop = RandomCrop(crop_size=(60, 100), cat_max_ratio=0.75)
    fused = RandomResizeCrop(resize, crop)
    # one shared generator for the two transforms, a generator seeded alike for the fused one
    fused.set_random_state(np.random.default_rng(7), random.Random(0))
    shared = np.random.default_rng(7)
    resize.set_random_state(shared, random.Random(0))
    crop.set_random_state(shared, random.Random(0))
    for i in range(100):
        a = fused(image=image, mask=mask)
        b = crop(**resize(image=image, mask=mask))
        assert (a["image"] == b["image"]).all() and (a["mask"] == b["mask"]).all(), i


def test_build_pipeline_keeps_the_list_as_given_and_the_fused_step_is_named_in_a_config():
    resize, crop = RandomResize(scale=(64, 32)), RandomCrop(crop_size=(16, 16))
    plain = build_pipeline([resize, crop, A.HorizontalFlip()])  # no silent rewrite of the list
    assert [type(t).__name__ for t in plain.transforms] == ["RandomResize", "RandomCrop", "HorizontalFlip"]
    named = build_pipeline(
        instantiate(
            [
                {
                    "_target_": "src.data.transforms.RandomResizeCrop",
                    "resize": {"_target_": "src.data.transforms.RandomResize", "scale": [64, 32]},
                    "crop": {"_target_": "src.data.transforms.RandomCrop", "crop_size": [16, 16]},
                }
            ]
        )
    )
    step = named.transforms[0]
    assert type(step).__name__ == "RandomResizeCrop" and step.scale == (64, 32) and step.crop_size == (16, 16)


def test_nearest_source_rows_is_what_the_mask_crop_reads():
    """The nearest crop from the mask's first `nearest_source_rows` rows equals the crop from the whole mask, and
    one row fewer would not hold the last row read (rows numbered by their index: the crop shows which it read)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        h = int(rng.integers(2, 300))
        out_h = int(rng.integers(1, 700))
        mask = np.repeat(np.arange(h, dtype=np.int32)[:, None], 5, axis=1)
        y1 = int(rng.integers(1, out_h + 1))
        y0 = int(rng.integers(0, y1))
        box = (y0, y1, 0, 5)
        rows = nearest_source_rows(h, out_h, y1)
        whole = resize_then_crop(mask, (out_h, 5), box, nearest=True)
        if out_h != h:  # the plain resize too
            assert (whole == cv2.resize(mask.astype(np.float32), (5, out_h), interpolation=0)[y0:y1]).all()
        assert rows == int(whole.max()) + 1
        assert (resize_then_crop(mask[:rows], (out_h, 5), box, nearest=True, src_hw=(h, 5)) == whole).all()
