"""Reading images and index masks, with errors that name the file.

Decoding is most of a training sample's cost, so 8-bit RGB and grey PNGs are decoded with libspng (`pyspng`)
when it is installed: the same pixels as OpenCV's libpng, faster (docs/benchmarks.md); everything else, and
any file libspng rejects, goes through OpenCV (images) or Pillow (masks). `open_top_rows` decodes only the
first n rows of a non-interlaced PNG (a training crop often needs no more): PNG rows are decoded top to
bottom, so they are the same pixels as in the full decode.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

try:  # optional: a faster PNG decoder; OpenCV's is used without it
    import pyspng
except ImportError:  # pragma: no cover - depends on the environment
    pyspng = None
try:  # optional: ISA-L's inflate, 2-3x zlib's (inflating is most of a PNG decode); zlib's in libspng without it
    from isal import isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    isal_zlib = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR byte 25): 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
PNG_GREY, PNG_RGB = 0, 2


def png_format(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header, or None when `data` is not a PNG."""
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def _spng(data: bytes, colour_type: int, rows: int | None = None) -> np.ndarray | None:
    """libspng's decoding of an 8-bit PNG of `colour_type` (its first `rows` rows when given), or None (not such
    a PNG, no pyspng, or rejected). Only first rows are inflated by ISA-L (whole files are slower that way where
    their buffers come as fresh pages: docs/benchmarks.md)."""
    if pyspng is None or png_format(data) != (8, colour_type):
        return None
    try:
        if isal_zlib is not None and rows is not None:
            stored = _inflated_png(data, 3 if colour_type == PNG_RGB else 1, rows)
            if stored is not None:
                return pyspng.load(stored)
        return pyspng.load(data if rows is None else png_with_height(data, rows))
    except Exception:  # noqa: BLE001 - any libspng refusal: let OpenCV / Pillow decode it (or report it)
        return None


IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
STORED_BLOCK = 65535  # the largest uncompressed deflate block


# ISA-L's AVX routines return without `vzeroupper` (intel/isa-l#24), which slows the thread's later SSE code
# (OpenCV's resize: docs/benchmarks.md). Python cannot issue it, but NumPy's vector loops end with it: a 1 KiB
# add takes the vector loop.
_UPPER_STATE_SCRATCH = np.zeros(1024, np.uint8)


def clear_upper_vector_state() -> None:
    """Run a NumPy vector loop, whose `vzeroupper` clears the register state that an ISA-L call left dirty."""
    np.add(_UPPER_STATE_SCRATCH, _UPPER_STATE_SCRATCH, out=_UPPER_STATE_SCRATCH)


def _inflated_png(data: bytes, channels: int, rows: int | None = None) -> bytes | None:
    """`_stored_png` of `data`, leaving the vector registers clean after ISA-L (`clear_upper_vector_state`)."""
    try:
        return _stored_png(data, channels, rows)
    finally:
        clear_upper_vector_state()


def _stored_png(data: bytes, channels: int, rows: int | None = None) -> bytes | None:
    """The PNG `data` (8-bit, `channels` per pixel) with its image data inflated by ISA-L and stored uncompressed,
    which libspng then only copies and unfilters (the same pixels, faster than zlib's inflate). `rows`: keep
    only the first rows. None (decode the file as it is) for an interlaced image, a chunk whose CRC fails, or
    image data that does not inflate to exactly the rows the header declares.
    """
    if len(data) < 33 or data[28] != 0:  # Adam7 interlacing: rows are not stored top to bottom
        return None
    width, height = _u32(data, 16), _u32(data, 20)
    rows = height if rows is None else max(1, min(int(rows), height))
    view, pos, head_end, parts = memoryview(data), 8, 0, []
    while pos + 12 <= len(data):  # the chunks up to the end of the image data, IDAT CRCs checked
        length, kind = _u32(data, pos), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind == b"IDAT":
            if isal_zlib.crc32(view[pos + 4 : end - 4]) != _u32(data, end - 4):
                return None
            head_end = head_end or pos
            parts.append(view[pos + 8 : end - 4])
        elif parts:
            break
        pos = end
    if not parts:
        return None
    stream, need = b"".join(parts), rows * (1 + width * channels)
    try:  # a stream object: ISA-L's one-shot decompress is slower here
        inflater = isal_zlib.decompressobj()
        raw = inflater.decompress(stream, need)
        if rows == height:  # all of it: the stream must end there (its Adler-32 checked)
            if inflater.decompress(inflater.unconsumed_tail) or not inflater.eof:
                return None
    except isal_zlib.error:
        return None
    if len(raw) != need:
        return None
    head = data[:head_end] if rows == height else png_with_height(data[:head_end], rows)
    # one IDAT chunk holding a zlib stream of stored blocks: header, (block header, bytes)..., Adler-32
    raw_view, pieces = memoryview(raw), [b"IDAT\x78\x01"]  # zlib header: deflate, no compression
    for start in range(0, need, STORED_BLOCK):
        size = min(STORED_BLOCK, need - start)
        pieces += [
            struct.pack("<BHH", start + size >= need, size, size ^ 0xFFFF),
            raw_view[start : start + size],
        ]
    pieces.append(isal_zlib.adler32(raw).to_bytes(4, "big"))
    crc = 0
    for piece in pieces:
        crc = isal_zlib.crc32(piece, crc)
    size = sum(len(piece) for piece in pieces) - 4  # the chunk's length excludes its type
    return b"".join([head, size.to_bytes(4, "big"), *pieces, crc.to_bytes(4, "big"), IEND])


