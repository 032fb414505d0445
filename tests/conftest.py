"""Shared fixtures (session-scoped where they cost seconds): tiny synthetic data, configs, a tiny checkpoint and a
finished tiny training run. The helpers they use are in `tests/helpers.py`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from tests.helpers import (
    SMALL_MODEL,
    TINY_TRAIN,
    TinyRun,
    TrainedRun,
    compose_cfg,
    prepare_data,
    tiny_config,
    write_checkpoint,
)


def _file_handlers() -> set[tuple[logging.Logger, logging.FileHandler]]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return {
        (lg, h)
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.FileHandler)
    }


@pytest.fixture(autouse=True)
def _close_run_log_files():
    """Entry points run in-process through `hydra.main` leave Hydra's file handler (the run's `<task>.log`) on
    the root logger, as a CLI leaves it until the process exits. Closed and removed after each test: the folders
    of passed tests are deleted (`tmp_path_retention_policy`), and a later test must not log into one."""
    before = _file_handlers()
    yield
    for logger, handler in _file_handlers() - before:
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def one_thread():
    """One intra-op thread: small models spend their time in OpenMP barriers when the 2 cores are shared (a run
    of tests/test_learns.py: ~4 s with one thread, ~60 s with two beside another job)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_train_cfg(tmp_path: Path, data_dir: Path):
    """A factory: tiny training config with extra overrides, each run in its own output dir."""
    counter = {"n": 0}

    def make(*overrides: str) -> DictConfig:
        counter["n"] += 1
        out = tmp_path / f"run{counter['n']}"
        return compose_cfg("train", [*TINY_TRAIN, f"paths.data_dir={data_dir}", *overrides], out)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One real training run per test session, for the tests that need a trained checkpoint and its run."""
    from src.train import train

    root = tmp_path_factory.mktemp("trained_run")
    steps = ["schedule.max_steps=2", "schedule.val_interval=2", "schedule.ckpt_interval=2"]
    overrides = [*TINY_TRAIN, f"paths.data_dir={root / 'data'}", *SMALL_MODEL, *steps]
    cfg = compose_cfg("train", overrides, root / "run")
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return TrainedRun(overrides, Path(metrics["ckpt_path"]), Path(cfg.dataset.data_root), metrics)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The tiny shapes dataset and a tiny random checkpoint (`tests.helpers`), made once per test session and
    shared read-only: tests that change data or config copy them."""
    root = tmp_path_factory.mktemp("tiny_run")
    try:
        config = tiny_config(root / "data", root / "train_run")
    finally:
        GlobalHydra.instance().clear()
    data_root = prepare_data(config)
    return TinyRun(config, write_checkpoint(root / "tiny.ckpt", config), data_root)
