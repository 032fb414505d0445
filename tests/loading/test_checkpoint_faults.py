"""Bad checkpoints and faults while saving: one loader names the file, resume=true falls back, a failed save keeps
the previous files, two launches of one run name never share a folder.

Like `tests/utils/test_errors.py`, entry points run in this process; two launches at once fork it (everything is
imported already); the file size limit runs in a subprocess.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from src.engine.callbacks.checkpoint_io import remove_stale_tmp
from src.eval import main as eval_main
from src.loading.checkpoint import checkpoints_newest_first, read_checkpoint
from src.train import main as train_main
from src.train import train
from src.utils.errors import CheckpointError
from tests.helpers import (
    RecordSteps,
    TinyRun,
    assert_short_error,
    compose_cfg,
    run_entry,
    train_args,
    with_callbacks,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def truncated(tiny_run: TinyRun, tmp_path: Path) -> Path:
    """The tiny checkpoint cut to half its size, as an interrupted copy leaves it."""
    data = tiny_run.ckpt.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


# ----------------------------------------------------------------------------------------- loader
def test_loader_names_the_file_for_truncated_and_refused_checkpoints(truncated, tmp_path):
    with pytest.raises(CheckpointError, match=f"'{truncated}': the file is truncated") as info:
        read_checkpoint(truncated)
    assert len(str(info.value)) < 300
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "obj": logging.getLogger("x")}, unsafe)  # an object weights_only refuses
    with pytest.raises(CheckpointError, match=f"'{unsafe}': it holds Python objects besides tensors") as info:
        read_checkpoint(unsafe)
    assert len(str(info.value)) < 400  # torch's own message runs to dozens of lines


def test_truncated_ckpt_path_is_one_block_naming_the_file(tiny_run, truncated, tmp_path, capfd, monkeypatch):
    args = train_args(tiny_run.data_root.parent, f"ckpt_path={truncated}")
    code, out = run_entry(train_main, args, tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, f"ckpt_path: cannot load checkpoint '{truncated}': the file is truncated")
    assert "resume=true picks the newest one that loads" in " ".join(out.split())  # what to do


def test_checkpoint_of_another_model_is_one_paragraph(tiny_run, tmp_path, capfd, monkeypatch):
    args = train_args(tiny_run.data_root.parent, f"ckpt_path={tiny_run.ckpt}")
    code, out = run_entry(train_main, args, tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, f"ckpt_path: '{tiny_run.ckpt}' holds another model than this run's")
    # the differing keys of the model configs, not state-dict key lists
    assert "model.backbone._target_: 'tests.helpers.TinyBackbone' in the checkpoint" in " ".join(out.split())
    assert "Missing key(s)" not in out and "Unexpected key(s)" not in out


def test_eval_of_a_truncated_checkpoint_is_one_block(truncated, tmp_path, capfd, monkeypatch):
    code, out = run_entry(eval_main, [f"ckpt_path={truncated}"], tmp_path, capfd, monkeypatch, config="eval")
    assert_short_error(code, out, "Error (checkpoint): ckpt_path: cannot", f"'{truncated}'")


# ----------------------------------------------------------------------------------------- resume
def test_resume_skips_a_truncated_newest_checkpoint_and_resumes_the_previous(trained_run, tmp_path, caplog):
    """A copy of the session's 2-step run; its newest file, last.ckpt, cut as a crash mid-copy leaves it."""
    ckpts = tmp_path / "runs" / "first" / "checkpoints"
    shutil.copytree(trained_run.ckpt.parent, ckpts)
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    for path in ckpts.iterdir():  # written a while ago, last.ckpt the newest
        os.utime(path, (time.time() - (50 if path == last else 100),) * 2)
    (ckpts / "iter_2.ckpt.4194305.tmp").write_bytes(b"left by a killed save")  # no such pid
    overrides = [*trained_run.overrides, "resume=true", f"resume_dir={tmp_path / 'runs'}", "test=false"]
    cfg = compose_cfg(
        "train", [*overrides, "schedule.max_steps=3", "schedule.ckpt_interval=1"], tmp_path / "2nd"
    )
    RecordSteps.seen = []
    with caplog.at_level(logging.INFO):
        train(with_callbacks(cfg, RecordSteps))
    assert RecordSteps.seen == [2]  # resumed at step 2 (not from scratch), trained step 3
    assert f"resume=true: skipping {last}: the file is truncated" in caplog.text
    # step 3 saved next to the resumed checkpoint, and the next resume=true finds it
    newest = checkpoints_newest_first(tmp_path / "runs")[0]
    assert (
        newest.parent == ckpts
        and torch.load(newest, map_location="cpu", weights_only=True)["global_step"] == 3
    )
    assert not list(ckpts.glob("*.tmp")) and "left by an interrupted checkpoint save" in caplog.text


def test_resume_of_a_finished_run_does_nothing_or_redoes_its_missing_test(trained_run, tmp_path, caplog):
    """`resume=true` on a run that reached max_steps: with its record, one line and its metrics, the run and the
    runs folder untouched; without its record (stopped before the test), the test and record are redone there."""
    first = tmp_path / "runs" / "first"
    shutil.copytree(trained_run.ckpt.parent.parent, first)  # the session's 2-step run, its record included
    before = sorted(p.relative_to(first) for p in first.rglob("*"))
    overrides = [*trained_run.overrides, "resume=true", f"resume_dir={tmp_path / 'runs'}"]
    launch = tmp_path / "runs" / "second"
    cfg = compose_cfg("train", overrides, launch)
    launch.mkdir()
    (launch / "train.log").write_text("what every launch writes first\n")
    RecordSteps.seen = []
    with caplog.at_level(logging.INFO):
        metrics = train(with_callbacks(cfg, RecordSteps))
    assert RecordSteps.seen == []  # nothing trained
    assert "already finished at step 2" in caplog.text and "Nothing to do" in caplog.text
    assert metrics["test/mIoU"] == pytest.approx(trained_run.metrics["test/mIoU"])
    assert sorted(p.relative_to(first) for p in first.rglob("*")) == before
    assert not launch.exists()  # no stray folder (nor record) beside the run
    # stopped after its last checkpoint, before the test: tested now, the record written in the run's folder
    (first / "results.json").unlink()
    caplog.clear()
    cfg = compose_cfg("train", overrides, tmp_path / "runs" / "third")
    with caplog.at_level(logging.INFO):
        metrics = train(with_callbacks(cfg, RecordSteps))
    assert RecordSteps.seen == [] and "finished training at step 2; testing it" in caplog.text
    assert metrics["test/mIoU"] == pytest.approx(trained_run.metrics["test/mIoU"])
    assert (first / "results.json").is_file()


