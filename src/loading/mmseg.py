"""MMSegmentation checkpoints as models of this project: the model a config names, with a checkpoint's tensors
converted (`src.weights.mmseg`), tested as the config in the checkpoint's `meta` says, and the metadata a checkpoint
of this project carries (config, classes, palette, source). Also the model and dataset configs composed by name,
as the entry points compose them.

    segmentor, meta = load_mmseg_segmentor("pspnet_r18-d8.pth", cfg.model, cfg.dataset)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.loading.build import CHECKPOINT_META_KEY, build_segmentor
from src.recipes.mmseg import config_of_checkpoint_meta, mmseg_test_cfg
from src.utils.logging import get_logger
from src.weights.mmseg import (
    MMSegCheckpointError,
    convert_mmseg_state_dict,
    load_weights_file,
    mmseg_meta,
    state_dict_of,
)

log = get_logger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_model_dataset(
    model: str | None, dataset: str | None, overrides: Sequence[str] = ()
) -> DictConfig:
    """`{model, dataset}` configs (resolved) composed by name from `conf/` with Hydra's compose API, exactly as
    `python -m src.eval model=<model> dataset=<dataset> [overrides]` composes them (so a model that is a
    composition of `model/backbone/`, `model/decode_head/`, ... groups resolves the same way)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.utils import resolvers  # noqa: F401  (${project_root:} in paths)

    args = [*([f"model={model}"] if model else []), *([f"dataset={dataset}"] if dataset else []), *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (its search path holds conf/)
        cfg = compose("eval", overrides=args)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("eval", overrides=args)
    # resolved here, where `${paths.data_dir}` and `${dataset.num_classes}` have their targets
    return OmegaConf.create({k: resolved(cfg, k) for k in ("model", "dataset") if cfg.get(k) is not None})


def resolved(cfg: DictConfig, key: str) -> dict[str, Any]:
    """`cfg.<key>` as a plain dict with its interpolations resolved against the whole of `cfg`."""
    return OmegaConf.to_container(cfg[key], resolve=True)


def load_mmseg_segmentor(
    path: str | Path,
    model_cfg: DictConfig | Mapping | None,
    dataset_cfg: DictConfig | Mapping | None,
    ckpt: Any = None,
    test_cfg_from: str = "checkpoint",
) -> tuple[nn.Module, dict[str, Any]]:
    """The model `model_cfg` builds, with the weights of the MMSegmentation checkpoint `path` (`ckpt`: its
    content, when already loaded), and the metadata a checkpoint of this project carries (`config` with `model`
    and `dataset`, `classes`, `palette`, and `source`). Both configs are required: an MMSegmentation file names
    neither (the model's class count comes from the dataset).

    `test_cfg_from="checkpoint"`: a checkpoint whose `meta` carries its config (`cfg` from MMEngine's Runner,
    `config` from MMSegmentation 0.x) is tested as that config says (its `model.test_cfg`: whole or slide, crop,
    stride), and a difference from `model_cfg`'s is said in one line; `"config"` keeps `model_cfg`'s (the user
    set the test mode)."""
    if model_cfg is None or dataset_cfg is None:
        raise MMSegCheckpointError(
            f"'{path}' is not a checkpoint of this project: if it is an MMSegmentation checkpoint, give the "
            "model and dataset it was trained with, e.g. model=pspnet_r18-d8 dataset=cityscapes",
            hint="names are those of conf/model and conf/dataset; or convert the file once with "
            "`python scripts/convert_mmseg_checkpoint.py <in.pth> <out.ckpt> model=<name> dataset=<name>`",
        )
    if test_cfg_from not in ("checkpoint", "config"):
        raise ValueError(f"test_cfg_from='{test_cfg_from}': expected checkpoint or config")
    config = config_pair(model_cfg, dataset_cfg)
    ckpt = load_weights_file(path) if ckpt is None else ckpt
    if test_cfg_from == "checkpoint":
        config["model"]["test_cfg"] = checkpoint_test_cfg(ckpt, config["model"], path)
    segmentor = build_segmentor(OmegaConf.create(config["model"]))
    ours = convert_mmseg_state_dict(state_dict_of(ckpt, path), segmentor, source=path)
    segmentor.load_state_dict(ours, strict=True)
    meta = {"config": config, **dataset_meta(config["dataset"]), "run_name": None}
    meta["source"] = {"mmseg_checkpoint": str(path), **mmseg_meta(ckpt)}
    return segmentor.eval(), meta


def checkpoint_test_cfg(ckpt: Any, model_cfg: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The test_cfg to build an MMSegmentation checkpoint's model with: the one of the config in its `meta` where
    it carries one (logged in one line when it differs from `model_cfg`'s), else `model_cfg`'s. The model's
    TTA settings (`tta`) are kept either way."""
    current = dict(model_cfg.get("test_cfg") or {"mode": "whole"})
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    config = config_of_checkpoint_meta(meta)
    own = mmseg_test_cfg(config) if config else None
    if own is None:
        return current
    settings = ("mode", "crop_size", "stride")
    before = {k: current[k] for k in settings if current.get(k) is not None}
    if current.get("mode", "whole") == "whole":
        before = {"mode": "whole"}
    if before == own:
        return current
    log.info(
        f"{Path(path).name}: tested {_describe(own)} as the config in the checkpoint says; model "
        f"'{model_cfg.get('name')}' says {_describe(before)} (model.test_cfg.* on the command line keeps yours)"
    )
    kept = {k: v for k, v in current.items() if k not in settings}
    return {**own, **kept}


def _describe(test_cfg: Mapping[str, Any]) -> str:
    if test_cfg.get("mode", "whole") != "slide":
        return "whole"
    crop, stride = test_cfg["crop_size"], test_cfg["stride"]
    return f"slide ({crop[0]}x{crop[1]} windows, stride {stride[0]}x{stride[1]})"


def replace_configs(
    meta: Mapping[str, Any], model_cfg: DictConfig | Mapping | None, dataset_cfg: DictConfig | Mapping | None
) -> dict[str, Any]:
    """A checkpoint's metadata with its model and/or dataset config replaced by the given ones (classes and
    palette follow the dataset)."""
    saved = meta["config"]
    config = config_pair(
        model_cfg if model_cfg is not None else saved["model"],
        dataset_cfg if dataset_cfg is not None else saved["dataset"],
    )
    out = {**meta, "config": {**saved, **config}}
    if dataset_cfg is not None:
        out.update(dataset_meta(config["dataset"]))
    return out


def config_pair(model_cfg: DictConfig | Mapping, dataset_cfg: DictConfig | Mapping) -> dict[str, Any]:
    """`{"model", "dataset"}` as plain resolved dicts. The dataset is resolved where it comes from (its paths and
    runtime keys); the model against that dataset (`${dataset.num_classes}`), wherever each came from."""
    if isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.to_container(dataset_cfg, resolve=True)
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=False)
    root = OmegaConf.create({"model": dict(model_cfg), "dataset": dict(dataset_cfg)})
    return {"model": resolved(root, "model"), "dataset": resolved(root, "dataset")}


def dataset_meta(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`classes` and `palette` of a dataset config (its datamodule reads them off the dataset class; no files)."""
    from hydra.utils import instantiate

    datamodule = instantiate(OmegaConf.create(dict(dataset_cfg)))
    return {"classes": list(datamodule.classes), "palette": [list(c) for c in datamodule.palette]}


def segkit_checkpoint(segmentor: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint of this project (what `src.loading.checkpoint.read_checkpoint` reads): the weights under the
    LightningModule's `segmentor.` prefix and the metadata (`segkit`: config, classes, palette, source)."""
    state = {f"segmentor.{k}": v.detach().clone() for k, v in segmentor.state_dict().items()}
    return {"state_dict": state, CHECKPOINT_META_KEY: dict(meta)}
