"""ONNX export (`src/serve/export.py`, `scripts/export_onnx.py`) and ONNX Runtime evaluation (`backend=onnxruntime`).

Every exported model is checked against PyTorch at sizes other than the traced one (the dynamic height and width
must hold), for tiny models of each head in the default suite and for every model family of `conf/model/`
(random weights, no download) in the slow suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from src.loading.checkpoint import load_segmentor
from src.loading.exported import OnnxSegmentor, read_onnx_meta
from src.loading.sources import load_model
from src.models import SegDataPreProcessor
from src.serve.export import adaptive_avg_pool2d_exportable, export_onnx, exportable_pooling
from src.serve.segmenter import Segmenter
from tests.export_helpers import (
    FAMILIES,
    HEADS,
    assert_family_exports,
    assert_parity,
    assert_runner_matches,
    tiny_export_model,
    tiny_segmentor,
)
from tests.helpers import TinyRun, compose_cfg, run_eval

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- pooling
def test_exportable_adaptive_pooling_equals_pytorchs():
    torch.manual_seed(0)
    for h, w in [(8, 8), (7, 13), (3, 5), (17, 6), (1, 1)]:
        x = torch.randn(2, 4, h, w)
        for size in [1, 2, 3, 6, (2, 5), (None, 3)]:
            expected = F.adaptive_avg_pool2d(x, size)
            torch.testing.assert_close(
                adaptive_avg_pool2d_exportable(x, size), expected, rtol=1e-5, atol=1e-6
            )
    x = torch.randn(1, 3, 9, 11)
    with exportable_pooling():  # modules and area interpolation go through it, and it is undone afterwards
        assert F.adaptive_avg_pool2d is adaptive_avg_pool2d_exportable
        pooled = nn.AdaptiveAvgPool2d(3)(x)
        area = F.interpolate(x, size=(2, 4), mode="area")
    assert F.adaptive_avg_pool2d is not adaptive_avg_pool2d_exportable
    original = F.adaptive_avg_pool2d
    with pytest.raises(RuntimeError), exportable_pooling():
        with exportable_pooling():  # a nested block leaves the outer one's swap in place
            pass
        assert F.adaptive_avg_pool2d is adaptive_avg_pool2d_exportable
        raise RuntimeError("an export that fails")
    assert F.adaptive_avg_pool2d is original  # restored on error too
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, 3))
    torch.testing.assert_close(area, F.adaptive_avg_pool2d(x, (2, 4)))


# ------------------------------------------------------------------------------- tiny models per head
@pytest.mark.parametrize("head", HEADS)
def test_tiny_head_exports_with_dynamic_size_and_matches_pytorch(head, tmp_path):
    model = tiny_export_model(head)  # fcn's with a padding, BGR-flipping preprocessor: in the graph too
    path = tmp_path / "model.onnx"
    export_onnx(model, path, sample_shape=(32, 32))
    graph_input = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in graph_input] == [True, False, True, True]  # N, 3, H, W
    runner = OnnxSegmentor(path)
    assert_runner_matches(model, runner, [(1, 3, 32, 32), (2, 3, 48, 40), (1, 3, 37, 53), (3, 3, 20, 70)])


def test_export_refuses_a_graph_whose_output_size_was_fixed_at_the_traced_size(tmp_path, monkeypatch):
    import src.models.heads.base as base

    def resize_with_int(x, size, mode="bilinear", align_corners=False):  # `resize` before it kept SymInts
        return F.interpolate(x, size=tuple(int(s) for s in size), mode=mode, align_corners=align_corners)

    monkeypatch.setattr(base, "resize", resize_with_int)
    model = tiny_segmentor("fcn", data_preprocessor=SegDataPreProcessor(size_divisor=16))
    with pytest.raises(RuntimeError, match="does not follow the input's size"):
        export_onnx(model, tmp_path / "model.onnx", sample_shape=(32, 32))


def test_onnx_runner_predicts_as_pytorch_in_slide_mode_and_with_tta(tmp_path):
    test_cfg = {
        "mode": "slide",
        "crop_size": [24, 24],
        "stride": [16, 16],
        "tta": {"scales": [0.75, 1.0], "flip": True},
    }
    model = tiny_segmentor("fcn", test_cfg=test_cfg)
    export_onnx(model, tmp_path / "model.onnx", sample_shape=(32, 32))
    runner = OnnxSegmentor(tmp_path / "model.onnx")
    assert runner.test_cfg == {"mode": "slide", "crop_size": [24, 24], "stride": [16, 16]}
    assert runner.tta_cfg == model.tta_cfg
    rng = np.random.default_rng(0)
    images = [
        torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in [(40, 56), (33, 47)]
    ]
    ori = [(50, 70), (33, 47)]
    for tta in (False, True):
        ref = model.predict_images(images, ori_shapes=ori, tta=tta)
        out = runner.predict_images(images, ori_shapes=ori, tta=tta)
        for r, o, s in zip(ref, out, ori):
            assert o.shape == (5, *s)
            assert_parity(r, o)


# ------------------------------------------------------------------- checkpoint: script, eval, inference
def _run_export_script(tiny_run: TinyRun, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, str(ROOT / "scripts" / "export_onnx.py"), f"ckpt_path={tiny_run.ckpt}",
        f"hydra.run.dir={out_dir / 'run'}", *overrides,
    ]  # fmt: skip
    # the tiny checkpoint's backbone is tests.helpers.TinyBackbone: the script needs the repository on its path
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


@pytest.fixture(scope="session")
def exported(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported by the script, as a user runs it (once per session)."""
    out_dir = tmp_path_factory.mktemp("onnx_export")
    run = _run_export_script(tiny_run, out_dir, f"output={out_dir / 'tiny.onnx'}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "parity network" in run.stdout and "-> ok" in run.stdout
    return out_dir


def test_export_script_writes_a_self_describing_onnx_and_passes_parity_on_a_test_image(tiny_run, exported):
    report = json.loads((exported / "run" / "parity.json").read_text())
    assert report["passed"] is True
    assert Path(report["image"]).parent == tiny_run.data_root / "img_dir" / "test"
    # traced at the dataset's crop (32x32, also the test images' size): the check runs at another size
    assert report["sample_shape"] == [32, 32] and report["parity"]["network"]["shape"] != [32, 32]
    for key in ("network", "prediction"):
        assert report["parity"][key]["equal_pixels"] == 1.0
        assert report["parity"][key]["max_abs_diff"] < 1e-4
    meta = read_onnx_meta(exported / "tiny.onnx")
    ckpt_model, ckpt_meta = load_segmentor(tiny_run.ckpt)
    assert meta["classes"] == ckpt_meta["classes"] and meta["palette"] == ckpt_meta["palette"]
    assert meta["config"] == ckpt_meta["config"]
    assert meta["onnx"]["num_classes"] == 6 and meta["onnx"]["test_cfg"] == {"mode": "whole"}


def test_export_fails_with_exit_code_1_when_parity_is_beyond_tolerance(tiny_run, tmp_path):
    # scripts/export_onnx.py runs scripts/export.py's code with the export_onnx config
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    overrides = [f"ckpt_path={tiny_run.ckpt}", f"output={tmp_path / 'm.onnx'}", "min_equal=1.01"]
    cfg = compose_cfg("export_onnx", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    report = script.export(cfg)
    assert report["passed"] is False and not report["parity"]["network"]["passed"]
    assert json.loads((tmp_path / "run" / "parity.json").read_text())["passed"] is False


def test_eval_with_onnxruntime_gives_pytorchs_metrics(tiny_run, exported, tmp_path):
    onnx_path = exported / "tiny.onnx"
    for extra in ([], ["tta=true"]):
        torch_report = run_eval(tmp_path / "torch", tiny_run.ckpt, "batch_size=3", *extra)
        onnx_report = run_eval(tmp_path / "ort", onnx_path, "backend=onnxruntime", "batch_size=3", *extra)
        for key, value in torch_report["summary"].items():
            assert onnx_report["summary"][key] == pytest.approx(value, abs=1e-6), (key, extra)
        np.testing.assert_array_equal(onnx_report["confusion_matrix"], torch_report["confusion_matrix"])
    assert json.loads((tmp_path / "ort" / "metrics.json").read_text())["backend"] == "onnxruntime"


def test_the_inference_api_predicts_with_an_onnx_file_as_with_its_checkpoint(tiny_run, exported):
    from_ckpt = Segmenter.from_checkpoint(tiny_run.ckpt)(tiny_run.test_images)
    from_onnx = Segmenter.from_checkpoint(exported / "tiny.onnx")(tiny_run.test_images)
    assert isinstance(from_onnx, type(from_ckpt)) and from_onnx.names == from_ckpt.names
    for a, b in zip(from_ckpt.masks, from_onnx.masks):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="backend=onnxruntime"):
        load_model(exported / "tiny.onnx", backend="torch")
    with pytest.raises(ValueError, match="runs .onnx files, .*format=onnx"):
        load_model(tiny_run.ckpt, backend="onnxruntime")
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        load_model(tiny_run.ckpt, backend="tensorrt")


# ------------------------------------------------------------------------ every family of conf/model (slow)
def test_every_model_family_is_in_the_onnx_list():
    # a loss variant (`unet-s5-d16_fcn_ce-1.0-dice-3.0`) is its model's network: not a family of its own
    names = [
        p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if not re.search(r"_ce-[\d.]+-dice-", p.stem)
    ]
    families = {name.rsplit("_", 1)[0] for name in names}
    listed = {name.rsplit("_", 1)[0] for name in FAMILIES}
    # fcn_r50-d8 is in fcn_r18-d8's family: a family is a config name without its backbone
    assert families == listed


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_model_family_exports_and_matches_pytorch_at_other_sizes(name, tmp_path):
    assert_family_exports(name, tmp_path, export_onnx, OnnxSegmentor, "model.onnx")
