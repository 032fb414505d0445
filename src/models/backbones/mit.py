"""Mix Transformer (SegFormer's MiT-B0..B5) as MMSegmentation builds it, on smp's `mix_transformer` encoder.

smp's MiT has MMSegmentation's parameters one for one (MiT-B0: 3,319,392; MiT-B2: 24,196,288), in another
layout: attention as Linear `q` + `kv` where MMSegmentation has `nn.MultiheadAttention`'s stacked `in_proj`, and
the Mix-FFN's 1x1 projections as Linear where MMSegmentation has 1x1 Conv2d (`src/weights/keymaps/mit.py`
converts). Every LayerNorm gets MMSegmentation's eps 1e-6: smp's patch-embedding and attention norms keep
PyTorch's 1e-5. Stochastic depth, attention and FFN are smp's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.encoders import get_encoder
from segmentation_models_pytorch.encoders.mix_transformer import mix_transformer_encoders
from torch import nn

from src.models.backbones.common import check_output_stride, smp_weights_guard
from src.models.backbones.timm_backbone import load_pretrained_weights

STAGES = 4


class MiTBackbone(nn.Module):
    """SegFormer's MiT encoder (MMSegmentation's `MixVisionTransformer`) over smp's `mit_b*`.

    Args:
        model_name: smp's encoder name, `mit_b0` .. `mit_b5`.
        out_indices: stages to return (each already through its stage norm, as MMSegmentation's).
        output_stride: 32 only (no dilated MiT); anything else raises.
        pretrained: smp's ImageNet weights (downloaded from the Hugging Face hub).
        pretrained_path: a local smp-named state dict instead (`patch_embed1.proj.weight`, ...).
        drop_path_rate: stochastic depth (MMSegmentation's SegFormer configs: 0.1).
    """

    def __init__(
        self,
        model_name: str = "mit_b0",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if model_name not in mix_transformer_encoders:
            raise ValueError(
                f"model.backbone.model_name={model_name}: MiTBackbone takes one of smp's "
                f"{', '.join(sorted(mix_transformer_encoders))}"
            )
        check_output_stride(model_name, output_stride, (32,), "no dilation in MiT")
        download = pretrained and not pretrained_path
        with smp_weights_guard(model_name, download):
            encoder = get_encoder(model_name, weights="imagenet" if download else None)
        encoder.reset_drop_path(drop_path_rate)
        for module in encoder.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = 1e-6
        for i in range(1, STAGES + 1):
            for part in ("patch_embed", "block", "norm"):
                self.add_module(f"{part}{i}", getattr(encoder, f"{part}{i}"))
        if pretrained_path:
            load_pretrained_weights(self, pretrained_path, key_prefixes=("", "encoder."))
        self.model_name = model_name
        self.out_indices = list(out_indices)
        dims = mix_transformer_encoders[model_name]["params"]["embed_dims"]
        self.out_channels = [dims[i] for i in self.out_indices]
        self.reductions = [4 * 2**i for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(max(self.out_indices) + 1):
            x = getattr(self, f"patch_embed{i + 1}")(x)  # NCHW in, NCHW out (smp's blocks take maps)
            x = getattr(self, f"block{i + 1}")(x)
            x = getattr(self, f"norm{i + 1}")(x).contiguous()
            if i in self.out_indices:
                outs.append(x)
        return outs
