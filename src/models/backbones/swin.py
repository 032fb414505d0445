"""Swin Transformer as MMSegmentation builds it (`mmseg/models/backbones/swin.py`), on timm's Swin modules.

MMSegmentation's SwinTransformer is timm's without the classifier and final norm, plus one LayerNorm per returned
level (`norm0`..`norm3`). Its stages pad each block's input to whole windows (a 512x512 crop: 128x128 tokens,
padded to 133x133 for 7x7 windows), with shifted windows in every other block, also at stage 4. timm builds the
same parameters (`always_partition=True`, `dynamic_img_size=True`), but its block rolls the tokens before padding
them where MMSegmentation pads, then rolls: the attention masks then differ whenever a side is not a multiple of
the window. `_PadThenShiftBlock` swaps only those two steps. Swin-T: 27,520,698 parameters, as MMSegmentation's.

The size arithmetic (stage sizes, window padding and partition, shift mask, PatchMerging's padding) is written
here rather than taken from timm: with a symbolic height and width, timm's nested `Mod`/`-1`-view expressions
kept `torch.export` simplifying for over 15 minutes; these export in seconds with bit-identical outputs
(docs/export_onnx.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import nn

from src.models.backbones.common import (
    check_output_stride,
    nhwc_to_nchw,
    require_timm_family,
    timm_weights_guard,
)
from src.models.backbones.timm_backbone import check_timm_name, load_pretrained_weights


def _ceil_div(n: int, d: int) -> int:
    """`ceil(n / d)` as one floor division: a symbolic size stays a short expression under `torch.export`."""
    return (n + d - 1) // d


def _ceil_to(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple`."""
    return _ceil_div(n, multiple) * multiple


def _band_ids(n: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Which of the three shift bands (0: `[0, n - window)`, 1: `[n - window, n - shift)`, 2: `[n - shift, n)`)
    each row holds: timm's `get_attn_mask` slices, computed by comparison so that a symbolic `n` needs no guard."""
    i = torch.arange(n, device=device)
    return (i >= n - window).long() + (i >= n - shift).long()


def _partition(x: torch.Tensor, win_h: int, win_w: int) -> torch.Tensor:
    """`(B, H, W, C)` -> `(B * H/win_h * W/win_w, win_h * win_w, C)` windows: timm's `window_partition` with every
    size spelled out (a `-1` in a view makes the exporter divide symbolic products, slow to simplify) and an
    explicit copy where timm reshapes (traced with one window per side, a reshape records a view that is wrong
    at sizes with more windows)."""
    B, H, W, C = x.shape
    rows, cols = H // win_h, W // win_w
    x = (
        x.view(B, rows, win_h, cols, win_w, C)
        .permute(0, 1, 3, 2, 4, 5)
        .clone(memory_format=torch.contiguous_format)
    )
    return x.view(B * rows * cols, win_h * win_w, C)


def _unpartition(windows: torch.Tensor, B: int, H: int, W: int, win_h: int, win_w: int) -> torch.Tensor:
    """The inverse of `_partition` (timm's `window_reverse`), sizes spelled out for the same reason."""
    rows, cols, C = H // win_h, W // win_w, windows.shape[-1]
    x = windows.view(B, rows, cols, win_h, win_w, C).permute(0, 1, 3, 2, 4, 5)
    return x.clone(memory_format=torch.contiguous_format).view(B, H, W, C)


class _PadThenShiftBlock(SwinTransformerBlock):
    """timm's Swin block with MMSegmentation's order: pad to whole windows, then cyclic shift (see module doc).

    Same parameters and math as timm's; the window and mask code is written here so that `torch.export` with a
    symbolic height and width finishes in seconds (see `_ceil_to`, `_partition`).
    """

    def _shift_mask(self, Hp: int, Wp: int, x: torch.Tensor) -> torch.Tensor:
        """timm's `get_attn_mask` over the padded map (same regions, same -100 / 0 values), export-friendly."""
        (win_h, win_w), (shift_h, shift_w) = self.window_size, self.shift_size
        regions = 3 * _band_ids(Hp, win_h, shift_h, x.device)[:, None] + _band_ids(
            Wp, win_w, shift_w, x.device
        )
        windows = _partition(regions[None, :, :, None], win_h, win_w)[..., 0]
        differ = windows.unsqueeze(1) != windows.unsqueeze(2)
        return torch.zeros(differ.shape, dtype=x.dtype, device=x.device).masked_fill(differ, -100.0)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        win_h, win_w = self.window_size
        Hp, Wp = _ceil_to(H, win_h), _ceil_to(W, win_w)
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        mask = self._shift_mask(Hp, Wp, x) if shifted else None  # over the padded, shifted map, as MMSeg's
        windows = self.attn(_partition(x, win_h, win_w), mask=mask)
        x = _unpartition(windows, B, Hp, Wp, win_h, win_w)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))  # timm flattens to (B, HW, C) first: same math


