"""A convolution over the concatenation of feature maps bilinearly resized to one of them, computed without the
resized maps where that is cheaper.

UPerNet fuses its FPN levels, PSPNet its input with the pooled maps, DeepLabV3 the ASPP branches with the image
pool, and SegFormer its levels this way: upsample the coarse maps, concatenate, convolve. A bilinear resize works
per channel and a convolution's channel mixing is linear, so the convolution of an upsampled part equals: mix its
channels at its own resolution once per kernel tap (a 1x1 conv to `kh * kw * out` channels), then resize and shift
each tap's map and sum them, as two matmuls with the interpolation matrices whose rows are shifted by the tap's
offset (zero where the tap reads the convolution's zero padding); a 1x1 kernel has no taps to shift, so its
output is simply resized. UPerNet's `fpn_bottleneck` is about two thirds of its training step's arithmetic, three
quarters of it on the upsampled levels; PyTorch and timm have nothing that skips them, hence this class. The
result equals the direct form up to float rounding (tests/models/test_resized_concat_conv.py).
`direct_resized_concat()` switches back to the direct form (FLOP counts of the model's arithmetic, A/B timings);
export and tracing always take it, so that their graphs hold no matrices of one input size.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.models.layers import conv_module
from src.models.utils import interpolation_matrix, like_memory_format, resize, switched

_DIRECT = contextvars.ContextVar("direct_resized_concat", default=False)
# a part goes the low-resolution way when that costs at most this share of its direct convolution's multiply-adds
# (the rest of the work, reshapes and the sum of the parts, moves memory rather than computing)
MAX_COST_SHARE = 0.5


def direct_resized_concat() -> contextlib.AbstractContextManager:
    """Within: every `ResizedConcatConv2d` resizes, concatenates and convolves, as the model is written."""
    return switched(_DIRECT, True)


def tap_matrix(
    n_in: int, n_out: int, kernel: int, dilation: int, padding: int, align_corners: bool
) -> torch.Tensor:
    """`[n_out, kernel * n_in]` along one axis: block t resizes a line of `n_in` to `n_out` and reads it at the
    offset of kernel tap t (`t * dilation - padding`), zero where that falls outside (the zero padding)."""
    resized = interpolation_matrix(n_in, n_out, align_corners)
    out = resized.new_zeros(n_out, kernel, n_in)
    for t in range(kernel):
        offset = t * dilation - padding
        lo, hi = max(0, -offset), min(n_out, n_out - offset)
        if lo < hi:
            out[lo:hi, t] = resized[lo + offset : hi + offset]
    return out.view(n_out, kernel * n_in)


@functools.lru_cache(maxsize=128)
def _tap_matrix_on(
    n_in: int,
    n_out: int,
    kernel: int,
    dilation: int,
    padding: int,
    align_corners: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """`tap_matrix` on `device` in `dtype`, kept (the one cache of them): a copy to a GPU in every step would wait
    for the GPU. Made outside inference mode: one made in a validation loop could not be saved for a training
    step's backward."""
    with torch.inference_mode(False):
        matrix = tap_matrix(n_in, n_out, kernel, dilation, padding, align_corners)
        return matrix.to(device=device, dtype=dtype)


