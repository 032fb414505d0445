"""CHASE_DB1 (retinal vessels) from `CHASEDB1.zip` or its folder: 28 images, first 20 (sorted) -> training.

Reads `Image_<nn><L|R>.jpg` and its first observer's `Image_<nn><L|R>_1stHO.png` (not the `_2ndHO` masks)::

    <out>/images/<split>/Image_01L.png   <out>/annotations/<split>/Image_01L_1stHO.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from src.data.converters.retinal import convert_retinal, first_n_training

IMAGE_RE = re.compile(r"(?:^|/)(?P<key>Image_\d+[LR])\.jpg$", re.IGNORECASE)
LABEL_RE = re.compile(r"(?:^|/)(?P<key>Image_\d+[LR])_1stHO\.png$", re.IGNORECASE)
N_TRAIN = 20


def convert_chase_db1(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN) -> dict:
    """Convert the CHASE_DB1 release into `out`; returns the meta written."""
    split_of = partial(first_n_training, n_train=n_train)
    return convert_retinal(sources, out, "CHASE_DB1", IMAGE_RE, LABEL_RE, lambda m: m["key"], split_of)
