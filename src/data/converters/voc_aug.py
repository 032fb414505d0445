"""Pascal VOC 2012 + SBD ("VOC aug"), as MMSegmentation's `tools/dataset_converters/voc_aug.py`.

Inputs: the VOC devkit folder (or `VOCtrainval_11-May-2012.tar`) and SBD's `benchmark_RELEASE` (or
`benchmark.tgz`); archives are first extracted into the output root, a devkit folder is converted in place.
Written into `<devkit>/VOC2012`::

    SegmentationClassAug/<id>.png         uint8 index masks (0..20, 255 = boundary/ignore) for every SBD
                                          .mat, plus VOC's own mask for each aug id that SBD lacks
    ImageSets/Segmentation/aug.txt        sorted(set(SBD train + SBD val + VOC train) - set(VOC val))

On the full data the list has 10582 ids (MMSegmentation's `AUG_LEN`). VOC's `SegmentationClass/*.png` are
palette PNGs: read with PIL, whose pixel values are the palette indices (OpenCV would give the colours).
"""

from __future__ import annotations

import tarfile
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from src.data.converters.writers import map_in_processes, write_mask_png, write_text

AUG_LEN = 10582  # MMSegmentation's count on the full VOC 2012 + SBD data
DEFAULT_OUT = Path("data/VOCdevkit")


def extract_release(archive: Path, out: Path, anchor: str) -> Path:
    """Extract `archive` under `out`, each member re-rooted at its path component `anchor`.

    `VOCdevkit/VOC2012/JPEGImages/x.jpg` with anchor `VOC2012` lands in `out/VOC2012/JPEGImages/x.jpg`.
    A marker file makes a second run skip an archive already extracted in full.
    """
    marker = out / f".extracted-{archive.name}"
    if marker.is_file():
        return out / anchor
    out.mkdir(parents=True, exist_ok=True)
    found = False
    with tarfile.open(archive, "r|*") as tf:
        for m in tf:
            parts = m.name.split("/")
            if anchor not in parts:
                continue
            found = True
            m.name = "/".join(parts[parts.index(anchor) :])
            tf.extract(m, out, filter="data")
    if not found:
        raise FileNotFoundError(f"Archive '{archive}' has no '{anchor}/' folder; is it the right release?")
    marker.write_text("done\n")
    return out / anchor


def load_sbd_mask(mat_path: str | Path) -> np.ndarray:
    """SBD's class mask: `loadmat(f)['GTcls'][0]['Segmentation'][0]` as uint8 (MMSegmentation's indexing)."""
    from scipy.io import loadmat  # scipy is only needed here

    try:
        mask = loadmat(str(mat_path))["GTcls"][0]["Segmentation"][0]
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"SBD file '{mat_path}' has no GTcls.Segmentation ({type(e).__name__}: {e}); "
            "expected benchmark_RELEASE/dataset/cls/<id>.mat"
        ) from None
    return np.asarray(mask).astype(np.uint8)


def convert_mat(mat_path: Path, out_dir: Path) -> Path:
    return write_mask_png(out_dir / f"{mat_path.stem}.png", load_sbd_mask(mat_path))


def read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Id list '{path}' does not exist")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _voc2012(devkit: Path) -> Path:
    for cand in (devkit / "VOC2012", devkit):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise FileNotFoundError(
        f"VOC devkit '{devkit}' has no VOC2012/ImageSets/Segmentation: expected the folder holding VOC2012 "
        "(or VOCtrainval_11-May-2012.tar)"
    )


def _sbd_dataset(sbd: Path) -> Path:
    for cand in (sbd / "dataset", sbd, sbd / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            return cand
    raise FileNotFoundError(
        f"SBD folder '{sbd}' has no dataset/cls/: expected benchmark_RELEASE (or benchmark.tgz)"
    )


def convert_voc_aug(
    devkit: str | Path, sbd: str | Path, out: str | Path | None = None, nproc: int = 1
) -> dict[str, int]:
    """Build SegmentationClassAug and aug.txt; returns counts (`aug` is the length of aug.txt)."""
    devkit, sbd = Path(devkit), Path(sbd)
    for path, what in ((devkit, "VOC devkit"), (sbd, "SBD")):
        if not path.exists():
            raise FileNotFoundError(f"{what} '{path}' does not exist (expected its folder or archive)")
    if devkit.is_file():
        voc = extract_release(devkit, Path(out) if out else DEFAULT_OUT, "VOC2012")
    else:
        voc = _voc2012(devkit)
        if out is not None and Path(out).resolve() != voc.parent.resolve():
            raise ValueError(
                f"--out '{out}' is only for archives: the devkit folder '{devkit}' is converted in place"
            )
    if sbd.is_file():
        sbd = extract_release(sbd, voc.parent, "benchmark_RELEASE")
    sbd_dir = _sbd_dataset(sbd)

    seg_aug = voc / "SegmentationClassAug"
    mats = sorted((sbd_dir / "cls").glob("*.mat"))
    map_in_processes(partial(convert_mat, out_dir=seg_aug), mats, nproc, chunksize=64)

    lists = voc / "ImageSets" / "Segmentation"
    sbd_ids = read_ids(sbd_dir / "train.txt") + read_ids(sbd_dir / "val.txt")
    aug = sorted(set(sbd_ids + read_ids(lists / "train.txt")) - set(read_ids(lists / "val.txt")))
    have_mat = {m.stem for m in mats}
    copied = 0
    for name in aug:
        if name in have_mat:
            continue
        src = voc / "SegmentationClass" / f"{name}.png"
        if not src.is_file():
            raise FileNotFoundError(
                f"Aug id '{name}' has neither '{sbd_dir / 'cls' / (name + '.mat')}' nor '{src}'"
            )
        indices = np.array(Image.open(src))  # palette PNG: the indices, not the colours
        if indices.ndim != 2:
            raise ValueError(f"VOC mask '{src}' is {indices.shape}; expected a palette (or grey) index PNG")
        write_mask_png(seg_aug / f"{name}.png", indices.astype(np.uint8))
        copied += 1
    write_text(lists / "aug.txt", aug)
    return {"mat_converted": len(mats), "copied_from_voc": copied, "aug": len(aug)}
