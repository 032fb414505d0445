"""MMSegmentation's own Cityscapes training pipeline, for `scripts/benchmark_data.py --mmseg`.

MMSegmentation is not a dependency of this project: install it outside the project and put it on `PYTHONPATH`
for the measurement only, e.g.

    pip install --target /tmp/mmseg_pkgs --no-deps mmsegmentation==1.2.2 mmcv-lite==2.1.0 mmengine==0.10.7 \
        addict yapf termcolor prettytable ftfy regex wcwidth
    PYTHONPATH=/tmp/mmseg_pkgs python scripts/benchmark_data.py --reference --mmseg ...

mmcv-lite has no compiled ops; `mmcv.ops` (imported by `mmseg.utils` for its models, not by the transforms) is
stood in for by an empty module. The transforms are MMSegmentation 1.x's Cityscapes `train_pipeline`
(`LoadImageFromFile`, `LoadAnnotations`, `RandomResize`, `RandomCrop` with `cat_max_ratio`, `RandomFlip`,
`PhotoMetricDistortion`, `PackSegInputs`) and the batch is mmengine's `pseudo_collate`, as its runner does.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

from src.tools.reference_pipeline import ReferencePipeline


def _import_mmseg() -> dict[str, Any]:
    if "mmcv.ops" not in sys.modules:  # mmcv-lite: no compiled ops; the data transforms do not use them
        ops = types.ModuleType("mmcv.ops")
        ops.__getattr__ = lambda name: None  # type: ignore[method-assign]
        sys.modules["mmcv.ops"] = ops
    try:
        import mmcv
        import mmseg
        from mmcv.transforms import Compose, LoadImageFromFile, RandomFlip, RandomResize
        from mmengine.dataset import pseudo_collate
        from mmseg.datasets.transforms import (
            LoadAnnotations,
            PackSegInputs,
            PhotoMetricDistortion,
            RandomCrop,
        )
    except ImportError as exc:
        raise SystemExit(
            f"--mmseg needs MMSegmentation 1.x importable ({exc}); see src/tools/mmseg_pipeline.py for how to "
            "install it outside the project"
        ) from exc
    return {
        "versions": f"mmsegmentation {mmseg.__version__}, mmcv {mmcv.__version__}",
        "Compose": Compose,
        "LoadImageFromFile": LoadImageFromFile,
        "LoadAnnotations": LoadAnnotations,
        "RandomResize": RandomResize,
        "RandomCrop": RandomCrop,
        "RandomFlip": RandomFlip,
        "PhotoMetricDistortion": PhotoMetricDistortion,
        "PackSegInputs": PackSegInputs,
        "pseudo_collate": pseudo_collate,
    }


class MMSegPipeline:
    """MMSegmentation's own transforms with the settings of `reference` (a `ReferencePipeline`: samples, RandomResize's
    (w, h) box and ratio range, RandomCrop's (h, w) and cat_max_ratio), so that the two time the same work."""

    def __init__(self, reference: ReferencePipeline) -> None:
        samples, scale, ratio_range = reference.samples, reference.scale, reference.ratio_range
        crop_size, cat_max_ratio = reference.crop_size, reference.cat_max_ratio
        mm = _import_mmseg()
        self.versions = mm["versions"]
        self.samples = list(samples)
        self.collate = mm["pseudo_collate"]
        self.pipeline = mm["Compose"](
            [
                mm["LoadImageFromFile"](),
                mm["LoadAnnotations"](),
                mm["RandomResize"](scale=tuple(scale), ratio_range=tuple(ratio_range), keep_ratio=True),
                mm["RandomCrop"](crop_size=tuple(crop_size), cat_max_ratio=cat_max_ratio),
                mm["RandomFlip"](prob=0.5),
                mm["PhotoMetricDistortion"](),
                mm["PackSegInputs"](),
            ]
        )

    def sample(self, index: int) -> dict[str, Any]:
        img_path, seg_path = self.samples[index % len(self.samples)]
        info = {
            "img_path": str(img_path),
            "seg_map_path": str(seg_path),
            "label_map": None,
            "reduce_zero_label": False,
            "seg_fields": [],
            "sample_idx": index,
        }
        return self.pipeline(info)

    def batch(self, indices: Sequence[int]) -> dict[str, list]:
        return self.collate([self.sample(i) for i in indices])
