"""scripts/check_dataset.py on a tiny generated shapes dataset: clean data exits 0, bad files exit 1.

The subprocess run imports Lightning (through the datamodule), about 15 s on a small CPU; the clean run calls
the script's `main` in this process, where those imports are already paid.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from hydra.core.global_hydra import GlobalHydra

from src.data import datamodule  # noqa: F401  (Lightning's import, paid at collection, not in the test)
from src.data.synthetic import ensure_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_dataset.py"
SPEC = {"num_train": 4, "num_val": 2, "num_test": 2, "image_size": 32, "seed": 0}


def tiny_overrides(data_dir: Path) -> list[str]:
    sizes = [f"dataset.prepare.{k}={v}" for k, v in SPEC.items() if k != "seed"]
    return ["dataset=shapes", *sizes, "dataset.crop_size=[24,24]", f"paths.data_dir={data_dir}"]


def load_script():
    spec = importlib.util.spec_from_file_location("check_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clean_dataset_exits_0_and_writes_stats_and_pictures(tmp_path):
    out = tmp_path / "out"
    GlobalHydra.instance().clear()
    rc = load_script().main([*tiny_overrides(tmp_path / "data"), "--out", str(out), "--num", "4"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        *(f"photo_wall_{s}.png" for s in ("test", "train", "val")),
        "pipeline_train.png",
        "stats.json",
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_problems"] == 0 and stats["splits"]["train"]["num_samples"] == 4
    assert len(stats["class_weight"]["values"]) == 6


def test_bad_files_are_all_listed_and_exit_1(tmp_path):
    root = tmp_path / "data" / "shapes"
    ensure_shapes_dataset(root, **SPEC)  # what the script's prepare step would generate
    bad_size = root / "ann_dir" / "train" / "train_0001.png"
    bad_label = root / "ann_dir" / "val" / "val_0000.png"
    cv2.imwrite(str(bad_size), np.zeros((20, 32), np.uint8))
    cv2.imwrite(str(bad_label), np.full((32, 32), 9, np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), *tiny_overrides(tmp_path / "data"), "--out", str(out), "--splits"]
    result = subprocess.run([*cmd, "train", "val"], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert str(bad_size) in result.stdout and str(bad_label) in result.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_problems"] == 2
    assert [p["mask"] for p in stats["splits"]["train"]["problems"]] == [str(bad_size)]
    assert "[9]" in stats["splits"]["val"]["problems"][0]["message"]
    assert (out / "photo_wall_train.png").is_file() and (out / "pipeline_train.png").is_file()
