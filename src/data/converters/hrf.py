"""HRF (retinal vessels) from `{healthy,glaucoma,diabetic_retinopathy}.zip` + `..._manualsegm.zip` or folders.

Reads images `<nn>_<h|g|dr>.jpg` and manual segmentations `<nn>_<h|g|dr>.tif` (not the `_mask.tif` fields
of view); 15 per category, the first 5 of each (sorted) -> training::

    <out>/images/<split>/01_h.png   <out>/annotations/<split>/01_h.png
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from src.data.converters.retinal import Sample, find_pairs, first_n_training, open_sources, write_samples

IMAGE_RE = re.compile(r"(?:^|/)(?P<num>\d+)_(?P<cat>h|g|dr)\.jpe?g$", re.IGNORECASE)
LABEL_RE = re.compile(r"(?:^|/)(?P<num>\d+)_(?P<cat>h|g|dr)\.tif$", re.IGNORECASE)
N_TRAIN_PER_CATEGORY = 5


def convert_hrf(sources: Sequence[str | Path], out: str | Path, n_train: int = N_TRAIN_PER_CATEGORY) -> dict:
    """Convert the HRF release into `out`; returns the meta written."""
    srcs = open_sources(sources, "HRF")
    pairs = find_pairs(srcs, IMAGE_RE, LABEL_RE, lambda m: (m["cat"].lower(), m["num"]), "HRF")
    by_category = defaultdict(list)
    for key in pairs:
        by_category[key[0]].append(key)
    split = {k: s for keys in by_category.values() for k, s in first_n_training(keys, n_train).items()}
    samples = [Sample(split[k], img, lbl, img.stem, img.stem) for k, (img, lbl) in pairs.items()]
    return write_samples(samples, out, "HRF", srcs)
