"""MMSegmentation backbone tensors -> this project's backbones (src/weights/keymaps/{swin,convnext,mit,vit}.py).

For each model in ../shared/mmseg/keys (MMSegmentation 1.2.2's tensor names and shapes), random tensors under
MMSegmentation's `backbone.` names convert into a strict `load_state_dict` with nothing left on either side; the
layouts that change (Swin's patch-merge order, MiT's stacked attention projection and 1x1 convs) are checked by
computing the same thing both ways.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.backbones import ConvNeXtBackbone, MiTBackbone, SwinBackbone, ViTBackbone
from src.weights.keymaps import keymap_for
from src.weights.keymaps.swin import unfold_to_timm_order

KEYS = Path(__file__).resolve().parents[3] / "shared" / "mmseg" / "keys"
needs_keys = pytest.mark.skipif(not KEYS.is_dir(), reason="../shared/mmseg/keys not available")


def _mmseg_swin_index(window: int) -> torch.Tensor:
    """MMSegmentation's WindowMSA relative_position_index, computed its own way (double step seq, flip)."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def _random_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("relative_position_index"):
            state[name] = _mmseg_swin_index(math.isqrt(shape[0]))
        else:
            state[name] = torch.randn(shape, generator=g)
    return state


def _backbone_shapes(model: str) -> dict[str, list[int]]:
    keys = json.loads((KEYS / f"{model}.json").read_text())["keys"]
    return {k.removeprefix("backbone."): v for k, v in keys.items() if k.startswith("backbone.")}


def mmseg_mit_shapes(depths, dims, sr_ratios, mlp_ratio=4) -> dict[str, list[int]]:
    """MMSegmentation's MiT tensor names and shapes for a MiT configuration (checked against MiT-B0's json)."""
    shapes, in_ch = {}, 3
    for i, (depth, dim, sr) in enumerate(zip(depths, dims, sr_ratios, strict=True)):
        k = 7 if i == 0 else 3
        shapes[f"layers.{i}.0.projection.weight"] = [dim, in_ch, k, k]
        shapes[f"layers.{i}.0.projection.bias"] = [dim]
        shapes[f"layers.{i}.0.norm.weight"] = shapes[f"layers.{i}.0.norm.bias"] = [dim]
        for j in range(depth):
            b, hid = f"layers.{i}.1.{j}", dim * mlp_ratio
            shapes[f"{b}.norm1.weight"] = shapes[f"{b}.norm1.bias"] = [dim]
            shapes[f"{b}.attn.attn.in_proj_weight"] = [3 * dim, dim]
            shapes[f"{b}.attn.attn.in_proj_bias"] = [3 * dim]
            shapes[f"{b}.attn.attn.out_proj.weight"] = [dim, dim]
            shapes[f"{b}.attn.attn.out_proj.bias"] = [dim]
            if sr > 1:
                shapes[f"{b}.attn.sr.weight"] = [dim, dim, sr, sr]
                shapes[f"{b}.attn.sr.bias"] = [dim]
                shapes[f"{b}.attn.norm.weight"] = shapes[f"{b}.attn.norm.bias"] = [dim]
            shapes[f"{b}.norm2.weight"] = shapes[f"{b}.norm2.bias"] = [dim]
            shapes[f"{b}.ffn.layers.0.weight"] = [hid, dim, 1, 1]
            shapes[f"{b}.ffn.layers.0.bias"] = [hid]
            shapes[f"{b}.ffn.layers.1.weight"] = [hid, 1, 3, 3]
            shapes[f"{b}.ffn.layers.1.bias"] = [hid]
            shapes[f"{b}.ffn.layers.4.weight"] = [dim, hid, 1, 1]
            shapes[f"{b}.ffn.layers.4.bias"] = [dim]
        shapes[f"layers.{i}.2.weight"] = shapes[f"layers.{i}.2.bias"] = [dim]
        in_ch = dim
    return shapes


MIT_B0 = ((2, 2, 2, 2), (32, 64, 160, 256), (8, 4, 2, 1))
MIT_B2 = ((3, 4, 6, 3), (64, 128, 320, 512), (8, 4, 2, 1))


@needs_keys
def test_mit_shape_generator_reproduces_mmsegmentations_b0():
    assert mmseg_mit_shapes(*MIT_B0) == _backbone_shapes("segformer_mit-b0")


