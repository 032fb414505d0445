"""ResizedConcatConv2d: the convolution of resized, concatenated maps, computed at the coarse maps' own
resolution, equals the direct form (resize, concatenate, convolve) in its output and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.models.heads import ASPPHead, PSPHead, SegformerHead, UPerHead
from src.models.heads.psp import PPM
from src.models.resized_concat_conv import ResizedConcatConv2d, direct_resized_concat, tap_matrix


def _direct(conv: ResizedConcatConv2d, parts: list[torch.Tensor]) -> torch.Tensor:
    size = parts[conv.size_from].shape[-2:]
    resized = [F.interpolate(p, size=size, mode="bilinear", align_corners=conv.align_corners) for p in parts]
    return F.conv2d(
        torch.cat(resized, 1), conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation
    )


def _value_and_grads(fn, parts, conv, grad):  # noqa: ANN001, ANN202
    for t in [*parts, *conv.parameters()]:
        t.grad = None
    out = fn(conv, parts)
    out.backward(grad)
    return out.detach(), [t.grad.clone() for t in [*parts, *conv.parameters()]]


@pytest.fixture
def low_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The sizes of the parts convolved at their own resolution (`_low_resolution`), recorded."""
    low = ResizedConcatConv2d._low_resolution
    calls: list[tuple[int, ...]] = []

    def counted(self, x, *args):  # noqa: ANN001, ANN002, ANN202
        calls.append(tuple(x.shape[-2:]))
        return low(self, x, *args)

    monkeypatch.setattr(ResizedConcatConv2d, "_low_resolution", counted)
    return calls


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-5 * max(scale, 1.0), (got - want).abs().max()


@pytest.mark.parametrize(
    ("kernel", "dilation", "sizes", "align_corners", "bias", "size_from"),
    [
        (3, 1, [(16, 20), (8, 10), (4, 5), (2, 3)], False, False, 0),  # UPerNet's levels, a 2x3 top
        (3, 1, [(13, 9), (1, 1), (2, 2), (3, 3), (6, 6)], True, True, 0),  # PSP's pyramid, odd sizes
        (
            3,
            1,
            [(2, 3), (1, 1), (2, 2), (3, 3), (6, 6)],
            False,
            False,
            0,
        ),  # a pooled map larger than the input
        (
            3,
            2,
            [(1, 1), (12, 12), (12, 12)],
            False,
            False,
            1,
        ),  # ASPP: the pool first, full-size branches after
        (1, 1, [(16, 16), (8, 8), (7, 5)], False, True, 0),  # SegFormer's 1x1 fusion; a non-integer scale
    ],
)
def test_low_resolution_form_equals_resize_concat_conv(
    kernel, dilation, sizes, align_corners, bias, size_from, low_calls
):  # noqa: ANN001
    torch.manual_seed(0)
    parts = [torch.randn(2, 64, *s, requires_grad=True) for s in sizes]
    conv = ResizedConcatConv2d(
        64 * len(sizes), 5, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=bias,
        align_corners=align_corners, size_from=size_from,
    )  # fmt: skip
    grad = torch.randn(2, 5, *sizes[size_from])
    want, want_grads = _value_and_grads(_direct, parts, conv, grad)
    got, got_grads = _value_and_grads(lambda c, p: c(p), parts, conv, grad)
    assert low_calls, "no part took the low-resolution form"
    _close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        _close(g, w)
    with direct_resized_concat():  # the switch gives the direct form itself
        _close(conv(parts), want)


