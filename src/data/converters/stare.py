"""STARE (retinal vessels) from `stare-images.tar` + `labels-ah.tar` (gzipped PPMs inside) or their folders.

Reads `im<nnnn>.ppm(.gz)` and Adam Hoover's labels `im<nnnn>.ah.ppm(.gz)`; 20 labelled images, the first
10 (sorted) -> training::

    <out>/images/<split>/im0001.png   <out>/annotations/<split>/im0001.ah.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from src.data.converters.retinal import Sample, find_pairs, first_n_training, open_sources, write_samples

IMAGE_RE = re.compile(r"(?:^|/)(?P<key>im\d+)\.ppm(?:\.gz)?$")
LABEL_RE = re.compile(r"(?:^|/)(?P<key>im\d+)\.ah\.ppm(?:\.gz)?$")
N_TRAIN = 10


def convert_stare(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN) -> dict:
    """Convert the STARE release into `out`; returns the meta written."""
    srcs = open_sources(sources, "STARE")
    pairs = find_pairs(srcs, IMAGE_RE, LABEL_RE, lambda m: m["key"], "STARE")
    split = first_n_training(list(pairs), n_train)
    samples = [Sample(split[k], img, lbl, img.stem, lbl.stem) for k, (img, lbl) in pairs.items()]
    return write_samples(samples, out, "STARE", srcs)
