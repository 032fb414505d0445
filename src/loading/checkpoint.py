"""Self-describing checkpoints: write them atomically, read them back into a model with nothing else.

A checkpoint holds, next to Lightning's state, `checkpoint["segkit"]` = {config (resolved), classes, palette}.
`load_segmentor` rebuilds the `EncoderDecoder` from that config and loads the weights with `weights_only=True`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.loading.build import CHECKPOINT_META_KEY, build_segmentor, upgrade_targets
from src.utils.errors import CheckpointError, MissingFileError


def _load_tensors(path: Path, key: str, unreadable: str) -> Any:
    """`torch.load` of a file of tensors and plain containers (weights_only), on the CPU; errors name the config
    `key` that gave the path when it is missing, and start with `unreadable` when it cannot be loaded."""
    if not path.is_file():
        raise MissingFileError(
            f"{key}: no such checkpoint file '{path}'",
            hint="check the path (a relative path is taken from the folder the command was started in)",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{unreadable} '{path}': {_why_unloadable(err, path)}", hint=_UNLOADABLE_HINT
        ) from err


def _load_foreign(path: Path, key: str) -> Any:
    """`_load_tensors` for files that may come from elsewhere (MMSegmentation's): objects pickled beside the
    weights (MMEngine's message hub, numpy scalars in its `meta`) are read as inert placeholders instead of
    refusing the file; no code from the file is run (`src.weights.mmseg.load_weights_file`)."""
    from src.weights.mmseg import load_weights_file

    if not path.is_file():
        return _load_tensors(path, key, "")  # its missing-file error
    try:
        return load_weights_file(path)
    except ValueError as err:
        raise CheckpointError(f"{key}: {err}", hint=_UNLOADABLE_HINT) from err


_UNLOADABLE_HINT = (
    "use another checkpoint of the run (resume=true picks the newest one that loads); a file copied or "
    "downloaded incompletely must be copied again"
)


def _why_unloadable(err: Exception, path: Path) -> str:
    """torch.load's reason in one line: its weights-only refusal runs to dozens of lines."""
    text = str(err)
    first = text.splitlines()[0].split(". ")[0][:160] if text else type(err).__name__
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"(e.g. {found.group(1)})" if found else "(see the log)"
        return (
            f"it holds Python objects besides tensors {what}, which weights_only=True refuses to unpickle; "
            "only load files you trust, and re-save such a file's state_dict"
        )
    # torch.save writes a zip archive, its directory at the end: a cut file has none
    if not zipfile.is_zipfile(path):
        return f"the file is truncated or not a PyTorch file ({type(err).__name__}: {first})"
    return f"{type(err).__name__}: {first}"


def read_checkpoint(path: str | Path, key: str = "ckpt_path", ckpt: Any = None) -> dict[str, Any]:
    """Load a checkpoint file (tensors and plain containers only) and check that it is one of ours. Every
    failure is a `CheckpointError` naming the file (and `key`, the setting that gave it). `ckpt`: the file's
    content when it is already loaded."""
    path = Path(path)
    if ckpt is None:
        ckpt = _load_tensors(path, key, f"{key}: cannot load checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{key}: '{path}' is not a Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get(CHECKPOINT_META_KEY)
    if not meta or "config" not in meta:
        raise CheckpointError(
            f"{key}: '{path}' has no '{CHECKPOINT_META_KEY}' metadata (config, classes, palette): it was not "
            "written by this project's training, so the model it holds cannot be rebuilt",
            hint="to start from its weights, fine-tune with load_from=<file> instead; an MMSegmentation "
            "checkpoint loads with model=<name> dataset=<name> (e.g. model=pspnet_r18-d8 dataset=cityscapes)",
        )
    return ckpt


#: model keys that choose where initial weights come from, not the model: they may differ between a checkpoint
#: and the run that resumes it (and are switched off when a checkpoint is rebuilt)
WEIGHT_SOURCE_KEYS = ("pretrained", "pretrained_path", "encoder_weights", "weights", "init_cfg", "test_cfg")


def model_difference(saved: Any, current: Any, prefix: str = "model") -> list[str]:
    """The differing leaves of two model configs as `key: <saved> in the checkpoint, <current> here` lines."""
    lines: list[str] = []
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in sorted(set(saved) | set(current), key=str):
            if k in WEIGHT_SOURCE_KEYS:
                continue
            if k not in saved or k not in current:
                where = "checkpoint" if k in saved else "this run"
                lines.append(f"{prefix}.{k}: in {where} only")
            else:
                lines += model_difference(saved[k], current[k], f"{prefix}.{k}")
    elif isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current, strict=True)):
            lines += model_difference(a, b, f"{prefix}.{i}")
    elif saved != current:
        lines.append(f"{prefix}: {saved!r} in the checkpoint, {current!r} here")
    return lines


def check_same_model(ckpt: dict[str, Any], model_cfg: DictConfig | dict, path: str | Path, key: str) -> None:
    """Raise a CheckpointError, one paragraph listing the differing keys, when the checkpoint was trained with
    another model config than `model_cfg` (Lightning would fail with thousands of characters of state-dict
    keys)."""
    current = (
        OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    )
    diff = model_difference(upgrade_targets(ckpt[CHECKPOINT_META_KEY]["config"].get("model")), current)
    if diff:
        # the telling differences first: another class (`_target_`), then other values, then missing keys
        diff.sort(key=lambda line: 0 if "._target_:" in line else 2 if line.endswith(" only") else 1)
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise CheckpointError(
            f"{key}: '{path}' holds another model than this run's: {shown}",
            hint="resume it with the model it was trained with (the model=... it was started with), or start "
            "from its matching weights with load_from=<file> (new optimiser and schedule)",
        )


def _segmentor_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `segmentor.` entries of the LightningModule's state dict, without the prefix."""
    return {k.removeprefix("segmentor."): v for k, v in state.items() if k.startswith("segmentor.")}


def load_segmentor(
    path: str | Path,
    device: str | torch.device = "cpu",
    model_cfg: DictConfig | None = None,
    dataset_cfg: DictConfig | None = None,
    test_cfg_from: str = "checkpoint",
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint in eval mode on `device` (SyncBatchNorm built as BatchNorm, so that it runs on a
    CPU), and the checkpoint's metadata.

    `model_cfg` / `dataset_cfg` (`model=<name> dataset=<name>` of `src.eval` and `src.infer`) replace a checkpoint's
    own config (the dataset gives classes and palette); any other file is read as an MMSegmentation checkpoint of
    that model (`load_mmseg_segmentor`, where `test_cfg_from` is explained), both being required.
    """
    from src.loading.mmseg import load_mmseg_segmentor
    from src.weights.mmseg import is_mmseg_checkpoint

    ckpt = _load_foreign(Path(path), "ckpt_path")
    ours = isinstance(ckpt, dict) and CHECKPOINT_META_KEY in ckpt
    if not ours and (model_cfg is not None or is_mmseg_checkpoint(ckpt)):
        segmentor, meta = load_mmseg_segmentor(
            path, model_cfg, dataset_cfg, ckpt=ckpt, test_cfg_from=test_cfg_from
        )
        return segmentor.to(device).eval(), meta
    ckpt = read_checkpoint(path, ckpt=ckpt)
    meta = dict(ckpt[CHECKPOINT_META_KEY])
    if model_cfg is not None or dataset_cfg is not None:
        from src.loading.mmseg import replace_configs

        meta = replace_configs(meta, model_cfg, dataset_cfg)
    segmentor = build_segmentor(OmegaConf.create(meta["config"]).model)
    state = _segmentor_tensors(ckpt["state_dict"])
    missing, unexpected = segmentor.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the model its config builds: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return segmentor.to(device).eval(), meta


# ----------------------------------------------------------------- resume / fine-tune (`src.train`)
def checkpoints_newest_first(run_root: str | Path) -> list[Path]:
    """The checkpoints of a run, newest first: `<run_root>/*/checkpoints/*.ckpt` and Lightning's SLURM
    `<run_root>/*/hpc_ckpt_*.ckpt`, by modification time."""
    root = Path(run_root)
    found = [*root.glob("*/checkpoints/*.ckpt"), *root.glob("*/hpc_ckpt_*.ckpt")]
    found = [p for p in found if p.is_file()]
    # last.ckpt is written right after the periodic checkpoint of the same step: prefer it on equal times
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def newest_loadable_checkpoint(
    run_root: str | Path, model_cfg: DictConfig | dict | None = None
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """`resume=true`: the newest checkpoint under `run_root` that loads (and holds `model_cfg`'s model), and the
    newer ones skipped, each with the reason. (None, skipped) when none is usable."""
    skipped: list[tuple[Path, str]] = []
    for path in checkpoints_newest_first(run_root):
        try:
            ckpt = read_checkpoint(path, key="resume")
            if model_cfg is not None:
                check_same_model(ckpt, model_cfg, path, key="resume")
        except (CheckpointError, MissingFileError) as err:  # missing: removed since the listing
            skipped.append((path, str(err)))
            continue
        return path, skipped
    return None, skipped


def load_matching_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Fine-tuning start (`load_from`): copy the checkpoint's tensors whose name and shape match `model`'s.

    Tensors whose shape differs (the classifiers `conv_seg` of a checkpoint with another class count) keep the
    model's own initialisation, as do the model's tensors that the checkpoint lacks. Accepts this project's
    checkpoints (`state_dict` with `segmentor.` keys; an EMA checkpoint gives its averaged weights) and plain
    state dicts of the segmentor. Returns the names `loaded`, `shape_mismatch`, `missing` and `unexpected`.
    """
    path = Path(path)
    ckpt = _load_foreign(path, "load_from")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"load_from: '{path}' holds no state dict of tensors")
    if any(k.startswith("segmentor.") for k in state):
        state = _segmentor_tensors(state)
    else:
        from src.weights.mmseg import convert_mmseg_state_dict, is_mmseg_state_dict

        if is_mmseg_state_dict(state):  # MMSegmentation's names: every tensor must map (shapes may differ)
            state = convert_mmseg_state_dict(state, model, source=f"load_from: {path}", strict=False)
    own = model.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "shape_mismatch": [], "missing": [], "unexpected": []}
    matched = {}
    for name, value in state.items():
        if name not in own:
            report["unexpected"].append(name)
        elif own[name].shape != value.shape:
            report["shape_mismatch"].append(name)
        else:
            matched[name] = value
            report["loaded"].append(name)
    report["missing"] = [name for name in own if name not in state]
    if not matched:
        raise ValueError(
            f"load_from: none of the {len(state)} tensors of '{path}' matches the model by name and shape "
            f"(checkpoint keys e.g. {list(state)[:3]}, model keys e.g. {list(own)[:3]}): it is a checkpoint of "
            "another model"
        )
    model.load_state_dict(matched, strict=False)
    return report


def last_checkpoint(trainer: Any) -> str | None:
    """The `last.ckpt` path of a Lightning Trainer's first checkpoint callback that saved one, else None."""
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", ""):
            return cb.last_model_path
    return None
