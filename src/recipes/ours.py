"""This project's side of a recipe: a composed training config (`conf/train.yaml` with its overrides) as the
flat fields of `src.recipes.fields`, in MMSegmentation's names (our transforms as the MMSegmentation steps they
implement, our loss classes by their MMSegmentation names), each value as the run would use it.

Only the config is read: no model, dataset or file is built or opened.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.recipes.fields import as_list, box_scale, heads_fields, loss_fields, plain, step_fields
from src.recipes.mmseg import normalise_paramwise

# our training transforms -> the MMSegmentation step each one is (albumentations' where they are the same op)
STEP_OF = {
    "src.data.transforms.RandomResize": "RandomResize",
    "src.data.transforms.Resize": "Resize",
    "src.data.transforms.RandomCrop": "RandomCrop",
    "albumentations.HorizontalFlip": "RandomFlip",
    "src.data.transforms.PhotoMetricDistortion": "PhotoMetricDistortion",
    "albumentations.PadIfNeeded": "Pad",
}
# arguments our losses have beyond MMSegmentation's, at the value that changes nothing: left out when at it
NEUTRAL_EXTRA_ARGS = {"CrossEntropyLoss": {"label_smoothing": 0.0}}
PRECISIONS = {"32": "fp32", "32-true": "fp32", "16-mixed": "amp", "bf16-mixed": "amp-bf16", "auto": "auto"}


def our_recipe(cfg: DictConfig) -> dict[str, Any]:
    """The flat fields of a composed training config (`model`, `dataset`, `schedule`, `runtime`, ...)."""
    model = _resolved(cfg, "model")
    dataset = _resolved(cfg, "dataset")
    schedule = _resolved(cfg, "schedule")
    out: dict[str, Any] = {}
    test = model.get("test_cfg") or {}
    out["test.mode"] = test.get("mode", "whole")
    slide = out["test.mode"] == "slide"
    out["test.crop_size"] = plain(test.get("crop_size")) if slide else None
    out["test.stride"] = plain(test.get("stride")) if slide else None
    tta = test.get("tta") or {}
    out["test.tta.scales"] = [float(r) for r in tta["scales"]] if tta.get("scales") else None
    out["test.tta.flip"] = bool(tta["flip"]) if "flip" in tta else None

    backbone = model.get("backbone") or {}
    out["model.pretrained"] = bool(backbone.get("pretrained") or backbone.get("pretrained_path"))
    out["model.drop_path_rate"] = backbone.get("drop_path_rate")
    head = model["decode_head"]
    sync = str(head.get("norm", "bn")) == "syncbn" or bool(cfg.runtime.get("sync_bn"))
    out["model.norm"] = "SyncBN" if sync else "BN"
    pre = model.get("data_preprocessor") or {}
    out["model.mean"] = plain(pre.get("mean"))
    out["model.std"] = plain(pre.get("std"))
    out["model.channels_seen"] = "BGR" if pre.get("bgr_to_rgb") else "RGB"  # files are read as RGB

    auxiliary = [
        a for a in as_list(model.get("auxiliary_head")) if a.get("_target_") != "src.models.segmentor.no_head"
    ]
    out.update(heads_fields(head, auxiliary, _head_fields))

    out.update(_optimizer_fields(schedule, cfg))
    out.update(_schedule_fields(schedule))

    trainer = cfg.runtime.trainer
    out["batch.per_gpu"] = int(dataset["batch_size"])
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    out["batch.gpus"] = int(devices) * int(nodes) if isinstance(devices, int) else str(devices)
    out["data.crop_size"] = plain(dataset.get("crop_size"))

    trains = dataset["train_dataset"]
    trains = list(trains) if isinstance(trains, list) else [trains]
    out["data.dataset"] = "+".join(str(d["_target_"]).rsplit(".", 1)[-1] for d in trains)
    out.update(step_fields("train_pipeline", _steps(dataset.get("train_pipeline") or [])))
    out.update(step_fields("test_pipeline", _steps(dataset.get("test_pipeline") or [])))
    out["data.reduce_zero_label"] = _reduce_zero_label(trains[0])
    out["data.ignore_index"] = int(dataset["ignore_index"])
    out["metric"] = str(cfg.get("optimized_metric", "val/mIoU")).rsplit("/", 1)[-1]
    return out


def _resolved(cfg: DictConfig, key: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[key], resolve=True)


def _class_name(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def _signature_defaults(target: str) -> dict[str, Any]:
    """The constructor defaults of a class, with those of the bases it passes `**kwargs` on to (a head's)."""
    out: dict[str, Any] = {}
    for cls in get_class(target).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for n, p in params.items():
            if p.default is not inspect.Parameter.empty:
                out.setdefault(n, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return out


def _head_fields(prefix: str, head: Mapping[str, Any]) -> dict[str, Any]:
    target = head["_target_"]
    defaults = _signature_defaults(target)
    setting = {**defaults, **head}
    out = {
        f"{prefix}.type": _class_name(target),
        f"{prefix}.num_classes": setting.get("num_classes"),
        f"{prefix}.channels": setting.get("channels"),
        f"{prefix}.dropout_ratio": setting.get("dropout_ratio"),
        f"{prefix}.align_corners": setting.get("align_corners"),
    }
    losses = head.get("losses") or [{"_target_": "src.models.losses.CrossEntropyLoss"}]
    out.update(loss_fields(prefix, [_loss(lo) for lo in losses]))
    return out


def _loss(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A loss config as its type and every argument the class takes (its defaults filled in)."""
    kind = _class_name(spec["_target_"])
    args = {**_signature_defaults(spec["_target_"]), **{k: v for k, v in spec.items() if k != "_target_"}}
    for extra, neutral in NEUTRAL_EXTRA_ARGS.get(kind, {}).items():
        if args.get(extra) == neutral:
            args.pop(extra)
    if kind == "LovaszLoss":
        args.pop("use_sigmoid", None)  # our older spelling of loss_type: binary, folded into loss_type
    return {"type": kind, **args}


def _optimizer_fields(schedule: Mapping[str, Any], cfg: DictConfig) -> dict[str, Any]:
    opt = schedule["optimizer"]
    kind = _class_name(opt["_target_"])
    defaults = _signature_defaults(opt["_target_"])
    setting = {**defaults, **opt}
    betas = setting.get("betas")
    return {
        "optimizer.type": kind,
        "optimizer.lr": setting.get("lr"),
        "optimizer.momentum": setting.get("momentum") if "momentum" in defaults else None,
        "optimizer.betas": plain(betas) if betas is not None else None,
        "optimizer.weight_decay": setting.get("weight_decay", 0.0),
        "optimizer.clip_grad": plain(schedule.get("clip_grad")),
        "optimizer.precision": PRECISIONS.get(
            str(cfg.runtime.get("precision")), str(cfg.runtime.get("precision"))
        ),
        "optimizer.accumulate": int(schedule.get("accumulate_grad_batches") or 1),
        "optimizer.paramwise": normalise_paramwise(schedule.get("paramwise")),
    }


def _schedule_fields(schedule: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    warmup = int(schedule.get("warmup_iters") or 0)
    if warmup:
        out["schedule.warmup.type"] = "LinearLR"
        out["schedule.warmup.start_factor"] = schedule.get("warmup_ratio", 1e-6)
        out["schedule.warmup.end_factor"] = 1.0
        out["schedule.warmup.iters"] = warmup
    else:
        out["schedule.warmup.type"] = None
    main = schedule.get("scheduler")
    max_iters = int(schedule["max_steps"])
    if main:
        kind = _class_name(main["_target_"])
        setting = {**_signature_defaults(main["_target_"]), **main}
        out["schedule.main.type"] = kind
        if kind == "PolyLR":
            out["schedule.main.power"] = setting.get("power")
        out["schedule.main.eta_min"] = setting.get("eta_min")
        out["schedule.main.begin"] = warmup  # src.engine.schedulers.build_lr_scheduler: after the warm-up ...
        out["schedule.main.end"] = int(
            setting.get("total_iters", setting.get("T_max", max_iters))
        )  # ... to here
    out["schedule.max_iters"] = max_iters
    out["schedule.val_interval"] = schedule.get("val_interval")
    out["schedule.ckpt_interval"] = schedule.get("ckpt_interval")
    return out


def _steps(pipeline: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Our transforms as MMSegmentation steps with their arguments as they act; others by their class name."""
    out = []
    for step in _unfused(pipeline):
        target = step["_target_"]
        kind = STEP_OF.get(target)
        setting = {**_signature_defaults(target), **{k: v for k, v in step.items() if k != "_target_"}}
        if kind in ("RandomResize", "Resize"):
            keep = bool(setting.get("keep_ratio"))
            args = {"scale": box_scale(setting.get("scale"), keep), "keep_ratio": keep}
            if kind == "RandomResize":
                args["ratio_range"] = plain(setting.get("ratio_range"))
        elif kind == "RandomCrop":
            args = {"crop_size": plain(setting["crop_size"]), "cat_max_ratio": setting.get("cat_max_ratio")}
        elif kind == "RandomFlip":
            args = {"prob": setting.get("p"), "direction": "horizontal"}
        elif kind == "PhotoMetricDistortion":
            args = {
                k: plain(setting[k])
                for k in ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")
            }
        elif kind == "Pad":
            args = {"size": [setting["min_height"], setting["min_width"]]}
        else:
            kind, args = _class_name(target), {}
        out.append((kind, args))
    return out


def _unfused(pipeline: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`RandomResizeCrop(resize, crop)` as the two steps it is."""
    out: list[Mapping[str, Any]] = []
    for step in pipeline:
        if step.get("_target_") == "src.data.transforms.RandomResizeCrop":
            out += [step["resize"], step["crop"]]
        else:
            out.append(step)
    return out


def _reduce_zero_label(train_dataset: Mapping[str, Any]) -> bool:
    if "reduce_zero_label" in train_dataset:
        return bool(train_dataset["reduce_zero_label"])
    return bool(_signature_defaults(train_dataset["_target_"]).get("reduce_zero_label", False))
