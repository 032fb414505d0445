"""Built-in "shapes" dataset: procedurally generated textured shapes, written as PNGs in MMSeg layout.

Why: a default dataset that works offline, trains on a laptop in minutes and is still a real segmentation
problem (texture + colour + shape + occlusion + ignore regions). Each foreground class is one shape family with
its own texture and hue range; the background's colours partly overlap the object hues, so colour alone is
not enough. A 2 px band on every class boundary and occasional "smudge" patches are ``IGNORE_INDEX``.

Layout under ``root``::

    img_dir/{train,val,test}/{split}_{i:04d}.png   RGB uint8
    ann_dir/{train,val,test}/{split}_{i:04d}.png   'L' uint8: class index 0..5, 255 = ignore
    meta.json                                      generator version, spec, classes, palette, counts

Determinism: every image draws from its own ``np.random.default_rng(SeedSequence([seed, split_id, i]))``;
rendering uses integer polygon filling, element-wise float64 numpy arithmetic and integer blurs only (no BLAS,
no float resizes), so the same spec gives the same pixels on every machine, and the same bytes with the same
OpenCV/zlib build.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from filelock import FileLock

from src.utils.files import swap_in

__all__ = [
    "GENERATOR_VERSION",
    "IGNORE_INDEX",
    "SHAPES_CLASSES",
    "SHAPES_PALETTE",
    "SPLITS",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "render_sample",
]

SHAPES_CLASSES: tuple[str, ...] = ("background", "disc", "box", "triangle", "ring", "star")
SHAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (220, 20, 60),
    (30, 100, 230),
    (40, 180, 60),
    (240, 200, 20),
    (190, 60, 220),
)
IGNORE_INDEX = 255
GENERATOR_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")

_DEFAULT_SPEC: dict[str, int] = {
    "num_train": 400,
    "num_val": 50,
    "num_test": 100,
    "image_size": 128,
    "seed": 0,
}
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_REF_SIZE = 128.0  # texture periods below are given in pixels at this image size

# Per class: (hue centre in degrees, hue jitter in degrees). Index 0 (background) is unused.
_CLASS_HUES: tuple[tuple[float, float], ...] = ((0, 0), (0, 16), (220, 16), (120, 18), (48, 10), (295, 16))


# ----------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Window:
    """Axis-aligned crop [y0:y1, x0:x1] of the canvas: objects are rendered only where they can be."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre x (1, w) and y (h, 1) coordinates, for broadcasting."""
        x = np.arange(self.x0, self.x1, dtype=np.float64)[None, :] + 0.5
        y = np.arange(self.y0, self.y1, dtype=np.float64)[:, None] + 0.5
        return x, y

    @classmethod
    def around(cls, pts: np.ndarray, size: int) -> _Window | None:
        """Bounding box of (N, 2) points with a 1 px margin, clipped to the canvas; None if off-canvas."""
        x0, y0 = (np.floor(pts.min(axis=0)).astype(int) - 1).clip(0, size)
        x1, y1 = (np.ceil(pts.max(axis=0)).astype(int) + 2).clip(0, size)
        return cls(int(y0), int(y1), int(x0), int(x1)) if x1 > x0 and y1 > y0 else None


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], axis=1)


def _ellipse(a: float, b: float, n: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=1)


def _fill_alpha(win: _Window, polys: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage (uint8, 0..255) inside `win` of the union of polygons in canvas coordinates."""
    canvas = np.zeros((win.y1 - win.y0, win.x1 - win.x0), np.uint8)
    origin = np.array([win.x0, win.y0], np.float64)
    fixed = [np.round((p - origin) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2) for p in polys]
    cv2.fillPoly(canvas, fixed, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas


def _shape_outline(cls: int, rng: np.random.Generator, diam: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Outer polygon (and optional hole) of class `cls`, centred at the origin, unrotated."""
    r = diam / 2.0
    aspect = rng.uniform(0.6, 1.0)
    if cls == 1:  # disc: ellipse
        return _ellipse(r, r * aspect), None
    if cls == 2:  # box: rectangle
        return np.array([[-r, -r * aspect], [r, -r * aspect], [r, r * aspect], [-r, r * aspect]]), None
    if cls == 3:  # triangle: jittered near-equilateral, squashed
        ang = np.array([0.0, 2.0944, 4.1888]) + rng.uniform(-0.35, 0.35, 3)
        rad = r * rng.uniform(0.85, 1.0, 3)
        return np.stack([rad * np.cos(ang), rad * np.sin(ang) * (0.5 + 0.5 * aspect)], axis=1), None
    if cls == 4:  # ring: elliptical annulus
        inner = rng.uniform(0.35, 0.55)
        return _ellipse(r, r * aspect), _ellipse(r * inner, r * aspect * inner)
    if cls == 5:  # star: 5 or 6 spikes
        n = int(rng.integers(5, 7))
        ang = np.arange(2 * n) * (math.pi / n)
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.45, 0.6))
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1), None
    raise ValueError(f"not a foreground class: {cls}")


