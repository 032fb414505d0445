"""Image and mask reading: libspng's fast path gives exactly what OpenCV / Pillow give, and errors name the file."""

from __future__ import annotations

import zlib

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


def _smooth_rgb(rng, h, w):
    """Photo-like content (neighbouring pixels alike), so that encoders pick every PNG row filter."""
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    noise = rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) + noise


@pytest.mark.parametrize("with_isal", [True, False])
def test_top_rows_of_a_png_are_the_rows_of_the_full_decode(tmp_path, rng, with_isal, monkeypatch):
    """`open_top_rows(path)(n)` is `load_image(path)[:n]` for PNGs from OpenCV (one filter, fast zlib) and Pillow
    (adaptive filters: None, Sub, Up, Average, Paeth); only n rows are decoded when libspng is there, inflated by
    ISA-L when it is installed."""
    if io.pyspng is None:
        pytest.skip("pyspng is not installed")
    if not with_isal:
        monkeypatch.setattr(io, "isal_zlib", None)
    elif io.isal_zlib is None:
        pytest.skip("isal is not installed")
    img = _smooth_rgb(rng, 61, 83)
    cv2.imwrite(str(tmp_path / "cv.png"), img[..., ::-1])
    cv2.imwrite(str(tmp_path / "cv9.png"), img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    Image.fromarray(img).save(tmp_path / "pil.png", optimize=True)
    for name in ("cv.png", "cv9.png", "pil.png"):
        full = load_image(tmp_path / name)
        assert (full == img).all()
        reader = io.open_top_rows(tmp_path / name)
        assert reader.shape == (61, 83, 3) and reader.placeholder.shape == (61, 83, 3)
        for rows in (1, 2, 17, 60, 61, 500):
            top = reader(rows)
            assert top.shape == (min(rows, 61), 83, 3) and (top == full[:rows]).all(), (name, rows)
            assert reader.rows_decoded == min(rows, 61)


def test_top_rows_only_for_8bit_rgb_non_interlaced_pngs(tmp_path, rng, monkeypatch):
    cv2.imwrite(str(tmp_path / "grey.png"), rng.integers(0, 256, (8, 9), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "deep.png"), rng.integers(0, 256, (8, 9, 3), dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "photo.jpg"), rng.integers(0, 256, (8, 9, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 4, (8, 9), dtype=np.uint8), mode="P").save(tmp_path / "palette.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), rng.integers(0, 256, (8, 9, 3), dtype=np.uint8))
    data = bytearray((tmp_path / "rgb.png").read_bytes())
    data[28] = 1  # Adam7 interlacing: rows are not stored top to bottom
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    (tmp_path / "interlaced.png").write_bytes(bytes(data))
    for name in ("grey.png", "deep.png", "photo.jpg", "palette.png", "interlaced.png", "missing.png"):
        assert io.open_top_rows(tmp_path / name) is None, name
    assert io.open_top_rows(tmp_path / "rgb.png") is not None or io.pyspng is None
    monkeypatch.setattr(io, "pyspng", None)
    assert io.open_top_rows(tmp_path / "rgb.png") is None


def _outcome(fn):
    try:
        return fn()
    except ValueError as exc:
        return str(exc)


def test_top_rows_of_a_damaged_png_fail_as_load_image_does(tmp_path, rng):
    """Damage below the rows asked for goes unseen (those rows are never decoded); asking for the damaged rows
    gives what load_image gives: OpenCV's decode once libspng refuses the file, or the error naming the file."""
    if io.pyspng is None:
        pytest.skip("pyspng is not installed")
    img = _smooth_rgb(rng, 64, 96)
    Image.fromarray(img).save(tmp_path / "ok.png", compress_level=0)  # stored: the rows lie in file order
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "zeroed.png").write_bytes(data[:-200] + bytes(188) + data[-12:])  # the last rows; a bad CRC
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # no complete IDAT chunk left
    zeroed = io.open_top_rows(tmp_path / "zeroed.png")
    assert (zeroed(8) == img[:8]).all()
    full = load_image(tmp_path / "zeroed.png")  # OpenCV's lenient decode
    assert (zeroed(64) == full).all()
    cut = io.open_top_rows(tmp_path / "cut.png")
    with pytest.raises(ValueError) as err:
        load_image(tmp_path / "cut.png")
    assert "Cannot read image" in str(err.value) and "cut.png" in str(err.value)
    for rows in (8, 64):
        with pytest.raises(ValueError) as again:
            cut(rows)
        assert str(again.value) == str(err.value)


def test_isal_repacking_keeps_the_rows_and_refuses_what_libspng_would_check(tmp_path, rng):
    """The ISA-L path re-packs the PNG with stored (uncompressed) image data: libspng decodes it to the same rows;
    a damaged IDAT chunk (CRC) or a header that promises more rows than the data holds gives None (the plain
    path then decides, as before)."""
    if io.pyspng is None or io.isal_zlib is None:
        pytest.skip("pyspng or isal is not installed")
    img = _smooth_rgb(rng, 150, 70)  # more than one stored block (65535 bytes) of rows
    Image.fromarray(img).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    for rows in (1, 77, 149, 150):
        stored = io._inflated_png(data, 3, rows)
        assert stored is not None and io.pyspng.load(stored).tolist() == img[:rows].tolist()
    idat = data.index(b"IDAT")
    damaged = data[: idat + 20] + bytes([data[idat + 20] ^ 1]) + data[idat + 21 :]
    assert io._inflated_png(damaged, 3, 10) is None
    taller = io.png_with_height(data, 151)
    assert io._inflated_png(taller, 3, 151) is None and io._inflated_png(taller, 3, 150) is not None


def test_isal_decodes_end_with_the_vector_registers_cleared(tmp_path, rng, monkeypatch):
    """ISA-L returns without `vzeroupper`, which slowed every later OpenCV call 2-2.5x (docs/benchmarks.md):
    every `_inflated_png` ends with `clear_upper_vector_state` after its ISA-L calls, also when the repacking
    refuses the file or raises."""
    if io.isal_zlib is None:
        pytest.skip("isal is not installed")
    Image.fromarray(_smooth_rgb(rng, 40, 30)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    calls: list[str] = []
    real = io.isal_zlib

    class RecordingIsal:  # each ISA-L function, recorded when called
        error = real.error

        def __getattr__(self, name):
            def call(*args):
                calls.append("isal")
                return getattr(real, name)(*args)

            return call

    class FailingIsal(RecordingIsal):
        def decompressobj(self):
            calls.append("isal")
            raise RuntimeError("inflate failed")

    monkeypatch.setattr(io, "clear_upper_vector_state", lambda: calls.append("clear"))
    monkeypatch.setattr(io, "isal_zlib", RecordingIsal())
    idat = data.index(b"IDAT")
    damaged = data[: idat + 20] + bytes([data[idat + 20] ^ 1]) + data[idat + 21 :]
    taller = io.png_with_height(data, 41)  # promises a row more than its data holds
    for png, rows, decoded in ((data, 20, True), (damaged, 20, False), (taller, 41, False)):
        calls.clear()
        assert (io._inflated_png(png, 3, rows) is not None) == decoded
        assert "isal" in calls and calls[-1] == "clear"
    monkeypatch.setattr(io, "isal_zlib", FailingIsal())
    calls.clear()
    with pytest.raises(RuntimeError):
        io._inflated_png(data, 3, 20)
    assert calls == ["isal"] * (len(calls) - 1) + ["clear"] and len(calls) >= 2


def test_top_rows_of_a_grey_mask_png_are_the_rows_of_load_mask(tmp_path, rng):
    """`open_top_rows(path, mask=True)(n)` is `load_mask(path)[:n]` for 8-bit grey PNGs (OpenCV's and Pillow's
    filters); palette, 16-bit and RGB files get no reader (they are decoded whole)."""
    if io.pyspng is None:
        pytest.skip("pyspng is not installed")
    labels = cv2.resize(rng.choice(np.r_[0:19, 255], (8, 12)).astype(np.uint8), (83, 61), interpolation=0)
    cv2.imwrite(str(tmp_path / "cv.png"), labels)
    Image.fromarray(labels).save(tmp_path / "pil.png", optimize=True)
    for name in ("cv.png", "pil.png"):
        reader = io.open_top_rows(tmp_path / name, mask=True)
        assert reader.shape == (61, 83) and reader.placeholder.shape == (61, 83)
        for rows in (1, 2, 17, 60, 61, 500):
            top = reader(rows)
            assert top.shape == (min(rows, 61), 83) and (top == load_mask(tmp_path / name)[:rows]).all()
            assert reader.rows_decoded == min(rows, 61)
    Image.fromarray(labels, mode="P").save(tmp_path / "palette.png")
    cv2.imwrite(str(tmp_path / "deep.png"), labels.astype(np.uint16))
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([labels] * 3))
    for name in ("palette.png", "deep.png", "rgb.png"):
        assert io.open_top_rows(tmp_path / name, mask=True) is None, name
    assert io.open_top_rows(tmp_path / "cv.png") is None  # an image reader wants RGB