class ResizedConcatConv2d(nn.Conv2d):
    """`nn.Conv2d` that also takes a list of maps: their concatenation, each map bilinearly resized (as `resize`)
    to the size of map number `size_from`, is what it convolves. Its parameters and state dict are the plain
    convolution's."""

    def __init__(self, *args, align_corners: bool = False, size_from: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.align_corners, self.size_from = align_corners, size_from

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return super().forward(x)
        parts = list(x)
        channels = sum(p.shape[1] for p in parts)
        if channels != self.in_channels:
            raise ValueError(
                f"ResizedConcatConv2d: parts with {channels} channels, expected {self.in_channels}"
            )
        if self._direct():
            return super().forward(torch.cat([self._resized(p, parts) for p in parts], dim=1))
        size = tuple(parts[self.size_from].shape[-2:])
        out, start = None, 0
        for low, group in self._groups(parts, size):
            end = start + sum(p.shape[1] for p in group)
            weight = self.weight[:, start:end]
            if low:
                y = self._low_resolution(group[0], weight, size)
            else:  # consecutive full-size parts: one convolution of their concatenation
                y = F.conv2d(
                    torch.cat([self._resized(p, parts) for p in group], dim=1),
                    weight,
                    None,
                    self.stride,
                    self.padding,
                    self.dilation,
                )
            out, start = (y if out is None else out + y), end
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return like_memory_format(out, parts[self.size_from])

    def _groups(
        self, parts: list[torch.Tensor], size: tuple[int, int]
    ) -> Iterator[tuple[bool, list[torch.Tensor]]]:
        """The parts in order, as (low resolution?, parts): each low-resolution part alone, consecutive others
        together."""
        run: list[torch.Tensor] = []
        for part in parts:
            if self._cheaper_low(part, size):
                if run:
                    yield False, run
                    run = []
                yield True, [part]
            else:
                run.append(part)
        if run:
            yield False, run

    def _direct(self) -> bool:
        return (
            _DIRECT.get()
            or self.stride != (1, 1)
            or self.groups != 1
            or isinstance(self.padding, str)
            or self.padding_mode != "zeros"
            or torch.compiler.is_exporting()
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
        )

    def _resized(self, part: torch.Tensor, parts: list[torch.Tensor]) -> torch.Tensor:
        # in the layout of the map that sets the size: a 1x1 map resizes to a contiguous one, and a concatenation
        # of mixed layouts is contiguous (see like_memory_format)
        ref = parts[self.size_from]
        return like_memory_format(resize(part, ref.shape[-2:], align_corners=self.align_corners), ref)

    def _matmul_costs(self, h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
        """Multiply-adds per output channel of the two matmul orders (width first, height first); for a 1x1
        kernel those of the bilinear resize itself (4 per output value)."""
        (kh, kw), (big_h, big_w) = self.kernel_size, size
        if (kh, kw) == (1, 1):
            return 4 * big_h * big_w, 4 * big_h * big_w
        return (
            kh * h * big_w * kw * w + big_h * big_w * kh * h,
            big_h * kh * h * kw * w + big_h * big_w * kw * w,
        )

    def _cheaper_low(self, part: torch.Tensor, size: tuple[int, int]) -> bool:
        h, w = part.shape[-2:]
        if (h, w) == size:
            return False
        taps = self.kernel_size[0] * self.kernel_size[1]
        direct = part.shape[1] * taps * size[0] * size[1]
        low = part.shape[1] * taps * h * w + min(self._matmul_costs(h, w, size))
        return low <= MAX_COST_SHARE * direct

    def _low_resolution(self, x: torch.Tensor, weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """conv(resize(x, size)) computed at x's resolution: one 1x1 conv per tap, then `A @ q @ B^T`."""
        if self.kernel_size == (1, 1):  # no taps to shift: the 1x1 conv commutes with the resize itself
            return resize(F.conv2d(x, weight), size, align_corners=self.align_corners)
        n, c, h, w = x.shape
        out_c, (kh, kw) = weight.shape[0], self.kernel_size
        q = F.conv2d(x, weight.permute(0, 2, 3, 1).reshape(out_c * kh * kw, c, 1, 1))
        # [N, out, kh, kw, h, w] -> [N, out, kh * h, kw * w]: rows (tap row, y), columns (tap column, x)
        q = q.reshape(n, out_c, kh, kw, h, w).transpose(3, 4).reshape(n, out_c, kh * h, kw * w)
        a = _tap_matrix_on(
            h, size[0], kh, self.dilation[0], self.padding[0], self.align_corners, q.device, q.dtype
        )
        b = _tap_matrix_on(
            w, size[1], kw, self.dilation[1], self.padding[1], self.align_corners, q.device, q.dtype
        )
        width_first, height_first = self._matmul_costs(h, w, size)
        return a @ (q @ b.t()) if width_first <= height_first else (a @ q) @ b.t()


def resized_concat_conv_module(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    norm: str = "bn",
    align_corners: bool = False,
    size_from: int = 0,
) -> nn.Module:
    """`conv_module` (conv -> norm -> ReLU) whose conv is a `ResizedConcatConv2d`: call it with the list of maps
    to concatenate, each at its own size."""
    block = conv_module(in_channels, out_channels, kernel_size, norm=norm)
    conv = block.conv
    block.conv = ResizedConcatConv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        align_corners=align_corners,
        size_from=size_from,
    )
    block.conv.load_state_dict(conv.state_dict())
    return block
