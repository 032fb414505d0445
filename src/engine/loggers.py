"""What the experiment loggers receive beyond the metrics Lightning sends them: wandb's `log_model` offline too,
the resolved config (`log_config`), and MLflow as an optional extra (`mlflow_logger`)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from omegaconf import DictConfig, OmegaConf


class WandbLogger(_LightningWandbLogger):
    """`lightning.pytorch.loggers.WandbLogger` with `log_model` allowed in offline mode.

    Lightning refuses `log_model` with `offline=True`, but wandb stages an offline run's artifact and `wandb sync`
    uploads it; `src.utils.instantiators` goes offline whenever no API key is configured, so
    `logger.wandb.log_model=true` must not fail there.

    `log_model=True` logs, once training has ended, the last checkpoint and the best one of every
    `ModelCheckpoint` as versions of the run's `model` artifact (aliases `latest`, `best`); `"all"` every
    checkpoint as it is written. (Lightning's `True` also uploads every checkpoint as it is written when a
    callback keeps them all, `save_top_k=-1`, which the periodic checkpoint of `conf/runtime/default.yaml`
    does: that is what `"all"` is for.)
    """

    def __init__(self, *args: Any, log_model: Literal["all"] | bool = False, **kwargs: Any) -> None:
        super().__init__(*args, log_model=False, **kwargs)
        self._log_model = log_model
        if self._wandb_init.get("anonymous") is None:
            # Lightning always passes `anonymous`, which wandb >= 0.19 ignores with a warning on every run
            self._wandb_init.pop("anonymous", None)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._log_model is True:  # logged by `finalize` at the end of training
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback
            return
        super().after_save_checkpoint(checkpoint_callback)


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the resolved config to the loggers (wandb: the run config; TensorBoard: `hparams.yaml` and the YAML
    as text under `config`; CSV: `hparams.yaml`); rank zero only, as the loggers' own methods."""
    params = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(params, dict)
    text = "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```"
    for logger in loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):
            # hparams are only written to the event file together with metrics; the text tab shows the YAML
            logger.experiment.add_text("config", text, global_step=0)


def mlflow_logger(*, optional: bool = False, tracking_uri: str | None = None, **kwargs: Any) -> Logger | None:
    """Lightning's `MLFlowLogger(tracking_uri=..., **kwargs)` (`conf/logger/mlflow.yaml`).

    MLflow is an optional extra (`pip install -e '.[mlflow]'`): when it is missing, `optional=True` (what
    `logger=many` sets) leaves it out with a warning, and `optional=False` (`logger=mlflow`) stops with the
    install command. A `file:` store (the default: `<run dir>/mlruns`) needs no server; MLflow 3 keeps that
    backend in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE` is set, which is done here
    (a `sqlite:///...` URI needs no such switch).
    """
    if importlib.util.find_spec("mlflow") is None:
        hint = "pip install -e '.[mlflow]' (or pip install mlflow)"
        if optional:
            from src.utils.logging import get_logger

            get_logger(__name__).warning(f"MLflow is not installed: logging without it ({hint})")
            return None
        raise ImportError(f"logger=mlflow needs MLflow, which is not installed: {hint}")
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri and tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)
