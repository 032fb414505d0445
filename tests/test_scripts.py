"""The scripts are thin CLIs over src/: each runs as a user would call it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_make_shapes_dataset_cli(tmp_path):
    out = tmp_path / "shapes"
    args = ["--root", str(out), "--num-train", "3", "--num-val", "1", "--num-test", "1", "--image-size", "24"]
    cmd = [sys.executable, str(ROOT / "scripts" / "make_shapes_dataset.py"), *args]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert first.stdout.startswith("generated")
    assert len(list((out / "img_dir" / "train").glob("*.png"))) == 3
    assert json.loads((out / "meta.json").read_text())["counts"]["test"] == 1
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert again.stdout.startswith("already up to date")


def test_benchmark_data_times_the_cityscapes_pipeline_per_worker_count(tmp_path):
    out = tmp_path / "data.json"
    args = ["--workers", "0", "1", "--batches", "2", "--warmup", "0", "--synthetic", "2", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_data.py"), *args, "dataset.batch_size=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "images/s per worker" in run.stdout
    assert "as in a loader worker: torch threads 1, OpenCV threads 1" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [0, 1]
    for r in rows:
        assert r["batches"] == 2 and r["batch_size"] == 1 and r["images_per_s"] > 0


def test_scripts_import_the_installed_package_from_any_folder(tmp_path):
    """No sys.path edits: the scripts take `src` (and `src.tools`) from the installed package, whatever the
    working folder."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_data.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    for script in sorted((ROOT / "scripts").glob("*.py")):
        assert "sys.path.insert" not in script.read_text() and "sys.path.append" not in script.read_text(), (
            script.name
        )


def test_compare_recipe_passes_a_faithful_recipe_and_fails_a_different_one(tmp_path):
    """scripts/compare_recipe.py: exit 0 and the allowed differences with their reasons for an experiment and the
    config it names; exit 1 and "NOT ALLOWED" against another config (the CE + Dice variant's)."""
    ref = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg")) / "configs"
    other = ref / "unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_drive-64x64.json"
    if not other.is_file():
        pytest.skip(f"no MMSegmentation configs in {ref}")
    script = str(ROOT / "scripts" / "compare_recipe.py")
    same = subprocess.run([sys.executable, script, "experiment=unet_drive"], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "model.norm" in same.stdout and "allowed:" in same.stdout and "NOT ALLOWED" not in same.stdout
    differ = subprocess.run(
        [sys.executable, script, "experiment=unet_drive", f"--mmseg-config={other}"],
        capture_output=True,
        text=True,
    )
    assert (
        differ.returncode == 1
        and "decode_head.loss.1.type" in differ.stdout
        and "NOT ALLOWED" in differ.stdout
    )
