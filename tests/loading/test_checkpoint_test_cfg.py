"""An MMSegmentation checkpoint whose `meta` carries its config is tested as that config says (its `test_cfg`),
by the loader, the API and the converter; the command line's `model.test_cfg...` keeps the user's choice.

The checkpoint is a tiny FCN-R18-D8 with random weights under MMSegmentation's names; the config text is the kind
MMEngine's Runner writes (`meta["cfg"]`) or MMSegmentation 0.x (`meta["config"]`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from src.loading.checkpoint import build_segmentor, load_segmentor, read_checkpoint
from src.loading.mmseg import compose_model_dataset
from src.serve.segmenter import Segmenter
from tests.helpers import to_mmseg_names

ROOT = Path(__file__).resolve().parents[2]
REF = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg"))
SLIDE_TEXT = """norm_cfg = dict(type='SyncBN', requires_grad=True)
crop_size = (32, 32)
model = dict(
    type='EncoderDecoder',
    decode_head=dict(type='FCNHead', num_classes=6, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(24, 24)))
"""


@pytest.fixture(scope="module")
def configs():
    return compose_model_dataset("fcn_r18-d8", "shapes")


@pytest.fixture(scope="module")
def mm_state(configs):
    torch.manual_seed(0)
    return to_mmseg_names(build_segmentor(configs.model).state_dict())


def _save(path: Path, state: dict, meta: dict) -> Path:
    torch.save({"meta": meta, "state_dict": state}, path)
    return path


@pytest.mark.parametrize("key", ["cfg", "config"])
def test_the_checkpoints_own_test_cfg_is_used_and_said(key, configs, mm_state, tmp_path, caplog):
    path = _save(tmp_path / "slide.pth", mm_state, {key: SLIDE_TEXT})
    assert configs.model.test_cfg.mode == "whole"  # the named model tests whole images
    with caplog.at_level(logging.INFO):
        model, meta = load_segmentor(path, "cpu", configs.model, configs.dataset)
    assert model.test_cfg == {"mode": "slide", "crop_size": [32, 32], "stride": [24, 24]}
    assert model.tta_cfg is not None  # the model's TTA settings are kept
    assert meta["config"]["model"]["test_cfg"]["mode"] == "slide"
    said = [
        r.getMessage() for r in caplog.records if "as the config in the checkpoint says" in r.getMessage()
    ]
    assert len(said) == 1 and "slide (32x32 windows, stride 24x24)" in said[0] and "says whole" in said[0]
    # the user's own choice wins
    kept, _ = load_segmentor(path, "cpu", configs.model, configs.dataset, test_cfg_from="config")
    assert kept.test_cfg == {"mode": "whole"}


def test_the_api_and_the_converter_use_it_too(configs, mm_state, tmp_path):
    path = _save(tmp_path / "slide.pth", mm_state, {"cfg": SLIDE_TEXT, "mmseg_version": "1.2.2"})
    seg = Segmenter.from_checkpoint(path, model="fcn_r18-d8", dataset="shapes")
    assert seg.segmentor.test_cfg["mode"] == "slide"
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from convert_mmseg_checkpoint import convert
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    convert(path, tmp_path / "slide.ckpt", ["model=fcn_r18-d8", "dataset=shapes"])
    saved = read_checkpoint(tmp_path / "slide.ckpt")["segkit"]["config"]["model"]["test_cfg"]
    assert (saved["mode"], saved["crop_size"], saved["stride"]) == ("slide", [32, 32], [24, 24])
    convert(
        path, tmp_path / "whole.ckpt", ["model=fcn_r18-d8", "dataset=shapes", "model.test_cfg.mode=whole"]
    )
    assert (
        read_checkpoint(tmp_path / "whole.ckpt")["segkit"]["config"]["model"]["test_cfg"]["mode"] == "whole"
    )


def test_a_checkpoint_without_a_config_keeps_the_models(configs, mm_state, tmp_path, caplog):
    path = _save(tmp_path / "bare.pth", mm_state, {"mmseg_version": "1.2.2"})
    with caplog.at_level(logging.INFO):
        model, _ = load_segmentor(path, "cpu", configs.model, configs.dataset)
    assert model.test_cfg == {"mode": "whole"}
    assert not [r for r in caplog.records if "in the checkpoint says" in r.getMessage()]


@pytest.mark.skipif(not (REF / "pspnet_r18-d8.pth").is_file(), reason=f"no {REF / 'pspnet_r18-d8.pth'}")
def test_mmsegmentations_own_checkpoint_says_whole(caplog):
    """The shared checkpoint written by MMSegmentation 1.2.2 (its config text in `meta["config"]`): whole, as the
    named model, so nothing is said."""
    cfg = compose_model_dataset("pspnet_r18-d8", "cityscapes")
    with caplog.at_level(logging.INFO):
        model, _ = load_segmentor(REF / "pspnet_r18-d8.pth", "cpu", cfg.model, cfg.dataset)
    assert model.test_cfg == {"mode": "whole"}
    assert not [r for r in caplog.records if "in the checkpoint says" in r.getMessage()]
