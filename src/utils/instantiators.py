"""Build callbacks and loggers from their config groups (a dict of `_target_` entries each)."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict

from src.utils.logging import get_logger

log = get_logger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    if not cfg:
        return []
    callbacks = []
    for name, cb_cfg in cfg.items():
        if isinstance(cb_cfg, DictConfig) and "_target_" in cb_cfg:
            log.info(f"Callback <{name}>: {cb_cfg._target_}")
            callbacks.append(instantiate(cb_cfg))
    return callbacks


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    if not cfg:
        return []
    loggers = []
    for name, lg_cfg in cfg.items():
        if not (isinstance(lg_cfg, DictConfig) and "_target_" in lg_cfg):
            continue
        if "WandbLogger" in lg_cfg._target_:
            lg_cfg = _wandb_offline_unless_logged_in(lg_cfg)
        log.info(f"Logger <{name}>: {lg_cfg._target_}")
        logger = instantiate(lg_cfg)
        # None: an optional logger whose package is not installed (src.engine.loggers.mlflow_logger)
        if logger is not None:
            loggers.append(logger)
    return loggers


def wandb_api_key_configured() -> bool:
    """True when wandb has a key (WANDB_API_KEY or a ~/.netrc entry for its host), found without any prompt or
    network call; wandb's own lookup API moves between releases, the netrc file does not."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_offline_unless_logged_in(cfg: DictConfig) -> DictConfig:
    """wandb never prompts: no key -> offline mode (sync later with `wandb sync <dir>`)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    cfg = cfg.copy()
    with open_dict(cfg):
        if not wandb_api_key_configured() or os.environ.get("WANDB_MODE") == "offline":
            if not cfg.get("offline", False):
                log.info("wandb: no API key configured, logging offline (sync later with `wandb sync`).")
            cfg.offline = True
    return cfg