# ----------------------------------------------------------------------------------------- faults
def forked(target, output: Path) -> int:
    """Start `target()` in a forked child (this process's imports come along: no 6 s of imports as a new
    interpreter would take) with its stdout and stderr in `output`. The child must not run torch ops (its
    thread pools do not survive a fork): an entry point failing on its config before building anything."""

    def child() -> None:
        stream = open(output, "w", buffering=1)  # noqa: SIM115 (the child's streams until it exits)
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
        GlobalHydra.instance().clear()
        sys.exit(target())

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    return proc


def test_save_under_a_file_size_limit_reports_and_keeps_the_previous_checkpoint(tmp_path):
    """RLIMIT_FSIZE of 1 MB in a subprocess (not a fork: torch's thread pools do not survive one): writing a 4 MB
    checkpoint fails with EFBIG (torch reports `unexpected pos`); the block names the file and the free space,
    the previous last.ckpt is kept."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"the previous checkpoint")
    script = textwrap.dedent(
        f"""
        import resource, sys, torch
        from pathlib import Path
        from src.engine.callbacks.checkpoint_io import AtomicCheckpointIO
        from src.utils.errors import run_script
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        save = lambda: AtomicCheckpointIO().save_checkpoint({{"w": torch.zeros(1_000_000)}}, Path({str(last)!r}))
        sys.exit(run_script(save))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": ""},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert_short_error(
        proc.returncode, out, f"Saving checkpoint '{last}' failed after", "File too large", "free"
    )
    assert last.read_bytes() == b"the previous checkpoint"  # kept as it was
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no .tmp left behind


def test_two_launches_at_once_get_two_run_folders(tmp_path, monkeypatch):
    """Two launches at once (forked, so the same second) of one run name: each gets its own folder."""
    base = tmp_path / "runs" / "same"
    monkeypatch.setenv("SEGKIT_ROOT", str(tmp_path))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    # the folder name both launches resolve (as two launches in one second do), made exclusive as by default
    exclusive = f"hydra.run.dir=${{unique_dir:{base}}}"
    monkeypatch.setattr(
        sys, "argv", ["src.train", *train_args(tmp_path / "data", "dataset.batch_size=0", exclusive)]
    )
    entry = hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")(
        train_main.__wrapped__
    )
    procs = [forked(entry, tmp_path / f"out{i}.txt") for i in range(2)]
    for i, proc in enumerate(procs):
        proc.join(timeout=120)
        if proc.exitcode is None:
            proc.kill()
            pytest.fail(
                f"launch {i} did not finish in 120 s: {(tmp_path / f'out{i}.txt').read_text()[-2000:]}"
            )
        assert_short_error(proc.exitcode, (tmp_path / f"out{i}.txt").read_text(), "dataset.batch_size=0")
    folders = sorted(p.name for p in base.parent.iterdir())
    assert folders == ["same", "same_1"]
    for name in folders:  # each launch wrote its own files, once
        assert (base.parent / name / "config.yaml").is_file()
        assert (base.parent / name / "train.log").read_text().count("Traceback (most recent call last)") == 1


def test_stale_tmp_files_are_removed_but_not_those_of_a_live_save(tmp_path):
    dead, legacy, live = (
        tmp_path / n for n in ("a.ckpt.4194305.tmp", "b.ckpt.tmp", f"c.ckpt.{os.getpid()}.tmp")
    )
    for path in (dead, legacy, live):
        path.write_bytes(b"x")
    assert sorted(remove_stale_tmp([tmp_path])) == [dead, legacy]
    assert live.exists()


def test_checkpoints_naming_moved_classes_still_rebuild():
    """A checkpoint written before UNet and the smp head moved (src.models.unet, src.models.smp_head) names them
    by their old paths: rebuilding and resuming rename them (`MOVED_TARGETS`), interpolations untouched."""
    from omegaconf import OmegaConf

    from src.loading.build import MOVED_TARGETS, upgrade_targets

    old = {
        "backbone": {"_target_": "src.models.unet.UNet"},
        "parts": [{"_target_": "src.models.smp_head.SMPHead"}],
    }
    new = upgrade_targets(old)
    assert (
        new["backbone"]["_target_"]
        == MOVED_TARGETS["src.models.unet.UNet"]
        == "src.models.backbones.unet.UNet"
    )
    assert new["parts"][0]["_target_"] == "src.models.heads.smp.SMPHead"
    root = OmegaConf.create(
        {"n": 3, "model": {"backbone": {"_target_": "src.models.unet.UNet"}, "k": "${n}"}}
    )
    upgraded = upgrade_targets(root.model)
    assert upgraded.backbone._target_ == "src.models.backbones.unet.UNet" and upgraded.k == 3
    assert (
        root.model.backbone._target_ == "src.models.unet.UNet"
    )  # a copy: the given config is left as it was
