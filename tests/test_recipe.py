"""The training recipe end to end on tiny data: exact resume, preemption, fine-tuning, EMA, precision, DDP."""

from __future__ import annotations

import copy
import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning import Callback
from omegaconf import open_dict
from torch.utils.data import DataLoader, Subset

from src.data.datasets.base import seg_collate
from src.engine.callbacks import PREEMPTED_EXIT_CODE
from src.loading.checkpoint import load_segmentor
from src.train import build_datamodule, build_module, resolve_start, train
from tests.helpers import SMALL_MODEL, TINY_TRAIN, RecordSteps, compose_cfg, with_callbacks

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ test callbacks (Hydra `_target_`s)
class SigtermAtStep2(Callback):
    """Sends SIGTERM to this process after the second optimiser step, as a scheduler preempting the job."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)


class RecordWeights(Callback):
    """Float tensors of the module: after every training batch, when validation and testing start."""

    train: list[dict[str, torch.Tensor]] = []
    val: list[dict[str, torch.Tensor]] = []
    test: list[dict[str, torch.Tensor]] = []
    start: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _state(module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, module) -> None:
        RecordWeights.start.append(self._state(module))

    def on_train_batch_end(self, trainer, module, *args) -> None:
        RecordWeights.train.append(self._state(module))

    def on_validation_epoch_start(self, trainer, module) -> None:
        RecordWeights.val.append(self._state(module))

    def on_test_start(self, trainer, module) -> None:
        RecordWeights.test.append(self._state(module))

    @classmethod
    def reset(cls) -> None:
        cls.train, cls.val, cls.test, cls.start = [], [], [], []


class RecordHeadDtype(Callback):
    """The dtype of the decode head's output in the training steps."""

    dtypes: list[torch.dtype] = []

    def on_train_start(self, trainer, module) -> None:
        module.segmentor.decode_head.register_forward_hook(
            lambda m, i, out: RecordHeadDtype.dtypes.append(out.dtype) if m.training else None
        )


class RecordTrainer(Callback):
    """The Trainer's settings as the run uses them."""

    seen: dict = {}

    def on_train_start(self, trainer, module) -> None:
        RecordTrainer.seen = {
            "trainer_gradient_clip_val": trainer.gradient_clip_val,
            "clip_grad": module.clip_grad,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "val_check_interval": trainer.val_check_interval,
            "batches": 0,
        }

    def on_train_batch_end(self, trainer, *args) -> None:
        RecordTrainer.seen["batches"] += 1


def read_csv_metrics(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))


def logged(rows: list[dict[str, str]], key: str, step: int) -> float:
    """The value of `key` logged after `step` iterations (metrics.csv numbers that row `step - 1`)."""
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "") and int(r["step"]) == step - 1]
    assert len(values) == 1, (key, step, values)
    return values[0]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ------------------------------------------------------------------------------- exact resume
@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """Four deterministic runs of 4 steps on 8 training images in batches of 4 (2 steps per epoch), data loaded
    in the main process (num_workers=0), with an EMA of the weights (so that its state is resumed too):

    - A: uninterrupted;
    - B: the same run, preempted (SIGTERM) after step 2, the end of the first epoch;
    - B2: `resume=true`, which finds B's preemption checkpoint, and trains steps 3 and 4;
    - C: `ckpt_path=` A's periodic checkpoint of step 2, trains steps 3 and 4.

    Resuming is exact on an epoch boundary: Lightning restarts an interrupted epoch from its first batch with a
    non-resumable data loader, so N = 2 is the end of an epoch here. Worker processes would be exact too when
    not persistent (they are re-seeded every epoch) but cost seconds to start.
    """
    root = tmp_path_factory.mktemp("resume")
    runs = root / "logs" / "train" / "runs" / "recipe"

    def run(name: str, *overrides: str, callbacks: tuple[type, ...] = ()) -> tuple[dict, Path]:
        out = runs / name
        cfg = compose_cfg(
            "train",
            [
                *TINY_TRAIN,
                *SMALL_MODEL,
                f"paths.data_dir={root / 'data'}",
                f"paths.log_dir={root / 'logs'}",
                "run_name=recipe",
                "runtime.deterministic=true",
                "test=false",
                "callbacks=ema",
                "runtime.callbacks.ema.decay=0.5",
                *overrides,
            ],
            out,
        )
        RecordSteps.seen = []
        try:
            metrics = train(with_callbacks(cfg, RecordSteps, *callbacks))
        except SystemExit as stop:
            metrics = {"exit_code": stop.code}
        return {**metrics, "steps": list(RecordSteps.seen)}, out

    results = {}
    results["A"] = run("A")
    results["B"] = run("B", callbacks=(SigtermAtStep2,))
    results["B2"] = run("B2", "resume=true")
    results["C"] = run("C", f"ckpt_path={runs / 'A' / 'checkpoints' / 'iter_2.ckpt'}")
    return results


