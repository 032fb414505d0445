"""`num_workers: auto` (the default of `runtime/` and eval): DataLoader workers from the usable cores."""

from __future__ import annotations

import lightning as L
import pytest
from omegaconf import OmegaConf

from src.data import datamodule as dm_module
from src.train import build_datamodule
from src.utils.config_check import TRAIN_RULES, problems


@pytest.mark.parametrize(
    ("cores", "processes", "expected"),
    [(2, 1, 2), (16, 4, 4), (16, 8, 2), (1, 2, 1), (64, 1, 8), (12, 8, 1)],
)
def test_auto_workers_share_the_usable_cores_among_the_nodes_processes(
    monkeypatch, cores, processes, expected
):
    monkeypatch.setattr(dm_module, "usable_cpus", lambda: cores)
    assert dm_module.auto_num_workers(processes) == expected


def test_usable_cpus_follow_the_affinity_mask():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this OS")
    assert dm_module.usable_cpus() == len(os.sched_getaffinity(0)) >= 1


def test_the_runtime_decides_the_loader_and_auto_resolves_per_process(make_train_cfg, monkeypatch):
    monkeypatch.setattr(dm_module, "usable_cpus", lambda: 6)
    auto = build_datamodule(make_train_cfg("runtime.num_workers=auto", "runtime.persistent_workers=true"))
    assert auto.num_workers == "auto" and auto.loader_workers() == 6  # no Trainer: one process
    auto.trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
    assert auto.loader_workers() == 3  # two processes on the node share the 6 cores
    auto.trainer = None
    auto.prepare_data()
    loader = auto.train_dataloader()
    assert loader.num_workers == 6 and loader.persistent_workers
    fixed = build_datamodule(make_train_cfg("runtime.num_workers=0", "runtime.persistent_workers=true"))
    loader = fixed.train_dataloader()
    assert loader.num_workers == 0 and not loader.persistent_workers  # persistent needs workers


@pytest.mark.parametrize(
    ("value", "ok"), [("auto", True), (0, True), (3, True), (-1, False), ("many", False)]
)
def test_config_check_takes_auto_or_a_count(value, ok):
    cfg = OmegaConf.create({"runtime": {"num_workers": value}})
    found = problems(cfg, TRAIN_RULES)
    assert (found == []) is ok, found
    if not ok:
        assert found == [f"runtime.num_workers={value!r}: expected an integer >= 0 or 'auto'"]
