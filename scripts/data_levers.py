"""Each data-pipeline lever of docs/benchmarks.md measured alone: thread CPU ms per call (median), before -> after.

python scripts/data_levers.py [--data DIR] [--calls 10]

DIR holds Cityscapes-layout samples (`scripts/benchmark_data.py --synthetic` writes them; by default four are
written into a temporary folder). Thread CPU time, not wall time, so that a busy machine changes little; OpenCV
single-threaded, as in a loader worker.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from src.data import io
from src.data.converters.writers import write_mask_png
from src.data.datasets import CityscapesDataset
from src.data.transforms import PhotoMetricDistortion, resize_then_crop
from src.tools.pipeline_timing import write_synthetic_cityscapes


def cpu_ms(fn: Callable[[], object], calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return 1e3 * statistics.median(times)


def photometric_float(img: np.ndarray, p: dict) -> np.ndarray:
    """The per-pixel float32 version (what the LUT version replaced)."""

    def convert(x, a=1.0, b=0.0):
        return np.clip(x.astype(np.float32) * a + b, 0, 255).astype(np.uint8)

    img = convert(img, b=p["beta"])
    img = convert(img, a=p["alpha"])
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = convert(hsv[..., 1], a=p["saturation"])
    hsv[..., 0] = (hsv[..., 0].astype(int) + p["hue"]) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="a folder with cityscapes/ (default: synthetic)"
    )
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    cv2.setNumThreads(0)
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="data_levers_")
        args.data = Path(tmp.name)
        write_synthetic_cityscapes(args.data, 4)
    img_path = next((args.data / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))
    ann_path = next((args.data / "cityscapes" / "gtFine" / "train").rglob("*labelTrainIds.png"))
    n = args.calls
    rows: list[tuple[str, str, float, str, float]] = []

    def lever(name: str, before: str, fb: Callable, after: str, fa: Callable) -> None:
        rows.append((name, before, cpu_ms(fb, n), after, cpu_ms(fa, n)))

    data = img_path.read_bytes()
    lever(
        "decode image (2048x1024 RGB PNG)",
        "cv2.imread + BGR2RGB", lambda: cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB),
        "libspng (io.load_image)", lambda: io.load_image(img_path),
    )  # fmt: skip
    rows.append(
        (
            "  (for reference)",
            "Pillow",
            cpu_ms(lambda: np.asarray(Image.open(img_path).convert("RGB")), n),
            "libspng, bytes only",
            cpu_ms(lambda: io.pyspng.load(data) if io.pyspng else None, n),
        )
    )  # noqa: E501
    lever(
        "decode mask (labelTrainIds PNG)",
        "Pillow", lambda: np.asarray(Image.open(ann_path)),
        "libspng (io.load_mask)", lambda: io.load_mask(ann_path),
    )  # fmt: skip
    rows.append(
        (
            "  (for reference)",
            "cv2 IMREAD_UNCHANGED",
            cpu_ms(lambda: cv2.imread(str(ann_path), cv2.IMREAD_UNCHANGED), n),
            "",
            float("nan"),
        )
    )  # noqa: E501
    mask = io.load_mask(ann_path)
    lever(
        "label check counts (2048x1024)",
        "np.bincount", lambda: np.bincount(mask.ravel(), minlength=256),
        "cv2.calcHist (io.label_counts)", lambda: io.label_counts(mask),
    )  # fmt: skip
    checker, exact = (CityscapesDataset.__new__(CityscapesDataset) for _ in range(2))
    for c in (checker, exact):  # Cityscapes' label settings, no files needed
        c.num_classes, c.ignore_index, c.label_map, c.reduce_zero_label = 19, 255, None, False
    exact._labels_plainly_valid = lambda m: False  # the per-value check alone (the "before")
    lever(
        "label check of a whole mask (2048x1024)",
        "histogram (calcHist), per value", lambda: exact.check_labels(mask, ann_path),
        "two maxima first", lambda: checker.check_labels(mask, ann_path),
    )  # fmt: skip
    crop = np.ascontiguousarray(mask[:512, :1024])
    lever(
        "mask to tensor (512x1024 crop)",
        "int64", lambda: torch.from_numpy(crop.astype(np.int64)),
        "uint8 (.long() on the device)", lambda: torch.from_numpy(crop),
    )  # fmt: skip
    reader, with_isal = io.open_top_rows(img_path), io.isal_zlib

    def plain_rows(n: int) -> np.ndarray:  # the reader with zlib's inflate (libspng alone)
        io.isal_zlib = None
        try:
            return reader(n)
        finally:
            io.isal_zlib = with_isal

    for top in (512, 768):
        lever(
            f"decode the top {top} rows of the image",
            "libspng (zlib)", lambda n=top: plain_rows(n),
            "ISA-L inflate + libspng" if with_isal else "(isal not installed)", lambda n=top: reader(n),
        )  # fmt: skip
    mask_reader = io.open_top_rows(ann_path, mask=True)
    for top in (512, 768):  # the mask's rows the first crop reads (736 on average over the ratio range)
        lever(
            f"decode + check the top {top} rows of the mask",
            "whole mask", lambda: checker.check_labels(io.load_mask(ann_path), ann_path),
            "top rows (PngTopRows, mask)", lambda n=top: checker.check_labels(mask_reader(n), ann_path, top=True),
        )  # fmt: skip
    sub_path, up_path = args.data / "lever_sub.png", args.data / "lever_up.png"
    cv2.imwrite(str(sub_path), mask)  # OpenCV's default: the Sub filter on every row
    write_mask_png(up_path, mask)  # the converters' masks: the Up filter on every row
    sub_rows, up_rows = io.open_top_rows(sub_path, mask=True), io.open_top_rows(up_path, mask=True)
    print(
        f"mask PNG: {sub_path.stat().st_size} bytes with OpenCV's default, {up_path.stat().st_size} written Up"
    )
    lever(
        "decode the whole mask, as written",
        "cv2 default (Sub rows)", lambda: io.load_mask(sub_path),
        "write_mask_png (Up rows)", lambda: io.load_mask(up_path),
    )  # fmt: skip
    lever(
        "decode the top 768 rows of the mask, as written",
        "cv2 default (Sub rows)", lambda: sub_rows(768),
        "write_mask_png (Up rows)", lambda: up_rows(768),
    )  # fmt: skip
    if (
        with_isal is not None
    ):  # ISA-L leaves the vector registers dirty; OpenCV's SSE code slows until cleared
        part, head = io.load_image(img_path)[:700, :1500], data[:4096]

        def resize_after_isal(clear: bool) -> None:
            with_isal.crc32(head)
            if clear:
                io.clear_upper_vector_state()
            cv2.resize(part, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)

        lever(
            "ISA-L call, then resize 700x1500 x1.5",
            "registers left as ISA-L leaves them", lambda: resize_after_isal(False),
            "clear_upper_vector_state first", lambda: resize_after_isal(True),
        )  # fmt: skip
    lever(
        "cat_max_ratio counts (512x1024 crop)",
        "np.unique (MMSeg)", lambda: np.unique(crop, return_counts=True),
        "io.label_counts", lambda: io.label_counts(crop),
    )  # fmt: skip
    image = io.load_image(img_path)
    for ratio in (1.5, 2.0):
        out_hw = (int(1024 * ratio + 0.5), int(2048 * ratio + 0.5))
        for where, (y0, x0) in (("top-left", (0, 0)), ("bottom-right", (out_hw[0] - 512, out_hw[1] - 1024))):
            box = (y0, y0 + 512, x0, x0 + 1024)
            lever(
                f"resize x{ratio} + crop, crop at {where}",
                "resize all, crop", lambda o=out_hw, b=box: cv2.resize(image, o[::-1])[b[0] : b[1], b[2] : b[3]],
                "resize_then_crop", lambda o=out_hw, b=box: resize_then_crop(image, o, b, nearest=False),
            )  # fmt: skip
    img = np.ascontiguousarray(image[:512, :1024])
    p = {"beta": 20.0, "alpha": 1.3, "saturation": 0.8, "hue": 7, "contrast_first": True}
    t = PhotoMetricDistortion()
    lever(
        "PhotoMetricDistortion, all 4 steps (512x1024)",
        "float32 per pixel", lambda: photometric_float(img, p),
        "uint8 look-up tables", lambda: t.apply(img, **p),
    )  # fmt: skip
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    jpg_path = args.data / "lever.jpg"
    jpg_path.write_bytes(jpg.tobytes())
    lever(
        "JPEG 2048x1024 decode + resize to 0.4x (not used)",
        "full decode + resize", lambda: cv2.resize(cv2.imread(str(jpg_path)), (819, 410)),
        "IMREAD_REDUCED_COLOR_2 + resize", lambda: cv2.resize(cv2.imread(str(jpg_path), cv2.IMREAD_REDUCED_COLOR_2), (819, 410)),  # noqa: E501
    )  # fmt: skip
    full = cv2.resize(cv2.imread(str(jpg_path)), (819, 410)).astype(int)
    reduced = cv2.resize(cv2.imread(str(jpg_path), cv2.IMREAD_REDUCED_COLOR_2), (819, 410)).astype(int)
    diff = np.abs(full - reduced)
    print(f"{'lever':<48} {'before':<34} {'ms':>7}   {'after':<36} {'ms':>7}  {'x':>5}")
    for name, before, tb, after, ta in rows:
        speed = "" if math.isnan(ta) or ta == 0 else f"{tb / ta:5.2f}"
        ta_text = "" if math.isnan(ta) else f"{ta:7.2f}"
        print(f"{name:<48} {before:<34} {tb:7.2f}   {after:<36} {ta_text:>7}  {speed:>5}")
    print(
        f"reduced JPEG decode vs full: mean |diff| {diff.mean():.2f}, max {diff.max()} grey levels (not identical)"
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
