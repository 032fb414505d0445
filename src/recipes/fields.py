"""The fields a recipe is compared on, and the normalisation both sides share.

A recipe is a flat `{field: value}` mapping; values are plain (numbers, strings, bools, None, lists, dicts
with sorted keys), so that equal settings compare equal whichever way a config spells them:

- `test.mode`, `test.crop_size`, `test.stride`: whole or sliding-window inference; `test.tta.scales`,
  `test.tta.flip`: the multi-scale + flip test (`tta=true`);
- `model.pretrained`, `model.drop_path_rate`, `model.norm` (BN | SyncBN), `model.mean`, `model.std`, `model.channels_seen` (RGB | BGR);
- `decode_head.*` and `auxiliary_head.*` (`auxiliary_head.N.*` for a list): `type`, `num_classes`,
  `channels`, `dropout_ratio`, `align_corners`, and each loss as `loss.K.type`, `loss.K.loss_weight`,
  `loss.K.use_sigmoid`, ... with every constructor default filled in;
- `optimizer.*` (`type`, `lr`, `momentum`, `betas`, `weight_decay`, `paramwise`, `clip_grad`, `precision`,
  `accumulate`);
- `schedule.*` (`warmup.type`, `warmup.start_factor`, `warmup.iters`, `main.type`, `main.power`,
  `main.eta_min`, `main.begin`, `main.end`, `max_iters`, `val_interval`, `ckpt_interval`);
- `batch.per_gpu`, `batch.gpus`, `data.crop_size`;
- `train_pipeline.steps` and `train_pipeline.<Step>.<arg>` in MMSegmentation's step names (`RandomResize`,
  `RandomCrop`, `RandomFlip`, `PhotoMetricDistortion`, `Pad`), `test_pipeline.*` alike;
- `data.dataset`, `data.reduce_zero_label`, `data.ignore_index`, `metric`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# MMSegmentation 1.2.2's constructor defaults of the losses its configs name (mmseg/models/losses/*.py), so a
# `loss_decode` entry that leaves an argument out compares with one that writes the default
MMSEG_LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "CrossEntropyLoss": {
        "loss_weight": 1.0,
        "use_sigmoid": False,
        "class_weight": None,
        "avg_non_ignore": False,
    },
    "DiceLoss": {
        "loss_weight": 1.0,
        "use_sigmoid": True,
        "activate": True,
        "naive_dice": False,
        "eps": 1e-3,
        "reduction": "mean",
    },
    "LovaszLoss": {
        "loss_weight": 1.0,
        "loss_type": "multi_class",
        "classes": "present",
        "per_image": False,
        "reduction": "mean",
        "class_weight": None,
    },
    "FocalLoss": {
        "loss_weight": 1.0,
        "use_sigmoid": True,
        "gamma": 2.0,
        "alpha": 0.5,
        "class_weight": None,
    },
}
# arguments that name or place a loss rather than define it
LOSS_IGNORED_ARGS = ("type", "_target_", "loss_name", "ignore_index", "reduction")

# mmseg.datasets.transforms.PhotoMetricDistortion's defaults
PHOTOMETRIC_DEFAULTS = {
    "brightness_delta": 32,
    "contrast_range": [0.5, 1.5],
    "saturation_range": [0.5, 1.5],
    "hue_delta": 18,
}
# the pipeline steps that are compared, in MMSegmentation's names; loading and packing are not
COMPARED_STEPS = ("RandomResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion", "Pad", "Resize")


def plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts with sorted keys, integral floats kept as floats: a canonical value."""
    if isinstance(value, Mapping):
        return {str(k): plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


def box_scale(scale: Sequence[int] | None, keep_ratio: bool) -> list[int] | None:
    """A resize scale as it acts: with `keep_ratio` the (w, h) pair is a (long edge, short edge) box, so
    both orders are the same resize (mmcv's `rescale_size`, `src.data.transforms.rescale_size`)."""
    if scale is None:
        return None
    scale = [int(s) for s in scale]
    return sorted(scale, reverse=True) if keep_ratio else scale


def loss_fields(prefix: str, losses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`<prefix>.loss.K.<arg>` for each loss: its `type` and every argument that defines it (each side fills in
    its own constructor defaults first; names and placement, `loss_name` and `ignore_index`, are not compared:
    the ignore index is `data.ignore_index`)."""
    out: dict[str, Any] = {}
    for k, loss in enumerate(losses):
        kind = str(loss["type"])
        out[f"{prefix}.loss.{k}.type"] = kind
        for arg in sorted(loss):
            if arg in LOSS_IGNORED_ARGS and not (arg == "reduction" and kind == "DiceLoss"):
                continue
            out[f"{prefix}.loss.{k}.{arg}"] = plain(loss[arg])
    return out


def heads_fields(
    decode_head: Mapping[str, Any],
    auxiliary_heads: Sequence[Mapping[str, Any]],
    fields_of: Callable[[str, Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """`decode_head.*`, `auxiliary_head.count` and `auxiliary_head.*` (`auxiliary_head.N.*` for several), each
    head's fields from `fields_of(prefix, head)`."""
    out = fields_of("decode_head", decode_head)
    out["auxiliary_head.count"] = len(auxiliary_heads)
    for i, head in enumerate(auxiliary_heads):
        out.update(fields_of("auxiliary_head" if len(auxiliary_heads) == 1 else f"auxiliary_head.{i}", head))
    return out


def as_list(value: Any) -> list:
    """None -> [], a list as it is, anything else as a list of one."""
    return [] if not value else list(value) if isinstance(value, list) else [value]


def step_fields(prefix: str, steps: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """`<prefix>.steps` (the compared steps in order) and `<prefix>.<Step>.<arg>` for each of them."""
    out: dict[str, Any] = {f"{prefix}.steps": [name for name, _ in steps]}
    for name, args in steps:
        for arg, value in args.items():
            out[f"{prefix}.{name}.{arg}"] = plain(value)
    return out
