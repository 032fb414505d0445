"""Tensor helpers shared by heads and segmentors."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


def resize(
    x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False
) -> torch.Tensor:
    """Resize `[N, C, H, W]` logits or features to `size`; a no-op when the size already matches."""
    # symbolic sizes (ONNX export with dynamic height and width) stay symbolic: int() would fix them at the
    # traced value (seen with a padded input: the logits came out at the traced size)
    size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size)
    # the shortcut is a Python branch: under export it would be frozen at the traced sizes (a pooled branch that
    # happens to match its input when traced would never be resized at other sizes), so exporting always resizes
    if tuple(x.shape[-2:]) == size and not torch.compiler.is_exporting():
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    if (
        mode == "bilinear"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.requires_grad
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and _MATMUL_GRADIENT.get()
    ):
        return _BilinearMatmulBackward.apply(x, size, align_corners)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


_MATMUL_GRADIENT = contextvars.ContextVar("matmul_resize_gradient", default=True)


@contextlib.contextmanager
def switched(var: contextvars.ContextVar, value: object) -> Iterator[None]:
    """Within: `var` holds `value` (this thread or task only); the switches of the model's computing forms."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def native_resize_gradient() -> contextlib.AbstractContextManager:
    """Within: the bilinear resize's gradient as PyTorch computes it. For FLOP counts (the model's arithmetic,
    not the matmuls that compute its resize gradient here) and A/B timings."""
    return switched(_MATMUL_GRADIENT, False)


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, align_corners: bool) -> torch.Tensor:
    """`[n_out, n_in]`: row i holds the weights of bilinear output i along one axis, taken from `F.interpolate`
    itself (a resize of the identity), so that its edge clamping and `align_corners` rule are the same."""
    eye = torch.eye(n_in).view(n_in, 1, n_in, 1)
    out = F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=align_corners)
    return out.view(n_in, n_out).t().contiguous()


class _BilinearMatmulBackward(torch.autograd.Function):
    """A bilinear resize whose gradient is two matmuls, `Mh^T @ grad @ Mw`, on a CPU in float32.

    Ours because PyTorch's CPU `upsample_bilinear2d_backward` scatters one pixel at a time: for SegFormer's
    150-class logits resized to the label size for the loss it was the largest operator of the training step,
    and slower than these two matmuls (docs/benchmarks.md). The forward stays `F.interpolate`; the gradient equals
    its own up to float rounding (tests/models/test_heads.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:  # noqa: ANN001
        ctx.shape, ctx.align_corners = tuple(x.shape[-2:]), align_corners
        ctx.channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (h_in, w_in), (h_out, w_out) = ctx.shape, tuple(grad.shape[-2:])
        mh = interpolation_matrix(h_in, h_out, ctx.align_corners).to(grad.dtype)
        mw = interpolation_matrix(w_in, w_out, ctx.align_corners).to(grad.dtype)
        with torch.autocast("cpu", enabled=False):
            if h_out * w_in * (w_out + h_in) <= h_in * w_out * (h_out + w_in):  # the cheaper order
                out = mh.t() @ (grad @ mw)
            else:
                out = (mh.t() @ grad) @ mw
        # in the input's layout, so that a channels_last model's convolution gets its gradient without a conversion
        return out.contiguous(memory_format=torch.channels_last) if ctx.channels_last else out, None, None


def like_memory_format(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`x` in `ref`'s memory format (channels_last or contiguous); a no-op when it already is.

    For the branches upsampled from a 1x1 pooled map (PSP's pyramid, ASPP's image pool) before a concatenation:
    the layout of a 1x1 map is ambiguous, so `F.interpolate` returns it contiguous even in a channels_last model,
    and `torch.cat` of mixed layouts is contiguous, which costs the next convolution a full-size conversion
    (forward and backward) and its weight a copy."""
    if ref.dim() == 4 and not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x
