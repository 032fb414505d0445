"""MMSegmentation's UNet backbone -> `src.models.backbones.unet.UNet`, which mirrors its module tree (`encoder.i`,
`decoder.i.conv_block` / `.upsample`), so the names are the same but for the norm: mmcv's `ConvModule` names
its norm by type (`bn` for BN and SyncBN, `gn` for GroupNorm), timm's `ConvNormAct` always `bn`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_CONV_MODULE = rf"(conv|bn|gn)\.{_PARAM}"
_KEY = re.compile(
    r"("
    rf"encoder\.\d+\.\d+\.convs\.\d+\.{_CONV_MODULE}"  # encoder stage: [max-pool,] BasicConvBlock
    rf"|decoder\.\d+\.conv_block\.convs\.\d+\.{_CONV_MODULE}"  # decoder fusion convs
    rf"|decoder\.\d+\.upsample\.interp_upsample\.\d+\.{_CONV_MODULE}"  # InterpConv
    rf"|decoder\.\d+\.upsample\.deconv_upsampling\.\d+\.{_PARAM}"  # DeconvModule (plain Sequential)
    rf"|decoder\.\d+\.upsample\.{_CONV_MODULE}"  # no upsampling: a 1x1 ConvModule
    r")"
)


@register("UNet")
def convert_unet(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name in list(mm):
        if _KEY.fullmatch(name):
            out[re.sub(r"\.gn\.", ".bn.", name)] = mm.pop(name)
    return out
