"""Train a segmentor, then test it: `python -m src.train [experiment=X] [key=value ...]`.

Every part is built from the Hydra config (`conf/train.yaml`); this decides where training starts ("Training
recipe" in the README):

- `ckpt_path=<file>`: resume that checkpoint (weights, optimiser, LR schedule, step, random state);
- `resume=true`: resume the newest checkpoint under `resume_dir` and keep writing checkpoints beside it; with
  none there, start anew (or from `load_from`): the same command serves the first launch and every restart;
- `load_from=<file>`: fine-tune from weights only (step 0); tensors whose shape differs keep their new init.

A run stopped by SIGTERM or SIGUSR1 writes `checkpoints/preempted.ckpt` and exits with code 143.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from src.data.datamodule import SegDataModule
from src.engine.callbacks.checkpoint_io import AtomicCheckpointIO, remove_stale_tmp
from src.engine.callbacks.preemption import PREEMPTED_EXIT_CODE
from src.engine.callbacks.run_stats import RunStats
from src.engine.loggers import log_config
from src.engine.module import SegmentationModule, TimmSyncBatchNorm, quiet_epoch_sync_advice
from src.engine.results import RECORD_NAME, build_run_record, write_run_record
from src.loading.checkpoint import (
    build_segmentor,
    check_same_model,
    last_checkpoint,
    load_matching_weights,
    newest_loadable_checkpoint,
    read_checkpoint,
)
from src.models.compile import compile_segmentor
from src.utils import resolvers  # noqa: F401  (registers ${project_root:} and ${iters:})
from src.utils.config_check import check_config
from src.utils.errors import CheckpointError, ConfigError, report_errors
from src.utils.hydra_ddp import ddp_job_scope
from src.utils.hydra_ddp import install as install_hydra_ddp_launcher
from src.utils.instantiators import instantiate_callbacks, instantiate_loggers
from src.utils.logging import get_logger
from src.utils.precision import apply_precision, resolve_precision
from src.utils.task import extras, task_wrapper
from src.weights.zoo import resolve_weights, zoo_command_line

log = get_logger(__name__)


def build_datamodule(cfg: DictConfig) -> SegDataModule:
    """The datamodule of `cfg.dataset` with the DataLoader settings of `cfg.runtime` (the dataset configs hold
    what the data is, the runtime how it is loaded)."""
    rt = cfg.runtime
    return instantiate(
        cfg.dataset,
        num_workers=rt.get("num_workers", "auto"),
        pin_memory=rt.get("pin_memory", True),
        persistent_workers=rt.get("persistent_workers", True),
    )


def build_module(cfg: DictConfig, datamodule: Any, pretrained: bool = True) -> SegmentationModule:
    """The LightningModule of a config. `pretrained=False` builds the model without fetching pretrained weights
    (resuming and `load_from` overwrite them with the checkpoint's: no download, no hub needed)."""
    segmentor = instantiate(cfg.model) if pretrained else build_segmentor(cfg.model)
    if cfg.runtime.get("compile"):
        compile_segmentor(segmentor)  # lazy: the first step compiles (eager after one warning where it fails)
    schedule = cfg.schedule
    resolved = OmegaConf.to_container(schedule, resolve=True)
    module = SegmentationModule(
        segmentor,
        optimizer=instantiate(schedule.optimizer),
        scheduler=instantiate(schedule.scheduler) if schedule.get("scheduler") else None,
        class_names=datamodule.classes,
        ignore_index=datamodule.ignore_index,  # the dataset config's: metrics skip what the losses skip
        paramwise=resolved.get("paramwise") or None,
        warmup_iters=schedule.get("warmup_iters", 0),
        warmup_ratio=schedule.get("warmup_ratio", 1e-6),
        clip_grad=resolved.get("clip_grad") or None,
        channels_last=resolve_precision(  # `auto` -> on with a mixed precision (src/utils/precision.py)
            cfg.runtime.get("precision", "32-true"), cfg.runtime.get("channels_last", False)
        ).channels_last,
    )
    module.checkpoint_meta = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "classes": list(datamodule.classes),
        "palette": [list(c) for c in datamodule.palette],
        "run_name": cfg.get("run_name"),
    }
    return module


