"""Small shared layers: conv-norm-act blocks with a selectable normalisation.

timm's `ConvNormAct` is MMCV's `ConvModule` (conv without bias when followed by a norm, then norm, then act),
so heads use it rather than a home-made block. Only the norm choice by name is ours.
"""

from __future__ import annotations

from functools import partial

from timm.layers import BatchNormAct2d, ConvNormAct, SyncBatchNormAct, convert_sync_batchnorm

__all__ = ["NORMS", "conv_module", "convert_sync_batchnorm", "norm_layer", "revert_sync_batchnorm"]
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


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every `nn.SyncBatchNorm` in `module` by an `nn.BatchNorm2d` holding the same parameter and buffer
    tensors (an optimiser or DDP built before still sees them); returns `module`, or its replacement.

    PyTorch's SyncBatchNorm trains on GPUs only: on CPUs each process then normalises with its own batch
    statistics, as MMEngine's `revert_sync_batchnorm` does. The state-dict keys are the same.
    """
    if isinstance(module, nn.SyncBatchNorm):
        with_act = isinstance(module, SyncBatchNormAct)  # timm's norm + activation (`conv_module`'s)
        bn = (BatchNormAct2d if with_act else nn.BatchNorm2d)(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if with_act:
            bn.act, bn.drop = module.act, module.drop
        if module.affine:
            bn.weight, bn.bias = module.weight, module.bias
        if module.track_running_stats:
            bn.running_mean, bn.running_var = module.running_mean, module.running_var
            bn.num_batches_tracked = module.num_batches_tracked
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        new = revert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def conv_module(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    norm: str = "bn",
    **kwargs,
) -> nn.Module:
    """Conv -> norm -> ReLU with 'same' padding for odd kernels, as MMCV's ConvModule.

    The norm and the ReLU are one timm layer (`BatchNormAct2d`); timm has no SyncBatchNorm form of it to build,
    so `syncbn` builds BatchNorm and converts it with timm's `convert_sync_batchnorm` (the ReLU kept)."""
    padding = dilation * (kernel_size - 1) // 2
    block = ConvNormAct(
        in_channels,
        out_channels,
        kernel_size,
        padding=padding,
        dilation=dilation,
        norm_layer=norm_layer("bn" if norm == "syncbn" else norm),
        act_layer=nn.ReLU,
        **kwargs,
    )
    return convert_sync_batchnorm(block) if norm == "syncbn" else block
