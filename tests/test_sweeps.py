"""Sweeps as a user runs them: a Hydra multirun (`-m a,b c,d`), an Optuna search (`hparams_search=...`), the
results table of a sweep (`scripts/collect_results.py`), and multirun + DDP (one folder per job, never per rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from src.data.io import load_mask
from src.engine.results import collect, split_model_name
from src.utils import hydra_ddp
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
COLLECT = ROOT / "scripts" / "collect_results.py"

# a one-step run on a few 32 px images: a multirun job costs seconds
SWEEP_JOB = [
    "dataset.prepare.num_train=2",
    "dataset.prepare.num_val=2",
    "dataset.prepare.num_test=2",
    "dataset.prepare.image_size=32",
    "dataset.crop_size=[32,32]",
    "dataset.batch_size=2",
    "dataset.val_batch_size=2",
    "schedule.max_steps=1",
    "schedule.val_interval=1",
    "schedule.ckpt_interval=1",
    "runtime.num_workers=0",
    "runtime.log_interval=1",
    "runtime.trainer.enable_model_summary=false",
    "runtime.trainer.enable_progress_bar=false",
    "~runtime.callbacks.progress_bar",
    "~runtime.callbacks.log_predictions",
    "~runtime.callbacks.best_checkpoint",  # iter_1.ckpt and last.ckpt are enough
    "logger=csv",
    "print_config=false",
]


def src_train(*args: str, root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m src.train ...` with the project's data and logs under `root` (SEGKIT_ROOT)."""
    env = {**os.environ, "SEGKIT_ROOT": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, f"src.train failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def sweep_dirs(root: Path) -> list[Path]:
    return sorted((root / "logs" / "train" / "multiruns").glob("*"))


# ------------------------------------------------------------- multirun
def test_multirun_2x2_gives_four_runs_and_a_four_row_table(tmp_path):
    src_train("-m", "model=fcn_r18-d8,pspnet_r18-d8", "schedule.lr=0.01,0.005", *SWEEP_JOB, root=tmp_path)
    (sweep,) = sweep_dirs(tmp_path)  # one sweep folder
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1", "2", "3"]
    assert not (tmp_path / "logs" / "train" / "runs").exists()  # nothing outside the sweep folder
    records = [json.loads((job / "results.json").read_text()) for job in jobs]
    # one run per combination, each with its own config in its own folder
    combos = {(r["model"], r["lr"]) for r in records}
    assert combos == {
        ("fcn_r18-d8", 0.01),
        ("fcn_r18-d8", 0.005),
        ("pspnet_r18-d8", 0.01),
        ("pspnet_r18-d8", 0.005),
    }
    for job, r in zip(jobs, records):
        assert r["run_dir"] == str(job) and r["job_num"] == int(job.name.split("_")[0])
        saved = yaml.safe_load((job / "config.yaml").read_text())
        assert (saved["model"]["name"], saved["schedule"]["lr"]) == (r["model"], r["lr"])
        assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "csv" / "metrics.csv").is_file()

    proc = subprocess.run(
        [sys.executable, str(COLLECT), str(sweep)], capture_output=True, text=True, check=True
    )
    table = (sweep / "results.md").read_text()
    assert proc.stdout.startswith(table)
    lines = table.splitlines()
    assert (
        lines[0]
        == "| Method | Backbone | Crop Size | Lr schd | Mem (GB) | Inf time (fps) | mIoU | mDice | config |"
    )
    rows = [line.split(" | ") for line in lines[2:6]]
    assert len([ln for ln in lines if ln.startswith("| ") and not ln.startswith("| Method")]) == 4
    assert [(r[0].lstrip("| "), r[1], r[2], r[3]) for r in rows] == [
        ("fcn", "r18-d8", "32x32", "1"),
        ("fcn", "r18-d8", "32x32", "1"),
        ("pspnet", "r18-d8", "32x32", "1"),
        ("pspnet", "r18-d8", "32x32", "1"),
    ]
    # the config column tells the runs apart: exactly the swept overrides, in job order
    assert [r[-1].strip(" |`") for r in rows] == [
        "model=fcn_r18-d8 schedule.lr=0.01",
        "model=fcn_r18-d8 schedule.lr=0.005",
        "model=pspnet_r18-d8 schedule.lr=0.01",
        "model=pspnet_r18-d8 schedule.lr=0.005",
    ]
    # mIoU column = the run's test mIoU in percent
    for row, r in zip(rows, records):
        assert float(row[6]) == pytest.approx(100 * r["metrics"]["test/mIoU"], abs=0.006)
    csv_lines = (sweep / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("Method,Backbone,Crop Size,Lr schd,Mem (GB)")


def test_cfg_job_prints_the_experiments_config_without_running(tmp_path):
    proc = src_train("experiment=pspnet_cityscapes", "--cfg", "job", root=tmp_path)
    config = yaml.safe_load(proc.stdout)
    assert config["model"]["name"] == "pspnet_r50-d8"
    assert config["dataset"]["name"] == "cityscapes" and config["dataset"]["crop_size"] == [512, 1024]
    assert config["schedule"]["max_steps"] == 40000
    assert not (tmp_path / "logs").exists()  # printed, not run


# ------------------------------------------------------------ collecting
def _record(path: Path, **changes) -> Path:
    record = {
        "run_name": "fcn_r18-d8_1xb8-400_shapes-96x96",
        "method": "fcn",
        "backbone": "r18-d8",
        "crop": "96x96",
        "iters": 400,
        "train_memory_gb": 1.5,
        "train_memory_kind": "cuda_max_allocated",
        "test_fps": 20.0,
        "overrides": ["experiment=fcn_shapes"],
        "metrics": {"test/mIoU": 0.8812, "test/mDice": 0.9352, "val/mIoU": 0.85},
    } | changes
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(record))
    return path