def _shape_alpha(
    cls: int, rng: np.random.Generator, size: int, cx: float, cy: float, diam: float
) -> tuple[_Window, np.ndarray] | None:
    """Window and coverage (float64 0..1) of one randomly posed shape of class `cls`; None if off-canvas."""
    outer, hole = _shape_outline(cls, rng, diam)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    centre = np.array([cx, cy])
    outer = _rotate(outer, angle) + centre
    win = _Window.around(outer, size)
    if win is None:
        return None
    alpha = _fill_alpha(win, [outer]).astype(np.float64)
    if hole is not None:
        alpha -= _fill_alpha(win, [_rotate(hole, angle) + centre])
    return win, np.clip(alpha, 0.0, 255.0) / 255.0


# ----------------------------------------------------------------------------------------------- textures


def _soft_square(wave: np.ndarray, sharpness: float = 2.5) -> np.ndarray:
    """Map a -1..1 wave to a 0..1 pattern with soft (few-px) edges: coarse but not aliased."""
    return np.clip(0.5 + sharpness * 0.5 * wave, 0.0, 1.0)


def _tex_dots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    period = rng.uniform(6.0, 11.0) * k
    radius = period * rng.uniform(0.25, 0.36)
    du = (u / period) % 1.0 - 0.5
    dv = (v / period) % 1.0 - 0.5
    dist = np.sqrt(du * du + dv * dv) * period
    return np.clip(radius + 0.75 - dist, 0.0, 1.5) / 1.5


def _tex_checker(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    period = rng.uniform(8.0, 14.0) * k
    return _soft_square(np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period), 4.0)


def _tex_stripes(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    period = rng.uniform(5.0, 10.0) * k
    return _soft_square(np.sin(2 * math.pi * u / period))


def _tex_grid(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    period = rng.uniform(6.0, 11.0) * k
    half = rng.uniform(0.8, 1.3) * max(k, 0.5)
    du = np.abs((u / period) % 1.0 - 0.5) * period
    dv = np.abs((v / period) % 1.0 - 0.5) * period
    return np.clip(half + 0.5 - np.minimum(du, dv), 0.0, 1.0)


def _tex_concentric(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    period = rng.uniform(5.0, 10.0) * k
    return _soft_square(np.sin(2 * math.pi * np.sqrt(u * u + v * v) / period))


_Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator, float], np.ndarray]
# Class -> texture: disc=dots, box=checkerboard, triangle=stripes, ring=grid lines, star=concentric rings.
_CLASS_TEXTURES: tuple[_Texture | None, ...] = (
    None,
    _tex_dots,
    _tex_checker,
    _tex_stripes,
    _tex_grid,
    _tex_concentric,
)


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)) * 255.0


