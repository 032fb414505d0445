"""The generic folder dataset: layout, reduce_zero_label, the pipeline, and clear errors for bad input."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from src.data import io as data_io
from src.data.datamodule import SegDataModule
from src.data.datasets import BaseSegDataset, ShapesDataset
from src.data.datasets.base import seg_collate
from src.data.transforms import RandomCrop, RandomResize, RandomResizeCrop, seed_pipeline
from src.models.data_preprocessor import SegDataPreProcessor

CLASSES = ["a", "b", "c"]


def write_pair(root: Path, name: str, mask: np.ndarray, image_hw: tuple[int, int] | None = None) -> None:
    h, w = image_hw or mask.shape
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    img = (np.arange(h * w * 3).reshape(h, w, 3) % 251).astype(np.uint8)
    cv2.imwrite(str(root / "img" / f"{name}.jpg"), img)
    cv2.imwrite(str(root / "ann" / f"{name}.png"), mask.astype(np.uint8))


def dataset(root: Path, **kw) -> BaseSegDataset:
    return BaseSegDataset(data_root=root, img_dir="img", ann_dir="ann", classes=CLASSES, **kw)


def test_reads_pairs_sorted_with_metas(tmp_path):
    mask = np.array([[0, 1], [2, 255]])
    write_pair(tmp_path, "b", mask)
    write_pair(tmp_path, "a", mask)
    ds = dataset(tmp_path)
    assert len(ds) == 2 and ds.samples[0][0].name == "a.jpg"
    item = ds[0]
    assert item["inputs"].shape == (3, 2, 2) and item["inputs"].dtype.is_floating_point is False
    assert item["masks"].tolist() == [[0, 1], [2, 255]]
    assert item["metas"]["ori_shape"] == (2, 2)
    assert len(ds.metainfo["palette"]) == 3


def test_split_file_selects_names(tmp_path):
    for n in ("x", "y", "z"):
        write_pair(tmp_path, n, np.zeros((4, 4)))
    (tmp_path / "val.txt").write_text("z\nx\n")
    ds = dataset(tmp_path, split="val.txt")
    assert [p.stem for p, _ in ds.samples] == ["z", "x"]


def test_reduce_zero_label_maps_like_mmsegmentation(tmp_path):
    write_pair(tmp_path, "m", np.array([[0, 1, 2], [3, 255, 1]]))
    ds = dataset(tmp_path, reduce_zero_label=True)
    assert ds[0]["masks"].tolist() == [[255, 0, 1], [2, 255, 0]]


def test_pipeline_is_joint_and_test_mode_keeps_original_mask(tmp_path):
    mask = np.zeros((8, 8))
    mask[:, :4] = 1
    write_pair(tmp_path, "m", mask)
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    item = dataset(tmp_path, pipeline=flip)[0]
    assert item["masks"][:, 4:].eq(1).all() and item["masks"][:, :4].eq(0).all()
    resize = A.Compose([A.Resize(4, 4)])
    item = dataset(tmp_path, pipeline=resize, test_mode=True)[0]
    assert item["inputs"].shape == (3, 4, 4) and item["masks"].shape == (8, 8)
    assert item["metas"]["img_shape"] == (4, 4) and item["metas"]["ori_shape"] == (8, 8)


def test_missing_folder_names_it_and_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ShapesDataset(data_root=tmp_path / "nowhere", img_dir="img_dir/train", ann_dir="ann_dir/train")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "img_dir" / "train") in msg
    assert "make_shapes_dataset.py" in msg


def test_missing_mask_names_the_file(tmp_path):
    write_pair(tmp_path, "a", np.zeros((4, 4)))
    (tmp_path / "ann" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask '.*a\.png'"):
        dataset(tmp_path)


def test_label_outside_classes_names_file_and_values(tmp_path):
    write_pair(tmp_path, "bad", np.array([[0, 1], [7, 255]]))
    ds = dataset(tmp_path)
    with pytest.raises(ValueError) as err:
        ds[0]
    msg = str(err.value)
    assert "bad.png" in msg and "[7]" in msg and "0..2" in msg and "255" in msg


def test_ignore_index_is_not_an_error(tmp_path):
    write_pair(tmp_path, "ok", np.array([[255, 255], [2, 0]]))
    assert dataset(tmp_path)[0]["masks"].max().item() == 255


def test_image_mask_size_mismatch_names_both(tmp_path):
    write_pair(tmp_path, "m", np.zeros((4, 6)), image_hw=(5, 6))
    with pytest.raises(ValueError) as err:
        dataset(tmp_path)[0]
    msg = str(err.value)
    assert "m.png" in msg and "6x4" in msg and "6x5" in msg


def test_corrupt_image_names_the_file(tmp_path):
    write_pair(tmp_path, "c", np.zeros((4, 4)))
    (tmp_path / "img" / "c.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"Cannot read image '.*c\.jpg'.*corrupt"):
        dataset(tmp_path)[0]


def test_colour_mask_is_rejected_with_advice(tmp_path):
    write_pair(tmp_path, "c", np.zeros((4, 4)))
    cv2.imwrite(str(tmp_path / "ann" / "c.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        dataset(tmp_path)[0]


def test_datamodule_checks_num_classes_against_the_dataset(tmp_path):
    fn = partial(BaseSegDataset, data_root=tmp_path, classes=CLASSES)
    dm = SegDataModule(train_dataset=fn, val_dataset=fn, num_classes=3)
    assert dm.classes == CLASSES  # known without touching the disk
    with pytest.raises(ValueError, match="num_classes=5"):
        SegDataModule(train_dataset=fn, val_dataset=fn, num_classes=5)


def test_label_map_applies_after_reduce_zero_label(tmp_path):
    write_pair(tmp_path, "m", np.array([[0, 1, 4], [3, 255, 2]]))
    ds = dataset(tmp_path, label_map={4: 2, 3: 255})
    assert ds[0]["masks"].tolist() == [[0, 1, 2], [255, 255, 2]]
    ds = dataset(tmp_path, reduce_zero_label=True, label_map={3: 2})  # 4 -> 3 by reduction, then -> 2
    assert ds[0]["masks"].tolist() == [[255, 0, 2], [2, 255, 1]]


def test_palette_mode_mask_is_read_as_indices(tmp_path):
    from PIL import Image

    write_pair(tmp_path, "p", np.zeros((2, 2)))
    im = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    im.save(tmp_path / "ann" / "p.png")
    assert dataset(tmp_path)[0]["masks"].tolist() == [[0, 1], [2, 255]]


def test_a_split_of_several_parts_is_concatenated(tmp_path):
    for n in ("a", "b", "c"):
        write_pair(tmp_path, n, np.zeros((4, 4)))
    (tmp_path / "one.txt").write_text("a\n")
    (tmp_path / "two.txt").write_text("b\nc\n")
    part = partial(BaseSegDataset, data_root=tmp_path, img_dir="img", ann_dir="ann", classes=CLASSES)
    dm = SegDataModule(
        train_dataset=[partial(part, split="one.txt"), partial(part, split="two.txt")], val_dataset=part
    )
    train = dm.split_dataset("train")
    assert len(train) == 3 and [train[i]["metas"]["img_path"][-5:] for i in range(3)] == [
        "a.jpg",
        "b.jpg",
        "c.jpg",
    ]
    assert len(dm.build_split("val", test_mode=True)) == 3


def _augmented_masks(dm: SegDataModule, seed: int) -> list[list[int]]:
    from lightning import seed_everything

    seed_everything(seed, workers=True)
    dm.datasets.clear()
    loader = dm.train_dataloader()
    return [m.flatten().tolist() for batch in loader for m in batch["masks"]]


def test_augmentations_repeat_with_the_seed_and_differ_between_workers(tmp_path):
    """Albumentations seeds itself from OS entropy: without reseeding, runs would not repeat and every
    DataLoader worker would draw the same augmentations."""
    for i in range(8):
        write_pair(tmp_path, f"s{i}", (np.arange(64).reshape(8, 8) % 3))
    part = partial(
        BaseSegDataset,
        data_root=tmp_path,
        img_dir="img",
        ann_dir="ann",
        classes=CLASSES,
        pipeline=[A.RandomCrop(4, 4), A.HorizontalFlip()],
    )
    dm = SegDataModule(
        train_dataset=part, val_dataset=part, batch_size=1, num_workers=2, persistent_workers=False
    )
    dm.train_dataloader = lambda: SegDataModule._loader(dm, "train", shuffle=False)  # same sample order
    first, again, other = _augmented_masks(dm, 1), _augmented_masks(dm, 1), _augmented_masks(dm, 2)
    assert first == again and first != other
    # samples 0 and 1 are the same mask, loaded by workers 0 and 1: their crops must not all coincide
    assert any(first[2 * k] != first[2 * k + 1] for k in range(4))


def _expected_label_error(values: list[int], num_classes: int, ignore_index: int = 255) -> str | None:
    """The check's definition, from the sorted distinct values: a 0/255 mask, else labels outside the classes."""
    if ignore_index == 255 and num_classes < 255 and values == [0, 255]:
        return "holds only the values 0 and 255"
    bad = [v for v in values if v >= num_classes and v != ignore_index]
    return f"label values {bad[:10]} outside" if bad else None


