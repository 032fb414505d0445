"""The built-in "shapes" dataset: procedurally generated, no download (see `src.data.synthetic`)."""

from __future__ import annotations

from typing import Any, ClassVar

from src.data.datasets.base import BaseSegDataset
from src.data.synthetic import SHAPES_CLASSES, SHAPES_PALETTE


class ShapesDataset(BaseSegDataset):
    METAINFO: ClassVar[dict[str, Any]] = {"classes": SHAPES_CLASSES, "palette": SHAPES_PALETTE}
    HOW_TO_CREATE: ClassVar[str] = (
        "The shapes dataset is generated there automatically when training or evaluating "
        "(dataset.prepare), or by hand with `python scripts/make_shapes_dataset.py --root <data_root>`."
    )

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png", **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
