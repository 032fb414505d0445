"""MMSegmentation's SwinTransformer -> `SwinBackbone` (timm's Swin modules).

Names: `patch_embed.projection` is timm's `patch_embed.proj`; `stages.i.blocks.j.attn.w_msa.*` is
`layers.i.blocks.j.attn.*`; the FFN `ffn.layers.0.0` / `ffn.layers.1` is `mlp.fc1` / `mlp.fc2`. MMSegmentation
merges patches at the end of stage i (`stages.i.downsample`), timm at the start of stage i + 1
(`layers.{i+1}.downsample`), and in another channel order: MMSegmentation's `nn.Unfold` lays the 2x2 neighbours
out channel-major (c * 4 + kh * 2 + kw), timm (like the original Swin) neighbour-major ((kw * 2 + kh) * C + c),
so the merge's LayerNorm and the columns of its reduction are permuted. The `relative_position_index` buffers are
dropped: timm computes the same lookup itself (a checkpoint for another window size fails on the shape of
`relative_position_bias_table`).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from src.weights.keymaps import register

_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.w_msa.qkv": "attn.qkv",
    "attn.w_msa.proj": "attn.proj",
    "ffn.layers.0.0": "mlp.fc1",
    "ffn.layers.1": "mlp.fc2",
}
_BLOCK_KEY = re.compile(rf"stages\.(\d)\.blocks\.(\d+)\.({'|'.join(map(re.escape, _BLOCK))})\.(weight|bias)")
_BIAS_TABLE = re.compile(r"stages\.(\d)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_bias_table")
_INDEX = re.compile(r"stages\.(\d)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_index")
_MERGE = re.compile(r"stages\.(\d)\.downsample\.(norm|reduction)\.(weight|bias)")
_OTHER = {
    "patch_embed.projection.weight": "patch_embed.proj.weight",
    "patch_embed.projection.bias": "patch_embed.proj.bias",
    "patch_embed.norm.weight": "patch_embed.norm.weight",
    "patch_embed.norm.bias": "patch_embed.norm.bias",
}


def unfold_to_timm_order(channels: int) -> torch.Tensor:
    """Index `p` with timm_merged[..., t] == mmseg_merged[..., p[t]] for a 2x2 patch merge of `channels` inputs."""
    t = torch.arange(4 * channels)
    kw, kh, c = t // (2 * channels), (t // channels) % 2, t % channels
    return c * 4 + kh * 2 + kw


@register("SwinBackbone")
def convert_swin(mm: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    own = module.state_dict(keep_vars=True)
    out = {}
    for name in list(mm):
        if name in _OTHER:
            out[_OTHER[name]] = mm.pop(name)
        elif match := _BLOCK_KEY.fullmatch(name):
            stage, block, part, kind = match.groups()
            out[f"layers.{stage}.blocks.{block}.{_BLOCK[part]}.{kind}"] = mm.pop(name)
        elif match := _BIAS_TABLE.fullmatch(name):
            out[f"layers.{match[1]}.blocks.{match[2]}.attn.relative_position_bias_table"] = mm.pop(name)
        elif _INDEX.fullmatch(name):  # a buffer timm computes (the same lookup: test_backbone_keymaps.py)
            mm.pop(name)
        elif match := _MERGE.fullmatch(name):
            stage, part, kind = match.groups()
            value = mm.pop(name)
            channels = (value.shape[-1] if part == "reduction" else value.shape[0]) // 4
            order = unfold_to_timm_order(channels)
            out[f"layers.{int(stage) + 1}.downsample.{part}.{kind}"] = (
                value[:, order] if part == "reduction" else value[order]
            )
        elif re.fullmatch(r"norm\d\.(weight|bias)", name) and name in own:
            out[name] = mm.pop(name)
    return out
