"""Errors a person can read in one screen: bad config and bad data end in one short block and exit code 1.

The entry points run in this process (`main()` with `sys.argv`, as `python -m src.train` runs it): on this
machine a subprocess costs ~6 s of imports. One test runs a real subprocess, to check the process's own exit
code and output. Each test asserts the exit code, that the message names the key/value/file and that the
whole output stays under 40 lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

# imported at collection, not inside a test: Lightning's logging handler, made at import, must not hold the
# output stream of one test's capture
from src.train import main as train_main
from src.train import train
from src.utils.config_check import TRAIN_RULES, problems
from src.utils.errors import (
    ConfigError,
    DataError,
    Described,
    describe,
    format_block,
    unwrap_worker_message,
)
from src.utils.resolvers import iters, unique_dir
from tests.helpers import assert_short_error, run_entry, train_args

ROOT = Path(__file__).resolve().parents[2]


def run_log(root: Path, task: str = "train") -> str:
    (log,) = root.glob(f"logs/{task}/runs/*/*/{task}.log")
    return log.read_text()


# ------------------------------------------------------------------------------------------- units
def test_worker_message_is_unwrapped_to_the_original_error():
    wrapped = (
        "Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "/x/torch/utils/data/_utils/worker.py", line 3, in _worker_loop\n    data = fetch()\n'
        f'  File "{ROOT}/src/data/datasets/base.py", line 9, in check_labels\n    raise ValueError(\n'
        "ValueError: Mask 'a.png' has label values [7]\nsecond line\n"
    )
    assert unwrap_worker_message(wrapped) == (
        "ValueError",
        "Mask 'a.png' has label values [7]\nsecond line",
        f"{ROOT}/src/data/datasets/base.py",
    )
    info = describe(ValueError(wrapped))
    assert info is not None and info.kind == "data" and info.message.startswith("Mask 'a.png'")
    # raised in a library, not by the project's checks: not recognised, its traceback is kept
    assert describe(ValueError(wrapped.replace(f"{ROOT}/src", "/lib/site-packages/x"))) is None
    assert describe(RuntimeError("bug")) is None
    assert describe(DataError("bad mask")).kind == "data"


def test_block_is_short_even_for_a_long_message():
    block = format_block(
        Described("checkpoint", "x" * 50 + "\n" + "\n".join(["key"] * 100), "do this"), "/r/t.log"
    )
    lines = block.splitlines()
    assert lines[0].startswith("Error (checkpoint): ") and len(lines) < 25
    assert "more lines in the log" in block and "What to do: do this" in block and "/r/t.log" in block


def test_config_rules_name_key_value_and_range(make_train_cfg):
    cfg = make_train_cfg("dataset.batch_size=0", "schedule.lr=-0.01", "schedule.max_steps=abc")
    found = problems(cfg, TRAIN_RULES)
    # schedule.optimizer.lr is ${schedule.lr}: reported once, under the key the user sets
    assert found == [
        "schedule.max_steps='abc': expected an integer >= 1",
        "schedule.lr=-0.01: expected a number > 0",
        "dataset.batch_size=0: expected an integer >= 1",
    ]
    assert problems(make_train_cfg(), TRAIN_RULES) == []


def test_run_folders_are_created_exclusively(tmp_path):
    base = tmp_path / "runs" / "2026-01-01_00-00-00"
    assert [unique_dir(str(base)) for _ in range(3)] == [str(base), f"{base}_1", f"{base}_2"]
    assert iters("abc") == "abc" and iters(40000) == "40k"  # the run name never fails on a bad max_steps
    hydra_dirs = OmegaConf.load(ROOT / "conf" / "hydra" / "default.yaml")  # the default run and sweep folders
    assert OmegaConf.to_container(hydra_dirs)["run"]["dir"].startswith("${unique_dir:")
    assert OmegaConf.to_container(hydra_dirs)["sweep"]["dir"].startswith("${unique_dir:")


# ------------------------------------------------------------------------------------------- config
def test_bad_max_steps_is_blamed_on_its_key_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *train_args(tmp_path / "data", "schedule.max_steps=abc")],
        cwd=ROOT,
        env={**os.environ, "SEGKIT_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert_short_error(proc.returncode, out, "schedule.max_steps='abc'", "expected an integer >= 1")
    assert "hydra.run.dir" not in out and out.count("Error (config)") == 1
    # the traceback is in the run folder's log, not on the console
    assert "Traceback (most recent call last)" in run_log(tmp_path) and "ConfigError" in run_log(tmp_path)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset.batch_size=0", "dataset.batch_size=0: expected an integer >= 1"),
        ("schedule.lr=-0.01", "schedule.lr=-0.01: expected a number > 0"),
    ],
)
def test_bad_config_value_names_key_value_and_range(override, expected, tmp_path, capfd, monkeypatch):
    code, out = run_entry(train_main, train_args(tmp_path / "data", override), tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, expected)
    assert not (tmp_path / "data").exists()  # nothing was built: not even the data generated


def test_full_error_flag_gives_the_traceback(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["entry", *train_args(tmp_path / "data", "dataset.batch_size=0")])
    monkeypatch.setenv("SEGKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    entry = hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")(
        train_main.__wrapped__
    )
    try:
        with pytest.raises(ConfigError, match="dataset.batch_size=0"):
            entry()
    finally:
        GlobalHydra.instance().clear()


# ------------------------------------------------------------------------------------------- data
def test_missing_data_folder_is_reported_before_the_model_is_built(tmp_path, capfd, monkeypatch):
    """The data is checked before the model: a pretrained_path that does not exist is never reached."""
    missing = tmp_path / "nowhere"
    args = train_args(missing, "dataset.prepare=null", f"model.backbone.pretrained_path={tmp_path / 'w.pth'}")
    code, out = run_entry(train_main, args, tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, f"image folder '{missing}/shapes/img_dir/train' does not exist")
    assert "w.pth" not in out
    assert "FileNotFoundError" in run_log(tmp_path)


def test_label_outside_the_classes_in_a_worker_is_one_message(tmp_path, capfd, monkeypatch):
    """num_workers=2: the error is raised in a DataLoader worker and reaches the main process wrapped."""
    from src.data.synthetic import ensure_shapes_dataset

    root = tmp_path / "data" / "shapes"
    ensure_shapes_dataset(root, num_train=8, num_val=4, num_test=4, image_size=32, seed=0)
    bad = root / "ann_dir" / "train" / "train_0003.png"
    mask = np.array(Image.open(bad))
    mask[0, 0] = 7
    Image.fromarray(mask).save(bad)
    args = train_args(tmp_path / "data", "runtime.num_workers=2", "runtime.persistent_workers=false")
    code, out = run_entry(train_main, args, tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, f"Mask '{bad}' has label values [7] outside the 6 classes")
    assert "Caught ValueError" not in out and out.count("label values [7]") == 1
    assert "Original Traceback" in run_log(tmp_path)  # the worker's traceback is kept in the log


def test_multirun_reports_each_failed_job_and_goes_on(tmp_path, capfd, monkeypatch):
    """As Hydra does for any failed job, the sweep goes on; each job's block is shown, then one line."""
    args = ["-m", *train_args(tmp_path / "data", "dataset.batch_size=0,-1")]
    code, out = run_entry(train_main, args, tmp_path, capfd, monkeypatch)
    assert_short_error(code, out, "dataset.batch_size=0: expected", "dataset.batch_size=-1: expected")
    assert out.count("Error (config)") == 2 and "a job failed (ConfigError, shown above)" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["dataset.prepare.num_train=3"],
            "batch_size=4: the training split has 3 images, 3 per process over 1 ",
        ),
        (  # 8 images over 2 CPU processes: 4 each, a batch of 5 never fills
            ["runtime.trainer.accelerator=cpu", "runtime.trainer.devices=2", "dataset.batch_size=5"],
            "batch_size=5: the training split has 8 images, 4 per process over 2 ",
        ),
    ],
)
def test_less_than_one_batch_per_process_is_a_config_error(make_train_cfg, overrides, message):
    """The loader drops incomplete batches: fewer images per process than a batch would train nothing; the run
    stops before the model is built, naming the key."""
    with pytest.raises(ConfigError, match=message):
        train(make_train_cfg(*overrides))
