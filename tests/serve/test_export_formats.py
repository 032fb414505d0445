"""torch.export (`.pt2`) and TorchScript exports (`src/serve/export.py`, `scripts/export.py format=...`), checked against
PyTorch as the ONNX export is (tests/serve/test_onnx.py): tiny models of each head in the default suite, every model
family of conf/model/ in the slow suite; `src.eval ckpt_path=model.pt2` gives the checkpoint's metrics.

TorchScript traces the models at one size only (sizes become Python ints in the trace): its files take that size,
and say so when given another.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from src.loading.exported import TorchExportedSegmentor
from src.loading.sources import load_model, resolve_backend
from src.models import EncoderDecoder
from src.models.heads import FCNHead
from src.models.losses import CrossEntropyLoss
from src.serve.export import InferenceNet, export_torch_program, export_torchscript
from src.serve.segmenter import Segmenter
from tests.export_helpers import (
    FAMILIES,
    HEADS,
    TinyPyramid,
    assert_family_exports,
    assert_parity,
    assert_runner_matches,
    tiny_export_model,
    tiny_segmentor,
)
from tests.helpers import TinyRun, compose_cfg, run_eval

ROOT = Path(__file__).resolve().parents[2]
SIZES = [(1, 3, 32, 32), (2, 3, 48, 40), (1, 3, 37, 53)]


# ------------------------------------------------------------------------------- tiny models per head
@pytest.mark.parametrize("head", HEADS)
def test_tiny_head_exports_to_pt2_with_dynamic_size_and_matches_pytorch(head, tmp_path):
    model = tiny_export_model(head)  # fcn's with a padding, BGR-flipping preprocessor: in the graph too
    path = tmp_path / "model.pt2"
    export_torch_program(model, path, sample_shape=(32, 32))
    runner = TorchExportedSegmentor(path)
    assert runner.fixed_shape is None and runner.num_classes == 5
    assert_runner_matches(model, runner, SIZES)  # the traced size, and others (not multiples of 16 either)


def test_export_folds_batchnorm_into_the_file_and_keeps_the_model(tmp_path):
    model = tiny_segmentor("psp")
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    def batch_norms(path: Path) -> int:
        graph = torch.export.load(path).graph_module.graph
        return sum("batch_norm" in str(node.target) for node in graph.nodes)

    meta = export_torch_program(model, tmp_path / "folded.pt2", sample_shape=(32, 32))
    assert meta["export"]["batchnorm_folded"] == bns and batch_norms(tmp_path / "folded.pt2") == 0
    assert_runner_matches(model, TorchExportedSegmentor(tmp_path / "folded.pt2"), SIZES)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == bns  # the model as it was
    meta = export_torch_program(model, tmp_path / "plain.pt2", sample_shape=(32, 32), fold_bn=False)
    assert meta["export"]["batchnorm_folded"] == 0 and batch_norms(tmp_path / "plain.pt2") == bns


@pytest.mark.parametrize("head", ["fcn", "psp"])
def test_torchscript_traces_at_one_size_and_refuses_others(head, tmp_path):
    model = tiny_segmentor(head)
    path = tmp_path / "model.torchscript"
    export_torchscript(model, path, sample_shape=(32, 48))
    runner = TorchExportedSegmentor(path)
    assert runner.fixed_shape == (32, 48)
    images = torch.rand(3, 3, 32, 48) * 255  # any batch
    with torch.no_grad():
        assert_parity(InferenceNet(model)(images), runner.encode_decode(images))
    with pytest.raises(ValueError, match="traced at 32x48"):
        runner.encode_decode(torch.rand(1, 3, 40, 48) * 255)


def test_pt2_runner_predicts_as_pytorch_in_slide_mode_and_with_tta(tmp_path):
    test_cfg = {"mode": "slide", "crop_size": [24, 24], "stride": [16, 16], "tta": {"scales": [0.75, 1.0]}}
    model = tiny_segmentor("fcn", test_cfg=test_cfg)
    export_torch_program(model, tmp_path / "model.pt2", sample_shape=(32, 32))
    runner = TorchExportedSegmentor(tmp_path / "model.pt2")
    assert runner.test_cfg == {"mode": "slide", "crop_size": [24, 24], "stride": [16, 16]}
    rng = np.random.default_rng(0)
    images = [
        torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in [(40, 56), (33, 47)]
    ]
    for tta in (False, True):
        for r, o in zip(model.predict_images(images, tta=tta), runner.predict_images(images, tta=tta)):
            assert_parity(r, o)


def test_binary_sigmoid_model_exports_its_two_class_logits(tmp_path):
    torch.manual_seed(0)
    head = FCNHead(
        in_channels=16, channels=8, num_classes=1, in_index=1, losses=[CrossEntropyLoss(use_sigmoid=True)]
    )
    model = EncoderDecoder(TinyPyramid(), head).eval()
    export_torch_program(model, tmp_path / "binary.pt2", sample_shape=(32, 32))
    runner = TorchExportedSegmentor(tmp_path / "binary.pt2")
    images = torch.rand(2, 3, 40, 24) * 255
    out = runner.encode_decode(images)
    assert out.shape == (2, 2, 40, 24) and runner.num_classes == 2
    with torch.no_grad():
        assert_parity(InferenceNet(model)(images), out)


def test_backend_is_resolved_by_suffix():
    assert resolve_backend("m.pt2") == "torch_export" and resolve_backend("m.torchscript") == "torchscript"
    assert resolve_backend("m.onnx") == "onnxruntime" and resolve_backend("last.ckpt") == "torch"


# ------------------------------------------------------------------- checkpoint: script, eval, inference
def _export_script():
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _export(tiny_run: TinyRun, tmp_path: Path, fmt: str, suffix: str) -> tuple[Path, dict]:
    out = tmp_path / f"tiny{suffix}"
    overrides = [f"ckpt_path={tiny_run.ckpt}", f"format={fmt}", f"output={out}"]
    cfg = compose_cfg("export", overrides, tmp_path / f"run_{fmt}")
    GlobalHydra.instance().clear()
    report = _export_script().export(cfg)
    return out, report


def test_export_script_pt2_passes_parity_and_evaluates_like_the_checkpoint(tiny_run, tmp_path):
    pt2, report = _export(tiny_run, tmp_path, "torch_export", ".pt2")
    assert report["passed"] is True and report["format"] == "torch_export"
    assert report["parity"]["network"]["shape"] != [32, 32]  # checked at a size the export did not trace
    for key in ("network", "prediction"):
        assert report["parity"][key]["equal_pixels"] == 1.0 and report["parity"][key]["max_abs_diff"] < 1e-4
    saved = json.loads((tmp_path / "run_torch_export" / "parity.json").read_text())
    assert saved["passed"] is True
    # src.eval ckpt_path=model.pt2: the same loop, the same metrics (with TTA too)
    for extra in ([], ["tta=true"]):
        torch_report = run_eval(tmp_path / "torch", tiny_run.ckpt, "batch_size=3", *extra)
        pt2_report = run_eval(tmp_path / "pt2", pt2, "batch_size=3", *extra)
        for key, value in torch_report["summary"].items():
            assert pt2_report["summary"][key] == pytest.approx(value, abs=1e-6), (key, extra)
        np.testing.assert_array_equal(pt2_report["confusion_matrix"], torch_report["confusion_matrix"])
    assert json.loads((tmp_path / "pt2" / "metrics.json").read_text())["backend"] == "torch_export"
    # the inference API takes the file as a checkpoint
    from_ckpt = Segmenter.from_checkpoint(tiny_run.ckpt)(tiny_run.test_images)
    from_pt2 = Segmenter.from_checkpoint(pt2)(tiny_run.test_images)
    for a, b in zip(from_ckpt.masks, from_pt2.masks):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="backend=torch_export"):
        load_model(pt2, backend="torch")
    with pytest.raises(ValueError, match="format=torch_export"):
        load_model(tiny_run.ckpt, backend="torch_export")


def test_export_script_torchscript_checks_parity_at_its_traced_size(tiny_run, tmp_path):
    ts, report = _export(tiny_run, tmp_path, "torchscript", ".torchscript")
    assert report["passed"] is True and report["parity"]["network"]["shape"] == [32, 32]
    # the tiny run's test images are 32x32, the traced size: whole-image prediction works through it
    assert report["parity"]["prediction"]["equal_pixels"] == 1.0
    meta = load_model(ts)[1]
    assert meta["export"]["fixed_shape"] == [32, 32] and meta["classes"][0] == "background"


def test_export_script_refuses_an_output_of_another_format(tiny_run, tmp_path):
    overrides = [f"ckpt_path={tiny_run.ckpt}", "format=torch_export", f"output={tmp_path / 'm.onnx'}"]
    cfg = compose_cfg("export", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    with pytest.raises(ValueError, match=r"end in \.pt2"):
        _export_script().export(cfg)
    # an ONNX opset with another format is refused before the checkpoint is read, and by the API too
    cfg = compose_cfg(
        "export", ["ckpt_path=missing.ckpt", "format=torch_export", "opset=17"], tmp_path / "run1"
    )
    GlobalHydra.instance().clear()
    with pytest.raises(
        ValueError, match=r"opset=17: an ONNX opset, for format=onnx only \(format=torch_export\)"
    ):
        _export_script().export(cfg)
    with pytest.raises(ValueError, match=r"opset=17: .* \(format=torchscript\)"):
        export_torchscript(torch.nn.Identity(), tmp_path / "m.torchscript", opset=17)
    # export_onnx.yaml is export.yaml with format=onnx
    cfg = compose_cfg("export_onnx", [f"ckpt_path={tiny_run.ckpt}"], tmp_path / "run2")
    GlobalHydra.instance().clear()
    assert cfg.format == "onnx" and cfg.task_name == "export_onnx" and cfg.atol == 1.0e-3


# ------------------------------------------------------------------------ every family of conf/model (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_model_family_exports_to_pt2_and_matches_pytorch_at_other_sizes(name, tmp_path):
    """The ONNX family list."""
    assert_family_exports(name, tmp_path, export_torch_program, TorchExportedSegmentor, "model.pt2")
