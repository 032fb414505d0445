"""Cityscapes (fine annotations): 19 evaluated classes, as MMSegmentation's `CityscapesDataset`.

Layout: `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` with
`gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png` (train ids 0..18, 255 = not evaluated), which the
Cityscapes converter writes from the released labelIds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset


class CityscapesDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": [
            "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
            "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
            "bicycle",
        ],
        "palette": [
            [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
            [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
            [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
        ],
    }  # fmt: skip
    HOW_TO_CREATE: ClassVar[str] = (
        "Cityscapes needs an account: `python scripts/download_dataset.py cityscapes` says where to get "
        "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; unzip both into the data_root, then write "
        "the train ids with `python scripts/convert_dataset.py cityscapes <data_root>` "
        "(or set paths.data_dir / dataset.data_root to where the data is)."
    )

    def __init__(
        self,
        img_suffix: str = "_leftImg8bit.png",
        seg_map_suffix: str = "_gtFine_labelTrainIds.png",
        **kwargs: Any,
    ) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
