"""Backbones (src/models/backbones/): every backbone's declared `out_channels` / `reductions` are those of the
maps it returns; output strides; the readable errors; MMSegmentation 1.2.2's exact parameter counts for the
MMSegmentation-structured backbones; ConvNeXt's layer ids for layer-wise learning-rate decay."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

from src.models.backbones import (
    ConvNeXtBackbone,
    MiTBackbone,
    SwinBackbone,
    TimmBackbone,
    ViTBackbone,
    default_out_indices,
)

TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))
KEYS = Path(__file__).resolve().parents[3] / "shared" / "mmseg" / "keys"

BACKBONES = {
    "resnet18d": lambda: TimmBackbone("resnet18d"),
    "resnet50c": lambda: TimmBackbone("resnet50c"),
    "resnet18c-d8": lambda: TimmBackbone("resnet18c", output_stride=8),
    "convnext_atto": lambda: TimmBackbone("convnext_atto"),
    "efficientnet_b0": lambda: TimmBackbone("efficientnet_b0"),
    "mobilenetv3_small_100": lambda: TimmBackbone("mobilenetv3_small_100"),
    "regnety_002": lambda: TimmBackbone("regnety_002"),
    "timm-swin-tiny": lambda: TimmBackbone("swin_tiny_patch4_window7_224", **TINY_SWIN),
    "timm-vit_tiny": lambda: TimmBackbone("vit_tiny_patch16_224"),
    "SwinBackbone-tiny": lambda: SwinBackbone(**TINY_SWIN),
    "ConvNeXtBackbone-atto": lambda: ConvNeXtBackbone("convnext_atto"),
    "MiTBackbone-b0": lambda: MiTBackbone("mit_b0"),
    "ViTBackbone-tiny": lambda: ViTBackbone("vit_tiny_patch16_224"),
}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_declared_channels_and_strides_are_the_outputs(name):
    torch.manual_seed(0)
    backbone = BACKBONES[name]().eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 64, 96))
    assert isinstance(feats, list) and len(feats) == len(backbone.out_channels) == len(backbone.reductions)
    assert [f.shape[1] for f in feats] == backbone.out_channels
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in feats] == [(r, r) for r in backbone.reductions]
    assert all(torch.isfinite(f).all() for f in feats)


def test_default_levels_are_strides_4_to_32():
    assert default_out_indices([2, 4, 8, 16, 32]) == [1, 2, 3, 4]  # ResNet, EfficientNet
    assert default_out_indices([4, 8, 16, 32]) == [0, 1, 2, 3]  # ConvNeXt, Swin
    assert default_out_indices([16] * 12) == [2, 5, 8, 11]  # ViT-B: MMSegmentation's blocks
    assert default_out_indices([2, 4, 8, 16]) == [0, 1, 2, 3]  # no stride 32: the last 4
    assert TimmBackbone("resnet18d").reductions == [4, 8, 16, 32]
    assert TimmBackbone("vit_tiny_patch16_224").out_indices == [2, 5, 8, 11]


def test_explicit_out_indices_still_work():
    backbone = TimmBackbone("resnet18d", out_indices=[1, 2, 3, 4])
    assert backbone.reductions == [4, 8, 16, 32] and backbone.out_channels == [64, 128, 256, 512]
    assert TimmBackbone("resnet18d", out_indices=(3, 4)).out_channels == [256, 512]


@pytest.mark.parametrize(
    "make",
    [
        lambda s: TimmBackbone("resnet18c", output_stride=s),  # ResNet-50's dilations: test_model_zoo.py
        lambda s: TimmBackbone("convnext_atto", output_stride=s),
        lambda s: ConvNeXtBackbone("convnext_atto", output_stride=s),
    ],
    ids=["resnet18c", "convnext_atto", "ConvNeXtBackbone"],
)
@pytest.mark.parametrize("stride", [8, 16])
def test_dilated_output_strides(make, stride):
    backbone = make(stride)
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert max(backbone.reductions) == stride
    assert feats[-1].shape[-1] == 64 // stride
    assert [64 // f.shape[-1] for f in feats] == backbone.reductions


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: TimmBackbone("swin_tiny_patch4_window7_224", output_stride=8, **TINY_SWIN),
            "model.backbone.output_stride=8: swin_tiny_patch4_window7_224 supports only 32 "
            "(no dilation in timm's SwinTransformer); use output_stride=32",
        ),
        (
            lambda: SwinBackbone(output_stride=8, **TINY_SWIN),
            "model.backbone.output_stride=8: swin_tiny_patch4_window7_224 supports only 32 (no dilation in Swin); "
            "use output_stride=32",
        ),
        (
            lambda: TimmBackbone("vit_tiny_patch16_224", output_stride=8),
            "model.backbone.output_stride=8: vit_tiny_patch16_224 supports only 16",
        ),
        (lambda: ViTBackbone("vit_tiny_patch16_224", output_stride=32), "supports only 16"),
        (lambda: MiTBackbone("mit_b0", output_stride=16), "mit_b0 supports only 32"),
        (lambda: TimmBackbone("resnet18d", output_stride=4), "resnet18d supports 8 and 16 and 32"),
    ],
    ids=["timm-swin", "SwinBackbone", "timm-vit", "ViTBackbone", "MiT", "resnet-4"],
)
def test_unsupported_output_stride_is_one_readable_error(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_config_errors_name_the_key():
    with pytest.raises(
        ValueError, match=r"model.backbone.model_name=convnext_atoo: not a timm model; did you mean"
    ):
        TimmBackbone("convnext_atoo")
    with pytest.raises(
        ValueError, match=r"model.backbone.stem_width=32: timm's convnext_atto takes no argument"
    ):
        TimmBackbone("convnext_atto", stem_width=32)
    with pytest.raises(ValueError, match=r"model.backbone.model_name=resnet18d: ConvNeXtBackbone needs"):
        ConvNeXtBackbone("resnet18d")
    with pytest.raises(ValueError, match=r"model.backbone.model_name=mit_b9: MiTBackbone takes one of"):
        MiTBackbone("mit_b9")


def test_resnet_v1c_names_are_mmsegmentations_resnet_v1c():
    """resnet18c is timm's resnet18 with the 32-wide deep stem: MMSegmentation's ResNetV1c-18, 11,195,744
    parameters (the backbone count of fcn_r18-d8); resnet50c/101c are timm's own."""
    r18c = TimmBackbone("resnet18c", output_stride=8)
    assert _params(r18c) == 11_195_744
    assert _params(r18c) == _params(
        TimmBackbone("resnet18", output_stride=8, stem_type="deep", stem_width=32)
    )
    assert [m.out_channels for m in r18c.body.conv1 if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]
    assert _params(TimmBackbone("resnet50c", output_stride=8)) == 23_527_264