def load_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image `[H, W, 3]`; grey images are expanded to three channels."""
    path = Path(path)
    if path.suffix.lower() == ".png" and pyspng is not None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(_unreadable(path, "image")) from exc
        return _decode_png_image(data, path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(_unreadable(path, "image"))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_png_image(data: bytes, path: Path) -> np.ndarray:
    """`load_image` of a PNG file's bytes: libspng, else OpenCV, else the unreadable-image error."""
    img = _spng(data, PNG_RGB)
    if img is not None:
        return img
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(_unreadable(path, "image"))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class PngTopRows:
    """An 8-bit RGB (`mask=True`: grey) non-interlaced PNG, decoded on demand as far down as asked.

    `reader(n)` is `load_image(path)[:n]` (`load_mask` for a mask), decoding only those rows; if the short
    decode fails or differs in form (say a transparency chunk), the whole file is decoded, with its errors.
    `placeholder` stands in for the array where only its shape is looked at (the pipeline's first transform).
    """

    def __init__(self, path: Path, height: int, width: int, mask: bool = False) -> None:
        self.path, self.mask = path, mask
        self.shape = (height, width) if mask else (height, width, 3)
        self.placeholder = _placeholder(self.shape)
        self.rows_decoded = 0  # the last call's row count (for tests and the benchmark's breakdown)

    def __call__(self, rows: int) -> np.ndarray:
        what = "mask" if self.mask else "image"
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ValueError(_unreadable(self.path, what)) from exc
        height = self.shape[0]
        rows = max(1, min(int(rows), height))
        self.rows_decoded = rows
        if rows < height:
            top = _spng(data, PNG_GREY if self.mask else PNG_RGB, rows)
            if top is not None and top.shape == (rows, *self.shape[1:]):
                return top
        self.rows_decoded = height
        if self.mask:
            return load_mask(self.path)[:rows]
        return _decode_png_image(data, self.path)[:rows]


@functools.lru_cache(maxsize=64)
def _placeholder(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only zero image of `shape`, one per shape (calloc'd: its pages are never touched, so it costs no
    memory; shared, so that it is not allocated per sample)."""
    array = np.zeros(shape, np.uint8)
    array.setflags(write=False)
    return array


def png_with_height(data: bytes, rows: int) -> bytes:
    """The PNG `data` with its header's height set to `rows` (and the header's CRC recomputed)."""
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of data
    ihdr[8:12] = struct.pack(">I", rows)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def open_top_rows(path: str | Path, mask: bool = False) -> PngTopRows | None:
    """A `PngTopRows` reader for an 8-bit RGB (`mask`: grey), non-interlaced PNG with libspng installed, from
    the header alone; else None (palette and 16-bit masks are decoded whole; `load_image` reports a file it
    cannot read)."""
    path = Path(path)
    if pyspng is None or path.suffix.lower() != ".png":
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    # IHDR: width, height (4 bytes each), bit depth, colour type, compression, filter, interlace
    colour = PNG_GREY if mask else PNG_RGB
    if png_format(head) != (8, colour) or head[28] != 0 or zlib.crc32(head[12:29]) != _u32(head, 29):
        return None
    width, height = _u32(head, 16), _u32(head, 20)
    return PngTopRows(path, height, width, mask) if width and height else None


def _u32(data: bytes, at: int) -> int:
    return struct.unpack(">I", data[at : at + 4])[0]


def load_mask(path: str | Path) -> np.ndarray:
    """An index mask `[H, W]` (uint8 or uint16) exactly as stored: no colour conversion, no scaling.

    Read with Pillow, as MMSegmentation does: a palette-mode PNG (Pascal VOC) gives its indices, where OpenCV
    would give colours. 8-bit grey PNGs are decoded by libspng when available: the same values, faster.
    """
    path = Path(path)
    if path.suffix.lower() == ".png" and pyspng is not None:
        try:
            mask = _spng(path.read_bytes(), PNG_GREY)
        except OSError:
            mask = None
        if mask is not None:
            return mask
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for missing / truncated / non-images
        raise ValueError(_unreadable(path, "mask")) from exc
    if mask.dtype == np.int32:  # Pillow's "I" mode (16-bit PNGs on some versions)
        mask = mask.astype(np.uint16) if mask.min(initial=0) >= 0 and mask.max(initial=0) < 65536 else mask
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.ndim == 3:
        raise ValueError(
            f"Mask '{path}' has {mask.shape[2]} channels; expected a single-channel index mask "
            "(class index per pixel, 255 = ignore). Convert colour masks with their palette first."
        )
    return mask


def label_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels per label value (index = value, at least 256 entries) of an index mask; uint8 masks with OpenCV's
    histogram, twice as fast as `np.bincount` (which widens every pixel to 64 bits first)."""
    if mask.dtype == np.uint8 and mask.size:
        hist = cv2.calcHist([np.ascontiguousarray(mask)], [0], None, [256], [0, 256])
        return hist.ravel().astype(np.int64)
    return np.bincount(mask.ravel().astype(np.int64), minlength=256)


def _unreadable(path: str | Path, what: str) -> str:
    path = Path(path)
    if not path.exists():
        return f"{what.capitalize()} '{path}' does not exist"
    return f"Cannot read {what} '{path}' ({path.stat().st_size} bytes): the file is corrupt or not an image"
