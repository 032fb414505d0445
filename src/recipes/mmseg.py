"""MMSegmentation's side of a recipe: its resolved config as flat fields (`src.recipes.fields`).

    cfg = read_mmseg_config("../shared/mmseg/configs/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.json")
    fields = mmseg_recipe(cfg)               # {"test.mode": "whole", "decode_head.loss.0.type": ..., ...}

A config comes as the JSON of MMEngine's `Config.fromfile(path).to_dict()` (every `_base_` merged), or as the
config TEXT an MMSegmentation checkpoint carries in its `meta` (`meta["cfg"]` written by MMEngine's Runner,
`meta["config"]` by MMSegmentation 0.x and by `tools/misc/publish_model.py`'s inputs). The text is Python;
`parse_config_text` reads its literal assignments with `ast` and never runs it (a checkpoint is data).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.recipes.fields import (
    COMPARED_STEPS,
    MMSEG_LOSS_DEFAULTS,
    PHOTOMETRIC_DEFAULTS,
    as_list,
    box_scale,
    heads_fields,
    loss_fields,
    plain,
    step_fields,
)

# MMEngine's LinearLR start_factor default (1/3) and PolyLR defaults (power 1, eta_min 0)
LINEAR_LR_DEFAULTS = {"start_factor": 1.0 / 3, "end_factor": 1.0}
POLY_LR_DEFAULTS = {"power": 1.0, "eta_min": 0.0}
GPUS_IN_NAME = re.compile(r"_(\d+)xb(\d+)-")


def read_mmseg_config(path: str | Path) -> dict[str, Any]:
    """A resolved MMSegmentation config: a `.json` written from `Config.to_dict()`, or a `.py` config file
    parsed as `parse_config_text` does (its `_base_` files are not followed: give a resolved one)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    return parse_config_text(text)


# ------------------------------------------------------------------------------------ config text, unexecuted
class ConfigTextError(ValueError):
    """A config text that holds something other than literal assignments where a value was asked for."""


def parse_config_text(text: str) -> dict[str, Any]:
    """The top-level assignments of an MMEngine / mmcv config text whose values are literals: numbers,
    strings, None/True/False, lists, tuples, dicts, `dict(...)` calls with keyword arguments, and names of
    earlier assignments (`crop_size = (512, 512)` ... `size=crop_size`). Other statements and values (imports,
    function calls, expressions) are skipped: nothing in the text is run."""
    tree = ast.parse(text)
    env: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        try:
            env[target.id] = _literal(node.value, env)
        except ConfigTextError:
            continue
    return env


def _literal(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, env) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):  # `**other` inside a literal dict
            raise ConfigTextError("dict unpacking")
        return {_literal(k, env): _literal(v, env) for k, v in zip(node.keys, node.values)}
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
    ):
        if any(kw.arg is None for kw in node.keywords):
            raise ConfigTextError("dict(**...)")
        return {kw.arg: _literal(kw.value, env) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, env)
        if isinstance(value, (int, float)):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    raise ConfigTextError(f"not a literal: {ast.dump(node)[:80]}")


def config_of_checkpoint_meta(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The config an MMSegmentation checkpoint's `meta` carries (`cfg`: MMEngine's Runner; `config`: 0.x), as a
    dict, or None when it carries none (or a text without a `model`)."""
    if not isinstance(meta, Mapping):
        return None
    for key in ("cfg", "config"):
        value = meta.get(key)
        if isinstance(value, Mapping) and "model" in value:
            return dict(value)
        if isinstance(value, str) and value.strip():
            try:
                cfg = parse_config_text(value)
            except SyntaxError:
                continue
            if isinstance(cfg.get("model"), Mapping):
                return cfg
    return None


def mmseg_test_cfg(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model's `test_cfg` as this project writes it (`mode`, and `crop_size`/`stride` as [h, w] for slide),
    or None when the config has none."""
    test_cfg = (cfg.get("model") or {}).get("test_cfg")
    if not isinstance(test_cfg, Mapping) or not test_cfg:
        return None
    mode = test_cfg.get("mode", "whole")
    out: dict[str, Any] = {"mode": mode}
    if mode == "slide":
        out["crop_size"] = [int(v) for v in test_cfg["crop_size"]]
        out["stride"] = [int(v) for v in test_cfg["stride"]]
    return out


