"""FCN head (Long et al., CVPR 2015) in MMSegmentation's form: `num_convs` 3x3 convs, optionally concatenated
with the input and fused by one more conv, then the classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.base import BaseDecodeHead
from src.models.layers import conv_module


class FCNHead(BaseDecodeHead):
    def __init__(
        self,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dilation: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_convs < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        if num_convs == 0 and self.in_channels != self.channels:
            raise ValueError(
                f"num_convs=0 needs in_channels == channels, got {self.in_channels} and {self.channels}"
            )
        self.num_convs = num_convs
        self.concat_input = concat_input
        convs: list[nn.Module] = []
        for i in range(num_convs):
            in_ch = self.in_channels if i == 0 else self.channels
            convs.append(conv_module(in_ch, self.channels, kernel_size, dilation=dilation, norm=self.norm))
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.conv_cat = (
            conv_module(self.in_channels + self.channels, self.channels, kernel_size, norm=self.norm)
            if concat_input
            else None
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        feats = self.convs(x)
        if self.conv_cat is not None:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.cls_seg(feats)