def _last_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The EMA weights (`state_dict`) and the raw ones (`current_model_state`) of a checkpoint."""
    ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw = {f"raw.{k}": v for k, v in ckpt["current_model_state"].items()}
    return {**ckpt["state_dict"], **raw}


def test_two_runs_with_the_same_seed_give_identical_weights_and_metrics(resume_runs):
    (_, a_dir), (b, b_dir) = resume_runs["A"], resume_runs["B"]
    assert b["steps"] == [0, 1]
    assert_same_tensors(
        _last_weights(a_dir / "checkpoints" / "iter_2.ckpt"),
        _last_weights(b_dir / "checkpoints" / "iter_2.ckpt"),
    )
    a_rows, b_rows = read_csv_metrics(a_dir), read_csv_metrics(b_dir)
    for key in ("train/loss", "val/mIoU", "val/aAcc", "val/IoU/disc"):
        assert logged(a_rows, key, 2) == logged(b_rows, key, 2), key


def test_preempted_run_writes_a_checkpoint_and_exits_with_the_documented_code(resume_runs):
    b, b_dir = resume_runs["B"]
    assert b["exit_code"] == PREEMPTED_EXIT_CODE == 143
    preempted = torch.load(b_dir / "checkpoints" / "preempted.ckpt", map_location="cpu", weights_only=True)
    assert preempted["global_step"] == 2
    assert not list((b_dir / "checkpoints").glob("*.tmp"))


def test_resume_true_continues_the_preempted_run_exactly_in_its_folder(resume_runs):
    (a, a_dir), (_, b_dir), (b2, b2_dir) = resume_runs["A"], resume_runs["B"], resume_runs["B2"]
    assert a["steps"] == [0, 1, 2, 3]
    assert b2["steps"] == [2, 3]  # from the preemption checkpoint, not from scratch
    # the next checkpoints land next to the resumed one, not in this launch's folder
    assert (b_dir / "checkpoints" / "iter_4.ckpt").is_file()
    assert not (b2_dir / "checkpoints").exists()
    # 2 + 2 steps end where 4 uninterrupted steps end: weights, BN statistics and validation metrics
    assert_same_tensors(
        _last_weights(a_dir / "checkpoints" / "last.ckpt"), _last_weights(b_dir / "checkpoints" / "last.ckpt")
    )
    val_keys = [k for k in a if k.startswith(("val/", "train/"))]
    assert "val/mIoU" in val_keys and "val/IoU/star" in val_keys
    np.testing.assert_equal({k: b2[k] for k in val_keys}, {k: a[k] for k in val_keys})  # NaN == NaN here


def test_ckpt_path_of_a_periodic_checkpoint_resumes_exactly(resume_runs):
    (a, a_dir), (c, c_dir) = resume_runs["A"], resume_runs["C"]
    assert c["steps"] == [2, 3]
    assert_same_tensors(
        _last_weights(a_dir / "checkpoints" / "last.ckpt"), _last_weights(c_dir / "checkpoints" / "last.ckpt")
    )
    val_keys = [k for k in a if k.startswith("val/")]
    np.testing.assert_equal({k: c[k] for k in val_keys}, {k: a[k] for k in val_keys})


def test_resume_finds_nothing_and_starts_a_new_run_or_rejects_two_sources(tmp_path, caplog):
    cfg = compose_cfg(
        "train",
        [f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path / 'logs'}", "resume=true"],
        tmp_path / "r",
    )
    with caplog.at_level(logging.INFO):
        assert resolve_start(cfg) == (None, None)
    assert "no checkpoint under" in caplog.text and "starting a new run" in caplog.text
    with open_dict(cfg):
        cfg.ckpt_path = str(tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="ckpt_path=.* and resume=true: give one"):
        resolve_start(cfg)


# ---------------------------------------------------------------------------------- fine-tune
def test_load_from_keeps_matching_weights_and_reinitialises_the_classifiers(make_train_cfg, tmp_path, caplog):
    """A checkpoint of a 3-class model fine-tuned on the 6-class shapes: all but the classifiers load."""
    three = make_train_cfg("model.decode_head.num_classes=3", "model.auxiliary_head.num_classes=3")
    source = instantiate(three.model)
    ckpt = tmp_path / "three_classes.ckpt"
    torch.save({"state_dict": {f"segmentor.{k}": v for k, v in source.state_dict().items()}}, ckpt)

    cfg = make_train_cfg(f"load_from={ckpt}", "schedule.max_steps=1", "schedule.val_interval=1", "test=false")
    RecordWeights.reset()
    RecordSteps.seen = []
    with caplog.at_level(logging.INFO):
        train(with_callbacks(cfg, RecordWeights, RecordSteps))
    assert RecordSteps.seen == [0]  # a new schedule from step 0
    start = {k.removeprefix("segmentor."): v for k, v in RecordWeights.start[0].items()}
    classifiers = {
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
        "auxiliary_heads.0.conv_seg.weight",
        "auxiliary_heads.0.conv_seg.bias",
    }
    loaded = source.state_dict()
    for name, value in start.items():
        if name not in classifiers:
            assert torch.equal(value, loaded[name]), name
    # the classifiers keep the new model's initialisation (same seed, same init)
    L.seed_everything(cfg.seed)
    fresh = instantiate(cfg.model).state_dict()
    for name in classifiers:
        assert start[name].shape != loaded[name].shape
        assert torch.equal(start[name], fresh[name]), name
    assert (
        "shape differs, kept the new initialisation" in caplog.text
        and "decode_head.conv_seg.weight" in caplog.text
    )


def test_load_from_a_checkpoint_of_another_model_is_a_clear_error(make_train_cfg, tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"segmentor.encoder.weight": torch.zeros(3)}}, ckpt)
    with pytest.raises(ValueError, match="none of the 1 tensors of .*other.ckpt.* matches the model"):
        train(make_train_cfg(f"load_from={ckpt}"))


# ---------------------------------------------------------------------------------------- EMA
def test_ema_weights_are_validated_tested_and_saved_as_the_checkpoint_weights(make_train_cfg):
    cfg = make_train_cfg(
        "callbacks=ema",
        "runtime.callbacks.ema.decay=0.5",
        "schedule.max_steps=2",
        "schedule.val_interval=2",
        "test_ckpt=best",
    )
    RecordWeights.reset()
    metrics = train(with_callbacks(cfg, RecordWeights))
    w1, w2 = RecordWeights.train  # the raw weights after steps 1 and 2
    ema = {
        k: 0.5 * w1[k] + 0.5 * w2[k] for k in w1
    }  # decay 0.5: the first update copies, the second averages
    ckpt = torch.load(metrics["ckpt_path"], map_location="cpu", weights_only=True)
    for name, value in ema.items():
        torch.testing.assert_close(ckpt["state_dict"][name], value, msg=name)
        assert torch.equal(ckpt["current_model_state"][name], w2[name]), name  # raw weights kept for resuming
        torch.testing.assert_close(RecordWeights.val[0][name], value, msg=name)  # validation ran on the EMA
        # test_ckpt=best loads the EMA weights of the best checkpoint, not its raw ones
        torch.testing.assert_close(RecordWeights.test[0][name], value, msg=name)
    # src.eval / inference load the EMA weights
    segmentor, _ = load_segmentor(metrics["ckpt_path"])
    own = segmentor.state_dict()
    for name, value in ema.items():
        torch.testing.assert_close(own[name.removeprefix("segmentor.")], value, msg=name)


# ---------------------------------------------------------------------------------- precision
def test_bf16_mixed_precision_trains_on_cpu(make_train_cfg):
    cfg = make_train_cfg(
        "runtime.precision=bf16-mixed", "schedule.max_steps=2", "schedule.val_interval=2", "test=false"
    )
    RecordHeadDtype.dtypes = []
    RecordWeights.reset()
    metrics = train(with_callbacks(cfg, RecordHeadDtype, RecordWeights))
    assert RecordHeadDtype.dtypes and set(RecordHeadDtype.dtypes) == {
        torch.bfloat16
    }  # autocast computes in bf16
    assert all(v.dtype == torch.float32 for v in RecordWeights.train[-1].values())  # the weights stay fp32
    assert np.isfinite(metrics["train/loss"]) and 0.0 <= metrics["val/mIoU"] <= 1.0


# ------------------------------------------------------- schedule: warm-up, paramwise, clipping, accumulation
def test_schedule_keys_reach_the_trainer_and_the_per_group_lr(make_train_cfg):
    """adamw_poly_40k (warm-up) with head lr_mult 10 and no decay on norm layers, clipping and accumulation 2: the
    LR of every group follows the warm-up then the poly curve, and an iteration is one optimiser step of 2 batches."""
    cfg = make_train_cfg(
        "schedule=adamw_poly_40k",
        "~schedule.paramwise",
        "+schedule.paramwise={custom_keys: {head: {lr_mult: 10.0}}, norm_decay_mult: 0.0}",
        "schedule.max_steps=3",
        "schedule.warmup_iters=2",
        "schedule.val_interval=3",
        "schedule.ckpt_interval=3",
        "schedule.clip_grad={max_norm: 1.0, norm_type: 2}",
        "schedule.accumulate_grad_batches=2",
        "test=false",
    )
    RecordTrainer.seen = {}
    train(with_callbacks(cfg, RecordTrainer))
    assert RecordTrainer.seen == {
        "trainer_gradient_clip_val": None,  # clipping is the module's alone
        "clip_grad": {"max_norm": 1.0, "norm_type": 2.0},
        "accumulate_grad_batches": 2,
        "val_check_interval": 6,  # 3 iterations of 2 batches
        "batches": 6,
    }
    rows = read_csv_metrics(Path(cfg.paths.output_dir))
    assert 0.0 <= logged(rows, "val/mIoU", 3) <= 1.0  # validation after the third iteration (NaN fails)
    factors = [1e-6, 1e-6 + (1 - 1e-6) / 2, 1.0]  # linear warm-up over 2 iterations, then poly from the base
    for step, factor in enumerate(factors):
        lrs = {
            r_key: float(r[r_key])
            for r in rows
            if int(r["step"]) == step
            for r_key in r
            if r_key.startswith("lr-") and r[r_key]
        }
        assert lrs == pytest.approx(
            {
                "lr-AdamW/head": 6e-4 * factor,
                "lr-AdamW/norm": 6e-5 * factor,
                "lr-AdamW/default": 6e-5 * factor,
            }
        ), step


# ----------------------------------------------------------------------- subprocesses (slow)
def _src_train(*overrides: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *overrides], cwd=ROOT, env=env, text=True, **kwargs
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_run_killed_with_a_signal_resumes_from_its_checkpoint(signum, tmp_path):
    logs = tmp_path / "logs"
    common = [
        *TINY_TRAIN,
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={logs}",
        "run_name=killed",
        "test=false",
    ]
    proc = _src_train(
        *common,
        "schedule.max_steps=500",
        "schedule.val_interval=500",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not list(logs.glob("train/runs/killed/*/checkpoints/iter_2.ckpt")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    (preempted,) = logs.glob("train/runs/killed/*/checkpoints/preempted.ckpt")
    step = torch.load(preempted, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 2

    cfg = compose_cfg(
        "train", [*common, "resume=true", f"schedule.max_steps={step + 2}"], tmp_path / "resumed_launch"
    )
    RecordSteps.seen = []
    train(with_callbacks(cfg, RecordSteps))
    assert RecordSteps.seen == [step, step + 1]  # starts at the saved step and finishes
    last = torch.load(preempted.parent / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == step + 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_reduces_metrics_over_both_ranks(tmp_path):
    """2 gloo processes, 4 validation and 4 test images (2 per rank, no padding): the logged metrics, computed
    from the confusion matrices summed over the ranks, equal one process evaluating the same weights on all 4."""
    overrides = [
        *TINY_TRAIN,
        f"paths.data_dir={tmp_path / 'data'}",
        "dataset.val_batch_size=1",
        "runtime.trainer.accelerator=cpu",
        "runtime.deterministic=true",
    ]
    out = tmp_path / "ddp"
    proc = _src_train(
        *overrides,
        "runtime=ddp",
        "runtime.trainer.devices=2",
        "runtime.sync_bn=false",  # SyncBatchNorm needs GPUs
        f"hydra.run.dir={out}",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    log_text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log_text[-5000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log_text
    rows = read_csv_metrics(out)
    keys = ["mIoU", "aAcc", "mDice", "IoU/background", "IoU/star"]

    cfg = compose_cfg("train", overrides, tmp_path / "single")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(copy.deepcopy(module), datamodule=datamodule, verbose=False)[0]
    single |= trainer.test(module, datamodule=datamodule, verbose=False)[0]
    # rank 0 alone saw validation images 0 and 2 (DistributedSampler without shuffling): unreduced, its mIoU
    # would differ from the one over all 4 images
    half = Subset(datamodule.split_dataset("val"), [0, 2])
    rank0 = trainer.validate(
        module, dataloaders=DataLoader(half, batch_size=1, collate_fn=seg_collate), verbose=False
    )
    assert rank0[0]["val/mIoU"] != pytest.approx(single["val/mIoU"], abs=1e-7)
    for key in keys:
        assert logged(rows, f"val/{key}", 4) == pytest.approx(single[f"val/{key}"], abs=1e-7), key
        test_value = [float(r[f"test/{key}"]) for r in rows if r.get(f"test/{key}")]
        assert test_value == [pytest.approx(single[f"test/{key}"], abs=1e-7)], key