@pytest.mark.parametrize("num_classes", [1, 3, 19, 254, 255, 300])
def test_label_check_fast_path_gives_the_exact_outcome(tmp_path, num_classes):
    """The two-maxima shortcut of check_labels accepts exactly the masks the per-value check accepts, and every
    refused mask gets the per-value message (masks with bad labels anywhere, 0/255 only, all 255, all 0...)."""
    write_pair(tmp_path, "a", np.zeros((4, 4)))
    ds = BaseSegDataset(
        data_root=tmp_path, img_dir="img", ann_dir="ann", classes=[str(i) for i in range(num_classes)]
    )
    rng = np.random.default_rng(num_classes)
    pools = [
        [0, 255],
        [0],
        [255],
        [254, 255],
        [0, 1, 255],
        [min(num_classes - 1, 254), 255],
        [min(num_classes, 255), 0],
    ]
    masks = [np.array(p, np.uint8)[rng.integers(0, len(p), (37, 53))] for p in pools]
    masks += [rng.integers(lo, 256, (37, 53)).astype(np.uint8) for lo in (0, 200, 250)]
    for _ in range(40):  # valid masks with one stray value at a random place
        m = rng.integers(0, min(num_classes, 256), (37, 53)).astype(np.uint8)
        m[rng.integers(37), rng.integers(53)] = rng.integers(0, 256)
        masks.append(m)
    refused = 0
    for mask in masks:
        expected = _expected_label_error(np.unique(mask).tolist(), num_classes)
        if expected is None:
            ds.check_labels(mask, tmp_path / "m.png")
        else:
            refused += 1
            with pytest.raises(ValueError, match=re.escape(expected)):
                ds.check_labels(mask, tmp_path / "m.png")
    assert refused > 0 or num_classes >= 255  # the cases include refusals wherever a label can be bad