def _convert_and_load(backbone: nn.Module, mm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    left = dict(mm)
    ours = keymap_for(backbone)(left, backbone)
    assert not left, f"not mapped: {list(left)[:5]}"
    backbone.load_state_dict(ours, strict=True)  # nothing missing, nothing unexpected
    return ours


CASES = {
    "upernet_swin-t": lambda: SwinBackbone("swin_tiny_patch4_window7_224"),
    "upernet_convnext-t": lambda: ConvNeXtBackbone("convnext_tiny"),
    "vit-b16_mln_upernet": lambda: ViTBackbone("vit_base_patch16_224", img_size=512, patch_bias=False),
    "segformer_mit-b0": lambda: MiTBackbone("mit_b0"),
}


@needs_keys
@pytest.mark.parametrize("model", list(CASES))
def test_mmseg_backbone_loads_strictly(model):
    mm = _random_state(_backbone_shapes(model))
    backbone = CASES[model]()
    _convert_and_load(backbone, mm)
    own = backbone.state_dict()
    # values survive the renaming (a tensor from the first and the last stage)
    pairs = {
        "upernet_swin-t": [
            ("stages.0.blocks.0.attn.w_msa.qkv.weight", "layers.0.blocks.0.attn.qkv.weight"),
            ("stages.3.blocks.1.ffn.layers.1.weight", "layers.3.blocks.1.mlp.fc2.weight"),
            ("norm3.bias", "norm3.bias"),
        ],
        "upernet_convnext-t": [
            ("downsample_layers.0.0.weight", "stem.0.weight"),
            ("stages.3.2.pointwise_conv2.weight", "stages.3.blocks.2.mlp.fc2.weight"),
            ("stages.1.0.gamma", "stages.1.blocks.0.gamma"),
        ],
        "vit-b16_mln_upernet": [
            ("pos_embed", "pos_embed"),
            ("layers.11.attn.attn.in_proj_weight", "blocks.11.attn.qkv.weight"),
            ("layers.0.ln2.bias", "blocks.0.norm2.bias"),
        ],
        "segformer_mit-b0": [
            ("layers.0.0.projection.weight", "patch_embed1.proj.weight"),
            ("layers.3.2.weight", "norm4.weight"),
            ("layers.2.1.1.attn.sr.weight", "block3.1.attn.sr.weight"),
        ],
    }[model]
    for theirs, ours in pairs:
        assert torch.equal(own[ours], mm[theirs]), (theirs, ours)


def test_mit_b2_loads_strictly():
    mm = _random_state(mmseg_mit_shapes(*MIT_B2))
    assert sum(v.numel() for v in mm.values()) == 24_196_288  # MMSegmentation's MiT-B2 backbone
    backbone = MiTBackbone("mit_b2")
    _convert_and_load(backbone, mm)
    q = backbone.state_dict()["block4.2.attn.q.weight"]
    assert torch.equal(q, mm["layers.3.1.2.attn.attn.in_proj_weight"][:512])


def test_swin_patch_merge_order_matches_mmsegmentations_unfold():
    """MMSegmentation's merge (nn.Unfold 2x2, LayerNorm, Linear) == timm's PatchMerging with converted tensors."""
    from timm.models.swin_transformer import PatchMerging

    torch.manual_seed(0)
    C, H, W = 6, 4, 6
    norm, reduction = nn.LayerNorm(4 * C), nn.Linear(4 * C, 2 * C, bias=False)
    for p in (*norm.parameters(), reduction.weight):
        nn.init.normal_(p)
    x = torch.randn(2, H, W, C)
    unfolded = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (B, L, 4C)
    reference = reduction(norm(unfolded)).reshape(2, H // 2, W // 2, 2 * C)

    order = unfold_to_timm_order(C)
    merge = PatchMerging(C)
    merge.norm.weight.data, merge.norm.bias.data = norm.weight.data[order], norm.bias.data[order]
    merge.reduction.weight.data = reduction.weight.data[:, order]
    torch.testing.assert_close(merge(x), reference)


def test_swin_relative_position_index_is_timms():
    """The key map drops MMSegmentation's relative_position_index buffers: timm's, computed its own way, are equal."""
    backbone = SwinBackbone(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    timm_index = backbone.layers[0].blocks[0].attn.relative_position_index
    assert torch.equal(timm_index, _mmseg_swin_index(7))
    assert not torch.equal(timm_index, _mmseg_swin_index(7).flip(1))  # the flip matters: an honest comparison


def test_mit_attention_and_ffn_convert_numerically():
    """nn.MultiheadAttention (MMSegmentation's stacked in_proj) and 1x1 Conv2d FFN == smp's q/kv Linear and fc."""
    torch.manual_seed(0)
    backbone = MiTBackbone("mit_b0").eval()
    block = backbone.block1[0]
    dim, heads, H, W = 32, 1, 8, 12
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    fc1, dw, fc2 = (
        nn.Conv2d(dim, 4 * dim, 1),
        nn.Conv2d(4 * dim, 4 * dim, 3, 1, 1, groups=4 * dim),
        nn.Conv2d(4 * dim, dim, 1),
    )
    for p in (*mha.parameters(), *fc1.parameters(), *dw.parameters(), *fc2.parameters()):
        nn.init.normal_(p, std=0.2)
    mm = {
        "layers.0.1.0.attn.attn.in_proj_weight": mha.in_proj_weight.data,
        "layers.0.1.0.attn.attn.in_proj_bias": mha.in_proj_bias.data,
        "layers.0.1.0.attn.attn.out_proj.weight": mha.out_proj.weight.data,
        "layers.0.1.0.attn.attn.out_proj.bias": mha.out_proj.bias.data,
        "layers.0.1.0.ffn.layers.0.weight": fc1.weight.data,
        "layers.0.1.0.ffn.layers.0.bias": fc1.bias.data,
        "layers.0.1.0.ffn.layers.1.weight": dw.weight.data,
        "layers.0.1.0.ffn.layers.1.bias": dw.bias.data,
        "layers.0.1.0.ffn.layers.4.weight": fc2.weight.data,
        "layers.0.1.0.ffn.layers.4.bias": fc2.bias.data,
    }
    left = dict(mm)
    ours = keymap_for(backbone)(left, backbone)
    assert not left
    missing, unexpected = backbone.load_state_dict(ours, strict=False)
    assert not unexpected and "block1.0.attn.q.weight" not in missing
    tokens = torch.randn(2, H * W, dim)
    with torch.no_grad():
        # MMSegmentation's EfficientMultiheadAttention: keys/values from the spatially reduced, normalised map
        reduced = block.attn.norm(
            block.attn.sr(tokens.transpose(1, 2).reshape(2, dim, H, W)).flatten(2).transpose(1, 2)
        )
        expected = mha(tokens, reduced, reduced, need_weights=False)[0]
        torch.testing.assert_close(block.attn(tokens, H, W), expected, rtol=1e-4, atol=1e-5)
        # MMSegmentation's Mix-FFN on the map: conv1x1 -> dwconv3x3 -> GELU -> conv1x1
        fmap = tokens.transpose(1, 2).reshape(2, dim, H, W)
        expected = fc2(F.gelu(dw(fc1(fmap)))).flatten(2).transpose(1, 2)
        torch.testing.assert_close(block.mlp(tokens, H, W), expected, rtol=1e-4, atol=1e-5)


def test_vit_in_proj_is_timms_qkv():
    """nn.MultiheadAttention with MMSegmentation's in_proj/out_proj == timm's Attention with the mapped tensors."""
    torch.manual_seed(0)
    backbone = ViTBackbone("vit_tiny_patch16_224", img_size=64).eval()
    dim = 192
    mha = nn.MultiheadAttention(dim, 3, batch_first=True)
    for p in mha.parameters():
        nn.init.normal_(p, std=0.1)
    mm = {
        "layers.0.attn.attn.in_proj_weight": mha.in_proj_weight.data,
        "layers.0.attn.attn.in_proj_bias": mha.in_proj_bias.data,
        "layers.0.attn.attn.out_proj.weight": mha.out_proj.weight.data,
        "layers.0.attn.attn.out_proj.bias": mha.out_proj.bias.data,
        "pos_embed": torch.randn(1, 1 + 32 * 32, dim),  # MMSegmentation's 512x512 table, resized to 4x4
    }
    ours = keymap_for(backbone)(dict(mm), backbone)
    assert ours["pos_embed"].shape == backbone.pos_embed.shape == (1, 17, dim)
    torch.testing.assert_close(ours["pos_embed"][:, 0], mm["pos_embed"][:, 0])  # the class token's, unchanged
    backbone.load_state_dict(ours, strict=False)
    tokens = torch.randn(2, 10, dim)
    with torch.no_grad():
        expected = mha(tokens, tokens, tokens, need_weights=False)[0]
        torch.testing.assert_close(backbone.blocks[0].attn(tokens), expected, rtol=1e-4, atol=1e-5)
