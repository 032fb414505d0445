"""Pascal VOC 2012 (and its SBD augmentation): background + 20 object classes, as MMSegmentation's.

Layout: `JPEGImages/<id>.jpg` with `SegmentationClass/<id>.png` (VOC's palette-mode PNGs, read as their
indices; 255 = object boundary, ignored) or `SegmentationClassAug/<id>.png` (SBD, written by the converter),
the ids listed in `ImageSets/Segmentation/<split>.txt`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset


class PascalVOCDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": [
            "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
            "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
            "train", "tvmonitor",
        ],
        "palette": [
            [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
            [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128],
            [192, 0, 128], [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0],
            [128, 192, 0], [0, 64, 128],
        ],
    }  # fmt: skip
    HOW_TO_CREATE: ClassVar[str] = (
        "Create it with `python scripts/download_dataset.py voc_aug` (VOC 2012 + SBD), then "
        "`python scripts/convert_dataset.py voc_aug data/VOCtrainval_11-May-2012.tar data/benchmark.tgz "
        "--out data/VOCdevkit` (or set paths.data_dir / dataset.data_root to where VOC2012 is)."
    )
