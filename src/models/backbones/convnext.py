"""ConvNeXt as MMSegmentation builds it (mmpretrain's `ConvNeXt`, `gap_before_final_norm=False`), on timm's blocks.

mmpretrain's ConvNeXt for segmentation is timm's ConvNeXt without its classifier and final norm, plus one
LayerNorm2d per returned level (`norm0`..`norm3`). The stem and stages here are timm's modules under timm's names
(`stem`, `stages.i.downsample`, `stages.i.blocks.j`), so timm's ImageNet weights load as they are and
`src/weights/keymaps/convnext.py` maps mmpretrain's names onto them. ConvNeXt-T: 27,821,472 parameters, as
MMSegmentation's `convnext-tiny_upernet` backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from src.models.backbones.common import check_output_stride, require_timm_family, timm_weights_guard
from src.models.backbones.timm_backbone import check_timm_name, load_pretrained_weights


class ConvNeXtBackbone(nn.Module):
    """mmpretrain's ConvNeXt backbone over timm's `convnext_*` models.

    Args:
        model_name: a timm ConvNeXt (`convnext_tiny`, `convnext_small`, `convnext_base`, ... `convnext_atto`).
        out_indices: stages to return (each through its own LayerNorm2d `norm{i}`).
        output_stride: 32, or 16 / 8 through timm's dilated ConvNeXt (MMSegmentation has no dilated ConvNeXt).
        pretrained: timm's ImageNet weights (needs the hub or timm's cache).
        pretrained_path: a local timm-named state dict instead.
        drop_path_rate: stochastic depth (MMSegmentation's UPerNet ConvNeXt configs: 0.4).
        layer_scale_init_value: initial layer-scale gamma (MMSegmentation's configs: 1.0; timm's default 1e-6).
        **kwargs: passed to `timm.create_model`.
    """

    def __init__(
        self,
        model_name: str = "convnext_tiny",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_path_rate: float = 0.4,
        layer_scale_init_value: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_timm_name(model_name)
        require_timm_family(model_name, "convnext", "ConvNeXtBackbone", "ConvNeXt (convnext_tiny, ...)")
        check_output_stride(
            model_name, output_stride, (8, 16, 32), "the strides timm's ConvNeXt can dilate to"
        )
        if output_stride not in (None, 32):
            kwargs["output_stride"] = output_stride
        with timm_weights_guard(model_name, pretrained and not pretrained_path):
            model = timm.create_model(
                model_name,
                pretrained=pretrained and not pretrained_path,
                num_classes=0,
                drop_path_rate=drop_path_rate,
                ls_init_value=layer_scale_init_value,
                **kwargs,
            )
        if type(model).__name__ != "ConvNeXt":
            raise ValueError(
                f"model.backbone.model_name={model_name}: ConvNeXtBackbone needs a timm ConvNeXt "
                f"(convnext_tiny, ...), got {type(model).__name__}; use TimmBackbone for other models"
            )
        self.stem, self.stages = model.stem, model.stages
        self.out_indices = list(out_indices)
        info = model.feature_info
        for i in self.out_indices:
            self.add_module(f"norm{i}", LayerNorm2d(info[i]["num_chs"], eps=1e-6))
        if pretrained_path:
            load_pretrained_weights(self, pretrained_path)
        self.model_name = model_name
        self.out_channels = [info[i]["num_chs"] for i in self.out_indices]
        self.reductions = [info[i]["reduction"] for i in self.out_indices]
        depths = [len(stage.blocks) for stage in self.stages]
        # MMSegmentation's paramwise_cfg['num_layers'] for this depth: 6 for ConvNeXt-T (9 blocks in stage 2),
        # 12 for -S/-B/-L (27): the third stage counts one layer per 3 blocks, after stem, stage 0 and stage 1.
        self.num_layers = 3 + depths[2] // 3 if len(depths) == 4 else len(depths) + 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return outs

    def layer_id(self, name: str, decay_type: str = "stage_wise") -> int:
        """The layer id MMSegmentation's `LearningRateDecayOptimizerConstructor` gives this backbone parameter
        (`name` relative to the backbone, as in `named_parameters()`), in [0, num_layers + 1].

        MMSegmentation scales the learning rate of id `i` by `decay_rate ** (num_layers + 1 - i)`; every parameter
        outside the backbone, and the backbone's own per-level norms, get id `num_layers + 1` (scale 1).
        `decay_type`: "stage_wise" (MMSegmentation's ConvNeXt configs) or "layer_wise".
        """
        parts = name.split(".")
        top = self.num_layers + 1
        if decay_type == "stage_wise":
            if parts[0] == "stem" or (parts[0] == "stages" and parts[2] == "downsample"):
                return 0
            if parts[0] == "stages":
                return int(parts[1]) + 1
            return top
        if decay_type == "layer_wise":
            if parts[0] == "stem":
                return 0
            if parts[0] != "stages":
                return top
            stage = int(parts[1])
            if parts[2] == "downsample":  # mmpretrain's downsample_layers.{1,2,3}
                return {1: 2, 2: 3}.get(stage, self.num_layers)
            block = int(parts[3])
            return {0: 1, 1: 2}.get(stage, 3 + block // 3 if stage == 2 else self.num_layers)
        raise ValueError(
            f"decay_type={decay_type!r}: expected 'stage_wise' or 'layer_wise' (MMSegmentation's)"
        )