def test_masks_travel_as_uint8_and_reach_the_model_as_the_same_long_labels(tmp_path):
    """uint8 masks are not widened on the CPU side; the data preprocessor gives the int64 batch it gave before
    (values, padding with 255); labels above 255 (a label_map to 300) still travel as int64."""
    write_pair(tmp_path, "a", np.array([[0, 1, 2], [255, 2, 1]]))
    write_pair(tmp_path, "b", np.array([[2, 2], [0, 255]]))
    ds = dataset(tmp_path)
    batch = seg_collate([ds[0], ds[1]])
    assert [m.dtype for m in batch["masks"]] == [torch.uint8, torch.uint8]
    pre = SegDataPreProcessor(size_divisor=4)
    _, got = pre(batch["inputs"], batch["masks"])
    _, before = pre(batch["inputs"], [m.long() for m in batch["masks"]])  # what int64 masks gave
    assert got.dtype == torch.long and torch.equal(got, before)
    assert got[1, :2, :2].tolist() == [[2, 2], [0, 255]] and got[1, 3].eq(255).all()
    wide = BaseSegDataset(
        data_root=tmp_path,
        img_dir="img",
        ann_dir="ann",
        classes=[str(i) for i in range(301)],
        label_map={2: 300},
    )
    assert wide[0]["masks"].dtype == torch.long and wide[0]["masks"].max().item() == 300


