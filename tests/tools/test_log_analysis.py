"""`scripts/analyze_logs.py`: curves of runs from their CSV or TensorBoard logs, as a PNG; errors name the path or
key. The logs are written here the way Lightning's loggers write them (a real run's are read in tests/engine/test_results.py)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from src.tools.log_analysis import find_log, load_scalars, select

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "analyze_logs.py"


def loss(step: int, lr: float) -> float:
    return 2.0 / (1 + lr * 100 * step)


def write_run(run: Path, lr: float, steps: int = 30, val_every: int = 10) -> Path:
    """A run folder with csv/metrics.csv (Lightning's CSVLogger layout: sparse rows, a step column) and
    tensorboard/ events holding the same scalars."""
    from torch.utils.tensorboard import SummaryWriter

    (run / "csv").mkdir(parents=True)
    writer = SummaryWriter(str(run / "tensorboard"))
    columns = ["epoch", "lr-SGD", "step", "train/loss", "val/mIoU"]
    with open(run / "csv" / "metrics.csv", "w", newline="") as f:
        rows = csv.DictWriter(f, fieldnames=columns)
        rows.writeheader()
        for step in range(steps):
            value_lr = lr * (1 - step / steps) ** 0.9
            rows.writerow({"step": step, "lr-SGD": value_lr})
            rows.writerow({"epoch": 0, "step": step, "train/loss": loss(step, lr)})
            writer.add_scalar("lr-SGD", value_lr, step)
            writer.add_scalar("train/loss", loss(step, lr), step)
            if (step + 1) % val_every == 0:
                rows.writerow({"epoch": 0, "step": step, "val/mIoU": step / steps})
                writer.add_scalar("val/mIoU", step / steps, step)
    writer.close()
    return run


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_csv_and_tensorboard_logs_read_the_same_series(tmp_path):
    run = write_run(tmp_path / "0_fcn", lr=0.01)
    from_csv, kind_csv, log_csv = load_scalars(run, "csv")
    from_tb, kind_tb, log_tb = load_scalars(run, "tensorboard")
    assert (kind_csv, log_csv) == ("csv", run / "csv" / "metrics.csv")
    assert (kind_tb, log_tb) == ("tensorboard", run / "tensorboard")
    assert [s for s, _ in from_csv["train/loss"]] == list(range(30))
    assert [v for _, v in from_csv["train/loss"]] == pytest.approx([loss(s, 0.01) for s in range(30)])
    for key in ("train/loss", "lr-SGD", "val/mIoU"):
        assert [s for s, _ in from_tb[key]] == [s for s, _ in from_csv[key]], key
        assert [v for _, v in from_tb[key]] == pytest.approx([v for _, v in from_csv[key]], rel=1e-6), key
    assert [s for s, _ in from_csv["val/mIoU"]] == [9, 19, 29]
    assert set(select(from_csv, "lr-*")) == {"lr-SGD"} and set(select(from_csv, "val/*")) == {"val/mIoU"}
    assert find_log(run)[0] == "csv"  # a run with both: the CSV log first


@pytest.mark.parametrize("source", ["csv", "tensorboard"])
def test_writes_one_panel_per_key_for_several_runs(tmp_path, source):
    runs = [write_run(tmp_path / f"{i}_run", lr=lr) for i, lr in enumerate((0.01, 0.005))]
    out = tmp_path / "curves.png"
    proc = run_script(*map(str, runs), "--source", source, "--legend", "a", "b", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and f"a: {source} log" in proc.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.std() > 0
    assert image.shape[:2] == (3 * 280, 800)  # the default keys: loss, LR, mIoU -> three 2.8-inch panels
    two = tmp_path / "two.png"
    assert run_script(str(runs[0]), "--keys", "train/loss", "val/mIoU", "--out", str(two)).returncode == 0
    assert cv2.imread(str(two)).shape[:2] == (2 * 280, 800)


def test_errors_name_the_path_or_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_script(str(tmp_path / "empty"), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    assert (
        f"{tmp_path / 'empty'}: no training log found; expected csv/metrics.csv or tensorboard/"
        in proc.stderr
    )
    proc = run_script(str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and f"{tmp_path / 'nowhere'}: no such file or folder" in proc.stderr
    run = write_run(tmp_path / "run", lr=0.01)
    proc = run_script(str(run), "--keys", "val/mDice", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    assert "key 'val/mDice' matches no logged scalar" in proc.stderr and "'val/mIoU'" in proc.stderr
    assert not (tmp_path / "x.png").exists()
    proc = run_script(str(run / "csv"), "--source", "tensorboard")
    assert proc.returncode == 2 and "expected tensorboard/events.out.tfevents.*" in proc.stderr
