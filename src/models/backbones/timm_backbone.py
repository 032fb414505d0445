"""One factory over timm for every backbone: a feature pyramid from any model with `features_only`, its levels'
channels and strides read from timm's `feature_info` (probed on the meta device), returned NCHW.

MMSegmentation's ResNetV1c is timm's `resnet50c`/`resnet101c` (`resnet18c`/`resnet34c`: `resnet_v1c.py`).
`output_stride=8` dilates the last two stages by 2 and 4; timm gives the first block of each dilated stage the
previous stage's dilation, which is MMSegmentation's `contract_dilation`. timm's BasicBlock (ResNet-18/34)
dilates both 3x3 convs, MMSegmentation's only the first, so the second is set back to 1 (`mmseg_basic_block`).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import src.models.backbones.resnet_v1c  # noqa: F401  (registers resnet18c / resnet34c with timm)
from src.models.backbones.common import nhwc_to_nchw, output_stride_error, timm_weights_guard
from src.models.layers import NORMS

log = logging.getLogger(__name__)

PYRAMID = (4, 8, 16, 32)


class TimmBackbone(nn.Module):
    """A timm model as a multi-scale feature extractor.

    Args:
        model_name: any timm model that supports `features_only` (`resnet50c`, `convnext_tiny`, ...).
        out_indices: which feature levels to return, as timm counts them; None: the levels at strides 4, 8, 16, 32
            (`default_out_indices`).
        output_stride: 8 or 16 (dilated last stages) where timm's model supports it; None or the model's own
            stride (32 for most, 16 for ViT-B/16) leaves it as built. Other values raise one error listing the
            strides the model supports.
        pretrained: load timm's pretrained weights (needs the hub, or timm's local cache).
        pretrained_path: load weights from a local file instead (`weights_only=True`).
        norm: None (the model's own), "bn", "syncbn" or "gn" (32 groups): timm's `norm_layer`, where it takes one.
        mmseg_basic_block: undilate the second conv of ResNet BasicBlocks, as MMSegmentation's BasicBlock.
        **kwargs: passed to `timm.create_model` (e.g. `drop_path_rate=0.1`). Models that take `dynamic_img_size`
            (ViT, Swin) get `dynamic_img_size=True` unless it is given, so that any input size works.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] | None = None,
        output_stride: int | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        in_chans: int = 3,
        norm: str | None = None,
        mmseg_basic_block: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_timm_name(model_name)
        kwargs = dict(kwargs, in_chans=in_chans)
        if norm is not None:
            kwargs["norm_layer"] = _timm_norm_layer(norm)
        levels, kwargs = _probe_with_dynamic_size(model_name, kwargs)
        native = max(r for _, r in levels)
        if output_stride is not None and output_stride != native:
            if _probe_output_stride(model_name, kwargs, output_stride) is None:
                ok = [s for s in (8, 16, 32) if s < native and _probe_output_stride(model_name, kwargs, s)]
                raise output_stride_error(model_name, output_stride, [native, *ok], _why_not(model_name))
            kwargs["output_stride"] = output_stride
        if out_indices is None:
            out_indices = default_out_indices([r for _, r in levels])
        self.body = _create(
            model_name, pretrained and not pretrained_path, out_indices=tuple(out_indices), **kwargs
        )
        if pretrained_path:
            load_pretrained_weights(self.body, pretrained_path)
        if mmseg_basic_block:
            undilate_basic_block_conv2(self.body)
        self.model_name = model_name
        self.out_indices = list(out_indices)
        # timm's feature wrappers say their layout (Swin's FeatureListNet is NHWC); EfficientNet's have no attribute
        self.channels_last_out = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        self.out_channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.body(x))
        return [nhwc_to_nchw(f) for f in feats] if self.channels_last_out else feats


def default_out_indices(reductions: Sequence[int]) -> list[int]:
    """The levels a segmentation head wants from timm's `feature_info` strides: the deepest level at each of strides
    4, 8, 16, 32 when the model has all four (ResNet: [1, 2, 3, 4] of strides 2..32); for a plain transformer whose
    levels all share one stride, 4 evenly spaced ones ending at the last (ViT-B's 12 blocks: [2, 5, 8, 11], as
    MMSegmentation's ViT configs); else the last 4."""
    reductions = list(reductions)
    if all(s in reductions for s in PYRAMID):
        return [max(i for i, r in enumerate(reductions) if r == s) for s in PYRAMID]
    n = len(reductions)
    if len(set(reductions)) == 1 and n >= 4:
        return [round((k + 1) * n / 4) - 1 for k in range(4)]
    return list(range(n))[-4:]


def check_timm_name(model_name: str) -> None:
    """ValueError naming `model.backbone.model_name` and the closest timm names when timm does not know it."""
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models('*pattern*'))"
    raise ValueError(f"model.backbone.model_name={model_name}: not a timm model{hint}")


