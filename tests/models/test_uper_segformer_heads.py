"""UPerNet and SegFormer heads on tiny feature pyramids (shapes, gradients, equality with MMSegmentation's
computation written out here), their parameter counts against MMSegmentation 1.2.2 at full size, and the
MMSegmentation key map of every decode head against `../shared/mmseg/keys/*.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.heads import (
    ASPPHead,
    DepthwiseSeparableASPPHead,
    FCNHead,
    PSPHead,
    SegformerHead,
    UPerHead,
)
from src.weights.keymaps import keymap_for

NUM_CLASSES = 5
CHANNELS = (4, 6, 8, 12)  # a tiny four-level pyramid at strides 4, 8, 16, 32
KEYS_DIR = Path(__file__).resolve().parents[3] / "shared" / "mmseg" / "keys"


def _feats(n: int = 2, h: int = 16, w: int = 20, channels=CHANNELS) -> list[torch.Tensor]:
    """Levels halving in size from h x w, rounding up as strided convs do."""
    feats = []
    for c in channels:
        feats.append(torch.randn(n, c, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return feats


def _uper(**kw) -> UPerHead:
    return UPerHead(**(dict(in_channels=list(CHANNELS), channels=8, num_classes=NUM_CLASSES) | kw))


def _segformer(**kw) -> SegformerHead:
    return SegformerHead(**(dict(in_channels=list(CHANNELS), channels=8, num_classes=NUM_CLASSES) | kw))


HEADS = {"uper": _uper, "segformer": _segformer}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("size", [(16, 20), (13, 7)])
def test_logits_at_the_first_levels_resolution(name, size):
    head = HEADS[name]().eval()
    feats = _feats(h=size[0], w=size[1])
    assert head(feats).shape == (2, NUM_CLASSES, *size)


@pytest.mark.parametrize("name", HEADS)
def test_in_index_selects_levels(name):
    """Five backbone levels, the head reads the last four: the logits come at level 1's resolution."""
    feats = _feats(channels=(3, *CHANNELS), h=32, w=24)
    head = HEADS[name](in_index=[1, 2, 3, 4]).eval()
    assert head(feats).shape == (2, NUM_CLASSES, 16, 12)
    # and it reads exactly those: changing level 0 changes nothing
    feats2 = [torch.randn_like(feats[0]), *feats[1:]]
    torch.testing.assert_close(head(feats), head(feats2))


@pytest.mark.parametrize("name", HEADS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    head = HEADS[name](dropout_ratio=0.0).train()  # batch of 2: BN of the 1x1-pooled PPM branch needs 2
    masks = torch.randint(0, NUM_CLASSES, (2, 64, 80))
    loss = sum(head.loss_by_feat(head(_feats()), masks).values())
    loss.backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_uper_forward_is_mmsegmentations():
    """PPM on the top level, FPN top-down sums, 3x3 smoothing, everything upsampled to level 0, fused: written
    out step by step with the head's own layers, in MMSegmentation's order."""
    torch.manual_seed(0)
    head = _uper().eval()
    feats = _feats(h=13, w=18)

    def up(x, ref):
        return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)

    top = feats[3]
    ppm = [up(branch(top), top) for branch in head.psp_modules]
    lat = [head.lateral_convs[i](feats[i]) for i in range(3)]
    lat.append(head.bottleneck(torch.cat([top, *ppm], 1)))
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + up(lat[i], lat[i - 1])
    outs = [head.fpn_convs[i](lat[i]) for i in range(3)] + [lat[3]]
    outs = [outs[0]] + [up(o, outs[0]) for o in outs[1:]]
    expected = head.conv_seg(head.fpn_bottleneck(torch.cat(outs, 1)))
    torch.testing.assert_close(head(feats), expected)


def test_segformer_forward_is_mmsegmentations():
    torch.manual_seed(0)
    head = _segformer().eval()
    feats = _feats(h=13, w=18)
    outs = [
        F.interpolate(conv(x), size=(13, 18), mode="bilinear", align_corners=False)
        for conv, x in zip(head.convs, feats, strict=True)
    ]
    expected = head.conv_seg(head.fusion_conv(torch.cat(outs, 1)))
    torch.testing.assert_close(head(feats), expected)
    # MMSegmentation's fusion_conv is a ConvModule with its default ReLU: no negative fused feature
    assert isinstance(head.fusion_conv.bn.act, nn.ReLU)


@pytest.mark.parametrize("name", HEADS)
def test_group_norm_option(name):
    # 64 channels: 2 per group of MMCV's GroupNorm(32), so even the 1x1-pooled PPM branch normalises >1 value
    bn_head, gn_head = HEADS[name](), HEADS[name](norm="gn", channels=64)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn_head.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn_head.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in gn_head.modules())
    # GroupNorm needs no batch statistics: a batch of one trains
    gn_head.train()
    out = gn_head(_feats(n=1))
    out.sum().backward()
    assert out.shape == (1, NUM_CLASSES, 16, 20)


