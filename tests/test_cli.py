"""The entry points as a user runs them: `python -m src.train`, `src.eval`, `src.infer`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.data.io import load_image, load_mask
from tests.helpers import TINY_TRAIN, TinyRun

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGKIT_ROOT": str(cwd)}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_train_eval_infer_from_the_command_line(tmp_path):
    overrides = [o for o in TINY_TRAIN if o != "print_config=false"]
    proc = run("src.train", *overrides, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    # the resolved config is printed at start and saved in the run dir
    assert "CONFIG" in out and "fcn_r18-d8" in out
    run_dirs = list((tmp_path / "logs" / "train" / "runs").glob("fcn_r18-d8_1xb4-4_shapes-32x32/*"))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config_tree.log").is_file()
    assert "mIoU" in out and "disc" in out  # the per-class test table
    for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec"):  # src/utils/noise.py
        assert noise not in out, noise
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"python -m src.eval ckpt_path={ckpt}" in out

    proc = run("src.eval", f"ckpt_path={ckpt}", "num_workers=0", f"out_dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert "mean" in proc.stdout
    proc = run(
        "src.eval", f"ckpt_path={ckpt}", "num_workers=0", "tta=true", "components=true", "run_name=eval_tta",
        cwd=tmp_path,
    )  # fmt: skip
    assert "(TTA)" in proc.stdout and "Connected components per class" in proc.stdout
    eval_dirs = list((tmp_path / "logs" / "eval" / "runs" / "eval").glob("*"))
    assert len(eval_dirs) == 1
    for name in (
        "metrics.json",
        "per_class.csv",
        "per_class.md",
        "confusion_matrix.png",
        "confusion_matrix.json",
    ):
        assert (eval_dirs[0] / name).stat().st_size > 0, name
    image = tmp_path / "data" / "shapes" / "img_dir" / "test" / "test_0000.png"
    run("src.infer", f"ckpt_path={ckpt}", f"input={image}", f"output={tmp_path / 'infer'}", cwd=tmp_path)
    mask = load_mask(tmp_path / "infer" / "pred" / "test_0000.png")
    assert mask.shape == (32, 32) and mask.max() < 6
    np.testing.assert_array_equal(mask, load_mask(tmp_path / "eval" / "pred" / "test_0000.png"))
    assert (tmp_path / "infer" / "vis" / "test_0000.png").stat().st_size > 0


def test_infer_video_from_the_command_line(tiny_run: TinyRun, tmp_path):
    """`python -m src.infer input=<video> output=<file.mp4>` on a checkpoint: the video comes back frame for frame."""
    video = tmp_path / "clip.avi"
    frames = [load_image(p) for p in tiny_run.test_images]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 32))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "seg.mp4"
    proc = run(
        "src.infer",
        f"ckpt_path={tiny_run.ckpt}",
        f"input={video}",
        f"output={out}",
        "opacity=0.5",
        cwd=tmp_path,
    )
    assert "frame" in proc.stderr  # the progress bar counts frames
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(frames) and cap.get(cv2.CAP_PROP_FPS) == 5.0
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (32, 32)


def test_missing_ckpt_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "src.eval", f"ckpt_path={tmp_path / 'nope.ckpt'}"],
        cwd=ROOT,
        env={**os.environ, "SEGKIT_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "no such checkpoint file" in proc.stderr and "nope.ckpt" in proc.stderr