class _SizedPatchMerging(PatchMerging):
    """timm's PatchMerging (pad odd sides by one, 2x2 tokens -> one) to an output size given by the caller."""

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        B, H, W, C = x.shape
        h, w = size or (_ceil_div(H, 2), _ceil_div(W, 2))
        x = F.pad(x, (0, 0, 0, 2 * w - W, 0, 2 * h - H))
        x = x.reshape(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5)
        x = x.clone(memory_format=torch.contiguous_format).view(B, h, w, 4 * C)  # see _partition on the copy
        return self.reduction(self.norm(x))


class SwinBackbone(nn.Module):
    """MMSegmentation's SwinTransformer backbone over timm's `swin_*` models.

    Args:
        model_name: a timm Swin (`swin_tiny_patch4_window7_224`, `swin_small_...`, `swin_base_patch4_window12_384`).
        out_indices: stages to return (each through its own LayerNorm `norm{i}`).
        output_stride: 32 only (Swin has no dilated form); anything else raises.
        pretrained: timm's ImageNet weights (needs the hub or timm's cache).
        pretrained_path: a local timm-named state dict instead.
        drop_path_rate: stochastic depth (MMSegmentation's UPerNet Swin configs: 0.3).
        **kwargs: passed to `timm.create_model` (e.g. `embed_dim`, `depths`, `num_heads` for a small test model).
    """

    def __init__(
        self,
        model_name: str = "swin_tiny_patch4_window7_224",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_path_rate: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_timm_name(model_name)
        require_timm_family(
            model_name, "swin_transformer", "SwinBackbone", "Swin V1 (swin_tiny_patch4_window7_224, ...)"
        )
        check_output_stride(model_name, output_stride, (32,), "no dilation in Swin")
        with timm_weights_guard(model_name, pretrained and not pretrained_path):
            model = timm.create_model(
                model_name,
                pretrained=pretrained and not pretrained_path,
                num_classes=0,
                drop_path_rate=drop_path_rate,
                dynamic_img_size=True,  # any input size: attention masks built per forward
                always_partition=True,  # full windows and shifts at every stage, whatever the input size
                embed_layer=partial(PatchEmbed, dynamic_img_pad=True),  # pad to the patch size, as MMSeg
                **kwargs,
            )
        if type(model).__name__ != "SwinTransformer":
            raise ValueError(
                f"model.backbone.model_name={model_name}: SwinBackbone needs a timm Swin (V1) model "
                f"(swin_tiny_patch4_window7_224, ...), got {type(model).__name__}; use TimmBackbone for others"
            )
        for block in model.modules():
            if type(block) is SwinTransformerBlock:
                block.__class__ = _PadThenShiftBlock  # same module, MMSegmentation's pad/shift order
            elif type(block) is PatchMerging:
                block.__class__ = _SizedPatchMerging  # same module and math, sizes from the input's
        self.patch_embed, self.layers = model.patch_embed, model.layers
        self.out_indices = list(out_indices)
        info = model.feature_info
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(info[i]["num_chs"]))
        if pretrained_path:
            load_pretrained_weights(self, pretrained_path)
        self.model_name = model_name
        self.out_channels = [info[i]["num_chs"] for i in self.out_indices]
        self.reductions = [info[i]["reduction"] for i in self.out_indices]

    @property
    def min_dynamic_trace_size(self) -> int:
        """The smallest input side at which every stage has two windows or more per side.

        Traced where a stage has one window per side, `torch.export` turns the contiguity checks on that size-1
        window grid into guards (`rows == 1`), and the program (loaded without guards, see `src.serve.export`)
        computes wrong shapes at larger sizes; a dynamic export therefore traces at this size or larger.
        """
        patch = max(self.patch_embed.patch_size)
        return max(patch * 2**i * max(stage.blocks[0].window_size) + 1 for i, stage in enumerate(self.layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, _, H, W = x.shape
        patch_h, patch_w = self.patch_embed.patch_size
        outs = []
        for i, stage in enumerate(self.layers):
            # Stage i's token map: ceil(H / (patch * 2^i)), which is what padding by one at every merge gives,
            # but computed from the input's size: under torch.export each stage's size is then one short
            # expression of H instead of a nest of paddings (see the module doc).
            h, w = _ceil_div(H, patch_h * 2**i), _ceil_div(W, patch_w * 2**i)
            x = self._embed(x, h, w) if i == 0 else stage.downsample(x, (h, w))
            x = stage.blocks(x)
            if i in self.out_indices:
                outs.append(nhwc_to_nchw(getattr(self, f"norm{i}")(x)))
        return outs

    def _embed(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """timm's PatchEmbed with `dynamic_img_pad` (zero-pad to whole patches, as MMSegmentation) -> NHWC."""
        patch_h, patch_w = self.patch_embed.patch_size
        x = F.pad(x, (0, patch_w * w - x.shape[3], 0, patch_h * h - x.shape[2]))
        return self.patch_embed.norm(self.patch_embed.proj(x).permute(0, 2, 3, 1))
