"""Train a segmentor, then test it: `python -m src.train [experiment=X] [key=value ...]`.

Thin entry point: every part is built from the Hydra config (`conf/train.yaml`), see the README.
"""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.checkpoint import AtomicCheckpointIO
from src.module import SegmentationModule
from src.utils import resolvers  # noqa: F401  (registers ${project_root:} and ${iters:})
from src.utils.instantiators import instantiate_callbacks, instantiate_loggers
from src.utils.logging import get_logger
from src.utils.task import extras, task_wrapper

log = get_logger(__name__)


def build_module(cfg: DictConfig, datamodule: Any) -> SegmentationModule:
    segmentor = instantiate(cfg.model)
    module = SegmentationModule(
        segmentor,
        optimizer=instantiate(cfg.schedule.optimizer),
        scheduler=instantiate(cfg.schedule.scheduler) if cfg.schedule.get("scheduler") else None,
        class_names=datamodule.classes,
    )
    module.checkpoint_meta = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "classes": list(datamodule.classes),
        "palette": [list(c) for c in datamodule.palette],
        "run_name": cfg.get("run_name"),
    }
    return module


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test; returns the metrics (train/val from fit, test/... from test)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info(f"Dataset <{cfg.dataset._target_}>, model <{cfg.model.get('name', cfg.model._target_)}>")
    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg, datamodule)
    callbacks = instantiate_callbacks(cfg.runtime.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.runtime.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test", True):
        ckpt = cfg.get("test_ckpt")
        if ckpt == "best" and not _best_path(trainer):
            log.warning("No best checkpoint was saved; testing the current weights.")
            ckpt = None
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False)
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()}
    last = _last_path(trainer)
    if last:
        log.info(f"Last checkpoint: {last}")
        log.info(f"Evaluate it with: python -m src.eval ckpt_path={last}")
        log.info(f"Predict with:     python -m src.infer ckpt_path={last} input=<image|folder|video>")
    metrics["ckpt_path"] = last
    return metrics


def _last_path(trainer: L.Trainer) -> str | None:
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", ""):
            return cb.last_model_path
    return None


def _best_path(trainer: L.Trainer) -> str | None:
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", ""):
            return cb.best_model_path
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    extras(cfg)
    metrics = train(cfg)
    metric_name = cfg.get("optimized_metric")
    if metric_name:
        if metric_name not in metrics:
            raise KeyError(f"optimized_metric='{metric_name}' was not logged; logged: {sorted(metrics)}")
        return metrics[metric_name]
    return None


if __name__ == "__main__":
    main()
