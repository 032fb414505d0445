"""Key map for the decode heads that follow MMSegmentation's module names (FCN, PSP, ASPP, DeepLabV3+, UPerNet,
SegFormer), used for `decode_head` and `auxiliary_head`.

These heads name their submodules as MMSegmentation does (`psp_modules.N.1`, `aspp_modules.N`,
`image_pool.1`, `c1_bottleneck`, `sep_bottleneck.N.depthwise_conv`, `lateral_convs.N`, `fpn_convs.N`,
`fpn_bottleneck`, `convs.N`, `fusion_conv`, `conv_seg`, ...) and build every MMCV `ConvModule` as timm's
`ConvNormAct`, whose state dict is MMCV's (`conv.weight`, `bn.weight`, `bn.running_mean`, ...). The one
difference: MMCV names a GroupNorm `gn`, timm keeps `bn` for every norm.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_GN = re.compile(r"(^|\.)gn\.")


def convmodule_keys(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Pop every key of `mm` that names a tensor of `module` once MMCV's `gn.` is read as `bn.`; keys that name
    nothing of `module` stay in `mm` for the caller to report (shapes are checked by `load_state_dict`)."""
    wanted = set(module.state_dict())
    ours: dict[str, torch.Tensor] = {}
    for key in list(mm):
        name = _GN.sub(r"\1bn.", key)
        if name in wanted:
            ours[name] = mm.pop(key)
    return ours


@register("FCNHead", "PSPHead", "ASPPHead", "DepthwiseSeparableASPPHead", "UPerHead", "SegformerHead")
def convert_decode_head(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    return convmodule_keys(mm, module)
