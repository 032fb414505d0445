"""Key map for the necks that follow MMSegmentation's module names (`MultiLevelNeck`: `lateral_convs.N.conv`,
`convs.N.conv`, plus `bn`/`gn` when built with a norm): the same ConvModule rule as the heads."""

from __future__ import annotations

import torch
from torch import nn

from src.weights.keymaps import register
from src.weights.keymaps.heads import convmodule_keys


@register("MultiLevelNeck")
def convert_neck(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    return convmodule_keys(mm, module)
