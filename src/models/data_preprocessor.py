"""Data preprocessor: the first stage of every segmentor, as MMSegmentation's `SegDataPreProcessor`.

Images arrive as uint8 tensors (the data pipeline stays in uint8 so that loading and transfer are cheap); here,
on the model's device, they are stacked, padded to a common size divisible by `size_divisor` (0 for images,
255 for masks, at the bottom and right) and normalised with mean/std in 0-255 units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegDataPreProcessor(nn.Module):
    def __init__(
        self,
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        bgr_to_rgb: bool = False,
        size_divisor: int | None = None,
        pad_val: float = 0.0,
        seg_pad_val: int = 255,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.bgr_to_rgb = bgr_to_rgb
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def padded_size(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        if self.size_divisor:
            d = self.size_divisor
            h, w = -(-h // d) * d, -(-w // d) * d
        return h, w

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return normalised images `[N, 3, H, W]` (float) and padded masks `[N, H, W]` (long) or None."""
        images = list(images) if not torch.is_tensor(images) else list(images.unbind(0))
        size = self.padded_size([tuple(im.shape[-2:]) for im in images])
        batch = torch.stack([_pad(im.float(), size, self.pad_val) for im in images])
        if self.bgr_to_rgb:
            batch = batch.flip(1)
        batch = (batch - self.mean) / self.std
        if masks is None:
            return batch, None
        masks = list(masks) if not torch.is_tensor(masks) else list(masks.unbind(0))
        mask_batch = torch.stack([_pad(m.long(), size, self.seg_pad_val) for m in masks])
        return batch, mask_batch


def _pad(t: torch.Tensor, size: tuple[int, int], value: float) -> torch.Tensor:
    pad_h, pad_w = size[0] - t.shape[-2], size[1] - t.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return t
    return F.pad(t, (0, pad_w, 0, pad_h), value=value)
