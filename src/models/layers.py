"""Small shared layers: conv-norm-act blocks with a selectable normalisation.

timm's `ConvNormAct` is MMCV's `ConvModule` (conv without bias when followed by a norm, then norm, then act),
so heads use it rather than a home-made block. Only the norm choice by name is ours.
"""

from __future__ import annotations

from functools import partial

from timm.layers import ConvNormAct
from torch import nn

NORMS = ("bn", "syncbn", "gn")


def norm_layer(norm: str = "bn", num_groups: int = 32) -> type[nn.Module] | partial:
    """The norm class for a name in NORMS.

    `syncbn` builds `nn.SyncBatchNorm`, which needs a process group while training; Lightning's
    `sync_batchnorm=True` (runtime `sync_bn`) converts every BN instead, which is the usual way.
    """
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "syncbn":
        return nn.SyncBatchNorm
    if norm == "gn":
        return partial(nn.GroupNorm, num_groups)
    raise ValueError(f"norm='{norm}' is not one of {NORMS}")


def conv_module(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    norm: str = "bn",
    **kwargs,
) -> nn.Module:
    """Conv -> norm -> ReLU with 'same' padding for odd kernels, as MMCV's ConvModule."""
    padding = dilation * (kernel_size - 1) // 2
    return ConvNormAct(
        in_channels,
        out_channels,
        kernel_size,
        padding=padding,
        dilation=dilation,
        norm_layer=norm_layer(norm),
        act_layer=nn.ReLU,
        **kwargs,
    )