# MMSegmentation 1.2.2 backbone parameter counts (the table; the sums of ../shared/mmseg/keys shapes)
MMSEG_BACKBONES = [
    ("swin-t", lambda: SwinBackbone("swin_tiny_patch4_window7_224"), 27_520_698),
    ("convnext-t", lambda: ConvNeXtBackbone("convnext_tiny"), 27_821_472),
    ("mit-b0", lambda: MiTBackbone("mit_b0"), 3_319_392),
    ("mit-b2", lambda: MiTBackbone("mit_b2"), 24_196_288),
    ("vit-b16", lambda: ViTBackbone("vit_base_patch16_224", img_size=512, patch_bias=False), 86_432_256),
]


@pytest.mark.parametrize(
    "make, count", [row[1:] for row in MMSEG_BACKBONES], ids=[r[0] for r in MMSEG_BACKBONES]
)
def test_parameter_counts_equal_mmsegmentation(make, count):
    assert _params(make()) == count


def test_backbones_load_their_own_weights_from_a_local_file(tmp_path):
    for make in (
        lambda: SwinBackbone(**TINY_SWIN),
        lambda: ConvNeXtBackbone("convnext_atto"),
        lambda: MiTBackbone(),
    ):
        torch.manual_seed(0)
        src = make()
        path = tmp_path / "weights.pth"
        torch.save(src.state_dict(), path)
        torch.manual_seed(1)
        dst = type(src)(**_ctor(src), pretrained_path=str(path))
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k


