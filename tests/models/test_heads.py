"""Decode heads PSP, ASPP (DeepLabV3) and depthwise-separable ASPP (DeepLabV3+) on tiny tensors: output shapes,
gradient flow to every parameter, ignored pixels, and their structure as MMSegmentation builds it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models import EncoderDecoder, TimmBackbone
from src.models.heads import ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead
from src.models.losses import CrossEntropyLoss, DiceLoss
from src.models.samplers import OHEMPixelSampler
from src.models.utils import native_resize_gradient, resize

NUM_CLASSES = 5
# Tiny pyramid as a ResNet at output stride 8 gives it: stage 1 at stride 4, stages 2-4 at stride 8.
FEAT_CHANNELS = (4, 6, 8, 16)


def _feats(n: int = 2, size: int = 8) -> list[torch.Tensor]:
    sizes = (2 * size, size, size, size)
    return [torch.randn(n, c, s, s) for c, s in zip(FEAT_CHANNELS, sizes)]


def _psp(**kw):
    return PSPHead(**(dict(in_channels=16, channels=8, num_classes=NUM_CLASSES, in_index=3) | kw))


def _aspp(**kw):
    args = dict(in_channels=16, channels=8, num_classes=NUM_CLASSES, in_index=3, dilations=(1, 2, 3))
    return ASPPHead(**(args | kw))


def _sep_aspp(**kw):
    args = dict(in_channels=16, channels=8, num_classes=NUM_CLASSES, in_index=3, dilations=(1, 2, 3))
    return DepthwiseSeparableASPPHead(**(args | {"c1_in_channels": 4, "c1_channels": 3} | kw))


# (factory, output resolution factor vs the stride-8 input: DeepLabV3+ decodes at the stage-1 resolution)
HEADS = {"psp": (_psp, 1), "aspp": (_aspp, 1), "sep_aspp": (_sep_aspp, 2)}


@pytest.mark.parametrize("name", HEADS)
def test_head_logits_at_feature_resolution(name):
    factory, factor = HEADS[name]
    head = factory()
    for size in (8, 7):  # odd sizes too: pooled branches and the c1 skip are resized back exactly
        logits = head(_feats(size=size))
        assert logits.shape == (2, NUM_CLASSES, factor * size, factor * size)


@pytest.mark.parametrize("name", HEADS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    factory, _ = HEADS[name]
    head = factory(dropout_ratio=0.0).train()  # batch of 2: BN of the 1x1-pooled branches has 2 values
    feats = _feats()
    masks = torch.randint(0, NUM_CLASSES, (2, 32, 32))
    loss = sum(head.loss_by_feat(head(feats), masks).values())
    loss.backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", HEADS)
def test_ignored_pixels_contribute_nothing(name):
    torch.manual_seed(0)
    factory, _ = HEADS[name]
    head = factory().eval()
    logits = head(_feats())
    masks = torch.randint(0, NUM_CLASSES, (2, 32, 32))
    ignored = torch.rand(2, 32, 32) < 0.3
    masks[ignored] = 255
    loss = head.loss_by_feat(logits, masks)["loss_ce"]
    # independent computation: cross-entropy summed over the valid pixels only, divided by all pixels
    # (MMSegmentation's default avg_non_ignore=False)
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    valid = ~ignored
    expected = F.cross_entropy(up.permute(0, 2, 3, 1)[valid], masks[valid], reduction="sum") / masks.numel()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # and no gradient flows into the logits of ignored pixels
    up = resize(logits.detach(), (32, 32)).requires_grad_()
    CrossEntropyLoss()(up, masks).backward()
    assert (up.grad.permute(0, 2, 3, 1)[ignored] == 0).all()
    assert (up.grad.permute(0, 2, 3, 1)[valid].abs().sum(-1) > 0).all()


@pytest.fixture(scope="module")
def resnet18_os8():
    return TimmBackbone("resnet18", out_indices=(1, 2, 3, 4), output_stride=8)


@pytest.mark.parametrize("name", HEADS)
def test_through_encoder_decoder_logits_at_input_size(name, resnet18_os8):
    torch.manual_seed(0)
    kwargs = dict(in_channels=512, channels=8, num_classes=NUM_CLASSES, in_index=3)
    head = {
        "psp": lambda: PSPHead(**kwargs),
        "aspp": lambda: ASPPHead(**kwargs),
        "sep_aspp": lambda: DepthwiseSeparableASPPHead(c1_in_channels=64, c1_channels=4, **kwargs),
    }[name]()
    aux = FCNHead(
        in_channels=256, channels=4, num_classes=NUM_CLASSES, in_index=2, num_convs=1, concat_input=False
    )
    model = EncoderDecoder(resnet18_os8, head, auxiliary_head=aux)
    images = torch.randn(2, 3, 36, 44)  # not a multiple of 8
    masks = torch.randint(0, NUM_CLASSES, (2, 36, 44))
    losses = model.train().loss(images, masks)
    assert set(losses) == {"loss_ce", "aux_loss_ce"} and all(torch.isfinite(v) for v in losses.values())
    assert model.eval().predict(images).shape == (2, NUM_CLASSES, 36, 44)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_psp_pools_to_each_scale_and_fuses_with_a_3x3_conv():
    head = _psp(pool_scales=(1, 2, 3, 6))
    assert [branch[0].output_size for branch in head.psp_modules] == [1, 2, 3, 6]
    assert all(branch[1].conv.kernel_size == (1, 1) for branch in head.psp_modules)
    # input concatenated with one `channels`-wide map per scale
    assert head.bottleneck.conv.in_channels == 16 + 4 * 8 and head.bottleneck.conv.kernel_size == (3, 3)
    # every conv before a BN has no bias; only the classifier does
    assert head.conv_seg.bias is not None
    assert all(c.bias is None for c in _convs(head) if c is not head.conv_seg)


def test_aspp_branch_is_1x1_for_dilation_1_else_dilated_3x3():
    head = _aspp()
    assert [(b.conv.kernel_size, b.conv.dilation, b.conv.padding) for b in head.aspp_modules] == [
        ((1, 1), (1, 1), (0, 0)),
        ((3, 3), (2, 2), (2, 2)),
        ((3, 3), (3, 3), (3, 3)),
    ]
    assert head.bottleneck.conv.in_channels == 4 * 8  # image pool + 3 branches


def test_image_pool_branch_is_global():
    """A change in one corner of the input reaches the opposite corner only through the image-pool branch."""
    torch.manual_seed(0)
    head = _aspp(dropout_ratio=0.0).eval()
    feats = _feats(n=1, size=16)
    out = head(feats)
    feats[3][..., 0, 0] += 10.0
    changed = (head(feats) - out).abs()[0, :, -1, -1]
    assert changed.sum() > 0
    head.image_pool[1].conv.weight.data.zero_()  # cut the global branch: the far corner no longer changes
    out = head(feats)
    feats[3][..., 0, 0] += 10.0
    torch.testing.assert_close(head(feats)[0, :, -1, -1], out[0, :, -1, -1])


def test_sep_aspp_uses_depthwise_separable_convs_and_the_stage1_skip():
    head = _sep_aspp()
    plain, *separable = head.aspp_modules
    assert plain.conv.kernel_size == (1, 1)
    for branch, dilation in zip(separable, (2, 3)):
        dw, pw = branch.depthwise_conv.conv, branch.pointwise_conv.conv
        assert dw.groups == dw.in_channels == dw.out_channels == 16 and dw.dilation == (dilation, dilation)
        assert pw.kernel_size == (1, 1) and pw.out_channels == 8
        assert isinstance(branch.depthwise_conv.bn, nn.BatchNorm2d)
    # the ASPP bottleneck stays a plain 3x3 conv (MMSegmentation 1.x); the c1 skip is a 1x1 conv 4 -> 3
    assert head.bottleneck.conv.groups == 1 and head.bottleneck.conv.kernel_size == (3, 3)
    assert head.c1_bottleneck.conv.in_channels == 4 and head.c1_bottleneck.conv.out_channels == 3
    assert head.sep_bottleneck[0].depthwise_conv.conv.in_channels == 8 + 3


def test_sep_aspp_without_the_skip_decodes_at_the_aspp_resolution():
    head = DepthwiseSeparableASPPHead(
        in_channels=16, channels=8, num_classes=NUM_CLASSES, in_index=3, c1_in_channels=0, c1_channels=48
    )
    assert head.c1_bottleneck is None
    assert head(_feats()).shape == (2, NUM_CLASSES, 8, 8)


def test_pooled_branches_with_batchnorm_need_two_images_to_train():
    """As in MMSegmentation and torchvision: BN over a 1x1-pooled map needs >1 value per channel."""
    head = _psp().train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        head(_feats(n=1))
    assert head.eval()(_feats(n=1)).shape == (1, NUM_CLASSES, 8, 8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: _psp(pool_scales=()), "pool_scales"),
        (lambda: _aspp(dilations=()), "dilations"),
        (lambda: _sep_aspp(c1_channels=-1), "c1_channels"),
    ],
)
def test_bad_arguments_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_heads_ignore_index_is_given_once_for_its_losses_and_sampler():
    losses = [CrossEntropyLoss(), DiceLoss(loss_weight=3.0)]
    head = FCNHead(
        in_channels=4, channels=4, num_classes=3, losses=losses, sampler=OHEMPixelSampler(), ignore_index=7
    )
    assert [lo.ignore_index for lo in head.losses] == [7, 7] and head.sampler.ignore_index == 7
    # None (a head built in code without it) keeps each loss's own
    kept = FCNHead(in_channels=4, channels=4, num_classes=3, losses=[CrossEntropyLoss(ignore_index=9)])
    assert kept.losses[0].ignore_index == 9


@pytest.mark.parametrize(
    ("shape", "size", "align_corners"),
    [((2, 5, 16, 16), (64, 64), False), ((1, 3, 13, 17), (50, 41), True), ((2, 4, 40, 30), (16, 12), False)],
)
def test_bilinear_resize_gradient_equals_pytorchs(shape, size, align_corners):
    # on a CPU in float32 the gradient is two matmuls (src/models/utils.py); the forward is F.interpolate's own
    x = torch.randn(*shape, requires_grad=True)
    ref = x.detach().clone().requires_grad_()
    out = resize(x, size, align_corners=align_corners)
    expected = F.interpolate(ref, size=size, mode="bilinear", align_corners=align_corners)
    assert type(out.grad_fn).__name__ == "_BilinearMatmulBackwardBackward" and torch.equal(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=1e-5)
    assert resize(x.detach(), size).grad_fn is None  # inference: F.interpolate as it is
    channels_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    resize(channels_last, size, align_corners=align_corners).backward(grad)
    assert channels_last.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last.grad, ref.grad, rtol=1e-5, atol=1e-5)
    with native_resize_gradient():  # FLOP counts and A/B timings
        assert type(resize(x, size).grad_fn).__name__.startswith("UpsampleBilinear2DBackward")
