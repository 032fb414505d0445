"""The family table (`src/tools/families.py`, `scripts/benchmark.py --families`): what it composes, how it turns
times into ratios and tables, its MMSegmentation worker's protocol, and one tiny run. No timed assertions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from src.tools import families
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[2]
MMSEG_CONFIGS = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg")) / "configs"


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.name)
def test_each_family_is_an_experiment_named_after_its_mmseg_config(family, tmp_path):
    cfg = compose_cfg("train", [f"experiment={family.experiment}"], tmp_path)
    assert Path(cfg.mmseg_config).stem == family.mmseg_config
    if MMSEG_CONFIGS.is_dir():
        assert (MMSEG_CONFIGS / f"{family.mmseg_config}.json").is_file()


def _result(auto_timed: bool, slide: bool = False) -> dict:
    sides = {
        "fp32": {"train_s": [] if slide else [2.0, 4.0], "infer_s": [1.0, 1.0]},
        "MMSegmentation": {"train_s": [] if slide else [6.0, 6.0], "infer_s": [3.0, 2.0]},
    }
    if auto_timed:
        sides["auto"] = {"train_s": [1.0, 1.0], "infer_s": [0.5, 0.5]}
    result = {
        "family": "UNet slide" if slide else "Net",
        "batch": 2,
        "crop": [64, 64],
        "infer_size": [584, 565] if slide else [64, 64],
        "infer_mode": "slide" if slide else "whole",
        "auto": {"timed": auto_timed},
        "infer_gflop": 10.0,
        "sides": sides,
    }
    if not slide:
        result["train_gflop"] = 30.0
    return families._with_ratios(result, peak=100.0)


def test_ratios_are_mmsegs_best_time_over_ours_and_gflops_against_the_peak():
    fp32 = _result(auto_timed=False)["sides"]["fp32"]
    assert fp32["train_best_s"] == 2.0 and fp32["train_vs_mmseg"] == 3.0  # fastest of [2, 4] against [6, 6]
    assert fp32["infer_vs_mmseg"] == 2.0  # fastest of MMSegmentation's [3, 2] over 1
    assert fp32["train_gflops"] == 15.0 and fp32["train_peak_share"] == 0.15


def test_markdown_has_a_training_and_an_inference_table():
    net = _result(auto_timed=True)
    net["sides"]["fp32 BN unfolded"] = {"train_s": [], "infer_s": [4.0, 3.0]}
    text = families.markdown([families._with_ratios(net, 100.0), _result(auto_timed=False, slide=True)])
    train, infer = text.split("training step: seconds")
    # training: no ONNX Runtime and no unfolded column (inference only)
    assert (
        "| Net | 2 x 64x64 | 6.00 s (1.00x) | 2.00 s (3.00x) | 1.00 s (6.00x) | - | 30 | 15 (15 %) |" in train
    )
    assert "| compiled | ONNX Runtime | fp32 BN unfolded | GFLOP |" in infer
    assert "| 0.50 s (4.00x) | - | - | 3.00 s (0.67x) | 10 |" in infer
    assert "UNet slide" not in train  # slide rows: inference only
    assert "| UNet slide (slide) | 1 x 584x565 | 2.00 s (1.00x) | 1.00 s (2.00x) | = fp32 |" in infer


def test_a_compiled_side_that_fell_back_to_eager_says_so():
    result = _result(auto_timed=False)
    result["sides"]["compiled"] = {"train_s": [2.0], "infer_s": [1.0], "fell_back": True}
    text = families.markdown([families._with_ratios(result, peak=100.0)])
    assert "| 2.00 s eager: compile failed (3.00x) |" in text


def test_the_worker_protocol_and_a_worker_that_dies(tmp_path, monkeypatch):
    fake = tmp_path / "worker.py"
    fake.write_text(
        "import json, sys\n"
        "print('noise', file=sys.stderr)\n"
        "if sys.argv[1] == 'die': sys.exit(3)\n"
        "print(json.dumps({'ready': True, 'threads': int(sys.argv[2])}), flush=True)\n"
        "for line in sys.stdin:\n"
        "    print(json.dumps({'s': [json.loads(line)['steps'] * 1.0]}), flush=True)\n"
    )
    monkeypatch.setattr(families, "MMSEG_WORKER", fake)
    worker = families.MMSegWorker(sys.executable, Path("cfg.json"), threads=2)
    assert worker.info == {"ready": True, "threads": 2}
    assert worker(op="train", steps=3) == {"s": [3.0]}
    worker.close()
    with pytest.raises(RuntimeError, match="exit 3"):
        families.MMSegWorker(sys.executable, Path("die"), threads=1)
    # with a log, its output goes there, and a death quotes its end
    log = tmp_path / "mmseg.log"
    worker = families.MMSegWorker(sys.executable, Path("cfg.json"), threads=2, log=log)
    worker.close()
    assert log.read_text() == "noise\n"
    with pytest.raises(RuntimeError, match=r"exit 3\); the end of .*mmseg.log:\nnoise\nnoise"):
        families.MMSegWorker(sys.executable, Path("die"), threads=1, log=log)


def test_a_tiny_family_table_run_writes_its_json_and_tables(tmp_path, one_thread):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import benchmark as script
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "families.json"
    script.main(
        ["--families", "SegFormer-B0", "dataset.crop_size=[64,64]", "--variants", "unfolded", "channels_last", "native_resize",
         "direct_concat",
         "--infer-steps", "1", "--repeats", "1", "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    (row,) = report["families"]
    assert row["crop"] == [64, 64] and row["batch"] == 2 and row["train_gflop"] > 0
    assert len(row["sides"]["fp32"]["train_s"]) == 1 and "MMSegmentation" not in row["sides"]
    # its head's BatchNorm folded on the fp32 side
    assert len(row["sides"]["fp32 BN unfolded"]["infer_s"]) == 1
    assert len(row["sides"]["fp32 channels_last"]["train_s"]) == 1  # the memory format alone, in fp32
    assert "fp32 channels_last |" in report["markdown"]
    # the resize gradient's A/B: training only, a column of the training table
    native = row["sides"]["fp32 native resize grad"]
    assert len(native["train_s"]) == 1 and native["infer_s"] == []
    assert (
        "| fp32 channels_last | fp32 direct concat | fp32 native resize grad | GFLOP |" in report["markdown"]
    )
    # the heads' concatenation's A/B: both works
    direct = row["sides"]["fp32 direct concat"]
    assert len(direct["train_s"]) == 1 and len(direct["infer_s"]) == 1
    assert "| fp32 BN unfolded | fp32 channels_last | fp32 direct concat | GFLOP |" in report["markdown"]
    assert "| SegFormer-B0 | 2 x 64x64 | - |" in report["markdown"]
