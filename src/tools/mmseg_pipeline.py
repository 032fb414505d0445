"""MMSegmentation's own Cityscapes training pipeline, for `scripts/benchmark_data.py --mmseg`.

MMSegmentation is not a dependency of this project: install it outside the project and put it on `PYTHONPATH`
for the measurement only, e.g.

    pip install --target /tmp/mmseg_pkgs --no-deps mmsegmentation==1.2.2 mmcv-lite==2.1.0 mmengine==0.10.7 \
        addict yapf termcolor prettytable ftfy regex wcwidth
    PYTHONPATH=/tmp/mmseg_pkgs python scripts/benchmark_data.py --mmseg ...

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


def _settings(dataset: Any) -> dict[str, Any]:
    """RandomResize's (w, h) box and ratio range, RandomCrop's (h, w) and cat_max_ratio, read off the transforms
    of `dataset`'s training pipeline (separate or fused into `RandomResizeCrop`)."""
    found: dict[str, Any] = {}
    for t in getattr(dataset.pipeline, "transforms", []):
        for key in ("scale", "ratio_range", "crop_size", "cat_max_ratio"):
            if getattr(t, key, None) is not None:
                found.setdefault(key, getattr(t, key))
    missing = [k for k in ("scale", "ratio_range", "crop_size") if k not in found]
    if missing:
        raise SystemExit(
            f"--mmseg times RandomResize(ratio_range) + RandomCrop pipelines (Cityscapes'); this dataset's "
            f"training pipeline has no {missing}"
        )
    return found


class MMSegPipeline:
    """MMSegmentation's own transforms with the random resize and crop settings of `dataset`'s training pipeline,
    on its files, so that the two time the same work."""

    def __init__(self, dataset: Any) -> None:
        found = _settings(dataset)
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
                f"--mmseg needs MMSegmentation 1.x importable ({exc}); see src/tools/mmseg_pipeline.py for "
                "how to install it outside the project"
            ) from exc
        self.versions = f"mmsegmentation {mmseg.__version__}, mmcv {mmcv.__version__}"
        self.samples = list(dataset.samples)
        self.collate = pseudo_collate
        self.pipeline = Compose(
            [
                LoadImageFromFile(),
                LoadAnnotations(),
                RandomResize(
                    scale=tuple(found["scale"]), ratio_range=tuple(found["ratio_range"]), keep_ratio=True
                ),
                RandomCrop(
                    crop_size=tuple(found["crop_size"]), cat_max_ratio=found.get("cat_max_ratio", 1.0)
                ),
                RandomFlip(prob=0.5),
                PhotoMetricDistortion(),
                PackSegInputs(),
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
