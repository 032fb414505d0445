"""Cityscapes: write `<name>_gtFine_labelTrainIds.png` beside every `<name>_gtFine_labelIds.png`.

Standard layout (as downloaded and unzipped): `<root>/gtFine/{train,val,test}/<city>/<name>_gtFine_labelIds.png`.
The 34 label ids map to the 19 training classes by cityscapesScripts' table; every other id -> 255. (The
test split's labelIds are all "unlabeled", so its trainIds are all 255, as with cityscapesScripts.)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from src.data.converters.writers import IGNORE_INDEX, map_in_processes, write_mask_png

# labelId -> trainId of the 19 evaluated classes, copied from cityscapesScripts'
# `cityscapesscripts/helpers/labels.py` (mcordts/cityscapesScripts) so that we need not depend on it.
# Every id absent here (0-6 void, 9 parking, 10 rail track, 14 guard rail, 15 bridge, 16 tunnel,
# 18 polegroup, 29 caravan, 30 trailer, -1 license plate) has trainId 255 (ignored).
LABEL_ID_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def train_id_lut() -> np.ndarray:
    """A 256-entry uint8 lookup table: `lut[label_id] = train_id`, 255 for ids that are not trained on."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(LABEL_ID_TO_TRAIN_ID)] = list(LABEL_ID_TO_TRAIN_ID.values())
    return lut


def convert_one(path: Path, lut: np.ndarray) -> Path:
    """Convert one labelIds PNG; returns the trainIds PNG written beside it."""
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None:
        raise ValueError(f"Cannot read Cityscapes label '{path}'")
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(
            f"Cityscapes label '{path}' is {ids.dtype} {ids.shape}; expected a uint8 [H, W] id map"
        )
    out = path.with_name(path.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
    return write_mask_png(out, lut[ids])


def convert_cityscapes(root: str | Path, nproc: int = 1) -> int:
    """Convert every labelIds PNG under `<root>/gtFine`; returns how many were written."""
    gt = Path(root) / "gtFine"
    if not gt.is_dir():
        raise FileNotFoundError(
            f"Cityscapes folder '{gt}' does not exist: expected <root>/gtFine/{{train,val,test}}/<city>/ "
            f"from gtFine_trainvaltest.zip unzipped into '{root}'"
        )
    files = sorted(gt.glob(f"*/*/*{LABEL_IDS_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"No '*{LABEL_IDS_SUFFIX}' under '{gt}/<split>/<city>/'")
    map_in_processes(partial(convert_one, lut=train_id_lut()), files, nproc, chunksize=16)
    return len(files)
