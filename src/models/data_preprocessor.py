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

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """A float batch `[N, 3, H, W]` (0..255) padded at the bottom and right to a multiple of `size_divisor`,
        channels flipped when `bgr_to_rgb`, normalised. It is also the first step of the exported network
        (`src.serve.export.InferenceNet`): it always pads (by 0 when the size divides), since a branch on the size
        would fix the size in the traced graph."""
        d = int(self.size_divisor or 1)
        if d > 1:
            h, w = batch.shape[-2:]
            batch = F.pad(batch, (0, (d - w % d) % d, 0, (d - h % d) % d), value=float(self.pad_val))
        if self.bgr_to_rgb:
            batch = batch.flip(1)
        return (batch - self.mean) / self.std

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return normalised images `[N, 3, H, W]` (float) and padded masks `[N, H, W]` (long) or None."""
        images = list(images)
        size = (max(im.shape[-2] for im in images), max(im.shape[-1] for im in images))
        batch = self.normalize(torch.stack([_pad(im.float(), size, self.pad_val) for im in images]))
        if masks is None:
            return batch, None
        size = tuple(batch.shape[-2:])  # the images' padded size
        return batch, torch.stack([_pad(m.long(), size, self.seg_pad_val) for m in masks])


def _pad(t: torch.Tensor, size: tuple[int, int], value: float) -> torch.Tensor:
    pad_h, pad_w = size[0] - t.shape[-2], size[1] - t.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return t
    return F.pad(t, (0, pad_w, 0, pad_h), value=value)
