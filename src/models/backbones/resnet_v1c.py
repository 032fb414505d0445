"""timm names for MMSegmentation's ResNet-V1c variants that timm lacks (`resnet18c`, `resnet34c`).

MMSegmentation's ResNetV1c is a ResNet with a deep stem (three 3x3 convs, 32-32-64 wide) and no average-pool
shortcut; timm ships that as `resnet50c`/`resnet101c`/`resnet152c` but has no 18/34-layer `c` variant. Registering
them keeps the configs free of ResNet-only keyword arguments (`stem_type`, `stem_width`), so that any other timm
name can replace `model.backbone.model_name` with no other edit. No pretrained weights exist for these names.
"""

from __future__ import annotations

from timm.models import is_model, register_model
from timm.models.resnet import BasicBlock, ResNet, _cfg, _create_resnet

__all__: list[str] = []
# timm's default preprocessing config for the names (register_model reads it); no weights (empty url).
default_cfgs = {"resnet18c": _cfg(), "resnet34c": _cfg()}


def resnet18c(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18-C (MMSegmentation's ResNetV1c-18): ResNet-18 with a 32-wide deep stem."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=32, stem_type="deep")
    return _create_resnet("resnet18c", pretrained, **dict(args, **kwargs))


def resnet34c(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34-C (MMSegmentation's ResNetV1c-34): ResNet-34 with a 32-wide deep stem."""
    args = dict(block=BasicBlock, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep")
    return _create_resnet("resnet34c", pretrained, **dict(args, **kwargs))


# Register once: timm warns and overwrites when a name is registered twice (a reload, or a future timm release
# that adds these names itself, in which case timm's own definition is kept).
for _fn in (resnet18c, resnet34c):
    if not is_model(_fn.__name__):
        register_model(_fn)
