"""Backbones: every one returns a list of NCHW feature maps and says, at construction, their channels
(`out_channels`) and strides (`reductions`), so that heads and necks take their inputs from it.

- `TimmBackbone`: any timm model with `features_only` (ResNet-V1c, ConvNeXt, EfficientNet, Swin, ViT, ...).
- `SwinBackbone`, `ConvNeXtBackbone`, `MiTBackbone`, `ViTBackbone`: MMSegmentation's module structure (its
  parameter counts, its per-level norms) over timm's / smp's blocks, so that MMSegmentation checkpoints map onto
  them (`src/weights/keymaps/`).
- `UNet`: MMSegmentation's UNet-S5-D16 (encoder and decoder; the heads read its decoder levels).
- `ImageAsFeatures`: the image itself, for a decode head that is a whole smp model (`heads.SMPHead`).
"""

from src.models.backbones.convnext import ConvNeXtBackbone
from src.models.backbones.image import ImageAsFeatures
from src.models.backbones.mit import MiTBackbone
from src.models.backbones.swin import SwinBackbone
from src.models.backbones.timm_backbone import (
    TimmBackbone,
    default_out_indices,
    load_pretrained_weights,
)
from src.models.backbones.unet import UNet
from src.models.backbones.vit import ViTBackbone

__all__ = [
    "ConvNeXtBackbone",
    "ImageAsFeatures",
    "MiTBackbone",
    "SwinBackbone",
    "TimmBackbone",
    "UNet",
    "ViTBackbone",
    "default_out_indices",
    "load_pretrained_weights",
]