def test_collect_results_errors_name_the_folder_or_file_and_what_was_expected(tmp_path):
    run = [sys.executable, str(COLLECT)]
    proc = subprocess.run([*run, str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path / 'missing'}: no such folder" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([*run, str(tmp_path / "empty")], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path / 'empty'}: no run records (results.json)" in proc.stderr
    bad = tmp_path / "bad" / "0_run"
    _record(bad)
    data = json.loads((bad / "results.json").read_text())
    del data["crop"]
    (bad / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"0_run/results.json: run record lacks \['crop'\]"):
        collect(tmp_path / "bad")
    (bad / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json: not a JSON run record"):
        collect(tmp_path / "bad")


def test_collect_results_orders_jobs_marks_cpu_memory_and_val_fallback(tmp_path):
    _record(tmp_path / "10_b", job_num=10, overrides=["a=1", "b=2"])
    _record(tmp_path / "2_a", job_num=2, overrides=["a=1", "b=1"], train_memory_kind="cpu_peak_rss")
    _record(
        tmp_path / "3_c", job_num=3, overrides=["a=1", "b=3"], metrics={"val/mIoU": 0.5, "val/mDice": 0.6}
    )
    out = tmp_path / "table.md"
    args = [str(tmp_path), "--out-md", str(out), "--out-csv", str(tmp_path / "t.csv")]
    subprocess.run([sys.executable, str(COLLECT), *args], capture_output=True, text=True, check=True)
    lines = out.read_text().splitlines()
    assert [ln.split(" | ")[-1] for ln in lines[2:5]] == ["`b=1` |", "`b=3` |", "`b=2` |"]  # job order
    assert " 1.50* " in lines[2] and " 1.50 " in lines[4]  # CPU resident memory marked
    assert " 50.00† | 60.00† " in lines[3]  # no test metrics: the validation's, marked
    assert "Overrides of every run: `a=1`" in out.read_text()


def test_split_model_name_follows_mmsegmentation_names():
    assert split_model_name("pspnet_r18-d8") == ("pspnet", "r18-d8")
    assert split_model_name("deeplabv3plus_r101-d8") == ("deeplabv3plus", "r101-d8")
    assert split_model_name("smp_unetplusplus_r18") == ("unetplusplus", "r18")
    assert split_model_name("unet-s5-d16_deeplabv3") == ("deeplabv3", "unet-s5-d16")


# ---------------------------------------------------------------- optuna
def test_optuna_search_config_maximises_the_returned_metric(tmp_path):
    cfg = compose_cfg("train", ["hparams_search=shapes_optuna"], tmp_path)
    sweeper = HydraConfig.get().sweeper
    GlobalHydra.instance().clear()
    assert HydraConfig.get().mode == RunMode.MULTIRUN  # no -m needed
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 1234
    assert set(sweeper.params) == {"schedule.lr", "schedule.optimizer.weight_decay"}
    assert cfg.optimized_metric == "val/mIoU"
    # the key the sweep maximises is what the best checkpoint follows
    assert cfg.runtime.callbacks.best_checkpoint.monitor == "val/mIoU"


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_reports_the_best_parameters(tmp_path):
    proc = src_train("hparams_search=shapes_optuna", "hydra.sweeper.n_trials=3", *SWEEP_JOB, root=tmp_path)
    (sweep,) = sweep_dirs(tmp_path)
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(trials) == 3
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = results["best_params"]
    assert set(best) == {"schedule.lr", "schedule.optimizer.weight_decay"}
    assert 0.001 <= best["schedule.lr"] <= 0.05 and best["schedule.optimizer.weight_decay"] in (
        1e-4,
        5e-4,
        1e-3,
    )
    # the objective is the val/mIoU each trial returned: the best value is the best trial's
    values = [json.loads((t / "results.json").read_text())["metrics"]["val/mIoU"] for t in trials]
    assert results["best_value"] == pytest.approx(max(values))
    assert "Best parameters:" in proc.stdout + proc.stderr
    assert len({json.loads((t / "results.json").read_text())["lr"] for t in trials}) == 3  # 3 sampled LRs


# ------------------------------------------------------------ multirun + DDP
def test_ddp_ranks_of_a_multirun_job_run_that_job_in_its_folder(tmp_path):
    """What Lightning's launcher runs for rank 1 of sweep job 3: that job's overrides as a single run in the
    job's folder; not the sweep's command line (which would start a sweep per rank)."""
    assert hydra_ddp.install()
    from lightning.pytorch.strategies.launchers import subprocess_script

    assert subprocess_script._hydra_subprocess_cmd is hydra_ddp.hydra_subprocess_cmd
    cfg = compose_cfg("train", ["model=pspnet_r18-d8", "schedule.lr=0.005"], tmp_path)
    hydra_cfg = HydraConfig.get()
    job_dir = str(tmp_path / "multiruns" / "t" / "3_pspnet")
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.runtime.output_dir = job_dir
        hydra_cfg.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/x", "hydra.job.chdir=false"]
    GlobalHydra.instance().clear()
    argv = sys.argv
    sys.argv = ["src/train.py", "-m", "model=fcn_r18-d8,pspnet_r18-d8", "schedule.lr=0.01,0.005"]
    try:
        command, cwd = hydra_ddp.hydra_subprocess_cmd(local_rank=1)
    finally:
        sys.argv = argv
    script = hydra_ddp._script_command()  # this interpreter and module (here pytest's, in a run src.train)
    assert command[: len(script)] == script and command[0] == sys.executable
    args = command[len(script) :]
    assert "-m" not in args and not any("," in a for a in args)
    assert args[:2] == ["model=pspnet_r18-d8", "schedule.lr=0.005"]
    assert "hydra.job.chdir=false" in args and "hydra.sweep.dir=/x" not in args
    assert args[-4:] == [
        "hydra.mode=RUN",
        f'hydra.run.dir="{job_dir}"',
        "hydra.output_subdir=null",
        "hydra.job.name=train_ddp_process_1",
    ]
    assert cfg.model.name == "pspnet_r18-d8"


def test_lightning_private_launcher_hook_is_where_install_expects_it():
    """`hydra_ddp.install` replaces a private Lightning function (Lightning-AI/pytorch-lightning#15689): this
    fails when a Lightning upgrade renames it, changes its arguments or stops calling it by name."""
    import inspect

    from lightning.pytorch.strategies.launchers import subprocess_script

    original = hydra_ddp._lightning_cmd or subprocess_script._hydra_subprocess_cmd
    assert list(inspect.signature(original).parameters) == ["local_rank"]
    assert list(inspect.signature(hydra_ddp.hydra_subprocess_cmd).parameters) == ["local_rank"]
    caller = inspect.getsource(subprocess_script._SubprocessScriptLauncher._call_children_scripts)
    assert (
        "_hydra_subprocess_cmd(" in caller
    )  # looked up in the module's namespace, where install() puts ours


def test_ddp_job_scope_gives_back_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    with hydra_ddp.ddp_job_scope():
        os.environ.update(LOCAL_RANK="0", WORLD_SIZE="2", MASTER_PORT="5555")  # what the launcher sets
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ
    assert os.environ["MASTER_PORT"] == "1234"


def test_a_failed_ddp_job_ends_the_sweep(tmp_path, monkeypatch):
    """Lightning's launcher ends the main process when a rank fails: the sweep must not go on to a next job whose
    ranks would wait for it. Other errors pass unchanged."""
    compose_cfg("train", [], tmp_path)
    GlobalHydra.instance().clear()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(KeyError):  # a single run: the error itself
        with hydra_ddp.ddp_job_scope():
            os.environ["LOCAL_RANK"] = "0"  # the launcher started ranks
            raise KeyError("optimized_metric")
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
    with pytest.raises(KeyError):  # a multirun job without DDP ranks: Hydra records it and goes on
        with hydra_ddp.ddp_job_scope():
            raise KeyError("optimized_metric")
    with pytest.raises(SystemExit) as exit_info:  # a multirun job that launched ranks: the sweep ends
        with hydra_ddp.ddp_job_scope():
            os.environ["LOCAL_RANK"] = "0"
            raise KeyError("optimized_metric")
    assert exit_info.value.code == 1 and "LOCAL_RANK" not in os.environ


@pytest.mark.slow
def test_multirun_with_ddp_on_two_cpu_processes_keeps_one_folder_per_job(tmp_path):
    """2 jobs x 2 gloo processes: both jobs train on both ranks, each in its own sweep folder, and no rank
    starts a sweep of its own (Lightning's launcher alone would re-run `-m ...` in every rank)."""
    proc = src_train(
        "-m", "schedule.lr=0.01,0.005", *SWEEP_JOB, "dataset.prepare.num_train=4", "dataset.prepare.num_val=4",
        "dataset.prepare.num_test=4",
        "dataset.val_batch_size=1", "runtime=ddp", "runtime.trainer.accelerator=cpu", "runtime.trainer.devices=2",
        "runtime.sync_bn=false", root=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1
    assert out.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # rank 1 joined each job
    (sweep,) = sweep_dirs(tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_fcn_r18-d8_2xb2-1_shapes-32x32", "1_fcn_r18-d8_2xb2-1_shapes-32x32"]
    assert not (tmp_path / "logs" / "train" / "runs").exists()
    for job, lr in zip(jobs, (0.01, 0.005)):
        record = json.loads((job / "results.json").read_text())
        assert record["devices"] == 2 and record["lr"] == lr
        assert yaml.safe_load((job / "config.yaml").read_text())["schedule"]["lr"] == lr
        # the test confusion matrix is summed over both processes (each tested 2 of the 4 images)
        confmat = json.loads((job / "test" / "confusion_matrix.json").read_text())["matrix"]
        masks = sorted((tmp_path / "data" / "shapes" / "ann_dir" / "test").glob("*.png"))
        assert len(masks) == 4
        assert sum(map(sum, confmat)) == sum(int((load_mask(m) != 255).sum()) for m in masks)
