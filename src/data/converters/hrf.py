"""HRF (retinal vessels) from `{healthy,glaucoma,diabetic_retinopathy}.zip` + `..._manualsegm.zip` or folders.

Reads images `<nn>_<h|g|dr>.jpg` and manual segmentations `<nn>_<h|g|dr>.tif` (not the `_mask.tif` fields
of view); 15 per category, the first 5 of each (sorted) -> training::

    <out>/images/<split>/01_h.png   <out>/annotations/<split>/01_h.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from src.data.converters.retinal import convert_retinal, first_n_training

IMAGE_RE = re.compile(r"(?:^|/)(?P<num>\d+)_(?P<cat>h|g|dr)\.jpe?g$", re.IGNORECASE)
LABEL_RE = re.compile(r"(?:^|/)(?P<num>\d+)_(?P<cat>h|g|dr)\.tif$", re.IGNORECASE)
N_TRAIN_PER_CATEGORY = 5


def convert_hrf(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN_PER_CATEGORY) -> dict:
    """Convert the HRF release into `out`; returns the meta written."""
    return convert_retinal(
        sources,
        out,
        "HRF",
        IMAGE_RE,
        LABEL_RE,
        key=lambda m: (m["cat"].lower(), m["num"]),
        split_of=partial(first_n_training, n_train=n_train, group=lambda key: key[0]),  # n per category
        label_name=lambda image, label: image.stem,
    )