def test_decoding_only_the_rows_the_crop_needs_gives_the_same_samples(tmp_path, monkeypatch):
    """Cityscapes' training pipeline on PNGs: with the image decoded only down to the crop's last source row
    (RandomResizeCrop asks the reader), every sample (image, mask) and every random draw is the same as with the
    whole image decoded first; and fewer rows are decoded for most samples."""
    from src.data import io
    from src.data.datasets import base
    from src.data.transforms import (
        PhotoMetricDistortion,
        RandomCrop,
        RandomResize,
        RandomResizeCrop,
        seed_pipeline,
    )

    if io.pyspng is None:
        pytest.skip("pyspng is not installed")
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "ann").mkdir(exist_ok=True)
        small = rng.integers(0, 256, (6, 12, 3), dtype=np.uint8)
        cv2.imwrite(
            str(tmp_path / "img" / f"{i}.png"), cv2.resize(small, (192, 96), interpolation=cv2.INTER_CUBIC)
        )
        labels = rng.choice(np.r_[0:3, 255], size=(4, 8)).astype(np.uint8)
        cv2.imwrite(
            str(tmp_path / "ann" / f"{i}.png"), cv2.resize(labels, (192, 96), interpolation=cv2.INTER_NEAREST)
        )

    def make() -> BaseSegDataset:
        pipeline = [
            RandomResizeCrop(
                RandomResize(scale=(192, 96), ratio_range=(0.5, 2.0)),
                RandomCrop(crop_size=(48, 96), cat_max_ratio=0.75),
            ),
            A.HorizontalFlip(p=0.5),
            PhotoMetricDistortion(),
            A.PadIfNeeded(
                48, 96, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255
            ),
        ]
        ds = dataset(tmp_path, img_suffix=".png", pipeline=pipeline, decoder="png_top_rows")
        seed_pipeline(ds.pipeline, 11)
        return ds

    readers = []

    def opening(path, mask=False):
        reader = io.open_top_rows(path, mask=mask)
        if not mask:
            readers.append(reader)
        return reader

    monkeypatch.setattr(base, "open_top_rows", opening)
    lazy, eager = make(), make()
    eager.image_rows = lambda path: None  # decode the whole image first, as before
    eager.mask_rows = lambda path, image_hw: None  # and the whole mask
    for k in range(60):
        a, b = lazy[k % 3], eager[k % 3]
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["masks"], b["masks"]), k
        assert a["metas"] == b["metas"]
    assert len(readers) == 60
    assert sum(r.rows_decoded < 96 for r in readers) > 30
    # the plain decoder reads whole files; png_top_rows needs the fused step first, and says so
    assert (
        dataset(tmp_path, img_suffix=".png", pipeline=make().pipeline).image_rows(lazy.samples[0][0]) is None
    )
    with pytest.raises(ValueError, match="decoder=png_top_rows .* starts with HorizontalFlip"):
        dataset(tmp_path, img_suffix=".png", pipeline=[A.HorizontalFlip(p=1.0)], decoder="png_top_rows")


needs_spng = pytest.mark.skipif(data_io.pyspng is None, reason="pyspng is not installed")


def _mask_rows_pair(tmp_path: Path, masks: list[np.ndarray], ratio_range, cat_max_ratio=0.75, **kw):
    """Two datasets on the same files and seeds: one decodes the masks' top rows (recording its readers), one the
    whole masks, as before."""
    for i, mask in enumerate(masks):
        write_pair(tmp_path, str(i), mask)

    def make() -> BaseSegDataset:
        pipeline = [
            RandomResizeCrop(
                RandomResize(scale=(192, 96), ratio_range=ratio_range),
                RandomCrop(crop_size=(48, 96), cat_max_ratio=cat_max_ratio),
            ),
            A.HorizontalFlip(p=0.5),
        ]
        return dataset(tmp_path, pipeline=pipeline, decoder="png_top_rows", **kw)

    lazy, eager = make(), make()
    eager.mask_rows = lambda path, image_hw: None
    readers: list = []
    opened = lazy.mask_rows
    lazy.mask_rows = lambda path, image_hw: readers.append(opened(path, image_hw)) or readers[-1]
    return lazy, eager, readers


def _top_heavy_mask(rng: np.random.Generator) -> np.ndarray:
    """96x192 labels: the top half nearly all class 1 (crops there fail cat_max_ratio 0.75), the rest mixed."""
    mask = cv2.resize(
        rng.choice(np.r_[0:3, 255], size=(12, 24)).astype(np.uint8),
        (192, 96),
        interpolation=cv2.INTER_NEAREST,
    )
    mask[: 40 + int(rng.integers(0, 20))] = 1
    return mask