def resolve_start(cfg: DictConfig) -> tuple[str | None, Path | None]:
    """(checkpoint to resume or None, checkpoint folder to keep writing to or None) from `ckpt_path`/`resume`."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and cfg.get("resume"):
        raise ConfigError(
            f"ckpt_path={ckpt_path} and resume=true: give one (resume=true finds the newest itself)"
        )
    if ckpt_path:
        # verified here, by the project's loader, before Lightning loads it: a bad file is named, and a
        # checkpoint of another model is one paragraph, not Lightning's state-dict key lists
        check_same_model(read_checkpoint(ckpt_path), cfg.model, ckpt_path, key="ckpt_path")
        return str(ckpt_path), None
    if not cfg.get("resume"):
        return None, None
    newest, skipped = newest_loadable_checkpoint(cfg.resume_dir, cfg.model)
    for path, why in skipped:
        log.warning(f"resume=true: skipping {path}: {why.split(str(path), 1)[-1].lstrip(chr(39) + ': ')}")
    if newest is None and skipped:
        raise CheckpointError(
            f"resume=true: none of the {len(skipped)} checkpoints under '{cfg.resume_dir}' loads "
            f"(newest: '{skipped[0][0]}')",
            hint="delete the broken files, or start anew with resume=false",
        )
    if newest is None:
        log.info(f"resume=true: no checkpoint under {cfg.resume_dir}/*/checkpoints; starting a new run.")
        return None, None
    ckpt_dir = newest.parent if newest.parent.name == "checkpoints" else newest.parent / "checkpoints"
    return str(newest), ckpt_dir


def finished_run(cfg: DictConfig, ckpt_path: str | None) -> tuple[int, Path, dict | None] | None:
    """`resume=true` found a checkpoint at (or past) `schedule.max_steps`: (its step, its run folder, that folder's
    run record or None when the run stopped before its test and record). None for a run still to train."""
    if not (cfg.get("resume") and ckpt_path):
        return None
    import torch

    step = int(torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    if step < int(cfg.schedule.max_steps):
        return None
    path = Path(ckpt_path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    record = run_dir / RECORD_NAME
    try:
        return step, run_dir, json.loads(record.read_text()) if record.is_file() else None
    except (OSError, json.JSONDecodeError):
        return step, run_dir, None  # an unreadable record is written again


def _remove_launch_folder(cfg: DictConfig) -> None:
    """The folder Hydra made for a launch that had nothing to do, when it holds only what every launch writes
    first (its config and log): a finished run resumed again leaves no stray folder beside it."""
    folder = Path(str(cfg.paths.output_dir))
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= LAUNCH_FILES:
        shutil.rmtree(folder, ignore_errors=True)


# what every launch writes into its folder before training (Hydra's .hydra/ and log, the printed config)
LAUNCH_FILES = {".hydra", "train.log", "config.yaml", "config_tree.log"}


def scan_data(cfg: DictConfig, datamodule: Any) -> None:
    """Prepare the data and build the dataset of every split this run reads (each scans its folder and raises
    naming the missing folder or file), before the model and its pretrained weights. Lightning's own
    `prepare_data`/`setup` reuse this. Rank 0 of each node only: it is the one that prepares the data."""
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return
    datamodule.prepare_data()
    splits = ["train", "val"] if cfg.get("train", True) else []
    splits += ["test"] if cfg.get("test", True) else []
    for split in splits:
        datamodule.split_dataset(split)
    if cfg.get("train", True):
        _check_one_batch(cfg, len(datamodule.split_dataset("train")), int(datamodule.batch_size))


def _check_one_batch(cfg: DictConfig, images: int, batch_size: int) -> None:
    """Raise when each process gets less than one full training batch: the loader drops the incomplete last batch
    (as MMSegmentation's), so nothing would train and the run would end with nothing validated."""
    trainer = cfg.runtime.trainer
    devices = trainer.get("devices", 1)
    devices = len(devices) if isinstance(devices, (list, ListConfig)) else devices
    # "auto" / -1: known only once the Trainer exists; one process is the lenient guess
    processes = devices * int(trainer.get("num_nodes", 1)) if isinstance(devices, int) and devices > 0 else 1
    per_process = images // processes
    if per_process < batch_size:
        raise ConfigError(
            f"dataset.batch_size={batch_size}: the training split has {images} images, {per_process} per process "
            f"over {processes} process(es), less than one batch (incomplete batches are dropped), so nothing would "
            "train. Lower dataset.batch_size or the number of devices, or add training images."
        )


def _redirect_checkpoints(cfg: DictConfig, ckpt_dir: Path) -> None:
    """Point every callback that writes into this launch's `checkpoints/` at the resumed run's folder."""
    own = str(Path(cfg.paths.output_dir) / "checkpoints")
    with open_dict(cfg):
        for cb_cfg in (cfg.runtime.get("callbacks") or {}).values():
            if isinstance(cb_cfg, DictConfig) and str(cb_cfg.get("dirpath")) == own:
                cb_cfg.dirpath = str(ckpt_dir)


def _trainer_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments that the config cannot express: Lightning counts `val_check_interval` in batches, the
    schedule counts validation in iterations (optimiser steps), as MMSegmentation; they differ by accumulation."""
    accumulate = int(cfg.runtime.trainer.get("accumulate_grad_batches") or 1)
    if accumulate > 1 and isinstance(cfg.runtime.trainer.get("val_check_interval"), int):
        return {"val_check_interval": cfg.runtime.trainer.val_check_interval * accumulate}
    return {}


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test; returns the metrics (train/val from fit, test/... from test).

    Checked in order before anything heavy is built: the config's keys, the data of every split the run reads,
    the checkpoint to resume; then the model (pretrained weights last)."""
    check_config(cfg)
    # runtime.precision / channels_last `auto` -> this machine's choice, logged
    precision = apply_precision(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info(f"Dataset <{cfg.dataset._target_}>, model <{cfg.model.get('name', cfg.model._target_)}>")
    datamodule = build_datamodule(cfg)
    scan_data(cfg, datamodule)
    ckpt_path, ckpt_dir = resolve_start(cfg)
    finished = finished_run(cfg, ckpt_path)
    if finished is not None and finished[2] is not None:
        step, run_dir, record = finished
        log.info(
            f"resume=true: the run in {run_dir} already finished at step {step} (schedule.max_steps="
            f"{cfg.schedule.max_steps}); its record: {run_dir / RECORD_NAME}. Nothing to do (a longer schedule, "
            "schedule.max_steps=<more>, trains on)"
        )
        _remove_launch_folder(cfg)
        return {**record.get("metrics", {}), "ckpt_path": record.get("ckpt_path")}
    if finished is not None:  # trained to the end, but stopped before its test and record: redo them there
        log.info(f"resume=true: the run in {finished[1]} finished training at step {finished[0]}; testing it")
        with open_dict(cfg):
            cfg.paths.output_dir = str(finished[1])
    if ckpt_dir is not None:
        if finished is None:
            log.info(f"resume=true: resuming {ckpt_path}; checkpoints continue in {ckpt_dir}")
        _redirect_checkpoints(cfg, ckpt_dir)
    own_ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    for tmp in remove_stale_tmp([own_ckpt_dir, *Path(str(cfg.resume_dir)).glob("*/checkpoints")]):
        log.info(f"Removed {tmp}, left by an interrupted checkpoint save")
    # load_from=zoo:<name>: the zoo's file, downloaded once and verified before the model is built
    load_from = resolve_weights(cfg.load_from)[0] if cfg.get("load_from") and ckpt_path is None else None
    start_from = ckpt_path or load_from
    if start_from is not None:
        log.info(f"Pretrained weights are not fetched: the weights come from {start_from}")
    module = build_module(cfg, datamodule, pretrained=start_from is None)
    if load_from is not None:
        _load_weights(module, str(load_from))
    elif cfg.get("load_from"):
        log.info(f"load_from={cfg.load_from} ignored: resuming {ckpt_path}")
    callbacks = instantiate_callbacks(cfg.runtime.get("callbacks"))
    # a finished run's redone test writes no logs: a logger would start its files anew in the run's folder
    loggers = instantiate_loggers(cfg.get("logger")) if finished is None else []
    log_config(loggers, cfg)
    trainer: L.Trainer = instantiate(
        cfg.runtime.trainer,
        callbacks=callbacks,
        logger=loggers,
        # sync_batchnorm: timm's conversion, which keeps the heads' norm + ReLU layers whole (src/engine/module.py)
        plugins=[AtomicCheckpointIO()]
        + ([TimmSyncBatchNorm()] if cfg.runtime.trainer.get("sync_batchnorm") else []),
        **_trainer_overrides(cfg),
    )
    started = time.perf_counter()
    fit = cfg.get("train", True) and finished is None
    try:
        if fit:
            with quiet_epoch_sync_advice():
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        train_time = time.perf_counter() - started if fit else None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            ckpt = cfg.get("test_ckpt")
            if ckpt == "best":
                # the path, not "best": Lightning would take the first checkpoint callback's, the periodic one
                ckpt = _best_path(trainer)
                if not ckpt:
                    log.warning("No best checkpoint was saved; testing the current weights.")
            elif ckpt is None and not fit:
                ckpt = ckpt_path  # train=false ckpt_path=<file>, a finished run: that checkpoint (none: new weights)
            with quiet_epoch_sync_advice():
                trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False)
            metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()}
    except SIGTERMException:
        log.warning(
            f"Stopped by SIGTERM/SIGUSR1 at step {trainer.global_step} (exit code {PREEMPTED_EXIT_CODE}); "
            "continue with the same command and resume=true"
        )
        sys.exit(PREEMPTED_EXIT_CODE)
    last = last_checkpoint(trainer)
    if last:
        log.info(f"Last checkpoint: {last}")
        log.info(f"Evaluate it with: python -m src.eval ckpt_path={last}")
        log.info(f"Predict with:     python -m src.infer ckpt_path={last} input=<image|folder|video>")
    metrics["ckpt_path"] = last
    if trainer.is_global_zero:
        stats = next((cb.stats for cb in trainer.callbacks if isinstance(cb, RunStats)), {})
        extra = {"ckpt_path": last, "best_ckpt_path": _best_path(trainer), "train_time_s": train_time}
        extra |= precision.as_record()
        record = write_run_record(build_run_record(cfg, metrics, stats, extra), cfg.paths.output_dir)
        log.info(f"Run record (scripts/collect_results.py reads it): {record}")
    return metrics


