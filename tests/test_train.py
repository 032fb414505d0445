"""End to end on tiny synthetic data: train -> checkpoint -> eval -> infer, and resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from src.data.io import load_mask
from src.eval import evaluate
from src.loading.checkpoint import read_checkpoint
from src.serve.segmenter import Segmenter
from src.train import train
from tests.helpers import RecordSteps, compose_cfg


def test_train_short_run_logs_metrics_and_writes_checkpoints(make_train_cfg):
    cfg = make_train_cfg()
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    # the loss is finite, validation and test ran, and the metrics are fractions
    assert np.isfinite(metrics["train/loss"])
    for key in ("val/mIoU", "val/aAcc", "test/mIoU", "test/mDice", "test/IoU/background"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert {"train/loss_ce", "train/aux_loss_ce"} <= set(metrics)
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert {"iter_2.ckpt", "iter_4.ckpt", "last.ckpt"} <= set(ckpts)
    assert not list((out / "checkpoints").glob("*.tmp"))
    # metrics.csv holds the per-iteration loss and the per-class validation IoU
    rows = list(csv.DictReader(open(out / "csv" / "metrics.csv")))
    header = set(rows[0])
    assert {"train/loss", "val/mIoU", "val/IoU/disc"} <= header
    # the checkpoint is self-describing
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    meta = ckpt["segkit"]
    assert meta["classes"][0] == "background" and len(meta["palette"]) == len(meta["classes"]) == 6
    assert meta["config"]["model"]["name"] == "fcn_r18-d8"
    assert ckpt["global_step"] == 4


def test_checkpoint_eval_infer_round_trip(make_train_cfg, tmp_path):
    cfg = make_train_cfg()
    train_metrics = train(cfg)
    ckpt = train_metrics["ckpt_path"]
    pred_dir = tmp_path / "eval_pred"
    eval_cfg = compose_cfg(
        "eval",
        [f"ckpt_path={ckpt}", "num_workers=0", f"out_dir={pred_dir}", f"show_dir={tmp_path / 'eval_vis'}"],
        tmp_path / "eval_run",
    )
    results = evaluate(eval_cfg)
    # src.eval on the test split reproduces the test metrics of the training run (same weights, same data)
    assert results["summary"]["mIoU"] == pytest.approx(train_metrics["test/mIoU"], abs=1e-6)
    assert (tmp_path / "eval_run" / "metrics.json").is_file()
    assert (tmp_path / "eval_run" / "per_class.csv").is_file()

    # the API gives the same masks as src.eval for the same image
    seg = Segmenter.from_checkpoint(ckpt)
    images = sorted((Path(cfg.dataset.data_root) / "img_dir" / "test").glob("*.png"))
    out_dir = tmp_path / "infer"
    result = seg([str(p) for p in images], out_dir=out_dir)
    assert len(result.masks) == len(images)
    for img_path, mask in zip(images, result.masks):
        assert mask.dtype == np.uint8 and mask.shape == (32, 32)
        np.testing.assert_array_equal(load_mask(pred_dir / "pred" / f"{img_path.stem}.png"), mask)
        np.testing.assert_array_equal(load_mask(out_dir / "pred" / f"{img_path.stem}.png"), mask)
        assert (out_dir / "vis" / f"{img_path.stem}.png").is_file()


def test_resume_continues_from_saved_step(make_train_cfg):
    first = make_train_cfg("schedule.max_steps=4")
    train(first)
    mid = Path(first.paths.output_dir) / "checkpoints" / "iter_2.ckpt"
    assert torch.load(mid, weights_only=True)["global_step"] == 2

    resumed = make_train_cfg("schedule.max_steps=4", f"ckpt_path={mid}", "test=false")
    with open_dict(resumed):
        resumed.runtime.callbacks.record = {"_target_": f"{__name__}.RecordSteps"}
    RecordSteps.seen = []
    train(resumed)
    # it starts at the checkpoint's step (not 0) and stops at max_steps
    assert RecordSteps.seen == [2, 3]
    last = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4


def test_checkpoint_from_elsewhere_is_a_clear_error(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not written by this project"):
        Segmenter.from_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        Segmenter.from_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoint_of_another_model_is_a_clear_error(make_train_cfg, tmp_path):
    from omegaconf import OmegaConf

    from src.loading.checkpoint import load_segmentor

    cfg = make_train_cfg()
    ckpt_path = tmp_path / "other.ckpt"
    # the config says fcn_r18-d8, the weights are of another network
    meta = {"config": OmegaConf.to_container(cfg, resolve=True), "classes": ["a"], "palette": [[0, 0, 0]]}
    torch.save({"state_dict": {"segmentor.other.weight": torch.zeros(3)}, "segkit": meta}, ckpt_path)
    with pytest.raises(ValueError, match="does not match the model its config builds"):
        load_segmentor(ckpt_path)


def test_rebuilding_from_a_checkpoint_config_never_loads_pretrained_weights(tmp_path):
    from omegaconf import OmegaConf

    from src.loading.checkpoint import build_segmentor

    # a config that would download (pretrained) or need a file that is gone (pretrained_path)
    cfg = OmegaConf.create(
        {
            "_target_": "src.models.EncoderDecoder",
            "backbone": {
                "_target_": "src.models.TimmBackbone",
                "model_name": "resnet18",
                "pretrained": True,
                "pretrained_path": str(tmp_path / "gone.pth"),
            },
            "decode_head": {
                "_target_": "src.models.heads.FCNHead",
                "in_channels": 512,
                "channels": 8,
                "num_classes": 3,
            },
        }
    )
    model = build_segmentor(cfg)
    assert model.num_classes == 3
    assert cfg.backbone.pretrained is True  # the caller's config is left as it was
