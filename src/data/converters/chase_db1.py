"""CHASE_DB1 (retinal vessels) from `CHASEDB1.zip` or its folder: 28 images, first 20 (sorted) -> training.

Reads `Image_<nn><L|R>.jpg` and its first observer's `Image_<nn><L|R>_1stHO.png` (the `_2ndHO` masks are
not used)::

    <out>/images/<split>/Image_01L.png   <out>/annotations/<split>/Image_01L_1stHO.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from src.data.converters.retinal import Sample, find_pairs, first_n_training, open_sources, write_samples

IMAGE_RE = re.compile(r"(?:^|/)(?P<key>Image_\d+[LR])\.jpg$", re.IGNORECASE)
LABEL_RE = re.compile(r"(?:^|/)(?P<key>Image_\d+[LR])_1stHO\.png$", re.IGNORECASE)
N_TRAIN = 20


def convert_chase_db1(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN) -> dict:
    """Convert the CHASE_DB1 release into `out`; returns the meta written."""
    srcs = open_sources(sources, "CHASE_DB1")
    pairs = find_pairs(srcs, IMAGE_RE, LABEL_RE, lambda m: m["key"], "CHASE_DB1")
    split = first_n_training(list(pairs), n_train)
    samples = [Sample(split[k], img, lbl, img.stem, lbl.stem) for k, (img, lbl) in pairs.items()]
    return write_samples(samples, out, "CHASE_DB1", srcs)
