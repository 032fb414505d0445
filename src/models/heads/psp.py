"""PSPNet head (Zhao et al., CVPR 2017) in MMSegmentation's form (`decode_heads/psp_head.py`).

The Pyramid Pooling Module pools the input to a few grid sizes (1, 2, 3, 6), reduces each with a 1x1 conv,
upsamples them back and concatenates them with the input: global and sub-region context next to local
features. One 3x3 conv (`bottleneck`) fuses them before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.base import BaseDecodeHead
from src.models.layers import conv_module
from src.models.resized_concat_conv import resized_concat_conv_module
from src.models.utils import like_memory_format, resize


class PPM(nn.ModuleList):
    """Pyramid Pooling Module: per scale, adaptive average pool -> 1x1 conv-norm-ReLU -> upsample to input size.

    With BatchNorm, the 1x1-pooled branch sees one value per channel and image, so training needs a batch of
    at least 2 per BN (as in MMSegmentation and torchvision); SyncBN or GN lift that.
    """

    def __init__(
        self,
        pool_scales: Sequence[int],
        in_channels: int,
        channels: int,
        norm: str = "bn",
        align_corners: bool = False,
    ) -> None:
        super().__init__(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), conv_module(in_channels, channels, 1, norm=norm))
            for scale in pool_scales
        )
        self.align_corners = align_corners

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each branch at its pooled size (for a `ResizedConcatConv2d`, which resizes them itself)."""
        return [branch(x) for branch in self]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[2:]
        return [
            like_memory_format(resize(pooled, size, align_corners=self.align_corners), x)
            for pooled in self.pooled(x)
        ]


class PSPHead(BaseDecodeHead):
    """Args:
    pool_scales: output sizes of the pooling branches.
    **kwargs: `BaseDecodeHead` arguments.
    """

    def __init__(self, pool_scales: Sequence[int] = (1, 2, 3, 6), **kwargs) -> None:
        super().__init__(**kwargs)
        if not pool_scales:
            raise ValueError("pool_scales must name at least one scale, e.g. [1, 2, 3, 6]")
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = PPM(
            self.pool_scales, self.in_channels, self.channels, self.norm, self.align_corners
        )
        self.bottleneck = resized_concat_conv_module(
            self.in_channels + len(self.pool_scales) * self.channels,
            self.channels,
            3,
            norm=self.norm,
            align_corners=self.align_corners,
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        # the pooled maps go in at their own size: the bottleneck convolves them there (see ResizedConcatConv2d)
        feats = self.bottleneck([x, *self.psp_modules.pooled(x)])
        return self.cls_seg(feats)
