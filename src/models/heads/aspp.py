"""DeepLabV3 head (Chen et al., 2017) in MMSegmentation's form (`decode_heads/aspp_head.py`).

Atrous Spatial Pyramid Pooling: parallel branches look at the same features with growing receptive fields
(a 1x1 conv, then 3x3 convs with dilations 12, 24, 36) next to an image-level branch (global average pool +
1x1 conv, broadcast back). A 3x3 conv (`bottleneck`) fuses the concatenation before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.base import BaseDecodeHead
from src.models.layers import conv_module
from src.models.resized_concat_conv import resized_concat_conv_module


class ASPPHead(BaseDecodeHead):
    """Args:
    dilations: one ASPP branch per dilation.
    **kwargs: `BaseDecodeHead` arguments.

    With BatchNorm, the image-pool branch sees one value per channel and image, so training needs a batch of at
    least 2 per BN (as in MMSegmentation and torchvision); SyncBN or GN lift that.
    """

    def __init__(self, dilations: Sequence[int] = (1, 12, 24, 36), **kwargs) -> None:
        super().__init__(**kwargs)
        if not dilations:
            raise ValueError("dilations must name at least one dilation, e.g. [1, 12, 24, 36]")
        self.dilations = tuple(dilations)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv_module(self.in_channels, self.channels, 1, norm=self.norm)
        )
        # one conv-norm-ReLU per dilation: 1x1 for dilation 1, else a 3x3 with that dilation
        self.aspp_modules = nn.ModuleList(
            conv_module(self.in_channels, self.channels, 1 if d == 1 else 3, dilation=d, norm=self.norm)
            for d in self.dilations
        )
        self.bottleneck = resized_concat_conv_module(
            (len(self.dilations) + 1) * self.channels,
            self.channels,
            3,
            norm=self.norm,
            align_corners=self.align_corners,
            size_from=1,  # the image pool comes first, at 1x1: the maps take the first branch's size
        )

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        """Image pool + ASPP branches, concatenated and fused by the bottleneck (shared with DeepLabV3+)."""
        # the pooled map goes in at 1x1: the bottleneck convolves it there (see ResizedConcatConv2d)
        return self.bottleneck([self.image_pool(x), *[branch(x) for branch in self.aspp_modules]])

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._aspp(self._transform_inputs(inputs)))