@needs_spng
@pytest.mark.parametrize("ratio_range", [(0.5, 2.0), (1.0, 1.0), (0.3, 0.6), (1.5, 3.0)])
def test_decoding_only_the_mask_rows_the_crop_needs_gives_the_same_samples(tmp_path, ratio_range):
    """Same crops, pixels and labels as decoding the whole mask, over many seeds; retries of cat_max_ratio below
    the first crop's rows decode the whole mask."""
    rng = np.random.default_rng(3)
    masks = [_top_heavy_mask(rng) for _ in range(3)]
    lazy, eager, readers = _mask_rows_pair(tmp_path, masks, ratio_range)
    for seed in range(8):
        seed_pipeline(lazy.pipeline, seed)
        seed_pipeline(eager.pipeline, seed)
        for k in range(12):
            a, b = lazy[k % 3], eager[k % 3]
            assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["masks"], b["masks"]), (seed, k)
            assert a["masks"].dtype == b["masks"].dtype and a["metas"] == b["metas"]
    assert len(readers) == 96 and all(r is not None for r in readers)
    if ratio_range[1] >= 1.0:  # crops of 48 of 96 or more resized rows: most reach part of the mask only
        assert sum(r.rows_decoded < 96 for r in readers) > 10


@needs_spng
def test_retries_below_the_first_crop_decode_the_whole_mask(tmp_path):
    """A first crop in the rows of one class is re-drawn (cat_max_ratio) further down: the whole mask is decoded
    then, and the result is the same as from the whole mask."""
    rng = np.random.default_rng(5)
    lazy, eager, readers = _mask_rows_pair(tmp_path, [_top_heavy_mask(rng) for _ in range(2)], (2.0, 2.0))
    seed_pipeline(lazy.pipeline, 0)
    seed_pipeline(eager.pipeline, 0)
    for k in range(40):
        assert torch.equal(lazy[k % 2]["masks"], eager[k % 2]["masks"]), k
    calls = [(r.first_rows, r.rows_decoded) for r in readers]
    assert any(first < 96 and last == 96 for first, last in calls)  # a retry needed the rest
    assert any(last < 96 for _, last in calls)  # a first crop that passed


@needs_spng
def test_a_bad_label_in_the_decoded_mask_rows_raises_the_same_error(tmp_path):
    mask = np.tile(np.r_[0:3, 255].astype(np.uint8), (96, 48))
    mask[0, 5] = 7  # in the first row: every crop reads it
    lazy, eager, readers = _mask_rows_pair(tmp_path, [mask], (1.5, 2.0), cat_max_ratio=1.0)
    with pytest.raises(ValueError) as whole:
        eager[0]
    with pytest.raises(ValueError) as top:
        lazy[0]
    assert str(top.value) == str(whole.value) and "0.png" in str(top.value) and "[7]" in str(top.value)
    assert readers[0].reader.rows_decoded < 96  # the error came from the top rows alone


@needs_spng
def test_top_mask_rows_of_only_0_and_255_are_judged_on_the_whole_mask(tmp_path):
    """Top rows of 0 and 255 alone do not make a 0/255 mask: the whole mask decides, as before."""
    mask = np.full((96, 192), 255, np.uint8)
    mask[:, ::3] = 0
    mask[80:, ::5] = 2  # other classes below the rows the crops read
    lazy, eager, readers = _mask_rows_pair(tmp_path, [mask], (1.5, 2.0), cat_max_ratio=1.0)
    for seed in range(5):
        seed_pipeline(lazy.pipeline, seed)
        seed_pipeline(eager.pipeline, seed)
        assert torch.equal(lazy[0]["masks"], eager[0]["masks"])
    # rows of 0 and 255 alone were decoded on, to the whole mask: the decoded rows always hold the 2s
    assert len(readers) == 5 and all(2 in r.decoded for r in readers)
    assert any(r.first_rows <= 80 and r.rows_decoded == 96 for r in readers)
    assert (
        dataset(tmp_path, pipeline=[A.HorizontalFlip(p=1.0)]).mask_rows(lazy.samples[0][1], (96, 192)) is None
    )
    write_pair(tmp_path, "0", np.where(mask == 2, 0, mask))  # now a 0/255 mask: refused as before
    with pytest.raises(ValueError) as whole:
        eager[0]
    with pytest.raises(ValueError) as top:
        lazy[0]
    assert str(top.value) == str(whole.value) and "only the values 0 and 255" in str(top.value)
