"""MMSegmentation's ResNet (V1b, V1c, V1d; mmcv's `open-mmlab://resnet*_v1c` ImageNet files use the same names)
-> timm's ResNet inside a `TimmBackbone` (`body.*`).

Only the stem differs. MMSegmentation's deep stem (V1c/V1d) is one `stem` Sequential: conv, BN, ReLU, conv, BN,
ReLU, conv, BN, ReLU; timm keeps the first three convs (and two BNs) in `conv1` at the same indices and the
last BN as `bn1`. A plain stem (V1b) is `conv1`/`bn1` on both sides. The stages (`layerN.M.convK/bnK`, the
shortcut `downsample.{0,1}`, or `{1,2}` after V1d's average pool) have the same names and layouts.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps.timm_backbone import register_timm

_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM = re.compile(rf"stem\.(\d)\.{_PARAM}")
_PLAIN_STEM = re.compile(rf"(conv1|bn1)\.{_PARAM}")
_STAGE = re.compile(rf"layer\d+\.\d+\.(conv\d|bn\d|downsample\.\d)\.{_PARAM}")
# MMSegmentation's deep-stem Sequential index -> timm's name (the ReLUs at 2, 5 and 8 hold no tensors)
_STEM_NAMES = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6", "7": "bn1"}


def resnet_key(name: str) -> str | None:
    """The timm name of one MMSegmentation/mmcv ResNet tensor name (no `backbone.` prefix); None if it is not a
    ResNet stem or stage tensor (e.g. the ImageNet classifier `fc.*`, DCN offsets, plugins)."""
    stem = _STEM.fullmatch(name)
    if stem:
        target = _STEM_NAMES.get(stem.group(1))
        return f"{target}.{stem.group(2)}" if target else None
    if _PLAIN_STEM.fullmatch(name) or _STAGE.fullmatch(name):
        return name
    return None


def resnet_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmcv/MMSegmentation ResNet state dict (optionally `backbone.`-prefixed) under timm's names; the tensors
    that are not ResNet stem or stage tensors (the classifier `fc.*`) are left out."""
    out = {}
    for name, value in state.items():
        target = resnet_key(name.removeprefix("backbone."))
        if target is not None:
            out[target] = value
    return out


@register_timm("resnet", "resnet_v1c")  # timm's, and this project's resnet18c/34c (src/models/backbones)
def convert_resnet(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name in list(mm):
        target = resnet_key(name)
        if target is not None:
            out[f"body.{target}"] = mm.pop(name)
    return out