def test_coarse_parts_are_convolved_at_their_own_size(monkeypatch: pytest.MonkeyPatch):
    conv = ResizedConcatConv2d(4 * 64, 4, 3, padding=1)
    parts = [torch.randn(1, 64, 32 >> i, 32 >> i) for i in range(4)]
    seen: list[tuple[int, ...]] = []
    conv2d = F.conv2d

    def recording(x, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(tuple(x.shape[-2:]))
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", recording)
    conv(parts)
    assert sorted(seen) == [(4, 4), (8, 8), (16, 16), (32, 32)]
    seen.clear()
    conv([p[:, :3] for p in parts] + [torch.randn(1, 244, 32, 32)])  # 3 channels: the matmuls would cost more
    assert seen == [(32, 32)]
    seen.clear()
    with direct_resized_concat():
        conv(parts)
    assert seen == [(32, 32)]


def test_tap_matrix_shifts_the_resize_and_zeroes_the_padding():
    a = tap_matrix(2, 4, 3, 1, 1, False).view(4, 3, 2)
    resized = F.interpolate(torch.eye(2).view(2, 1, 2, 1), size=(4, 1), mode="bilinear").view(2, 4).t()
    assert torch.equal(a[:, 1], resized)  # the centre tap reads in place
    assert torch.equal(a[1:, 0], resized[:-1]) and not a[0, 0].any()  # the top tap reads one row up
    assert torch.equal(a[:-1, 2], resized[1:]) and not a[-1, 2].any()


def test_channels_last_parts_give_a_channels_last_output():
    conv = ResizedConcatConv2d(8, 4, 3, padding=1)
    cl = torch.channels_last
    parts = [
        torch.randn(2, 4, 8, 8).contiguous(memory_format=cl),
        torch.randn(2, 4, 4, 4).contiguous(memory_format=cl),
    ]
    out = conv(parts)
    assert out.is_contiguous(memory_format=cl)
    _close(out, _direct(conv, parts))


def test_matrices_made_in_inference_mode_serve_a_later_backward():
    """Lightning validates (inference mode) before it trains: the cached matrices must be saveable for backward."""
    conv = ResizedConcatConv2d(2 * 64, 4, 3, padding=1)
    parts = [torch.randn(1, 64, 20, 22), torch.randn(1, 64, 10, 11)]
    with torch.inference_mode():
        conv(parts)
    parts = [p.requires_grad_() for p in parts]
    conv(parts).sum().backward()
    assert parts[1].grad is not None and parts[1].grad.abs().sum() > 0


def test_a_tensor_is_convolved_as_by_nn_conv2d():
    conv = ResizedConcatConv2d(4, 2, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_wrong_channel_total_names_the_counts():
    conv = ResizedConcatConv2d(8, 2, 1)
    with pytest.raises(ValueError, match="parts with 6 channels, expected 8"):
        conv([torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)])


# wide enough (64 channels) that the coarse parts take the low-resolution form
HEADS = {
    "uper": lambda: UPerHead(in_channels=[4, 6, 8, 10], channels=64, num_classes=3),
    "psp": lambda: PSPHead(in_channels=10, channels=64, num_classes=3),
    "aspp": lambda: ASPPHead(in_channels=10, channels=64, num_classes=3, dilations=(1, 2, 3)),
    "segformer": lambda: SegformerHead(in_channels=[4, 6, 8, 10], channels=64, num_classes=3),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_give_the_direct_forms_logits_and_gradients(name: str, low_calls: list[tuple[int, ...]]):
    torch.manual_seed(0)
    head = HEADS[name]().train()
    if name in ("uper", "segformer"):
        feats = [torch.randn(2, c, 32 >> i, 32 >> i) for i, c in enumerate([4, 6, 8, 10])]
    else:
        feats = [torch.randn(2, 10, 12, 12)]
    results = []
    for direct in (True, False):
        head.zero_grad(set_to_none=True)
        with torch.random.fork_rng():
            if direct:
                with direct_resized_concat():
                    out = head(feats)
            else:
                out = head(feats)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in head.parameters() if p.grad is not None]))
    (want, want_grads), (got, got_grads) = results
    assert low_calls, "no part took the low-resolution form"
    _close(got, want)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads, strict=True):
        _close(g, w)


def test_ppm_forward_is_its_pooled_maps_resized_to_the_input():
    """`PPM.forward` (MMSegmentation's PPM API, upsampled branches) and `PPM.pooled` (what our heads pass to a
    `ResizedConcatConv2d`) agree."""
    ppm = PPM((1, 2, 3), in_channels=6, channels=4).eval()
    x = torch.randn(2, 6, 10, 14)
    for up, low in zip(ppm(x), ppm.pooled(x), strict=True):
        assert up.shape == (2, 4, 10, 14)
        assert torch.equal(up, F.interpolate(low, size=(10, 14), mode="bilinear", align_corners=False))
