"""scripts/gpu_check.sh: skips cleanly without CUDA, lists every GPU-only path, and its figures summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from src.tools.gpu_check import summary
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=full_env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_without_cuda_it_says_skipped_and_exits_0(tmp_path):
    proc = run_script(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("no CUDA device: skipped")
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def dry_run_steps(tmp_path: Path) -> dict[str, str]:
    proc = run_script(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    steps = dict(re.findall(r"^\[(\w[\w-]*), \d+s\] (.*)$", proc.stdout, flags=re.M))
    return steps


def test_every_gpu_only_path_is_a_step(tmp_path):
    steps = dry_run_steps(tmp_path)
    assert set(steps) == {
        "families", "compile", "bench_fcn_r18-d8", "bench_pspnet_r50-d8", "ddp_syncbn",
        "onnx_cuda",
    }  # fmt: skip
    assert "--families" in steps["families"] and "--device cuda" in steps["families"]
    assert "auto" in steps["families"].split("--variants", 1)[1]  # fp32 against what auto picks on the GPU
    assert "--compile" in steps["compile"]
    assert "runtime=ddp" in steps["ddp_syncbn"] and "runtime.trainer.devices=1" in steps["ddp_syncbn"]
    assert "--only" not in steps["bench_pspnet_r50-d8"]  # the whole table, whole and slide inference included


def test_the_steps_hydra_overrides_compose(tmp_path):
    steps = dry_run_steps(tmp_path)
    for name in ("bench_pspnet_r50-d8", "ddp_syncbn"):
        overrides = [a for a in steps[name].split() if "=" in a and not a.startswith(("-", "hydra."))]
        cfg = compose_cfg("train", overrides, tmp_path / name)
        assert cfg.runtime.trainer is not None
    cfg = compose_cfg(
        "train", [a for a in steps["ddp_syncbn"].split() if a.startswith(("experiment", "runtime"))], tmp_path
    )
    assert cfg.runtime.sync_bn is True and cfg.runtime.trainer.devices == 1


def test_summary_lays_out_the_figures(tmp_path):
    (tmp_path / "status.tsv").write_text("families\t0\t41\nonnx_cuda\t0\t3\n")
    report = {"environment": {"gpu": "H200"}, "settings": {"precision": "bf16-mixed", "compile": False},
              "train": {"lightning_s_median": 0.1, "ratio_median": 1.02}}  # fmt: skip
    (tmp_path / "bench_fcn_r18-d8.json").write_text(json.dumps(report))
    (tmp_path / "onnx_cuda.json").write_text(json.dumps({"skipped": "no CUDA provider"}))
    (tmp_path / "families.json").write_text(json.dumps({"markdown": "| family | batch x size |"}))
    text = summary(tmp_path)
    assert "Every family (scripts/benchmark.py --families):\n\n| family | batch x size |" in text
    assert "| families | 0 | 41 |" in text
    assert "| bench_fcn_r18-d8 | bf16-mixed | false | 0.100 | 1.020 | - | - | - |" in text
    assert "ONNX Runtime on CUDA: skipped (no CUDA provider)" in text and "H200" in text