# ----------------------------------------------------------------------------------------------- the fields
def mmseg_recipe(cfg: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The flat fields of an MMSegmentation config (`name`, else its `mmseg_config` path, gives the GPU count
    `NxbM` of its file name)."""
    model = cfg["model"]
    name = name or Path(str(cfg.get("mmseg_config", ""))).stem
    out: dict[str, Any] = {}
    test = mmseg_test_cfg(cfg) or {"mode": "whole"}
    out["test.mode"] = test["mode"]
    out["test.crop_size"] = test.get("crop_size")
    out["test.stride"] = test.get("stride")
    out.update(_tta_fields(cfg.get("tta_pipeline") or []))

    backbone = model.get("backbone") or {}
    init = backbone.get("init_cfg") or {}
    out["model.pretrained"] = bool(
        model.get("pretrained")
        or backbone.get("pretrained")
        or (isinstance(init, Mapping) and init.get("type") == "Pretrained")
    )
    out["model.drop_path_rate"] = backbone.get("drop_path_rate")
    head = model["decode_head"]
    out["model.norm"] = (head.get("norm_cfg") or {}).get("type", "BN")
    pre = model.get("data_preprocessor") or {}
    out["model.mean"] = plain(pre.get("mean"))
    out["model.std"] = plain(pre.get("std"))
    out["model.channels_seen"] = "RGB" if pre.get("bgr_to_rgb") else "BGR"  # files are read as BGR

    out.update(heads_fields(head, as_list(model.get("auxiliary_head")), _head_fields))

    out.update(_optimizer_fields(cfg.get("optim_wrapper") or {}))
    out.update(_schedule_fields(cfg))

    loader = cfg["train_dataloader"]
    out["batch.per_gpu"] = int(loader["batch_size"])
    found = GPUS_IN_NAME.search(name + "-")
    out["batch.gpus"] = int(found.group(1)) if found else None
    out["data.crop_size"] = plain(cfg.get("crop_size"))

    datasets = _train_datasets(loader["dataset"])
    out["data.dataset"] = "+".join(d.get("type", "?") for d in datasets)
    pipeline = cfg.get("train_pipeline") or datasets[0].get("pipeline") or []
    out.update(step_fields("train_pipeline", _train_steps(pipeline, pre)))
    test_pipeline = cfg.get("test_pipeline") or cfg["test_dataloader"]["dataset"].get("pipeline") or []
    out.update(step_fields("test_pipeline", _steps(test_pipeline)))
    out["data.reduce_zero_label"] = _reduce_zero_label(pipeline, datasets[0])
    out["data.ignore_index"] = int(head.get("ignore_index", 255))
    metrics = (cfg.get("val_evaluator") or {}).get("iou_metrics") or ["mIoU"]
    out["metric"] = metrics[0]
    return out


def _tta_fields(pipeline: list[Mapping[str, Any]]) -> dict[str, Any]:
    """`test.tta.scales` and `test.tta.flip` of a `TestTimeAug` step (its Resize scale factors and flips)."""
    tta = next((step for step in pipeline if step.get("type") == "TestTimeAug"), None)
    if tta is None:
        return {"test.tta.scales": None, "test.tta.flip": None}
    steps = [t for group in tta.get("transforms", []) for t in group]
    scales = [float(t["scale_factor"]) for t in steps if t.get("type") == "Resize" and "scale_factor" in t]
    flip = any(t.get("type") == "RandomFlip" and float(t.get("prob", 0)) == 1.0 for t in steps)
    return {"test.tta.scales": scales, "test.tta.flip": flip}


def _head_fields(prefix: str, head: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        f"{prefix}.type": head.get("type"),
        f"{prefix}.num_classes": head.get("num_classes"),
        f"{prefix}.channels": head.get("channels"),
        f"{prefix}.dropout_ratio": head.get("dropout_ratio", 0.1),
        f"{prefix}.align_corners": head.get("align_corners", False),
    }
    losses = head.get("loss_decode") or {"type": "CrossEntropyLoss"}
    losses = losses if isinstance(losses, list) else [losses]
    filled = [{**MMSEG_LOSS_DEFAULTS.get(lo["type"], {}), **lo} for lo in losses]
    out.update(loss_fields(prefix, filled))
    return out


def _optimizer_fields(wrapper: Mapping[str, Any]) -> dict[str, Any]:
    opt = wrapper.get("optimizer") or {}
    out = {
        "optimizer.type": opt.get("type"),
        "optimizer.lr": opt.get("lr"),
        "optimizer.momentum": opt.get("momentum"),
        "optimizer.betas": plain(opt.get("betas")),
        "optimizer.weight_decay": opt.get("weight_decay", 0.0),
        "optimizer.clip_grad": plain(wrapper.get("clip_grad")),
        "optimizer.precision": "amp" if wrapper.get("type") == "AmpOptimWrapper" else "fp32",
        "optimizer.accumulate": int(wrapper.get("accumulative_counts", 1)),
    }
    paramwise = dict(wrapper.get("paramwise_cfg") or {})
    if wrapper.get("constructor") == "LearningRateDecayOptimizerConstructor":
        paramwise = {"layer_decay": paramwise}
    out["optimizer.paramwise"] = normalise_paramwise(paramwise)
    return out


def normalise_paramwise(paramwise: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Paramwise rules with MMEngine's defaults filled (`lr_mult` and `decay_mult` 1 for a custom key) and unset
    rules dropped; None when there are none."""
    if not paramwise:
        return None
    out: dict[str, Any] = {}
    for key, value in paramwise.items():
        if value is None:
            continue
        if key == "custom_keys":
            value = {k: {"lr_mult": 1.0, "decay_mult": 1.0, **dict(v)} for k, v in value.items()}
        out[key] = value
    return plain(out) or None


def _schedule_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    schedulers = list(cfg.get("param_scheduler") or [])
    warmup = next((s for s in schedulers if s.get("type") == "LinearLR"), None)
    main = next((s for s in schedulers if s is not warmup), None)
    out: dict[str, Any] = {}
    if warmup is None:
        out["schedule.warmup.type"] = None
    else:
        out["schedule.warmup.type"] = "LinearLR"
        out["schedule.warmup.start_factor"] = warmup.get("start_factor", LINEAR_LR_DEFAULTS["start_factor"])
        out["schedule.warmup.end_factor"] = warmup.get("end_factor", LINEAR_LR_DEFAULTS["end_factor"])
        out["schedule.warmup.iters"] = int(warmup.get("end", 0)) - int(warmup.get("begin", 0))
    train_cfg = cfg.get("train_cfg") or {}
    max_iters = int(train_cfg.get("max_iters", 0))
    if main is not None:
        out["schedule.main.type"] = main["type"]
        if main["type"] == "PolyLR":
            out["schedule.main.power"] = main.get("power", POLY_LR_DEFAULTS["power"])
        out["schedule.main.eta_min"] = main.get("eta_min", POLY_LR_DEFAULTS["eta_min"])
        out["schedule.main.begin"] = int(main.get("begin", 0))
        out["schedule.main.end"] = int(main.get("end", max_iters))
    out["schedule.max_iters"] = max_iters
    out["schedule.val_interval"] = train_cfg.get("val_interval")
    checkpoint = (cfg.get("default_hooks") or {}).get("checkpoint") or {}
    out["schedule.ckpt_interval"] = checkpoint.get("interval")
    return out


def _train_datasets(dataset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The datasets a train loader reads (through RepeatDataset and ConcatDataset wrappers)."""
    kind = dataset.get("type")
    if kind == "RepeatDataset":
        return _train_datasets(dataset["dataset"])
    if kind == "ConcatDataset":
        return [d for inner in dataset["datasets"] for d in _train_datasets(inner)]
    return [dataset]


def _steps(pipeline: list[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The compared steps of a pipeline, each with its arguments as they act (defaults filled)."""
    out = []
    for step in pipeline:
        kind = step.get("type")
        if kind not in COMPARED_STEPS:
            continue
        args = {k: v for k, v in step.items() if k != "type"}
        if kind in ("RandomResize", "Resize"):
            keep = bool(args.get("keep_ratio", False))
            args = {**args, "keep_ratio": keep, "scale": box_scale(args.get("scale"), keep)}
            if kind == "RandomResize":
                args.setdefault("ratio_range", None)
        elif kind == "RandomCrop":
            args = {"crop_size": args["crop_size"], "cat_max_ratio": args.get("cat_max_ratio", 1.0)}
        elif kind == "RandomFlip":
            args = {"prob": args.get("prob"), "direction": args.get("direction", "horizontal")}
        elif kind == "PhotoMetricDistortion":
            args = {**PHOTOMETRIC_DEFAULTS, **args}
        elif kind == "Pad":
            args = {"size": args.get("size")}
        out.append((kind, args))
    return out


def _train_steps(
    pipeline: list[Mapping[str, Any]], preprocessor: Mapping[str, Any]
) -> list[tuple[str, dict]]:
    """The training steps, with the data preprocessor's padding of each batch to `size` as a last `Pad` step
    (where the pipeline does not pad itself): that is where MMSegmentation 1.x pads a crop."""
    steps = _steps(pipeline)
    if preprocessor.get("size") and not any(name == "Pad" for name, _ in steps):
        steps.append(("Pad", {"size": plain(preprocessor["size"])}))
    return steps


def _reduce_zero_label(pipeline: list[Mapping[str, Any]], dataset: Mapping[str, Any]) -> bool:
    for step in pipeline:
        if step.get("type") == "LoadAnnotations" and "reduce_zero_label" in step:
            return bool(step["reduce_zero_label"])
    return bool(dataset.get("reduce_zero_label", False))