def _create(model_name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm.create_model(features_only=True) with errors that name the config key at fault."""
    try:
        with timm_weights_guard(model_name, pretrained):
            return timm.create_model(model_name, pretrained=pretrained, features_only=True, **kwargs)
    except TypeError as e:
        found = re.search(r"unexpected keyword argument '([^']*)'", str(e))
        if found is None:
            raise
        bad = found.group(1)
        raise ValueError(
            f"model.backbone.{bad}={kwargs.get(bad)!r}: timm's {model_name} takes no argument '{bad}' "
            f"(model.backbone.model_name={model_name}); remove it from the backbone config"
        ) from e
    except (AssertionError, KeyError, ValueError) as e:
        extra = {k: v for k, v in kwargs.items() if k not in ("out_indices", "in_chans")}
        raise ValueError(
            f"model.backbone.model_name={model_name}: timm could not build it with {extra} "
            f"({type(e).__name__}: {e}); check the backbone's extra arguments"
        ) from e


def _probe(model_name: str, **kwargs: Any) -> list[tuple[int, int]]:
    """(channels, stride) of every feature level timm's model has, built on the meta device (no memory, ~0.1 s)."""
    kwargs.pop("out_indices", None)
    try:
        with torch.device("meta"):
            body = _create(model_name, False, **kwargs)
    except (NotImplementedError, RuntimeError):  # a model whose construction cannot run on meta tensors
        body = _create(model_name, False, **kwargs)
    return [(info["num_chs"], info["reduction"]) for info in body.feature_info.info]


def _probe_with_dynamic_size(model_name: str, kwargs: dict[str, Any]) -> tuple[list[tuple[int, int]], dict]:
    """Probe the model, with `dynamic_img_size=True` where it takes that argument (ViT, Swin: any input size)."""
    if "dynamic_img_size" not in kwargs:
        try:
            return _probe(model_name, **kwargs, dynamic_img_size=True), dict(kwargs, dynamic_img_size=True)
        except ValueError as e:
            if "dynamic_img_size" not in str(e):
                raise
    return _probe(model_name, **kwargs), kwargs


def _probe_output_stride(
    model_name: str, kwargs: dict[str, Any], stride: int
) -> list[tuple[int, int]] | None:
    """The levels with `output_stride=stride`, or None when timm's model cannot dilate to it (no such argument,
    an assertion, or an argument it ignores: the deepest stride is checked)."""
    try:
        levels = _probe(model_name, **kwargs, output_stride=stride)
    except ValueError:
        return None
    return levels if max(r for _, r in levels) == stride else None


def _why_not(model_name: str) -> str:
    """A short reason for the stride error, from timm's class of the model."""
    try:
        with torch.device("meta"):
            cls = type(timm.create_model(model_name, pretrained=False)).__name__
    except Exception:  # noqa: BLE001 - only used to word a message
        return "no dilation in timm's model"
    return f"no dilation in timm's {cls}"


def undilate_basic_block_conv2(model: nn.Module) -> None:
    """Give the second 3x3 conv of every timm ResNet BasicBlock dilation 1 (padding 1)."""
    from timm.models.resnet import BasicBlock

    for block in model.modules():
        if isinstance(block, BasicBlock) and block.conv2.dilation != (1, 1):
            block.conv2.dilation, block.conv2.padding = (1, 1), (1, 1)


def _timm_norm_layer(norm: str) -> str | type[nn.Module]:
    """timm's name for a norm: timm resolves norm_layer through `get_norm_layer`, which drops a partial's
    positional arguments, so GroupNorm must be named ("groupnorm": timm's GroupNorm, 32 groups)."""
    names = {"bn": "batchnorm2d", "syncbn": nn.SyncBatchNorm, "gn": "groupnorm"}
    if norm not in names:
        raise ValueError(f"model.backbone.norm='{norm}' is not one of {NORMS}")
    return names[norm]


def load_pretrained_weights(
    module: nn.Module,
    path: str | Path,
    config_key: str = "model.backbone.pretrained_path",
    key_prefixes: Sequence[str] = ("",),
) -> None:
    """Load a local state dict (a classification checkpoint, say) into `module`, ignoring what does not fit, and
    warn about tensors left at their initial values. `key_prefixes`: prefixes tried on the file's keys (the one
    that fits most tensors wins), e.g. ("", "model.") for both an smp encoder's own keys and a bare timm model's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{config_key}: no such file '{path}'")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    own = module.state_dict()
    states = [state]
    if any(k.removeprefix("backbone.").startswith("stem.") for k in state):
        # maybe MMSegmentation/mmcv ResNet names (`open-mmlab://resnet50_v1c`: a deep stem `stem.N`), read through the
        # ResNet key map of the MMSegmentation checkpoint loader (imported here: weights sit above models); only a
        # candidate, since timm's ConvNeXt names its own stem `stem.N` too: the reading that fits most tensors wins
        from src.weights.keymaps.resnet import resnet_to_timm

        states.append(resnet_to_timm(state))
    candidates = [{f"{prefix}{k}": v for k, v in s.items()} for s in states for prefix in key_prefixes]
    fitting = max(
        ({k: v for k, v in c.items() if k in own and own[k].shape == v.shape} for c in candidates), key=len
    )
    if not fitting:
        raise ValueError(
            f"{config_key} '{path}': none of its {len(state)} tensors match the model "
            f"(expected keys like {list(own)[:3]})"
        )
    missing = [k for k in own if k not in fitting]
    if missing:
        log.warning(
            "%s '%s': %d of %d tensors not in the file (kept at init), e.g. %s",
            config_key,
            path,
            len(missing),
            len(own),
            missing[:3],
        )
    module.load_state_dict(fitting, strict=False)
