"""Tensor helpers shared by heads and segmentors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize(
    x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False
) -> torch.Tensor:
    """Resize `[N, C, H, W]` logits or features to `size`; a no-op when the size already matches."""
    # symbolic sizes (ONNX export with dynamic height and width) stay symbolic: int() would fix them at the
    # traced value (seen with a padded input: the logits came out at the traced size)
    size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size)
    # the shortcut is a Python branch: under export it would be frozen at the traced sizes (a pooled branch that
    # happens to match its input when traced would never be resized at other sizes), so exporting always resizes
    if tuple(x.shape[-2:]) == size and not torch.compiler.is_exporting():
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def like_memory_format(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`x` in `ref`'s memory format (channels_last or contiguous); a no-op when it already is.

    For the branches upsampled from a 1x1 pooled map (PSP's pyramid, ASPP's image pool) before a concatenation:
    the layout of a 1x1 map is ambiguous, so `F.interpolate` returns it contiguous even in a channels_last model,
    and `torch.cat` of mixed layouts is contiguous, which costs the next convolution a full-size conversion
    (forward and backward) and its weight a copy."""
    if ref.dim() == 4 and not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x
