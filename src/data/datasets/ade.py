"""ADE20K scene parsing (ADEChallengeData2016): 150 classes, as MMSegmentation's `ADE20KDataset`.

Layout: `images/{training,validation}/<name>.jpg` with `annotations/{training,validation}/<name>.png`, where
0 means "other objects" and 1..150 are the classes: `reduce_zero_label` makes 0 the ignore index (255) and
k -> k - 1. Class names and palette are MMSegmentation 1.x's, except "bed" (MMSegmentation spells it "bed "
with a trailing space, which would leak into metric names such as `val/IoU/bed `).
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset


class ADE20KDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": [
            "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
            "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
            "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
            "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
            "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
            "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
            "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
            "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
            "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
            "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
            "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
            "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
            "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
            "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
            "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
            "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
            "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
            "flag",
        ],
        "palette": [
            [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
            [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
            [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
            [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
            [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
            [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
            [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
            [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
            [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
            [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
            [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133],
            [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0],
            [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
            [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
            [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
            [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255],
            [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255],
            [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255],
            [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255],
            [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
            [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
            [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255],
            [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0],
            [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255],
            [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
        ],
    }  # fmt: skip
    HOW_TO_CREATE: ClassVar[str] = (
        "Create it with `python scripts/download_dataset.py ade20k`, then unzip the archive into the data "
        "root's parent: `unzip -q data/ADEChallengeData2016.zip -d data/ade/` (no conversion is needed; "
        "or set paths.data_dir / dataset.data_root to where ADEChallengeData2016 is)."
    )

    def __init__(
        self,
        img_suffix: str = ".jpg",
        seg_map_suffix: str = ".png",
        reduce_zero_label: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs,
        )
