"""What every backbone shares: the output-stride error, NHWC -> NCHW, the guard around pretrained downloads."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

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


def timm_weights_guard(model_name: str, pretrained: bool) -> ContextManager[None]:
    """Around `timm.create_model(model_name, pretrained=True)`: timm's weights from the local cache, or a fast error
    naming the ways out when offline (src/weights/offline.py; imported here: weights sit above models)."""
    if not pretrained:
        return nullcontext()
    from src.weights.offline import timm_pretrained

    return timm_pretrained(model_name)


def smp_weights_guard(encoder_name: str, pretrained: bool) -> ContextManager[None]:
    """The same guard for an smp encoder's "imagenet" weights."""
    if not pretrained:
        return nullcontext()
    from src.weights.offline import check_pretrained, smp_weights_source

    source = smp_weights_source(encoder_name, "imagenet")
    if source is None:
        return nullcontext()
    return check_pretrained(source, "model.backbone.pretrained=false", "model.backbone.pretrained_path")


def require_timm_family(model_name: str, family: str, backbone: str, examples: str) -> None:
    """ValueError unless timm defines `model_name` in `timm.models.<family>` (checked before building, since
    another family's model would fail on this backbone's keyword arguments with a less helpful message)."""
    import timm.models

    module = timm.models.model_entrypoint(timm.models.get_arch_name(model_name)).__module__
    if module.rsplit(".", 1)[-1] != family:
        raise ValueError(
            f"model.backbone.model_name={model_name}: {backbone} needs a timm {examples} model, got one from "
            f"{module}; use TimmBackbone for other models"
        )
