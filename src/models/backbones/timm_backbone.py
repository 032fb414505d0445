"""One factory over timm for every backbone: a feature pyramid from `features_only`.

MMSegmentation's ResNetV1c is timm's ResNet with a deep (3-conv, 32-wide) stem; `output_stride=8` replaces the
strides of the last two stages with dilations 2 and 4. timm gives the first block of each dilated stage the
previous stage's dilation, which is MMSegmentation's `contract_dilation`. timm's BasicBlock (ResNet-18/34)
dilates both of its 3x3 convs; MMSegmentation's dilates only the first, so the second is set back to
dilation 1 (`mmseg_basic_block`; same weights, MMSegmentation's receptive field).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from src.models.layers import NORMS

log = logging.getLogger(__name__)


class TimmBackbone(nn.Module):
    """A timm model as a multi-scale feature extractor.

    Args:
        model_name: any timm model that supports `features_only` (`resnet50c`, `convnext_tiny`, ...).
        out_indices: which feature levels to return, as timm counts them.
        output_stride: 8, 16 or 32 (dilated last stages below 32), where the model supports it.
        pretrained: load timm's pretrained weights (needs the hub, or timm's local cache).
        pretrained_path: load weights from a local file instead (`weights_only=True`).
        in_chans: input channels.
        norm: None (the model's own, BatchNorm for ResNets), "bn", "syncbn" or "gn" (32 groups), passed to timm as
            `norm_layer` for models that take one (ResNet, ConvNeXt, ...).
        mmseg_basic_block: undilate the second conv of ResNet BasicBlocks, as MMSegmentation's BasicBlock.
        **kwargs: passed to `timm.create_model` (e.g. `stem_type="deep", stem_width=32`).
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] | list[int] = (1, 2, 3, 4),
        output_stride: int = 32,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        in_chans: int = 3,
        norm: str | None = None,
        mmseg_basic_block: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if norm is not None:
            kwargs["norm_layer"] = _timm_norm_layer(norm)
        create_kwargs: dict[str, Any] = dict(
            features_only=True, out_indices=tuple(out_indices), in_chans=in_chans, **kwargs
        )
        if output_stride != 32:
            create_kwargs["output_stride"] = output_stride
        self.body = timm.create_model(
            model_name, pretrained=pretrained and not pretrained_path, **create_kwargs
        )
        if pretrained_path:
            load_pretrained_weights(self.body, pretrained_path)
        if mmseg_basic_block:
            undilate_basic_block_conv2(self.body)
        self.model_name = model_name
        self.out_channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def undilate_basic_block_conv2(model: nn.Module) -> int:
    """Give the second 3x3 conv of every timm ResNet BasicBlock dilation 1 (padding 1); returns how many changed."""
    from timm.models.resnet import BasicBlock

    changed = 0
    for block in model.modules():
        if isinstance(block, BasicBlock) and block.conv2.dilation != (1, 1):
            block.conv2.dilation, block.conv2.padding = (1, 1), (1, 1)
            changed += 1
    return changed


def _timm_norm_layer(norm: str) -> str | type[nn.Module]:
    """timm's name for a norm: timm resolves norm_layer through `get_norm_layer`, which drops a partial's
    positional arguments, so GroupNorm must be named ("groupnorm": timm's GroupNorm, 32 groups)."""
    names = {"bn": "batchnorm2d", "syncbn": nn.SyncBatchNorm, "gn": "groupnorm"}
    if norm not in names:
        raise ValueError(f"model.backbone.norm='{norm}' is not one of {NORMS}")
    return names[norm]


def load_pretrained_weights(
    module: nn.Module,
    path: str | Path,
    config_key: str = "model.backbone.pretrained_path",
    key_prefixes: Sequence[str] = ("",),
) -> None:
    """Load a local state dict (a classification checkpoint, say) into `module`, ignoring what does not fit.

    `key_prefixes`: prefixes tried on the file's keys (the one that fits most tensors wins), e.g. ("", "model.")
    to accept both an smp encoder's own keys and a bare timm model's. Raises FileNotFoundError naming the
    config key when the file is missing, ValueError when none of its tensors fit; warns about tensors left at
    their initial values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{config_key}: no such file '{path}'")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    own = module.state_dict()
    candidates = [{f"{prefix}{k}": v for k, v in state.items()} for prefix in key_prefixes]
    fitting = max(
        ({k: v for k, v in c.items() if k in own and own[k].shape == v.shape} for c in candidates), key=len
    )
    if not fitting:
        raise ValueError(
            f"{config_key} '{path}': none of its {len(state)} tensors match the model "
            f"(expected keys like {list(own)[:3]})"
        )
    missing = [k for k in own if k not in fitting]
    if missing:
        log.warning(
            "%s '%s': %d of %d tensors not in the file (kept at init), e.g. %s",
            config_key,
            path,
            len(missing),
            len(own),
            missing[:3],
        )
    module.load_state_dict(fitting, strict=False)