@pytest.mark.parametrize("name", HEADS)
def test_mismatched_levels_are_refused(name):
    with pytest.raises(ValueError, match=r"in_channels=\[4, 6, 8\] must give one channel count per level"):
        HEADS[name](in_channels=[4, 6, 8], in_index=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="must be lists"):
        HEADS[name](in_channels=12, in_index=3)


@pytest.mark.parametrize("name", HEADS)
def test_channels_from_features(name):
    cls = type(HEADS[name]())
    assert cls.channels_from_features([3, 4, 6, 8, 12]) == {"in_channels": [3, 4, 6, 8]}
    assert cls.channels_from_features([3, 4, 6, 8, 12], in_index=[1, 2, 3, 4]) == {
        "in_channels": [4, 6, 8, 12]
    }


def test_single_level_uper_is_ppm_plus_fusion():
    head = UPerHead(in_channels=[12], in_index=[3], channels=8, num_classes=NUM_CLASSES).eval()
    assert len(head.lateral_convs) == 0 and len(head.fpn_convs) == 0
    assert head(_feats()).shape == (2, NUM_CLASSES, 2, 3)


# ------------------------------------------------------------------------------------------ full size
# MMSegmentation 1.2.2 (SyncBN counted as BN); built on the meta device: the count needs no memory or init.
FULL_SIZE = {
    "upernet_r50": (
        UPerHead,
        dict(in_channels=[256, 512, 1024, 2048], channels=512, num_classes=19),
        40_523_283,
    ),
    "upernet_r18": (
        UPerHead,
        dict(in_channels=[64, 128, 256, 512], channels=512, num_classes=19),
        29_611_539,
    ),
    "upernet_swin-t/convnext-t": (
        UPerHead,
        dict(in_channels=[96, 192, 384, 768], channels=512, num_classes=150),
        31_497_366,
    ),
    "vit-b16_mln_upernet": (UPerHead, dict(in_channels=[768] * 4, channels=512, num_classes=150), 32_332_950),
    "segformer_mit-b0_ade20k": (
        SegformerHead,
        dict(in_channels=[32, 64, 160, 256], channels=256, num_classes=150),
        434_326,
    ),
    "segformer_mit-b0_cityscapes": (
        SegformerHead,
        dict(in_channels=[32, 64, 160, 256], channels=256, num_classes=19),
        400_659,
    ),
    # MMSegmentation's MiT-B2 config only widens in_channels: channels stays 256
    "segformer_mit-b2_ade20k": (
        SegformerHead,
        dict(in_channels=[64, 128, 320, 512], channels=256, num_classes=150),
        565_398,
    ),
}
_AUX = dict(num_convs=1, concat_input=False)
AUX_FULL_SIZE = {
    "vit-b16_mln_upernet": (dict(in_channels=768, channels=256, num_classes=150), 1_808_534),
    "upernet_swin-t/convnext-t": (dict(in_channels=384, channels=256, num_classes=150), 923_798),
    "upernet_r50": (dict(in_channels=1024, channels=256, num_classes=19), 2_364_691),
    "upernet_r18": (dict(in_channels=256, channels=256, num_classes=19), 595_219),
}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_parameter_count_equals_mmsegmentation(name):
    cls, kwargs, expected = FULL_SIZE[name]
    with torch.device("meta"):
        head = cls(**kwargs)
    assert _n_params(head) == expected


@pytest.mark.parametrize("name", AUX_FULL_SIZE)
def test_auxiliary_fcn_parameter_count_equals_mmsegmentation(name):
    kwargs, expected = AUX_FULL_SIZE[name]
    with torch.device("meta"):
        head = FCNHead(**kwargs, **_AUX, in_index=2)
    assert _n_params(head) == expected


# --------------------------------------------------------------------------------------------- key map
def _fcn(in_ch, ch, n, **kw):
    return FCNHead, dict(in_channels=in_ch, channels=ch, num_classes=n) | (_AUX | kw)


def _heads_of(decode, aux=None):
    return {"decode_head": decode} | ({"auxiliary_head": aux} if aux else {})


