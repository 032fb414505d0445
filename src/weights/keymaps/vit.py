"""MMSegmentation's VisionTransformer -> `ViTBackbone` (timm's VisionTransformer modules).

Names: `patch_embed.projection` is timm's `patch_embed.proj`; a block `layers.i.{ln1,ln2}` is
`blocks.i.{norm1,norm2}`; MMSegmentation's `nn.MultiheadAttention` stacks [q; k; v] in `in_proj_weight` /
`in_proj_bias` exactly as timm's `attn.qkv` does, and `out_proj` is `attn.proj`; the FFN `ffn.layers.0.0` /
`ffn.layers.1` is `mlp.fc1` / `mlp.fc2`; the final norm `ln1` (final_norm=True) is `norm`, the pre-norm `pre_ln`
is `norm_pre`. A position embedding made for another input size is resized to the backbone's grid (bicubic,
as MMSegmentation resizes it when it loads a checkpoint).
"""

from __future__ import annotations

import math
import re

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from src.weights.keymaps import register

_BLOCK = {
    "ln1": "norm1",
    "ln2": "norm2",
    "attn.attn.out_proj": "attn.proj",
    "ffn.layers.0.0": "mlp.fc1",
    "ffn.layers.1": "mlp.fc2",
}
_BLOCK_KEY = re.compile(rf"layers\.(\d+)\.({'|'.join(map(re.escape, _BLOCK))})\.(weight|bias)")
_IN_PROJ = re.compile(r"layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)")
_TOP = {
    "cls_token": "cls_token",
    "patch_embed.projection.weight": "patch_embed.proj.weight",
    "patch_embed.projection.bias": "patch_embed.proj.bias",
    "ln1.weight": "norm.weight",
    "ln1.bias": "norm.bias",
    "pre_ln.weight": "norm_pre.weight",
    "pre_ln.bias": "norm_pre.bias",
}


def _resize_pos_embed(pos: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """MMSegmentation's (1, 1 + h*w, C) position embedding on the backbone's patch grid."""
    grid = tuple(module.patch_embed.grid_size)
    if pos.shape == module.pos_embed.shape:
        return pos
    side = math.isqrt(pos.shape[1] - 1)
    return resample_abs_pos_embed(
        pos,
        new_size=grid,
        old_size=(side, side),
        num_prefix_tokens=1,
        interpolation="bicubic",
        antialias=False,
    )


@register("ViTBackbone")
def convert_vit(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    own = module.state_dict(keep_vars=True)
    out = {}
    for name in list(mm):
        if name == "pos_embed":
            out["pos_embed"] = _resize_pos_embed(mm.pop(name), module)
        elif name in _TOP and _TOP[name] in own:
            out[_TOP[name]] = mm.pop(name)
        elif match := _BLOCK_KEY.fullmatch(name):
            block, part, kind = match.groups()
            out[f"blocks.{block}.{_BLOCK[part]}.{kind}"] = mm.pop(name)
        elif match := _IN_PROJ.fullmatch(name):
            out[f"blocks.{match[1]}.attn.qkv.{match[2]}"] = mm.pop(name)
    return out
