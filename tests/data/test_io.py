"""Image and mask reading: libspng's fast path gives exactly what OpenCV / Pillow give, and errors name the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from src.data import io
from src.data.io import label_counts, load_image, load_mask, png_format


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _cv2_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("with_spng", [True, False])
def test_png_images_decode_to_the_same_rgb_pixels(tmp_path, rng, with_spng, monkeypatch):
    if not with_spng:
        monkeypatch.setattr(io, "pyspng", None)
    elif io.pyspng is None:
        pytest.skip("pyspng is not installed")
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    for name, array in (("rgb", rgb[..., ::-1]), ("grey", grey), ("rgba", rgba)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), array)
    assert (load_image(tmp_path / "rgb.png") == rgb).all()
    for name in ("rgb", "grey", "rgba"):  # grey expanded and alpha dropped, as OpenCV does
        out = load_image(tmp_path / f"{name}.png")
        assert out.shape == (37, 53, 3) and out.dtype == np.uint8
        assert (out == _cv2_rgb(tmp_path / f"{name}.png")).all(), name
    cv2.imwrite(str(tmp_path / "photo.jpg"), rgb)
    assert (load_image(tmp_path / "photo.jpg") == _cv2_rgb(tmp_path / "photo.jpg")).all()


@pytest.mark.parametrize("with_spng", [True, False])
def test_masks_keep_their_stored_indices(tmp_path, rng, with_spng, monkeypatch):
    if not with_spng:
        monkeypatch.setattr(io, "pyspng", None)
    elif io.pyspng is None:
        pytest.skip("pyspng is not installed")
    labels = rng.choice(np.r_[np.arange(19), 255], size=(21, 34)).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "grey.png")
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    palette.save(tmp_path / "palette.png")
    wide = (labels.astype(np.uint16) * 100).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    for name in ("grey", "palette"):
        mask = load_mask(tmp_path / f"{name}.png")
        assert mask.dtype == np.uint8 and (mask == labels).all(), name
    assert (load_mask(tmp_path / "wide.png") == wide).all()


def test_png_format_reads_the_header(tmp_path, rng):
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), rng.integers(0, 256, (4, 5), dtype=np.uint16))
    assert png_format((tmp_path / "a.png").read_bytes()) == (8, 2)  # 8-bit RGB
    assert png_format((tmp_path / "b.png").read_bytes()) == (16, 0)  # 16-bit grey
    assert png_format(b"\xff\xd8\xff\xe0 not a png") is None


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    for loader, what in ((load_image, "image"), (load_mask, "mask")):
        with pytest.raises(ValueError, match=f"Cannot read {what} '.*broken.png'"):
            loader(tmp_path / "broken.png")
        with pytest.raises(ValueError, match="does not exist"):
            loader(tmp_path / "missing.png")


def test_label_counts_equal_bincount(rng):
    mask = rng.choice([0, 3, 7, 255], size=(33, 47)).astype(np.uint8)
    assert (label_counts(mask) == np.bincount(mask.ravel(), minlength=256)).all()
    wide = mask.astype(np.uint16) * 2
    assert (label_counts(wide) == np.bincount(wide.ravel(), minlength=256)).all()
