"""mmpretrain's ConvNeXt (MMSegmentation's `mmpretrain.ConvNeXt` backbone) -> `ConvNeXtBackbone` (timm's names).

Same tensors, same layouts (mmpretrain's `linear_pw_conv=True` 1x1 convs are Linear, as timm's); only the names
differ: `downsample_layers.0` is timm's `stem`, `downsample_layers.i` (i > 0) is `stages.i.downsample`, a block
`stages.i.j.{depthwise_conv,norm,pointwise_conv1,pointwise_conv2,gamma}` is timm's
`stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`; the per-level `norm{i}` keep their names.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_BLOCK = {
    "depthwise_conv": "conv_dw",
    "norm": "norm",
    "pointwise_conv1": "mlp.fc1",
    "pointwise_conv2": "mlp.fc2",
}
_RULES = [
    (re.compile(r"downsample_layers\.0\.(\d)\.(weight|bias)"), lambda m: f"stem.{m[1]}.{m[2]}"),
    (
        re.compile(r"downsample_layers\.(\d)\.(\d)\.(weight|bias)"),
        lambda m: f"stages.{m[1]}.downsample.{m[2]}.{m[3]}",
    ),
    (re.compile(r"stages\.(\d)\.(\d+)\.gamma"), lambda m: f"stages.{m[1]}.blocks.{m[2]}.gamma"),
    (
        re.compile(rf"stages\.(\d)\.(\d+)\.({'|'.join(_BLOCK)})\.(weight|bias)"),
        lambda m: f"stages.{m[1]}.blocks.{m[2]}.{_BLOCK[m[3]]}.{m[4]}",
    ),
    (re.compile(r"norm(\d)\.(weight|bias)"), lambda m: m[0]),
]


def convnext_key(name: str) -> str | None:
    """ConvNeXtBackbone's name for one mmpretrain ConvNeXt tensor name; None for others (e.g. a classifier)."""
    for pattern, target in _RULES:
        match = pattern.fullmatch(name)
        if match:
            return target(match)
    return None


@register("ConvNeXtBackbone")
def convert_convnext(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name in list(mm):
        target = convnext_key(name)
        if target is not None:
            out[target] = mm.pop(name)
    return out
