"""Stanford Background (Gould et al., ICCV 2009): 8 outdoor-scene classes, as in MMSegmentation's tutorial.

Layout written by `convert_dataset.py stanford_background`: `images/<id>.jpg` with `labels/<id>.png`
(0..7, 255 = unknown) and the ids of each split in `splits/{train,val}.txt`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset


class StanfordBackgroundDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": ["sky", "tree", "road", "grass", "water", "bldg", "mntn", "fg obj"],
        "palette": [
            [128, 128, 128], [129, 127, 38], [120, 69, 125], [53, 125, 34], [0, 11, 123], [118, 20, 12],
            [122, 81, 25], [241, 134, 51],
        ],
    }  # fmt: skip
    HOW_TO_CREATE: ClassVar[str] = (
        "Create it with `python scripts/download_dataset.py stanford_background`, then "
        "`python scripts/convert_dataset.py stanford_background data/iccv09Data.tar.gz "
        "--out data/stanford_background` (or set paths.data_dir / dataset.data_root to where it is)."
    )
