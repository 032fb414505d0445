"""MMSegmentation's MixVisionTransformer (SegFormer MiT) -> `MiTBackbone` (smp's mix_transformer modules).

Stage i is MMSegmentation's `layers.i` = [patch embedding, blocks, norm], smp's `patch_embed{i+1}`,
`block{i+1}`, `norm{i+1}`. Two layouts differ:
- attention: MMSegmentation wraps `nn.MultiheadAttention`, whose `in_proj_weight` stacks the query, key and value
  projections ([q; k; v], 3C x C); smp has a Linear `q` (C x C) and a Linear `kv` ([k; v], 2C x C), so the first
  C rows are `q` and the rest `kv` (same for the bias); `out_proj` is smp's `proj`;
- Mix-FFN: MMSegmentation's 1x1 Conv2d projections (`ffn.layers.0`, `ffn.layers.4`, out x in x 1 x 1) are smp's
  Linear `mlp.fc1` / `mlp.fc2` (out x in); the 3x3 depthwise conv `ffn.layers.1` is `mlp.dwconv.dwconv`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_PATCH = re.compile(r"layers\.(\d)\.0\.(projection|norm)\.(weight|bias)")
_STAGE_NORM = re.compile(r"layers\.(\d)\.2\.(weight|bias)")
_BLOCK = re.compile(r"layers\.(\d)\.1\.(\d+)\.(.+)")
_SAME = {"norm1": "norm1", "norm2": "norm2", "attn.sr": "attn.sr", "attn.norm": "attn.norm"}
_FFN = {"ffn.layers.0": "mlp.fc1", "ffn.layers.1": "mlp.dwconv.dwconv", "ffn.layers.4": "mlp.fc2"}


def _block_tensors(rest: str, value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """smp's names and tensors, relative to a block, for one MMSegmentation block tensor (None: not MiT's)."""
    part, _, kind = rest.rpartition(".")
    if part in _SAME:
        return {f"{_SAME[part]}.{kind}": value}
    if part == "attn.attn" and kind in ("in_proj_weight", "in_proj_bias"):
        dim = value.shape[0] // 3
        suffix = "weight" if kind == "in_proj_weight" else "bias"
        return {f"attn.q.{suffix}": value[:dim], f"attn.kv.{suffix}": value[dim:]}
    if part == "attn.attn.out_proj":
        return {f"attn.proj.{kind}": value}
    if part in _FFN:
        linear = part != "ffn.layers.1" and kind == "weight"
        return {f"{_FFN[part]}.{kind}": value.flatten(1) if linear else value}
    return None


@register("MiTBackbone")
def convert_mit(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name in list(mm):
        if match := _PATCH.fullmatch(name):
            stage, part, kind = match.groups()
            part = "proj" if part == "projection" else "norm"
            out[f"patch_embed{int(stage) + 1}.{part}.{kind}"] = mm.pop(name)
        elif match := _STAGE_NORM.fullmatch(name):
            out[f"norm{int(match[1]) + 1}.{match[2]}"] = mm.pop(name)
        elif match := _BLOCK.fullmatch(name):
            stage, block, rest = match.groups()
            converted = _block_tensors(rest, mm[name])
            if converted is not None:
                mm.pop(name)
                out.update({f"block{int(stage) + 1}.{block}.{k}": v for k, v in converted.items()})
    return out
