"""Self-describing checkpoints: write them atomically, read them back into a model with nothing else.

A checkpoint holds, next to Lightning's state, `checkpoint["segkit"]` = {config (resolved), classes, palette}.
`load_segmentor` rebuilds the `EncoderDecoder` from that config and loads the weights with `weights_only=True`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import nn

from src.module import CHECKPOINT_META_KEY


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `<path>.tmp`, fsync, then rename: a crash mid-write never leaves a truncated checkpoint.

    Lightning's `TorchCheckpointIO` writes the target file in place, so an interrupted save can corrupt
    `last.ckpt`, the very file a resume needs.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _load_tensors(path: Path, key: str, unreadable: str) -> Any:
    """`torch.load` of a file of tensors and plain containers (weights_only), on the CPU; errors name the config
    `key` that gave the path when it is missing, and start with `unreadable` when it cannot be loaded."""
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no such checkpoint file '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{unreadable} '{path}': {err}") from err


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file (tensors and plain containers only) and check that it is one of ours."""
    path = Path(path)
    ckpt = _load_tensors(path, "ckpt_path", "Cannot load checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"'{path}' is not a Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get(CHECKPOINT_META_KEY)
    if not meta or "config" not in meta:
        raise ValueError(
            f"'{path}' has no '{CHECKPOINT_META_KEY}' metadata (config, classes, palette): it was not written "
            "by this project's training, so the model it holds cannot be rebuilt"
        )
    return ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> DictConfig:
    return OmegaConf.create(ckpt[CHECKPOINT_META_KEY]["config"])


NO_DOWNLOAD = {"pretrained": False, "pretrained_path": None, "encoder_weights": None}


def build_segmentor(model_cfg: DictConfig) -> nn.Module:
    """Instantiate a model config without loading pretrained weights (they come from the checkpoint).

    Every `pretrained`, `pretrained_path` and `encoder_weights` key, wherever it sits (timm backbone, smp head),
    is switched off: rebuilding must neither download nor need the original weights file.
    """
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        _disable_pretrained(model_cfg)
    return instantiate(model_cfg)


def _disable_pretrained(node: Any) -> None:
    if isinstance(node, DictConfig):
        for key in list(node.keys()):
            if key in NO_DOWNLOAD:
                node[key] = NO_DOWNLOAD[key]
            else:
                _disable_pretrained(node[key])
    elif isinstance(node, ListConfig):
        for item in node:
            _disable_pretrained(item)


def segmentor_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    prefix = "segmentor."
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def load_segmentor(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint in eval mode on `device`, and the checkpoint's metadata.

    SyncBatchNorm layers (a model trained with `sync_bn`) are built as plain BatchNorm from the config, so the
    model runs on a CPU; their weights load unchanged.
    """
    ckpt = read_checkpoint(path)
    meta = dict(ckpt[CHECKPOINT_META_KEY])
    segmentor = build_segmentor(checkpoint_config(ckpt).model)
    state = segmentor_state_dict(ckpt)
    missing, unexpected = segmentor.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Checkpoint '{path}' does not match the model its config builds: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return segmentor.to(device).eval(), meta


# ----------------------------------------------------------------- resume / fine-tune (`src.train`)
def newest_checkpoint(run_root: str | Path) -> Path | None:
    """The most recently written checkpoint of a run: `<run_root>/*/checkpoints/*.ckpt` and Lightning's SLURM
    `<run_root>/*/hpc_ckpt_*.ckpt`, by modification time; None when there is none."""
    root = Path(run_root)
    found = [*root.glob("*/checkpoints/*.ckpt"), *root.glob("*/hpc_ckpt_*.ckpt")]
    found = [p for p in found if p.is_file()]
    # last.ckpt is written right after the periodic checkpoint of the same step: prefer it on equal times
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), default=None)


def load_matching_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Fine-tuning start (`load_from`): copy the checkpoint's tensors whose name and shape match `model`'s.

    Tensors whose shape differs (the classifiers `conv_seg` of a checkpoint with another class count) keep the
    model's own initialisation, as do the model's tensors that the checkpoint lacks. Accepts this project's
    checkpoints (`state_dict` with `segmentor.` keys; an EMA checkpoint gives its averaged weights) and plain
    state dicts of the segmentor. Returns the names `loaded`, `shape_mismatch`, `missing` and `unexpected`.
    """
    path = Path(path)
    ckpt = _load_tensors(path, "load_from", "load_from: cannot load")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"load_from: '{path}' holds no state dict of tensors")
    if any(k.startswith("segmentor.") for k in state):
        state = {k[len("segmentor.") :]: v for k, v in state.items() if k.startswith("segmentor.")}
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
