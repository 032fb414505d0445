"""DRIVE (retinal vessels) from `training.zip` + `test.zip` as distributed, or the extracted `DRIVE/` folder.

Reads `{training,test}/images/<n>_{training,test}.tif` and `{training,test}/1st_manual/<n>_manual1.gif`.
DRIVE's `test` becomes `validation`, as in MMSegmentation. The image keeps its stem and its mask is named
`<image stem>_manual1.png`, so the dataset pairs `X.png` with `X_manual1.png`::

    <out>/images/training/21_training.png   <out>/annotations/training/21_training_manual1.png
    <out>/images/validation/01_test.png     <out>/annotations/validation/01_test_manual1.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from src.data.converters.retinal import convert_retinal

IMAGE_RE = re.compile(r"(?:^|/)(?P<part>training|test)/images/(?P<num>\d+)_(?P=part)\.tif$")
LABEL_RE = re.compile(r"(?:^|/)(?P<part>training|test)/1st_manual/(?P<num>\d+)_manual1\.gif$")
SPLIT_OF_PART = {"training": "training", "test": "validation"}


def convert_drive(sources: Sequence[str | Path], out: str | Path) -> dict:
    """Convert the DRIVE release (zips and/or folders) into `out`; returns the meta written."""
    return convert_retinal(
        sources,
        out,
        "DRIVE",
        IMAGE_RE,
        LABEL_RE,
        key=lambda m: (m["part"], m["num"]),
        split_of=lambda keys: {k: SPLIT_OF_PART[k[0]] for k in keys},
        label_name=lambda image, label: f"{image.stem}_manual1",
    )
