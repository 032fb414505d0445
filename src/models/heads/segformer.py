"""SegFormer's all-MLP head (Xie et al., NeurIPS 2021) in MMSegmentation's form (`decode_heads/segformer_head.py`).

Each selected level is projected to `channels` by a 1x1 conv-norm-ReLU (`convs`, the "MLP" of the paper),
upsampled to the first level's resolution, and the concatenation is fused by one more 1x1 conv-norm-ReLU
(`fusion_conv`) before the classifier. Light (no 3x3 conv): the MiT backbone does the heavy lifting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.heads.base import BaseDecodeHead
from src.models.heads.uper import check_levels
from src.models.layers import conv_module
from src.models.resized_concat_conv import resized_concat_conv_module
from src.models.utils import resize


class SegformerHead(BaseDecodeHead):
    """Args:
    in_channels: channels of each selected level, finest first (from the backbone, by `in_index`).
    in_index: which backbone outputs to use (MMSegmentation's configs: [0, 1, 2, 3]).
    interpolate_mode: how each level is upsampled to the first one ("bilinear" as MMSegmentation, or "nearest").
    input_transform: only "multiple_select" (each level read apart), fixed as in MMSegmentation; a config may
        repeat it.
    **kwargs: `BaseDecodeHead` arguments (`channels`, `num_classes`, `norm`, `align_corners`, ...).
    """

    default_in_index = (0, 1, 2, 3)

    def __init__(
        self,
        in_channels: Sequence[int],
        in_index: Sequence[int] = (0, 1, 2, 3),
        interpolate_mode: str = "bilinear",
        input_transform: str = "multiple_select",
        **kwargs,
    ) -> None:
        in_channels, in_index = check_levels("SegformerHead", in_channels, in_index, input_transform)
        if interpolate_mode not in ("bilinear", "nearest"):
            raise ValueError(
                f"SegformerHead: interpolate_mode='{interpolate_mode}', expected 'bilinear' or 'nearest'"
            )
        super().__init__(
            in_channels=in_channels, in_index=in_index, input_transform=input_transform, **kwargs
        )
        self.interpolate_mode = interpolate_mode
        self.convs = nn.ModuleList(conv_module(c, self.channels, 1, norm=self.norm) for c in self.in_channels)
        self.fusion_conv = resized_concat_conv_module(
            len(self.in_channels) * self.channels,
            self.channels,
            1,
            norm=self.norm,
            align_corners=self.align_corners,
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self._transform_inputs(inputs)
        outs = [conv(x) for conv, x in zip(self.convs, feats, strict=True)]
        if self.interpolate_mode == "bilinear":
            # the levels go in at their own sizes: the fusion conv mixes the coarse ones there (ResizedConcatConv2d)
            return self.cls_seg(self.fusion_conv(outs))
        size = outs[0].shape[2:]
        outs = [resize(o, size, mode=self.interpolate_mode, align_corners=self.align_corners) for o in outs]
        return self.cls_seg(self.fusion_conv(torch.cat(outs, dim=1)))