def _ctor(backbone):
    if isinstance(backbone, SwinBackbone):
        return dict(TINY_SWIN)
    return {"model_name": backbone.model_name}


# ---- MMSegmentation's Swin order: pad to whole windows, then shift -----------------------------------------------


def _mmseg_shift_window_attention(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """MMSegmentation's ShiftWindowMSA.forward (mmseg/models/backbones/swin.py), with `block.attn` as its w_msa."""
    B, H, W, C = x.shape
    ws, shift = block.window_size[0], block.shift_size[0]
    x = torch.nn.functional.pad(x, (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))
    Hp, Wp = x.shape[1], x.shape[2]
    mask = None
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        img_mask = torch.zeros((1, Hp, Wp, 1))
        slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        for cnt, (h, w) in enumerate((h, w) for h in slices for w in slices):
            img_mask[:, h, w, :] = cnt
        windows = window_partition(img_mask, (ws, ws)).view(-1, ws * ws)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    out = block.attn(window_partition(x, (ws, ws)).view(-1, ws * ws, C), mask=mask)
    x = window_reverse(out.view(-1, ws, ws, C), (ws, ws), Hp, Wp)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x[:, :H, :W, :]


@pytest.mark.parametrize("hw", [(14, 21), (9, 13), (3, 5)])
def test_swin_blocks_shift_windows_as_mmsegmentation(hw):
    torch.manual_seed(0)
    backbone = SwinBackbone(**TINY_SWIN).eval()
    block = backbone.layers[2].blocks[1]  # a shifted block
    assert block.shift_size == (3, 3) and block.window_size == (7, 7)  # shifted even on a tiny map, as MMSeg
    x = torch.randn(2, *hw, block.attn.qkv.in_features)
    with torch.no_grad():
        torch.testing.assert_close(
            block._attn(x), _mmseg_shift_window_attention(block, x), rtol=1e-4, atol=1e-5
        )


# ---- layer-wise learning-rate decay ids (MMSegmentation's layer_decay_optimizer_constructor.py) ----------------


def _mmseg_convnext_layer_id(name: str, max_layer_id: int) -> int:
    """MMSegmentation's get_layer_id_for_convnext, restated."""
    parts = name.split(".")
    if parts[1] == "downsample_layers":
        return {0: 0, 1: 2, 2: 3, 3: max_layer_id}[int(parts[2])]
    if parts[1] == "stages":
        stage, block = int(parts[2]), int(parts[3])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: max_layer_id}[stage]
    return max_layer_id + 1


def _mmseg_convnext_stage_id(name: str, max_stage_id: int) -> int:
    """MMSegmentation's get_stage_id_for_convnext, restated."""
    parts = name.split(".")
    if parts[1] == "downsample_layers":
        return 0
    if parts[1] == "stages":
        return int(parts[2]) + 1
    return max_stage_id - 1


@pytest.mark.skipif(not KEYS.is_dir(), reason="../shared/mmseg/keys not available")
def test_convnext_layer_ids_are_mmsegmentations():
    from src.weights.keymaps.convnext import convnext_key

    backbone = ConvNeXtBackbone("convnext_tiny")
    assert backbone.num_layers == 6  # convnext-tiny_upernet's paramwise_cfg num_layers
    names = [
        k
        for k in json.loads((KEYS / "upernet_convnext-t.json").read_text())["keys"]
        if k.startswith("backbone.")
    ]
    assert len(names) == len(list(backbone.parameters()))
    for name in names:
        ours = convnext_key(name.removeprefix("backbone."))
        assert backbone.layer_id(ours, "layer_wise") == _mmseg_convnext_layer_id(name, 6), name
        assert backbone.layer_id(ours, "stage_wise") == _mmseg_convnext_stage_id(name, 6 + 2), name
