"""The converters on the real releases in the shared data folder (slow; skipped when the data is absent).

The folder is `$SEGKIT_SHARED_DATA`, by default `<repo>/../shared/data`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from src.data.converters.drive import convert_drive
from src.data.converters.stanford_background import convert_stanford_background

pytestmark = pytest.mark.slow

SHARED = Path(os.environ.get("SEGKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"'{path}' is absent (set SEGKIT_SHARED_DATA to the shared data folder)")
    return path


def label_values(paths: list[Path]) -> set[int]:
    counts = np.zeros(256, np.int64)
    for p in paths:
        counts += np.bincount(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ravel(), minlength=256)
    return {int(v) for v in np.flatnonzero(counts)}


def test_stanford_background_release(tmp_path):
    out = tmp_path / "stanford_background"
    meta = convert_stanford_background(shared("iccv09Data.tar.gz"), out)
    images = sorted((out / "images").glob("*.jpg"))
    labels = sorted((out / "labels").glob("*.png"))
    assert len(images) == len(labels) == 715 and [p.stem for p in images] == [p.stem for p in labels]
    values = label_values(labels)
    assert values <= set(range(8)) | {255} and 255 in values
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert (len(train), len(val)) == (572, 143) and set(train).isdisjoint(val)
    assert sorted(train + val) == [p.stem for p in images]
    assert meta["counts"] == {"images": 715, "train": 572, "val": 143}


def test_drive_release(tmp_path):
    src = shared("DRIVE")
    out = tmp_path / "DRIVE"
    assert convert_drive([src], out)["counts"] == {"training": 20, "validation": 20}
    for split, part in (("training", "training"), ("validation", "test")):
        images = sorted((out / "images" / split).glob("*.png"))
        labels = sorted((out / "annotations" / split).glob("*.png"))
        assert len(images) == len(labels) == 20
        assert [f"{p.stem}_manual1" for p in images] == [p.stem for p in labels]
        assert label_values(labels) == {0, 1}
        for p in images[:2]:
            img = Image.open(p)
            assert img.size == (565, 584) and img.mode == "RGB"
            original = Image.open(src / part / "images" / f"{p.stem}.tif").convert("RGB")
            np.testing.assert_array_equal(np.array(img), np.array(original))
        first = labels[0]
        manual = np.array(Image.open(src / part / "1st_manual" / f"{first.stem.split('_')[0]}_manual1.gif"))
        np.testing.assert_array_equal(cv2.imread(str(first), cv2.IMREAD_UNCHANGED), manual // 255)
