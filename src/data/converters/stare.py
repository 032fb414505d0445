"""STARE (retinal vessels) from `stare-images.tar` + `labels-ah.tar` (gzipped PPMs inside) or their folders.

Reads `im<nnnn>.ppm(.gz)` and Adam Hoover's labels `im<nnnn>.ah.ppm(.gz)`; 20 labelled images, the first
10 (sorted) -> training::

    <out>/images/<split>/im0001.png   <out>/annotations/<split>/im0001.ah.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from src.data.converters.retinal import convert_retinal, first_n_training

IMAGE_RE = re.compile(r"(?:^|/)(?P<key>im\d+)\.ppm(?:\.gz)?$")
LABEL_RE = re.compile(r"(?:^|/)(?P<key>im\d+)\.ah\.ppm(?:\.gz)?$")
N_TRAIN = 10


def convert_stare(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN) -> dict:
    """Convert the STARE release into `out`; returns the meta written."""
    split_of = partial(first_n_training, n_train=n_train)
    return convert_retinal(sources, out, "STARE", IMAGE_RE, LABEL_RE, lambda m: m["key"], split_of)
