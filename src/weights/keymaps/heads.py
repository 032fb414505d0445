"""Key map for the decode heads (FCN, PSP, ASPP, DeepLabV3+, UPerNet, SegFormer; `decode_head` and
`auxiliary_head`) and necks (`MultiLevelNeck`) that follow MMSegmentation's module names.

These modules name their submodules as MMSegmentation does (`psp_modules.N.1`, `aspp_modules.N`, `lateral_convs.N`,
`fpn_bottleneck`, `conv_seg`, ...) and build every MMCV `ConvModule` as timm's `ConvNormAct`, whose state dict is
MMCV's (`conv.weight`, `bn.weight`, `bn.running_mean`, ...). The one difference: MMCV names a GroupNorm `gn`,
timm keeps `bn` for every norm.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_GN = re.compile(r"(^|\.)gn\.")


_HEADS = ("FCNHead", "PSPHead", "ASPPHead", "DepthwiseSeparableASPPHead", "UPerHead", "SegformerHead")


@register(*_HEADS, "MultiLevelNeck")
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