def _load_weights(module: SegmentationModule, path: str) -> None:
    report = load_matching_weights(module.segmentor, path)
    total = len(module.segmentor.state_dict())
    log.info(f"load_from={path}: {len(report['loaded'])}/{total} tensors loaded; training starts at step 0")
    if report["shape_mismatch"]:
        log.info(f"  shape differs, kept the new initialisation: {report['shape_mismatch']}")
    if report["missing"]:
        log.info(f"  not in the checkpoint, kept the new initialisation: {report['missing']}")
    if report["unexpected"]:
        log.info(f"  not in the model, ignored: {report['unexpected']}")


def _best_path(trainer: L.Trainer) -> str | None:
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", ""):
            return cb.best_model_path
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_errors
def main(cfg: DictConfig) -> float | None:
    # multirun + DDP: the ranks of each job run that job alone, in its folder (src/utils/hydra_ddp.py)
    install_hydra_ddp_launcher()
    extras(cfg)
    with ddp_job_scope():
        metrics = train(cfg)
        metric_name = cfg.get("optimized_metric")
        if metric_name and metric_name not in metrics:
            raise KeyError(f"optimized_metric='{metric_name}' was not logged; logged: {sorted(metrics)}")
        return metrics[metric_name] if metric_name else None


if __name__ == "__main__":
    sys.argv = zoo_command_line(
        sys.argv, key="recipe"
    )  # recipe=<zoo name>: the entry's MMSegmentation recipe
    main()
