"""A segmentor built from its config, as every loader builds it: no pretrained weights fetched (they come from the
checkpoint), the class paths of older checkpoints renamed; and the one key under which a checkpoint keeps its
metadata (config, classes, palette).
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import nn

#: the key of a checkpoint's metadata (resolved config, classes, palette), written by the LightningModule;
#: defined here, below every loader and the LightningModule, so that loading a model for inference does not import the LightningModule
CHECKPOINT_META_KEY = "segkit"


NO_DOWNLOAD = {"pretrained": False, "pretrained_path": None, "encoder_weights": None}

#: model parts that moved, as older checkpoints name them (`_target_`) -> where they are now
MOVED_TARGETS = {
    "src.models.unet.UNet": "src.models.backbones.unet.UNet",
    "src.models.smp_head.SMPHead": "src.models.heads.smp.SMPHead",
    "src.models.smp_head.ImageAsFeatures": "src.models.backbones.image.ImageAsFeatures",
}


def upgrade_targets(node: Any) -> Any:
    """A config with the `_target_`s of moved classes renamed (`MOVED_TARGETS`), so that a checkpoint written
    before a move still rebuilds and resumes. An OmegaConf node is copied with its parent (its interpolations
    still resolve) and renamed in place; a plain one is rebuilt."""
    if isinstance(node, DictConfig | ListConfig):
        node = node.copy()
        _rename_targets(node)
        return node
    if isinstance(node, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" else upgrade_targets(v) for k, v in node.items()
        }
    if isinstance(node, list):
        return [upgrade_targets(v) for v in node]
    return node


def _rename_targets(node: DictConfig | ListConfig) -> None:
    keys = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            continue  # a `${...}` value is not a class path, and resolving it here could fail
        value = node[key]
        if key == "_target_" and value in MOVED_TARGETS:
            with open_dict(node):
                node[key] = MOVED_TARGETS[value]
        elif isinstance(value, DictConfig | ListConfig):
            _rename_targets(value)


def build_segmentor(model_cfg: DictConfig) -> nn.Module:
    """Instantiate a model config without loading pretrained weights (they come from the checkpoint).

    Every `pretrained`, `pretrained_path` and `encoder_weights` key, wherever it sits (timm backbone, smp head),
    is switched off: rebuilding must neither download nor need the original weights file.
    """
    model_cfg = upgrade_targets(
        model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(model_cfg)
    )
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
