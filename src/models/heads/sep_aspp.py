"""DeepLabV3+ head (Chen et al., ECCV 2018) in MMSegmentation's form (`decode_heads/sep_aspp_head.py`).

DeepLabV3's ASPP with depthwise-separable dilated branches (cheaper), followed by a light decoder: the ASPP
output is upsampled to the stride-4 features of stage 1 (reduced to `c1_channels` by a 1x1 conv), concatenated
with them and refined by two depthwise-separable 3x3 convs, which recovers object boundaries.
As in MMSegmentation 1.x, the ASPP `bottleneck` stays a plain 3x3 conv.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.aspp import ASPPHead
from src.models.layers import conv_module
from src.models.utils import resize


def _sep_conv(
    in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, norm: str = "bn"
) -> nn.Sequential:
    """MMCV's `DepthwiseSeparableConvModule`: depthwise conv-norm-ReLU, then pointwise 1x1 conv-norm-ReLU."""
    return nn.Sequential(
        OrderedDict(
            depthwise_conv=conv_module(
                in_channels, in_channels, kernel_size, dilation=dilation, norm=norm, groups=in_channels
            ),
            pointwise_conv=conv_module(in_channels, out_channels, 1, norm=norm),
        )
    )


class DepthwiseSeparableASPPHead(ASPPHead):
    """Args:
    c1_in_channels: channels of the low-level features (`inputs[c1_in_index]`); 0 disables the skip.
    c1_channels: channels the low-level features are reduced to (48 for ResNet-50, 12 for ResNet-18).
    c1_in_index: which backbone output is the low-level one (MMSegmentation always uses the first).
    **kwargs: `ASPPHead` arguments (`dilations`, `in_channels`, `channels`, ...).
    """

    def __init__(self, c1_in_channels: int, c1_channels: int, c1_in_index: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if c1_in_channels < 0 or c1_channels < 0:
            raise ValueError(
                f"c1_in_channels and c1_channels must be >= 0, got {c1_in_channels} and {c1_channels}"
            )
        for i, dilation in enumerate(self.dilations):
            if dilation > 1:
                self.aspp_modules[i] = _sep_conv(
                    self.in_channels, self.channels, 3, dilation=dilation, norm=self.norm
                )
        self.c1_in_index = c1_in_index
        if c1_in_channels > 0:
            self.c1_bottleneck: nn.Module | None = conv_module(c1_in_channels, c1_channels, 1, norm=self.norm)
        else:
            # MMSegmentation still widens sep_bottleneck by c1_channels here, which cannot run; we do not.
            self.c1_bottleneck, c1_channels = None, 0
        self.sep_bottleneck = nn.Sequential(
            _sep_conv(self.channels + c1_channels, self.channels, 3, norm=self.norm),
            _sep_conv(self.channels, self.channels, 3, norm=self.norm),
        )

    @classmethod
    def channels_from_features(cls, feature_channels: Sequence[int], c1_in_index: int = 0, **kwargs) -> dict:
        """`in_channels` as any head, plus `c1_in_channels` of the low-level level `c1_in_index`."""
        return {
            **super().channels_from_features(feature_channels, **kwargs),
            "c1_in_channels": int(feature_channels[c1_in_index]),
        }

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        output = self._aspp(self._transform_inputs(inputs))
        if self.c1_bottleneck is not None:
            c1 = self.c1_bottleneck(inputs[self.c1_in_index])
            output = resize(output, c1.shape[2:], align_corners=self.align_corners)
            output = torch.cat([output, c1], dim=1)
        return self.cls_seg(self.sep_bottleneck(output))
