"""Swin Transformer as MMSegmentation builds it (`mmseg/models/backbones/swin.py`), on timm's Swin modules.

MMSegmentation's SwinTransformer is timm's without the classifier and final norm, plus one LayerNorm per returned
level (`norm0`..`norm3`). Its stages pad each block's input to a multiple of the window and partition every
stage into full windows (a 512x512 crop gives 128x128 tokens, padded to 133x133 for 7x7 windows), with shifted
windows in every other block, also at stage 4. timm builds the same parameters (`always_partition=True`,
`dynamic_img_size=True` for any input size), but timm's block rolls the tokens before padding them while
MMSegmentation (and the original Swin segmentation code) pads first, then rolls: the attention masks then cover
different tokens whenever a side is not a multiple of the window. `_PadThenShiftBlock` keeps timm's block,
attention and mask code and only swaps those two steps. Swin-T: 27,520,698 parameters, as MMSegmentation's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn

from src.models.backbones.common import (
    check_output_stride,
    nhwc_to_nchw,
    require_timm_family,
    timm_weights_guard,
)
from src.models.backbones.timm_backbone import check_timm_name, load_pretrained_weights


class _PadThenShiftBlock(SwinTransformerBlock):
    """timm's Swin block with MMSegmentation's order: pad to whole windows, then cyclic shift (see module doc)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, C = x.shape
        win_h, win_w = self.window_size
        x = F.pad(x, (0, 0, 0, (win_w - W % win_w) % win_w, 0, (win_h - H % win_h) % win_h))
        _, Hp, Wp, _ = x.shape
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        mask = self.get_attn_mask(x) if shifted else None  # over the padded, shifted map, as MMSegmentation's
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)
        windows = self.attn(windows, mask=mask).view(-1, win_h, win_w, C)
        x = window_reverse(windows, self.window_size, Hp, Wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


class SwinBackbone(nn.Module):
    """MMSegmentation's SwinTransformer backbone over timm's `swin_*` models.

    Args:
        model_name: a timm Swin (`swin_tiny_patch4_window7_224`, `swin_small_...`, `swin_base_patch4_window12_384`).
        out_indices: stages to return (each through its own LayerNorm `norm{i}`).
        output_stride: 32 only (Swin has no dilated form); anything else raises.
        pretrained: timm's ImageNet weights (needs the hub or timm's cache).
        pretrained_path: a local timm-named state dict instead.
        drop_path_rate: stochastic depth (MMSegmentation's UPerNet Swin configs: 0.3).
        **kwargs: passed to `timm.create_model` (e.g. `embed_dim`, `depths`, `num_heads` for a small test model).
    """

    def __init__(
        self,
        model_name: str = "swin_tiny_patch4_window7_224",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_path_rate: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_timm_name(model_name)
        require_timm_family(
            model_name, "swin_transformer", "SwinBackbone", "Swin V1 (swin_tiny_patch4_window7_224, ...)"
        )
        check_output_stride(model_name, output_stride, (32,), "no dilation in Swin")
        with timm_weights_guard(model_name, pretrained and not pretrained_path):
            model = timm.create_model(
                model_name,
                pretrained=pretrained and not pretrained_path,
                num_classes=0,
                drop_path_rate=drop_path_rate,
                dynamic_img_size=True,  # any input size: attention masks built per forward
                always_partition=True,  # full windows and shifts at every stage, whatever the input size
                embed_layer=partial(
                    PatchEmbed, dynamic_img_pad=True
                ),  # pad the input to the patch size, as MMSeg
                **kwargs,
            )
        if type(model).__name__ != "SwinTransformer":
            raise ValueError(
                f"model.backbone.model_name={model_name}: SwinBackbone needs a timm Swin (V1) model "
                f"(swin_tiny_patch4_window7_224, ...), got {type(model).__name__}; use TimmBackbone for others"
            )
        for block in model.modules():
            if type(block) is SwinTransformerBlock:
                block.__class__ = _PadThenShiftBlock  # same module, MMSegmentation's pad/shift order
        self.patch_embed, self.layers = model.patch_embed, model.layers
        self.out_indices = list(out_indices)
        info = model.feature_info
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(info[i]["num_chs"]))
        if pretrained_path:
            load_pretrained_weights(self, pretrained_path)
        self.model_name = model_name
        self.out_channels = [info[i]["num_chs"] for i in self.out_indices]
        self.reductions = [info[i]["reduction"] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if i in self.out_indices:
                outs.append(nhwc_to_nchw(getattr(self, f"norm{i}")(x)))
        return outs
