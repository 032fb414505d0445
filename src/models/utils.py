"""Tensor helpers shared by heads and segmentors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize(
    x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False
) -> torch.Tensor:
    """Resize `[N, C, H, W]` logits or features to `size`; a no-op when the size already matches."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
