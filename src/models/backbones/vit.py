"""A plain ViT as MMSegmentation builds it (`mmseg/models/backbones/vit.py`), on timm's VisionTransformer.

MMSegmentation's ViT returns the patch tokens of chosen blocks as NCHW maps (at stride = patch size) for a neck
(`MultiLevelNeck`) to rescale. Its parameters are timm's patch embedding, class token, position embedding and
blocks; `vit_vit-b16_mln_upernet` builds the position embedding for 512x512 inputs (1 + 32x32 entries:
`img_size=512`), has no bias in the patch projection (`patch_bias=False`) and no final norm: 86,432,256
parameters. Other input sizes resize the position embedding bicubically, as MMSegmentation does (no antialias;
timm's own `dynamic_img_size` path antialiases). The same class serves timm's DINOv2 models
(`vit_small_patch14_dinov2`, layer scale and all), whose segmentation setups normalise every returned level with
the final norm (`norm_outputs=True`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from src.models.backbones.common import (
    check_output_stride,
    nhwc_to_nchw,
    require_timm_family,
    timm_weights_guard,
)
from src.models.backbones.timm_backbone import check_timm_name, load_pretrained_weights


class ViTBackbone(nn.Module):
    """MMSegmentation's VisionTransformer backbone over timm's `vit_*` models.

    Args:
        model_name: a timm VisionTransformer with a learned position embedding (`vit_base_patch16_224`,
            `vit_small_patch14_dinov2`, ...).
        out_indices: blocks whose outputs are returned (MMSegmentation's ViT configs: 2, 5, 8, 11).
        output_stride: the patch size only (no dilation in ViT); anything else raises.
        pretrained: timm's weights (needs the hub or timm's cache); the position embedding is resized to img_size.
        pretrained_path: a local timm-named state dict instead.
        drop_path_rate: stochastic depth (MMSegmentation's vit-b16 UPerNet config: 0.0).
        img_size: the input size the position embedding is built for (MMSegmentation's: 512); None: timm's.
        patch_bias: a bias in the patch projection (timm's models have one; MMSegmentation's ViT does not).
        final_norm: MMSegmentation's `final_norm`: the final LayerNorm after the last block (so on the last level
            only, when it is returned).
        norm_outputs: apply the final LayerNorm to every returned level (DINOv2's `get_intermediate_layers`).
        interpolate_mode: how the position embedding is resized for other input sizes.
        **kwargs: passed to `timm.create_model`.
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch16_224",
        out_indices: Sequence[int] = (2, 5, 8, 11),
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_path_rate: float = 0.0,
        img_size: int | Sequence[int] | None = None,
        patch_bias: bool = True,
        final_norm: bool = False,
        norm_outputs: bool = False,
        interpolate_mode: str = "bicubic",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_timm_name(model_name)
        require_timm_family(
            model_name,
            "vision_transformer",
            "ViTBackbone",
            "VisionTransformer (vit_base_patch16_224, vit_small_patch14_dinov2, ...)",
        )
        if img_size is not None:
            kwargs["img_size"] = img_size
        with timm_weights_guard(model_name, pretrained and not pretrained_path):
            model = timm.create_model(
                model_name,
                pretrained=pretrained and not pretrained_path,
                num_classes=0,
                drop_path_rate=drop_path_rate,
                dynamic_img_size=True,  # any input size; the patch embedding returns (B, H, W, C)
                dynamic_img_pad=True,  # pad the input to the patch size, as MMSegmentation's 'corner' padding
                **kwargs,
            )
        if type(model).__name__ != "VisionTransformer" or model.pos_embed is None:
            raise ValueError(
                f"model.backbone.model_name={model_name}: ViTBackbone needs a timm VisionTransformer with a learned "
                f"position embedding, got {type(model).__name__}; use TimmBackbone for other models"
            )
        patch = model.patch_embed.patch_size[0]
        check_output_stride(
            model_name, output_stride, (patch,), "no dilation in ViT: its stride is its patch size"
        )
        self.patch_embed, self.blocks, self.norm_pre = model.patch_embed, model.blocks, model.norm_pre
        self.cls_token, self.reg_token, self.pos_embed = model.cls_token, model.reg_token, model.pos_embed
        self.pos_drop, self.patch_drop = model.pos_drop, model.patch_drop
        self.num_prefix_tokens, self.no_embed_class = model.num_prefix_tokens, model.no_embed_class
        if not patch_bias and self.patch_embed.proj.bias is not None:
            self.patch_embed.proj.bias = None
        self.final_norm, self.norm_outputs = final_norm, norm_outputs
        self.norm = model.norm if (final_norm or norm_outputs) else None
        if pretrained_path:
            load_pretrained_weights(self, pretrained_path)
        self.interpolate_mode = interpolate_mode
        self.model_name = model_name
        self.out_indices = list(out_indices)
        if max(self.out_indices) >= len(self.blocks):
            raise ValueError(
                f"model.backbone.out_indices={self.out_indices}: {model_name} has {len(self.blocks)} blocks"
            )
        self.out_channels = [model.embed_dim] * len(self.out_indices)
        self.reductions = [patch] * len(self.out_indices)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) patch tokens -> (B, prefix + H*W, C) with the position embedding (resized to H x W)."""
        B, H, W, C = x.shape
        pos = resample_abs_pos_embed(
            self.pos_embed,
            new_size=(H, W),
            old_size=self.patch_embed.grid_size,
            num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens,
            interpolation=self.interpolate_mode,
            antialias=False,
        )
        x = x.reshape(B, H * W, C)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            return torch.cat([*prefix, x + pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H, W, C)
        B, H, W, C = x.shape
        x = self.norm_pre(self.patch_drop(self.pos_drop(self._pos_embed(x))))
        outs = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == last and self.final_norm:
                x = self.norm(x)
            if i in self.out_indices:
                y = self.norm(x) if self.norm_outputs and not (i == last and self.final_norm) else x
                outs.append(nhwc_to_nchw(y[:, self.num_prefix_tokens :].reshape(B, H, W, C)))
        return outs
