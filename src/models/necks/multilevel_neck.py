"""MMSegmentation's `MultiLevelNeck` (`necks/multilevel_neck.py`): a plain ViT's single-resolution features
turned into a pyramid for pyramid heads such as UPerNet.

Each input level is projected by a 1x1 conv (`lateral_convs`), resized by its scale factor (bilinear; e.g.
[4, 2, 1, 0.5] makes strides 4, 8, 16, 32 of four stride-16 ViT blocks) and refined by a 3x3 conv (`convs`).
As in MMSegmentation the convs have a bias and, by default, neither norm nor activation. A single input level is
shared by every output.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.models.layers import conv_module


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str | None, act: bool) -> nn.Module:
    """MMCV's ConvModule: conv (with a bias only when no norm follows) [-> norm] [-> ReLU].

    Both forms name the conv `conv` (and the norm `bn`), so MMSegmentation's state-dict names carry over."""
    if norm is not None:
        return conv_module(in_channels, out_channels, kernel_size, norm=norm, apply_act=act)
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))
    if act:
        layers["act"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


class MultiLevelNeck(nn.Module):
    """Args:
    in_channels: channels of each input level (from the backbone); one level is shared by every output.
    out_channels: channels of every output level.
    scales: resize factor per output level (> 1 upsamples), MMSegmentation's default [0.5, 1, 2, 4];
        its ViT-UPerNet configs use [4, 2, 1, 0.5].
    norm: None (MMSegmentation's default), "bn", "syncbn" or "gn" after each conv.
    act: ReLU after each conv (MMSegmentation's default: none).

    `out_channels` is then a list, one entry per output level, as a backbone's, for the head that follows.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        scales: Sequence[float] = (0.5, 1, 2, 4),
        norm: str | None = None,
        act: bool = False,
    ) -> None:
        super().__init__()
        in_channels, scales = list(in_channels), [float(s) for s in scales]
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"MultiLevelNeck: scales={scales} must be a non-empty list of positive factors")
        if len(in_channels) not in (1, len(scales)):
            raise ValueError(
                f"MultiLevelNeck: in_channels={in_channels} must give one level or one per scale "
                f"(scales={scales}); select the backbone levels with its out_indices"
            )
        self.in_channels = in_channels
        self.scales = scales
        self.out_channels = [out_channels] * len(scales)
        self.lateral_convs = nn.ModuleList(_conv(c, out_channels, 1, norm, act) for c in in_channels)
        self.convs = nn.ModuleList(_conv(out_channels, out_channels, 3, norm, act) for _ in scales)

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f"MultiLevelNeck got {len(inputs)} feature maps, built for {len(self.in_channels)}"
            )
        feats = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        if len(feats) == 1:
            feats = feats * len(self.scales)
        # resized by the factor itself, as MMSegmentation (the sampling grid follows the factor, not the rounded
        # size); in an ONNX graph this is a Resize by scales, which follows any input size
        return [
            conv(x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
            for conv, x, s in zip(self.convs, feats, self.scales, strict=True)
        ]
