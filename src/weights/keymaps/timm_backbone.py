"""`TimmBackbone` holds timm models of many families (ResNet, ConvNeXt, Swin, ...), each with its own tensor
names, so its key map dispatches on the timm family of `model_name`: the module timm defines the model in
(`resnet`, `convnext`, `swin_transformer`, `vision_transformer`, ...). A family's map registers itself with
`@register_timm("resnet")`; a TimmBackbone of a family with no map is refused with the family named.
"""

from __future__ import annotations

from collections.abc import Callable

import timm.models
import torch
from torch import nn

from src.weights.keymaps import KeyMap, register

TIMM_KEYMAPS: dict[str, KeyMap] = {}


def register_timm(*families: str) -> Callable[[KeyMap], KeyMap]:
    """Register a key map for TimmBackbones whose timm model is defined in `timm.models.<family>`."""

    def wrap(fn: KeyMap) -> KeyMap:
        for family in families:
            if family in TIMM_KEYMAPS:
                raise ValueError(f"a TimmBackbone key map for timm family '{family}' is already registered")
            TIMM_KEYMAPS[family] = fn
        return fn

    return wrap


def timm_family(model_name: str) -> str:
    """`resnet50c.gluon_in1k` -> `resnet`: the timm module that defines the model."""
    entry = timm.models.model_entrypoint(timm.models.get_arch_name(model_name))
    return entry.__module__.rsplit(".", 1)[-1]


@register("TimmBackbone")
def convert_timm_backbone(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    family = timm_family(module.model_name)
    if family not in TIMM_KEYMAPS:
        raise KeyError(
            f"no MMSegmentation key map for timm model '{module.model_name}' (family '{family}'; "
            f"known: {', '.join(sorted(TIMM_KEYMAPS)) or 'none'})"
        )
    return TIMM_KEYMAPS[family](mm, module)
