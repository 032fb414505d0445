"""UPerNet head (Xiao et al., ECCV 2018) in MMSegmentation's form (`decode_heads/uper_head.py`).

A Pyramid Pooling Module on the last (coarsest) level gives global context; an FPN carries it down: every other
level is reduced to `channels` by a 1x1 conv (`lateral_convs`), the coarser lateral is upsampled and added
(top-down path), and a 3x3 conv (`fpn_convs`) smooths each sum. All levels are then upsampled to the finest
one, concatenated and fused by a 3x3 conv (`fpn_bottleneck`) before the classifier. The logits come out at the
resolution of the first selected level (stride 4 for the usual backbones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.base import BaseDecodeHead
from src.models.heads.psp import PPM
from src.models.layers import conv_module
from src.models.resized_concat_conv import resized_concat_conv_module
from src.models.utils import resize


class UPerHead(BaseDecodeHead):
    """Args:
    in_channels: channels of each selected level, finest first (from the backbone or neck, by `in_index`).
    in_index: which backbone (or neck) outputs to use, finest first (MMSegmentation's configs: [0, 1, 2, 3]).
    pool_scales: output sizes of the PPM branches on the last level.
    input_transform: only "multiple_select" (each level read apart), fixed as in MMSegmentation; a config may
        repeat it.
    **kwargs: `BaseDecodeHead` arguments (`channels`, `num_classes`, `norm`, `align_corners`, ...).
    """

    default_in_index = (0, 1, 2, 3)

    def __init__(
        self,
        in_channels: Sequence[int],
        in_index: Sequence[int] = (0, 1, 2, 3),
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        input_transform: str = "multiple_select",
        **kwargs,
    ) -> None:
        in_channels, in_index = check_levels("UPerHead", in_channels, in_index, input_transform)
        super().__init__(
            in_channels=in_channels, in_index=in_index, input_transform=input_transform, **kwargs
        )
        if not pool_scales:
            raise ValueError("UPerHead: pool_scales must name at least one scale, e.g. [1, 2, 3, 6]")
        self.pool_scales = tuple(pool_scales)
        top = self.in_channels[-1]
        self.psp_modules = PPM(self.pool_scales, top, self.channels, self.norm, self.align_corners)
        self.bottleneck = resized_concat_conv_module(
            top + len(self.pool_scales) * self.channels,
            self.channels,
            3,
            norm=self.norm,
            align_corners=self.align_corners,
        )
        # one lateral 1x1 and one output 3x3 conv per level below the top (the top's lateral is the PPM)
        self.lateral_convs = nn.ModuleList(
            conv_module(c, self.channels, 1, norm=self.norm) for c in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            conv_module(self.channels, self.channels, 3, norm=self.norm) for _ in self.in_channels[:-1]
        )
        # given the levels at their own sizes, it convolves the coarse ones there (see ResizedConcatConv2d)
        self.fpn_bottleneck = resized_concat_conv_module(
            len(self.in_channels) * self.channels,
            self.channels,
            3,
            norm=self.norm,
            align_corners=self.align_corners,
        )

    def psp_forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """PPM on the last level, concatenated with it and fused by `bottleneck`."""
        x = inputs[-1]
        return self.bottleneck([x, *self.psp_modules.pooled(x)])

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self._transform_inputs(inputs)
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(feats))
        # top-down path: each level adds the upsampled coarser one (out of place: the laterals feed autograd)
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(
                laterals[i], laterals[i - 1].shape[2:], align_corners=self.align_corners
            )
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        return self.cls_seg(self.fpn_bottleneck(outs))


def check_levels(
    head: str, in_channels: Sequence[int] | int, in_index: Sequence[int] | int, input_transform: str | None
) -> tuple[list[int], list[int]]:
    """`in_channels` and `in_index` as equally long lists (levels read apart, "multiple_select"), or a
    ValueError naming the head and the values."""
    if isinstance(in_channels, int) or isinstance(in_index, int):
        raise ValueError(
            f"{head} takes several levels: in_channels and in_index must be lists, got in_channels={in_channels}"
            f" and in_index={in_index}"
        )
    in_channels, in_index = list(in_channels), list(in_index)
    if input_transform != "multiple_select":
        raise ValueError(
            f"{head} reads each level apart: input_transform must be 'multiple_select', got {input_transform!r}"
        )
    if not in_index or len(in_channels) != len(in_index):
        raise ValueError(
            f"{head}: in_channels={in_channels} must give one channel count per level of in_index={in_index}"
        )
    return in_channels, in_index
