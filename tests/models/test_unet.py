"""UNet backbone (MMSegmentation's UNet-S5-D16) and its model configs."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from src.models.backbones.unet import UNet, UpConvBlock
from tests.helpers import compose_cfg


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory: pytest.TempPathFactory):
    """The composed `model` config of a `conf/model/<name>.yaml`, with 2 classes (as MMSegmentation's DRIVE)."""

    def make(name: str):
        tmp = tmp_path_factory.mktemp(name)
        cfg = compose_cfg(
            "train", [f"model={name}", "dataset.num_classes=2", f"paths.data_dir={tmp}"], tmp / "run"
        )
        return cfg.model

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def fcn_model(model_cfg) -> nn.Module:
    torch.manual_seed(0)
    return hydra.utils.instantiate(model_cfg("unet-s5-d16_fcn"))


# Parameter counts of MMSegmentation 1.2.2's models (num_classes=2, SyncBN built as BN), counted on
# `model.backbone`, `model.decode_head` and `model.auxiliary_head` of the built configs.
MMSEG_COUNTS = {
    "unet-s5-d16_fcn": dict(total=29_060_676, backbone=28_949_568, decode=37_122, aux=73_986),
    "unet-s5-d16_deeplabv3": dict(total=29_064_996, backbone=28_949_568, decode=41_442, aux=73_986),
}


@pytest.mark.parametrize("name", list(MMSEG_COUNTS))
def test_parameter_counts_equal_mmsegmentation(model_cfg, name):
    model = hydra.utils.instantiate(model_cfg(name))
    expected = MMSEG_COUNTS[name]
    assert _count(model.backbone) == expected["backbone"]
    assert _count(model.decode_head) == expected["decode"]
    assert _count(model.auxiliary_heads) == expected["aux"]
    assert _count(model) == expected["total"]
    assert model.name == name
    assert model.test_cfg == {"mode": "slide", "crop_size": [64, 64], "stride": [42, 42]}


def test_backbone_outputs_bottleneck_then_decoder_stages(fcn_model):
    backbone = fcn_model.backbone
    with torch.no_grad():
        feats = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (1, 1024, 4, 4),
        (1, 512, 8, 8),
        (1, 256, 16, 16),
        (1, 128, 32, 32),
        (1, 64, 64, 64),
    ]
    assert backbone.out_channels == [1024, 512, 256, 128, 64]
    assert backbone.reductions == [16, 8, 4, 2, 1]


def test_model_logits_at_input_size(fcn_model):
    fcn_model.eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert fcn_model(x).shape == (1, 2, 64, 80)
        assert fcn_model.predict(x, mode="whole").shape == (1, 2, 64, 80)


def test_input_not_divisible_by_16_raises_naming_the_size(fcn_model):
    fcn_model.eval()
    with pytest.raises(ValueError, match=r"input size \(40, 40\).*not divisible by 16"):
        fcn_model.backbone(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\(64, 56\)"):
        fcn_model.predict(torch.randn(1, 3, 64, 56), mode="whole")
    # 48 = 3 x 16 is fine: the rule is divisibility by the downsampling rate, not a power of two
    with torch.no_grad():
        assert fcn_model.backbone(torch.randn(1, 3, 48, 48))[-1].shape == (1, 64, 48, 48)


def test_slide_inference_returns_logits_at_image_size(fcn_model):
    fcn_model.eval()
    # 96 px with 64 px crops at stride 42: 2 x 2 overlapping windows, each divisible by 16
    logits = fcn_model.predict(torch.randn(1, 3, 96, 96))
    assert logits.shape == (1, 2, 96, 96)
    assert torch.isfinite(logits).all()


def test_one_training_step_reaches_every_parameter(model_cfg):
    torch.manual_seed(0)
    model = hydra.utils.instantiate(model_cfg("unet-s5-d16_fcn_ce-1.0-dice-3.0")).train()
    images, masks = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 64, 64))
    masks[:, :4] = 255
    losses = model.loss(images, masks)
    assert set(losses) == {"loss_ce", "loss_dice", "aux_loss_ce"}  # CE + 3 x Dice on the decode head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_structure_follows_mmsegmentation():
    unet = UNet(base_channels=4)
    # stage 0: no pooling; stages 1-4: 2x2 max-pool then two 3x3 conv-BN-ReLU (no conv bias)
    assert not isinstance(unet.encoder[0][0], nn.MaxPool2d)
    assert all(isinstance(unet.encoder[i][0], nn.MaxPool2d) for i in range(1, 5))
    # decoder stage: bilinear x2 then 1x1 conv to the skip's channels, then a conv block on [skip, up]
    up = unet.decoder[3].upsample.interp_upsample
    assert isinstance(up[0], nn.Upsample) and up[0].mode == "bilinear" and up[0].scale_factor == 2
    assert up[1].conv.kernel_size == (1, 1) and (up[1].conv.in_channels, up[1].conv.out_channels) == (64, 32)
    assert unet.decoder[3].conv_block.convs[0].conv.in_channels == 64
    # every conv is followed by a norm, so none has a bias (MMCV's ConvModule bias='auto')
    assert all(m.bias is None for m in unet.modules() if isinstance(m, nn.Conv2d))


