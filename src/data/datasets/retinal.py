"""The retinal-vessel datasets (DRIVE, CHASE_DB1, STARE, HRF): background and vessel, as MMSegmentation's.

They share classes, palette and layout, written by `convert_dataset.py <drive|chase_db1|stare|hrf>`:
`images/{training,validation}/<stem>.png` with `annotations/{training,validation}/<stem><seg_map_suffix>`
(0 background, 1 vessel); each class only declares its mask suffix and how to create it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset

VESSEL_METAINFO: dict[str, Any] = {
    "classes": ["background", "vessel"],
    "palette": [[120, 120, 120], [6, 230, 230]],
}


def _how_to_create(name: str, sources: str, out: str) -> str:
    return (
        f"Create it with `python scripts/download_dataset.py {name}`, then "
        f"`python scripts/convert_dataset.py {name} {sources} --out {out}` "
        "(or set paths.data_dir / dataset.data_root to where it is)."
    )


class _RetinalDataset(BaseSegDataset):
    """Shared by the four: background/vessel metainfo, `.png` images, the subclass's mask suffix."""

    METAINFO: ClassVar[dict[str, Any]] = VESSEL_METAINFO
    SEG_MAP_SUFFIX: ClassVar[str] = ".png"

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str | None = None, **kwargs: Any) -> None:
        seg_map_suffix = self.SEG_MAP_SUFFIX if seg_map_suffix is None else seg_map_suffix
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


class DRIVEDataset(_RetinalDataset):
    """DRIVE: `21_training.png` with `21_training_manual1.png` (first observer)."""

    SEG_MAP_SUFFIX: ClassVar[str] = "_manual1.png"
    HOW_TO_CREATE: ClassVar[str] = _how_to_create("drive", "data/training.zip data/test.zip", "data/DRIVE")


class ChaseDB1Dataset(_RetinalDataset):
    """CHASE_DB1: `Image_01L.png` with `Image_01L_1stHO.png` (first observer)."""

    SEG_MAP_SUFFIX: ClassVar[str] = "_1stHO.png"
    HOW_TO_CREATE: ClassVar[str] = _how_to_create("chase_db1", "data/CHASEDB1.zip", "data/CHASE_DB1")


class STAREDataset(_RetinalDataset):
    """STARE: `im0001.png` with `im0001.ah.png` (Adam Hoover's labels)."""

    SEG_MAP_SUFFIX: ClassVar[str] = ".ah.png"
    HOW_TO_CREATE: ClassVar[str] = _how_to_create(
        "stare", "data/stare-images.tar data/labels-ah.tar", "data/STARE"
    )


class HRFDataset(_RetinalDataset):
    """HRF: `01_h.png` with `01_h.png` (the same name, in annotations/)."""

    SEG_MAP_SUFFIX: ClassVar[str] = ".png"
    HOW_TO_CREATE: ClassVar[str] = _how_to_create(
        "hrf",
        "data/{healthy,glaucoma,diabetic_retinopathy}{,_manualsegm}.zip",
        "data/HRF",
    )