def _object_colours(cls: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two tones (light, dark) of the class hue with random saturation/brightness."""
    centre, jitter = _CLASS_HUES[cls]
    hue = centre + rng.uniform(-jitter, jitter)
    sat = rng.uniform(0.5, 1.0)
    val = rng.uniform(0.6, 1.0)
    light = _hsv(hue, sat * rng.uniform(0.55, 0.9), val)
    dark = _hsv(hue + rng.uniform(-6, 6), sat, val * rng.uniform(0.3, 0.6))
    return light, dark


def _object_rgb(
    cls: int, rng: np.random.Generator, win: _Window, cx: float, cy: float, size: int
) -> np.ndarray:
    """(h, w, 3) float image of the class texture inside `win`, anchored on the object centre."""
    k = max(size / _REF_SIZE, 0.4)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    x, y = win.coords()
    dx, dy = x - cx, y - cy
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    texture = _CLASS_TEXTURES[cls]
    assert texture is not None
    if texture is not _tex_concentric:  # random phase; concentric rings stay centred on the object
        u, v = u + rng.uniform(0, 20), v + rng.uniform(0, 20)
    t = texture(u, v, rng, k)[..., None]
    light, dark = _object_colours(cls, rng)
    shade_dir = rng.uniform(0.0, 2.0 * math.pi)
    shade = 1.0 + 0.12 * (dx * math.cos(shade_dir) + dy * math.sin(shade_dir)) / (size * 0.25)
    return (dark + (light - dark) * t) * np.clip(shade, 0.8, 1.2)[..., None]


# ----------------------------------------------------------------------------------------------- background


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth 0..1 value noise: a random (cells+1)^2 lattice, smoothstep-interpolated (element-wise only)."""
    lattice = rng.random((cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) * (cells / size)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    f = pos - i0
    f = f * f * (3.0 - 2.0 * f)
    rows = lattice[i0] * (1.0 - f)[:, None] + lattice[i0 + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blotchy low-frequency background in 2-3 random colours that may share hues with the objects."""
    n_col = int(rng.integers(2, 4))
    cols = [_hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.65), rng.uniform(0.25, 0.95)) for _ in range(n_col)]
    img = np.broadcast_to(cols[0], (size, size, 3)).copy()
    for col in cols[1:]:
        blend = _value_noise(rng, size, int(rng.integers(2, 6))) * 0.7
        blend += _value_noise(rng, size, int(rng.integers(6, 12))) * 0.3
        lo = rng.uniform(0.3, 0.55)
        w = np.clip((blend - lo) / rng.uniform(0.1, 0.35), 0.0, 1.0)[..., None]
        img = img * (1.0 - w) + col * w
    ang = rng.uniform(0.0, 2.0 * math.pi)
    x, y = _Window(0, size, 0, size).coords()
    ramp = (x * math.cos(ang) + y * math.sin(ang)) / size
    img *= (1.0 + rng.uniform(-0.25, 0.25) * (ramp - ramp.mean()))[..., None]
    img += (_value_noise(rng, size, max(4, size // 8)) - 0.5)[..., None] * rng.uniform(8, 24)
    return img


# ----------------------------------------------------------------------------------------------- assembly


def _blur3(img: np.ndarray) -> np.ndarray:
    """Exact integer [1 2 1]^2 / 16 blur with edge replication (uint8 in, uint8 out)."""
    p = np.pad(img.astype(np.int32), ((1, 1), (1, 1)) + ((0, 0),) * (img.ndim - 2), mode="edge")
    h = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    v = h[:-2] + 2 * h[1:-1] + h[2:]
    return ((v + 8) >> 4).astype(np.uint8)


def _add_objects(rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> None:
    """Paint 1-5 objects back to front (in place); later objects occlude earlier ones in image and mask."""
    size = label.shape[0]
    n_obj = int(rng.choice([1, 2, 3, 4, 5], p=[0.1, 0.2, 0.25, 0.25, 0.2]))
    for _ in range(n_obj):
        cls = int(rng.integers(1, len(SHAPES_CLASSES)))
        diam = (0.10 + 0.35 * rng.random() ** 0.75) * size  # 10%-45% of the side, tilted towards large
        cx, cy = rng.uniform(0.0, 1.0, 2) * size  # up to about half of it may lie outside the frame
        placed = _shape_alpha(cls, rng, size, cx, cy, diam)
        if placed is None:
            continue
        win, alpha = placed
        rgb = _object_rgb(cls, rng, win, cx, cy, size)
        crop = img[win.slices]
        crop += (rgb - crop) * alpha[..., None]
        label[win.slices][alpha >= 0.5] = cls


def _add_void(rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> None:
    """Paint a soft grey-ish smudge over part of the image and mark it (incl. its soft rim) as ignore."""
    size = label.shape[0]
    r = rng.uniform(0.04, 0.10) * size
    n = 24
    radii = r * np.clip(1.0 + 0.35 * np.convolve(rng.normal(size=n + 4), np.ones(5) / 5, "valid"), 0.4, 1.6)
    ang = np.arange(n) * (2 * math.pi / n)
    centre = rng.uniform(0.1, 0.9, 2) * size
    poly = np.stack([radii * np.cos(ang), radii * np.sin(ang)], axis=1) + centre
    alpha = _blur3(_blur3(_fill_alpha(_Window(0, size, 0, size), [poly]))).astype(np.float64) / 255.0
    col = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.25), rng.uniform(0.2, 0.9))
    a = (alpha * rng.uniform(0.7, 0.95))[..., None]
    img *= 1.0 - a
    img += col * a
    label[alpha > 0.05] = IGNORE_INDEX


def _ignore_boundaries(label: np.ndarray) -> None:
    """Mark a 2 px band (1 px each side) on every boundary between different classes as ignore, in place."""
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    band = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, kernel) > 0
    label[band] = IGNORE_INDEX


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Global contrast/brightness jitter, Gaussian noise, sometimes a slight blur; returns uint8 RGB."""
    img = (img - 128.0) * rng.uniform(0.9, 1.1) + 128.0 + rng.uniform(-10, 10)
    img += rng.normal(0.0, rng.uniform(2.0, 6.0), img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return _blur3(out) if rng.random() < 0.3 else out


def render_sample(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (RGB uint8 image (H, W, 3), uint8 mask (H, W) with 0..5 and IGNORE_INDEX)."""
    img = _background(rng, image_size)
    label = np.zeros((image_size, image_size), np.uint8)
    _add_objects(rng, img, label)
    _ignore_boundaries(label)
    if rng.random() < 0.2:
        _add_void(rng, img, label)
    return _photometric(rng, img), label


# ----------------------------------------------------------------------------------------------- files


def _normalise_spec(spec: dict[str, Any]) -> dict[str, int]:
    """Fill defaults and validate; the normalised dict is what meta.json records and compares."""
    unknown = set(spec) - set(_DEFAULT_SPEC)
    if unknown:
        raise TypeError(
            f"unknown shapes-dataset options: {sorted(unknown)}; expected {sorted(_DEFAULT_SPEC)}"
        )
    full = {**_DEFAULT_SPEC, **spec}
    for key, val in full.items():
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{key} must be an int, got {val!r}")
        full[key] = int(val)
    if any(full[f"num_{s}"] < 0 for s in SPLITS) or full["seed"] < 0:
        raise ValueError(f"counts and seed must be >= 0: {full}")
    if full["image_size"] < 16:
        raise ValueError(f"image_size must be >= 16, got {full['image_size']}")
    return full


def _write_png(path: Path, array: np.ndarray) -> None:
    data = array[..., ::-1] if array.ndim == 3 else array  # OpenCV wants BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def _write_all(out: Path, spec: dict[str, int]) -> None:
    """Write img_dir/, ann_dir/ and finally meta.json into `out`."""
    for split_id, split in enumerate(SPLITS):
        img_dir, ann_dir = out / "img_dir" / split, out / "ann_dir" / split
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i in range(spec[f"num_{split}"]):
            rng = np.random.default_rng(np.random.SeedSequence([spec["seed"], split_id, i]))
            image, mask = render_sample(rng, spec["image_size"])
            _write_png(img_dir / f"{split}_{i:04d}.png", image)
            _write_png(ann_dir / f"{split}_{i:04d}.png", mask)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "spec": spec,
        "classes": list(SHAPES_CLASSES),
        "palette": [list(c) for c in SHAPES_PALETTE],
        "ignore_index": IGNORE_INDEX,
        "counts": {split: spec[f"num_{split}"] for split in SPLITS},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def generate_shapes_dataset(root: str | os.PathLike[str], **spec: int) -> None:
    """Write the dataset of `spec` (`num_train`, `num_val`, `num_test`, `image_size`, `seed`; `_DEFAULT_SPEC`
    for those not given) under `root`, replacing what a previous generation wrote there.

    Files are rendered into a temporary sibling directory and then moved in; only img_dir, ann_dir and
    meta.json of `root` are replaced, other files there are left alone.
    """
    spec = _normalise_spec(spec)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".shapes-tmp", dir=root.parent))
    try:
        _write_all(work / "new", spec)
        swap_in(work / "new", root, ("img_dir", "ann_dir"), "meta.json", work / "old")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_current(root: Path, spec: dict[str, int]) -> bool:
    """True when root/meta.json records this spec and generator version and the split folders are complete."""
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        not isinstance(meta, dict)
        or meta.get("generator_version") != GENERATOR_VERSION
        or meta.get("spec") != spec
    ):
        return False
    for split in SPLITS:
        names = {f"{split}_{i:04d}.png" for i in range(spec[f"num_{split}"])}
        for sub in ("img_dir", "ann_dir"):
            folder = root / sub / split
            if not folder.is_dir() or not names.issubset(p.name for p in folder.iterdir()):
                return False
    return True


def ensure_shapes_dataset(root: str | os.PathLike[str], **spec: Any) -> bool:
    """Generate (`generate_shapes_dataset`) unless `root/meta.json` already records exactly this spec and
    generator version; returns True if it generated."""
    full = _normalise_spec(spec)
    root = Path(root)
    if _is_current(root, full):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".shapes.lock"):  # concurrent callers (DDP ranks, test workers) generate once
        if _is_current(root, full):  # another process finished it while we waited
            return False
        generate_shapes_dataset(root, **full)
    return True


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Generate the built-in 'shapes' segmentation dataset.")
    parser.add_argument("root")
    for key, default in _DEFAULT_SPEC.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=default)
    args = vars(parser.parse_args())
    made = ensure_shapes_dataset(args.pop("root"), **args)
    print("generated" if made else "up to date")
