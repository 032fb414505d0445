"""Per-parameter learning-rate and weight-decay multipliers, here and in MMSegmentation, for the same parameters.

A paramwise rule is written against parameter NAMES (`custom_keys: {norm: {decay_mult: 0}}` matches every name
that contains `norm`), and this project's modules are not always named as MMSegmentation's, so equal rules in
the two configs do not prove equal training. This module compares what each parameter gets:

    ours = our_multipliers(segmentor, paramwise)                    # our name -> (lr_mult, decay_mult)
    names = mmseg_names(segmentor, mmseg_keys)                      # our name -> MMSegmentation's name
    theirs = mmseg_multipliers(mmseg_keys, paramwise_cfg, constructor)  # MMSegmentation's name -> multipliers

`mmseg_keys` is MMSegmentation's state-dict names and shapes (`../shared/mmseg/keys/<model>.json`).
`mmseg_multipliers` applies MMEngine's `DefaultOptimWrapperConstructor` rules for `custom_keys` (the longest
matching key wins, ties alphabetically) and MMSegmentation's `LearningRateDecayOptimizerConstructor` for
ConvNeXt (`stage_wise` / `layer_wise`), written here from their definitions, since neither is a dependency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from src.engine.optim import build_param_groups

Multipliers = tuple[float, float]  # (lr multiplier, weight-decay multiplier)


def our_multipliers(model: nn.Module, paramwise: Mapping[str, Any] | None) -> dict[str, Multipliers]:
    """Each trainable parameter's multipliers as `src.engine.optim.build_param_groups` sets them (base LR and weight
    decay 1)."""
    out = {}
    for group in build_param_groups(model, 1.0, 1.0, paramwise):
        for name in group["param_names"]:
            out[name] = (float(group["lr"]), float(group["weight_decay"]))
    return out


def mmseg_names(model: nn.Module, mmseg_keys: Mapping[str, list[int]]) -> dict[str, str]:
    """Our parameter name -> the MMSegmentation name whose tensor the checkpoint converter puts there.

    Each MMSegmentation tensor is filled with its own number and converted (`src.weights.mmseg`); a parameter of
    ours that holds one number throughout came from that tensor (renames, splits, permutations and resizes keep a
    constant). Parameters made from several tensors, or none, are left out."""
    from src.weights.mmseg import convert_mmseg_state_dict

    names = list(mmseg_keys)
    state = {}
    for i, name in enumerate(names):
        shape = mmseg_keys[name]
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.long)
        elif name.endswith("relative_position_index"):  # a function of the window size, checked on conversion
            w = round(shape[0] ** 0.5)
            seq = (torch.arange(0, (2 * w - 1) * w, 2 * w - 1)[:, None] + torch.arange(w)[None, :]).reshape(
                1, -1
            )
            state[name] = (seq + seq.T).flip(1).contiguous()
        else:
            state[name] = torch.full(shape, float(i + 1))
    ours = convert_mmseg_state_dict(state, model, source="mmseg key list", strict=False)
    params = dict(model.named_parameters())
    out = {}
    for name, value in ours.items():
        if name not in params or not value.is_floating_point() or value.numel() == 0:
            continue
        first = float(value.flatten()[0])
        if first.is_integer() and 1 <= first <= len(names) and bool((value == first).all()):
            out[name] = names[int(first) - 1]
    return out


def mmseg_multipliers(
    mmseg_keys: Mapping[str, list[int]],
    paramwise_cfg: Mapping[str, Any] | None,
    constructor: str | None = None,
) -> dict[str, Multipliers]:
    """MMSegmentation's multipliers for every name of `mmseg_keys` (parameters and buffers alike: the caller
    looks up the parameters)."""
    paramwise = dict(paramwise_cfg or {})
    if constructor == "LearningRateDecayOptimizerConstructor":
        return {name: _layer_decay(name, shape, paramwise) for name, shape in mmseg_keys.items()}
    unsupported = sorted(set(paramwise) - {"custom_keys"})
    if unsupported:
        raise NotImplementedError(f"paramwise rules {unsupported} need module types, not only names")
    custom = paramwise.get("custom_keys") or {}
    keys = sorted(sorted(custom), key=len, reverse=True)  # MMEngine: longest first, ties alphabetically
    out = {}
    for name in mmseg_keys:
        key = next((k for k in keys if k in name), None)
        setting = custom[key] if key is not None else {}
        out[name] = (float(setting.get("lr_mult", 1.0)), float(setting.get("decay_mult", 1.0)))
    return out


def _layer_decay(name: str, shape: list[int], paramwise: Mapping[str, Any]) -> Multipliers:
    """MMSegmentation's `LearningRateDecayOptimizerConstructor` for a ConvNeXt segmentor: the layer (or stage)
    id of a name, the LR scale `decay_rate ** (num_layers + 2 - id - 1)`, no weight decay on 1-D tensors and
    biases."""
    num_layers = int(paramwise["num_layers"]) + 2
    rate = float(paramwise["decay_rate"])
    stage_wise = paramwise.get("decay_type", "layer_wise") == "stage_wise"
    parts = name.split(".")
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        layer = 0
    elif name.startswith("backbone.downsample_layers"):
        stage = int(parts[2])
        layer = 0 if stage_wise else {0: 0, 1: 2, 2: 3}.get(stage, int(paramwise["num_layers"]))
    elif name.startswith("backbone.stages"):
        stage, block = int(parts[2]), int(parts[3])
        if stage_wise:
            layer = stage + 1
        else:
            layer = {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, int(paramwise["num_layers"]))
    else:
        layer = num_layers - 1 if stage_wise else int(paramwise["num_layers"]) + 1
    no_decay = len(shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
    return rate ** (num_layers - layer - 1), 0.0 if no_decay else 1.0