# json -> {part: (class, arguments)} as MMSegmentation's config of that name builds them
_R18_AUX, _R50_AUX = _fcn(256, 64, 19), _fcn(1024, 256, 19)
_D8 = {"r18": (512, 128, _R18_AUX), "r50": (2048, 512, _R50_AUX), "r101": (2048, 512, _R50_AUX)}
_UPER = (UPerHead, dict(channels=512))
MMSEG_HEADS = {
    **{
        f"fcn_{b}-d8": _heads_of(_fcn(i, c, 19, num_convs=2, concat_input=True), aux)
        for b, (i, c, aux) in _D8.items()
    },
    **{
        f"pspnet_{b}-d8": _heads_of((PSPHead, dict(in_channels=i, channels=c, num_classes=19)), aux)
        for b, (i, c, aux) in _D8.items()
    },
    **{
        f"deeplabv3_{b}-d8": _heads_of((ASPPHead, dict(in_channels=i, channels=c, num_classes=19)), aux)
        for b, (i, c, aux) in _D8.items()
        if b != "r101"
    },
    "deeplabv3plus_r18-d8": _heads_of(
        (
            DepthwiseSeparableASPPHead,
            dict(in_channels=512, channels=128, num_classes=19, c1_in_channels=64, c1_channels=12),
        ),
        _R18_AUX,
    ),
    "deeplabv3plus_r50-d8": _heads_of(
        (
            DepthwiseSeparableASPPHead,
            dict(in_channels=2048, channels=512, num_classes=19, c1_in_channels=256, c1_channels=48),
        ),
        _R50_AUX,
    ),
    "unet-s5-d16_fcn": _heads_of(_fcn(64, 64, 2), _fcn(128, 64, 2)),
    "unet-s5-d16_deeplabv3": _heads_of(
        (ASPPHead, dict(in_channels=64, channels=16, num_classes=2)), _fcn(128, 64, 2)
    ),
    "upernet_r50": _heads_of(
        (UPerHead, dict(in_channels=[256, 512, 1024, 2048], channels=512, num_classes=19)), _R50_AUX
    ),
    "upernet_r18": _heads_of(
        (UPerHead, dict(in_channels=[64, 128, 256, 512], channels=512, num_classes=19)), _fcn(256, 256, 19)
    ),
    **{
        name: _heads_of(
            (UPerHead, dict(in_channels=[96, 192, 384, 768], channels=512, num_classes=150)),
            _fcn(384, 256, 150),
        )
        for name in ("upernet_swin-t", "upernet_convnext-t")
    },
    "vit-b16_mln_upernet": _heads_of(
        (UPerHead, dict(in_channels=[768] * 4, channels=512, num_classes=150)), _fcn(768, 256, 150)
    ),
    "segformer_mit-b0": _heads_of(
        (SegformerHead, dict(in_channels=[32, 64, 160, 256], channels=256, num_classes=150))
    ),
}


def _mm_part(name: str, part: str, device: str = "meta") -> dict[str, torch.Tensor]:
    keys = json.loads((KEYS_DIR / f"{name}.json").read_text())["keys"]
    prefix = f"{part}."
    return {k[len(prefix) :]: torch.empty(s, device=device) for k, s in keys.items() if k.startswith(prefix)}


def test_every_key_file_with_heads_is_covered():
    if not KEYS_DIR.is_dir():
        pytest.skip(f"{KEYS_DIR} not found")
    with_heads = {p.stem for p in KEYS_DIR.glob("*.json") if '"decode_head.' in p.read_text()}
    assert with_heads == set(MMSEG_HEADS)


@pytest.mark.parametrize(("name", "part"), [(n, p) for n, parts in MMSEG_HEADS.items() for p in parts])
def test_mmsegmentation_head_keys_map_and_load_strictly(name, part):
    """Every `decode_head.*` / `auxiliary_head.*` tensor of MMSegmentation's model maps onto the head built with
    the config's arguments, and the head loads them strictly (all keys, all shapes): nothing left on either side.
    Meta tensors: names and shapes are what is checked; values are checked in the GroupNorm test below."""
    if not KEYS_DIR.is_dir():
        pytest.skip(f"{KEYS_DIR} not found")
    cls, kwargs = MMSEG_HEADS[name][part]
    mm = _mm_part(name, part)
    assert mm, f"{name}.json has no {part}"
    with torch.device("meta"):
        head = cls(**kwargs)
    source = dict(mm)
    ours = keymap_for(head)(mm, head)
    assert mm == {}, f"unmapped: {sorted(mm)}"
    assert all(ours[k] is source[k] for k in ours)  # a rename, tensors untouched
    head.load_state_dict(ours, strict=True, assign=True)


@pytest.mark.parametrize("name", HEADS)
def test_group_norm_keys_map_with_values(name):
    """MMCV names a GroupNorm `gn` where timm's ConvNormAct keeps `bn`: such checkpoints load, values intact;
    a key that names nothing of the head stays behind for the caller to report."""
    torch.manual_seed(0)
    head = HEADS[name](norm="gn", channels=64)
    reference = {k: torch.randn_like(v) for k, v in head.state_dict().items()}
    mm = {k.replace(".bn.", ".gn."): v for k, v in reference.items()}
    mm["extra.conv.weight"] = torch.zeros(1)
    ours = keymap_for(head)(mm, head)
    assert list(mm) == ["extra.conv.weight"]
    head.load_state_dict(ours, strict=True)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, reference[k])
