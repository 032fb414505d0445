"""Per-module optimiser settings: MMSegmentation's `paramwise_cfg` as torch parameter groups.

`schedule.paramwise` = `{custom_keys: {<key>: {lr_mult, decay_mult}}, norm_decay_mult, bias_decay_mult,
flat_decay_mult}`, with MMEngine's `DefaultOptimWrapperConstructor` rules:

- a parameter whose name (relative to the segmentor, e.g. `decode_head.conv_seg.weight`) contains a custom key
  takes that key's `lr_mult` and `decay_mult`; when several keys match, the LONGEST one wins (the alphabetically
  first among equally long ones);
- otherwise: parameters of normalisation layers take `norm_decay_mult`, biases of other layers
  `bias_decay_mult`, any other 1-D parameter `flat_decay_mult` (each only when given).

`schedule.paramwise.layer_decay` = `{decay_rate, decay_type: stage_wise | layer_wise, num_layers}` is
MMSegmentation's `LearningRateDecayOptimizerConstructor` (ConvNeXt recipes) instead: the LR of backbone layer `i`
is scaled by `decay_rate ** (num_layers + 1 - i)` (the heads, the last "layer", keep the base LR), and 1-D
parameters and biases get no weight decay. The backbone numbers its own parameters (`layer_id`), since only it
knows its stages.

Parameters with equal settings share one group (MMEngine makes one per parameter; the arithmetic is the same),
named after the rule that made it (`lr-SGD/decode_head` in the LR monitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

# every normalisation layer of torch (timm's BatchNormAct2d, LayerNorm2d, GroupNorm1 subclass these)
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
PARAMWISE_KEYS = ("custom_keys", "norm_decay_mult", "bias_decay_mult", "flat_decay_mult", "layer_decay")
LAYER_DECAY_KEYS = ("decay_rate", "decay_type", "num_layers")
DECAY_TYPES = ("stage_wise", "layer_wise")
CUSTOM_KEY_KEYS = ("lr_mult", "decay_mult")


def build_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    paramwise: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` in groups with their own `lr` and `weight_decay`.

    Args:
        model: the module whose `named_parameters()` names are matched (the segmentor).
        lr, weight_decay: the optimiser's base values, which the multipliers scale.
        paramwise: the rules above (`schedule.paramwise`); None or empty gives one group with the base values.
    """
    rules = _check_paramwise(paramwise or {})
    if rules.get("layer_decay"):
        return layer_decay_groups(model, lr, weight_decay, rules["layer_decay"])
    custom = rules.get("custom_keys") or {}
    # MMEngine's order: longest first, ties alphabetically
    keys = sorted(sorted(custom), key=len, reverse=True)
    groups: dict[tuple[str, float, float], dict[str, Any]] = {}
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_TYPES)
        for local_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{local_name}" if module_name else local_name
            group, lr_mult, decay_mult = _rule_for(name, local_name, param.ndim, is_norm, keys, custom, rules)
            key = (group, lr * lr_mult, weight_decay * decay_mult)
            _add(groups.setdefault(key, _group(*key)), name, param)
    return list(groups.values())


def _group(name: str, lr: float, weight_decay: float) -> dict[str, Any]:
    return {"name": name, "lr": lr, "weight_decay": weight_decay, "params": [], "param_names": []}


def _add(group: dict[str, Any], name: str, param: nn.Parameter) -> None:
    group["params"].append(param)
    group["param_names"].append(name)


def layer_decay_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """MMSegmentation's layer-wise LR decay: one group per (layer, decay / no decay)."""
    rate = float(layer_decay["decay_rate"])
    decay_type = str(layer_decay.get("decay_type", "layer_wise"))
    num_layers = int(layer_decay["num_layers"])
    backbone = getattr(model, "backbone", None)
    layer_id = getattr(backbone, "layer_id", None)
    if layer_id is None:
        raise ValueError(
            f"schedule.paramwise.layer_decay: the backbone {type(backbone).__name__} does not number its layers "
            "(no layer_id method); MMSegmentation uses layer decay with ConvNeXt (model/backbone=convnext_tiny)"
        )
    own = getattr(backbone, "num_layers", num_layers)
    if own != num_layers:
        raise ValueError(
            f"schedule.paramwise.layer_decay.num_layers={num_layers}, but the backbone {type(backbone).__name__} "
            f"({getattr(backbone, 'model_name', '')}) counts {own} layers: set num_layers: {own}"
        )
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone."):
            layer = int(layer_id(name[len("backbone.") :], decay_type=decay_type))
        else:
            layer = num_layers + 1  # heads and necks: the last layer, the base LR
        no_decay = param.ndim == 1 or name.endswith(".bias")
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        group = _group(key, lr * rate ** (num_layers + 1 - layer), 0.0 if no_decay else weight_decay)
        _add(groups.setdefault(key, group), name, param)
    return list(groups.values())


def _rule_for(
    name: str,
    local_name: str,
    ndim: int,
    is_norm: bool,
    keys: list[str],
    custom: Mapping[str, Mapping[str, float]],
    rules: Mapping[str, Any],
) -> tuple[str, float, float]:
    """(group name, lr multiplier, weight-decay multiplier) of one parameter."""
    for key in keys:
        if key in name:
            return key, float(custom[key].get("lr_mult", 1.0)), float(custom[key].get("decay_mult", 1.0))
    if is_norm and rules.get("norm_decay_mult") is not None:
        return "norm", 1.0, float(rules["norm_decay_mult"])
    if local_name == "bias" and not is_norm and rules.get("bias_decay_mult") is not None:
        return "bias", 1.0, float(rules["bias_decay_mult"])
    if ndim == 1 and rules.get("flat_decay_mult") is not None:
        return "flat", 1.0, float(rules["flat_decay_mult"])
    return "default", 1.0, 1.0


def _check_paramwise(paramwise: Mapping[str, Any]) -> Mapping[str, Any]:
    unknown = sorted(set(paramwise) - set(PARAMWISE_KEYS))
    if unknown:
        raise ValueError(
            f"schedule.paramwise: unknown keys {unknown}; expected some of {list(PARAMWISE_KEYS)}"
        )
    layer_decay = paramwise.get("layer_decay")
    if layer_decay:
        missing = [k for k in ("decay_rate", "num_layers") if k not in layer_decay]
        unknown_ld = sorted(set(layer_decay) - set(LAYER_DECAY_KEYS))
        if missing or unknown_ld or layer_decay.get("decay_type", "layer_wise") not in DECAY_TYPES:
            raise ValueError(
                f"schedule.paramwise.layer_decay={dict(layer_decay)}: expected {{decay_rate: <float>, num_layers: "
                f"<int>, decay_type: {' | '.join(DECAY_TYPES)}}}"
            )
        if paramwise.get("custom_keys"):
            raise ValueError(
                "schedule.paramwise: layer_decay and custom_keys cannot be combined (as MMSegmentation)"
            )
    for key, setting in (paramwise.get("custom_keys") or {}).items():
        if not isinstance(setting, Mapping):
            raise ValueError(
                f"schedule.paramwise.custom_keys.{key}={setting!r}: expected a mapping such as {{lr_mult: 10}}"
            )
        bad = sorted(set(setting) - set(CUSTOM_KEY_KEYS))
        if bad:
            raise ValueError(
                f"schedule.paramwise.custom_keys.{key}: unknown keys {bad}; expected some of {list(CUSTOM_KEY_KEYS)}"
            )
    return paramwise