def test_parameter_count_matches_a_hand_count():
    c = 4

    def conv(cin, cout, k=3):  # conv without bias + BN (weight, bias)
        return cin * cout * k * k + 2 * cout

    enc = (
        conv(3, c)
        + conv(c, c)
        + sum(conv(c * 2 ** (i - 1), c * 2**i) + conv(c * 2**i, c * 2**i) for i in range(1, 5))
    )
    dec = sum(
        conv(c * 2**i, c * 2 ** (i - 1), 1)
        + conv(c * 2**i, c * 2 ** (i - 1))
        + conv(c * 2 ** (i - 1), c * 2 ** (i - 1))
        for i in range(1, 5)
    )
    assert _count(UNet(base_channels=c)) == enc + dec


def test_kaiming_fan_out_init_and_unit_norms():
    torch.manual_seed(0)
    unet = UNet(base_channels=16)
    conv = unet.encoder[4][1].convs[1].conv  # 256 -> 256, 3x3: fan_out = 256 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    bn = unet.encoder[4][1].convs[1].bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(
        bn.bias, torch.zeros_like(bn.bias)
    )


def test_stride_2_and_no_downsample_variants():
    # stage 1 downsamples with a stride-2 conv instead of the max-pool; stage 4 does not downsample, so its
    # decoder stage brings channels down with a 1x1 conv instead of upsampling; whole rate 8
    unet = UNet(base_channels=4, strides=(1, 2, 1, 1, 1), downsamples=(True, True, True, False)).eval()
    assert not isinstance(unet.encoder[1][0], nn.MaxPool2d) and unet.encoder[1][0].convs[0].conv.stride == (
        2,
        2,
    )
    assert unet.decoder[3].upsample.conv.kernel_size == (1, 1)
    assert unet.divisor == 8 and unet.reductions == [8, 8, 4, 2, 1]
    with torch.no_grad():
        feats = unet(torch.randn(1, 3, 40, 24))
    assert [tuple(f.shape[-2:]) for f in feats] == [(5, 3), (5, 3), (10, 6), (20, 12), (40, 24)]
    assert [f.shape[1] for f in feats] == unet.out_channels == [64, 32, 16, 8, 4]


def test_deconv_upsample_and_dilations():
    unet = UNet(base_channels=4, upsample="deconv", enc_dilations=(1, 1, 1, 2, 2), dec_dilations=(2, 1, 1, 1))
    assert isinstance(unet.decoder[0].upsample.deconv_upsampling[0], nn.ConvTranspose2d)
    # the first conv of a block always has dilation 1, the others the stage's dilation
    assert [m.conv.dilation for m in unet.encoder[3][1].convs] == [(1, 1), (2, 2)]
    assert [m.conv.dilation for m in unet.decoder[0].conv_block.convs] == [(1, 1), (2, 2)]
    with torch.no_grad():
        assert unet.eval()(torch.randn(1, 3, 32, 32))[-1].shape == (1, 4, 32, 32)


def test_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    three_stages = dict(
        base_channels=4,
        num_stages=3,
        strides=(1, 1, 1),
        enc_num_convs=(2, 2, 2),
        dec_num_convs=(2, 2),
        downsamples=(True, True),
        enc_dilations=(1, 1, 1),
        dec_dilations=(1, 1),
    )
    plain, ckpt = UNet(**three_stages), UNet(**three_stages, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    outs = []
    for m in (plain, ckpt):
        y = m(x)[-1]
        (g,) = torch.autograd.grad(y.square().sum(), x)
        outs.append((y, g))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_norm_eval_keeps_batchnorm_in_eval_mode():
    unet = UNet(base_channels=4, norm_eval=True).train()
    bns = [m for m in unet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(m.training for m in unet.modules() if isinstance(m, UpConvBlock))


def test_inconsistent_arguments_raise():
    with pytest.raises(ValueError, match="dec_num_convs"):
        UNet(dec_num_convs=(2, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="strides"):
        UNet(strides=(1, 3, 1, 1, 1))
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="nearest")
