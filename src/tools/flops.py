"""Parameters and FLOPs of a model, counted by PyTorch's `torch.utils.flop_counter.FlopCounterMode`.

Conventions, stated because tools differ:
- FLOPs here are PyTorch's: a multiply-add counts 2 (a conv or matmul of M multiply-adds is 2M FLOPs).
  MMSegmentation's `tools/analysis_tools/get_flops.py` (mmengine's fvcore-style counter) and fvcore report
  multiply-adds and call them FLOPs, so their "FLOPs" are the MACs printed here (= FLOPs / 2).
- Counted: convolutions, matrix products (linear, attention). Not counted: biases, normalisation, activations,
  pooling, interpolation, element-wise adds. They are a few percent of a CNN's FLOPs; MMSegmentation's counter
  leaves them out as well (mmengine counts only a few of them: BN and upsampling, at 1 per element).
- A segmentor is counted on its inference network, `EncoderDecoder.encode_decode` on one whole image: backbone,
  neck and decode head; auxiliary heads are trained only and add parameters but no inference FLOPs.
- Counted on the model as it is written (`model_arithmetic`): where this project computes a part with fewer
  operations than its definition (a head's resized maps convolved at their own size), the count is still the
  definition's, as MMSegmentation's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.models.resized_concat_conv import direct_resized_concat
from src.models.utils import native_resize_gradient


def num_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def param_counts(segmentor: nn.Module) -> dict[str, int]:
    """Parameters in total and per part of an `EncoderDecoder`: backbone, neck, decode_head, auxiliary_head.

    For an smp model (`SMPHead`: the whole smp network is the decode head) the smp encoder is reported as the
    backbone and the rest (decoder and segmentation head) as the decode head.
    """
    decode_head = getattr(segmentor, "decode_head", None)
    counts = {
        "total": num_params(segmentor),
        "backbone": num_params(getattr(segmentor, "backbone", None)),
        "neck": num_params(getattr(segmentor, "neck", None)),
        "decode_head": num_params(decode_head),
        "auxiliary_head": num_params(getattr(segmentor, "auxiliary_heads", None)),
    }
    encoder = getattr(getattr(decode_head, "model", None), "encoder", None)
    if encoder is not None:  # smp: the encoder lives in the head
        counts["backbone"] += num_params(encoder)
        counts["decode_head"] -= num_params(encoder)
    return counts


@contextlib.contextmanager
def model_arithmetic() -> Iterator[None]:
    """Within: the model computed as it is written (as MMSegmentation computes it), for FLOP counts: PyTorch's
    resize gradient, not its matmul form (`native_resize_gradient`), and resized maps concatenated and convolved
    (`direct_resized_concat`), not convolved at their own size. GFLOP/s are then of the model's arithmetic."""
    with native_resize_gradient(), direct_resized_concat():
        yield


@torch.no_grad()
def count_flops(module: nn.Module, *inputs: torch.Tensor) -> dict[str, Any]:
    """FLOPs (2 per multiply-add) of `module(*inputs)`: the total and per direct submodule (by attribute name)."""
    with FlopCounterMode(display=False, depth=2) as counter, model_arithmetic():
        module(*inputs)
    root = type(module).__name__
    per_child: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == root:
            per_child[parts[1]] = int(sum(ops.values()))
    return {"flops": int(counter.get_total_flops()), "per_module": per_child}


def segmentor_complexity(
    segmentor: nn.Module, shape: Sequence[int], batch_size: int = 1, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Parameters and inference FLOPs of an `EncoderDecoder` on `batch_size` images of `shape` = [H, W].

    The images are normalised random tensors (FLOPs do not depend on the values); the model runs in eval mode.
    """
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape={list(shape)}: expected [height, width] (positive integers)")
    h, w = (int(s) for s in shape)
    segmentor = segmentor.to(device).eval()
    images = torch.randn(batch_size, 3, h, w, device=device)
    counted = count_flops(segmentor, images)  # EncoderDecoder.forward is encode_decode
    flops = counted["flops"]
    return {
        "model": getattr(segmentor, "name", None) or type(segmentor).__name__,
        "input_shape": [batch_size, 3, h, w],
        "params": param_counts(segmentor),
        "flops": flops,
        "macs": flops // 2,
        "flops_per_module": counted["per_module"],
    }


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (k, M, G, T)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()
