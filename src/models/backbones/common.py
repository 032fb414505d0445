"""What every backbone shares: the one error for an output stride a backbone cannot give, and NHWC -> NCHW."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def output_stride_error(model_name: str, requested: int, supported: Sequence[int], why: str) -> ValueError:
    """The readable error for `model.backbone.output_stride` values a backbone cannot produce."""
    supported = sorted(set(supported))
    listed = " and ".join(str(s) for s in supported)
    only = "only " if len(supported) == 1 else ""
    return ValueError(
        f"model.backbone.output_stride={requested}: {model_name} supports {only}{listed} ({why}); "
        f"use output_stride={max(supported)}"
    )


def check_output_stride(model_name: str, requested: int | None, supported: Sequence[int], why: str) -> None:
    """Raise `output_stride_error` unless `requested` is None (the backbone's own) or in `supported`."""
    if requested is not None and requested not in supported:
        raise output_stride_error(model_name, requested, supported, why)


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W), contiguous (heads run convolutions on it)."""
    return x.permute(0, 3, 1, 2).contiguous()
