"""Test-time augmentation, as MMSegmentation's `TestTimeAug` (multi-scale x flip) + `SegTTAModel` (merge).

Every view (each scale ratio, with and without a horizontal flip) is predicted in the configured test mode; its
logits are cropped to the view, flipped back, resized to the original size and softmaxed, and the probabilities
are averaged over the views, in MMSegmentation's order (`postprocess_result`, then `merge_preds`).

One difference, on purpose: MMSegmentation's TTA pipeline resizes the original image to `img_scale * ratio`; here
the ratio rescales the test pipeline's image (already at `img_scale`), so that TTA works for any `test_pipeline`.
The scaled image is rounded to 0..255, as MMSegmentation's uint8 resize would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from src.models.utils import resize

#: MMSegmentation's `img_ratios` of its TTA configs.
DEFAULT_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class TTAConfig:
    """Scale ratios (of the test-pipeline image size) and whether each scale is also predicted flipped."""

    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = True

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None, key: str = "model.test_cfg.tta") -> TTAConfig:
        """Parse and check `{scales: [...], flip: bool}`; None gives MMSegmentation's defaults."""
        if cfg is None:
            return cls()
        if not isinstance(cfg, Mapping):
            raise ValueError(
                f"{key}={cfg!r}: expected a mapping like {{scales: [0.5, 1.0, 1.5], flip: true}}"
            )
        unknown = set(cfg) - {"scales", "flip"}
        if unknown:
            raise ValueError(f"{key} has unknown keys {sorted(unknown)}: expected only 'scales' and 'flip'")
        scales = cfg.get("scales", DEFAULT_SCALES)
        if isinstance(scales, str) or not isinstance(scales, Sequence) or len(scales) == 0:
            raise ValueError(f"{key}.scales={scales!r}: expected a non-empty list of positive ratios")
        try:
            ratios = tuple(float(s) for s in scales)
        except (TypeError, ValueError):
            raise ValueError(f"{key}.scales={list(scales)!r}: expected numbers") from None
        if any(not r > 0 for r in ratios):
            raise ValueError(f"{key}.scales={list(ratios)}: every ratio must be > 0")
        flip = cfg.get("flip", True)
        if not isinstance(flip, bool):
            raise ValueError(f"{key}.flip={flip!r}: expected true or false")
        return cls(scales=ratios, flip=flip)

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def rescale_image(image: torch.Tensor, ratio: float) -> torch.Tensor:
    """A `[3, h, w]` image (0..255) rescaled bilinearly by `ratio` and rounded to integer values, as float; the
    size is rounded half up, as mmcv's `rescale_size` (at least 1 px)."""
    size = tuple(max(1, int(n * ratio + 0.5)) for n in image.shape[-2:])
    if size == tuple(image.shape[-2:]):
        return image
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return out.round_().clamp_(0, 255)


@torch.no_grad()
def tta_probabilities(
    segmentor: Any,
    images: Sequence[torch.Tensor],
    out_shapes: Sequence[Sequence[int]],
    cfg: TTAConfig,
) -> list[torch.Tensor]:
    """Averaged softmax probabilities `[C, H, W]` per image, at `out_shapes` (the original image sizes).

    `segmentor` is an `EncoderDecoder`: its `data_preprocessor` normalises and pads each view's batch, its
    `predict` runs the configured test mode.
    """
    sums: list[torch.Tensor | None] = [None] * len(images)
    for ratio in cfg.scales:
        scaled = [rescale_image(im, ratio) for im in images]
        for flip in (False, True) if cfg.flip else (False,):
            views = [im.flip(-1) for im in scaled] if flip else scaled
            batch, _ = segmentor.data_preprocessor(views)
            logits = segmentor.predict(batch)
            for i, view in enumerate(views):
                one = logits[i : i + 1, :, : view.shape[-2], : view.shape[-1]]
                if flip:
                    one = one.flip(-1)
                one = resize(one, out_shapes[i], align_corners=segmentor.align_corners)
                probs = one[0].float().softmax(0)
                sums[i] = probs if sums[i] is None else sums[i] + probs
    return [s / cfg.num_views for s in sums]
