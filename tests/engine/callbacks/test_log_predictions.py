"""The validation-prediction callback in a tiny training run: TensorBoard gets images, CSV runs get PNG files,
and wandb gets the image with its prediction and ground-truth masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.data.io import load_image
from src.engine.callbacks.log_predictions import LogValPredictions
from src.train import train
from tests.helpers import tiny_model_cfg


def test_tiny_run_logs_prediction_panels_to_tensorboard_and_png(make_train_cfg):
    # 4 steps, validation every 2 -> validations at steps 2 and 4; log every one of them, 2 samples each
    cfg = make_train_cfg("logger=default", "test=false")
    with open_dict(cfg):
        cfg.model = OmegaConf.create(tiny_model_cfg())
        cfg.runtime.callbacks.log_predictions = {
            "_target_": "src.engine.callbacks.log_predictions.LogValPredictions",
            "every_n_val": 1,
            "num_samples": 2,
        }
    train(cfg)
    out = Path(cfg.paths.output_dir)
    pngs = sorted(p.name for p in (out / "val_predictions").glob("*.png"))
    assert pngs == ["step_2.png", "step_4.png"]
    picture = load_image(out / "val_predictions" / "step_4.png")
    # two rows of image | ground truth | prediction panels (32 px tiles with 14 px captions) + legend
    assert picture.shape[0] >= 2 * (32 + 14) and picture.shape[1] > 3 * 32
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0}).Reload()
    assert "val/predictions" in acc.Tags()["images"]
    logged = acc.Images("val/predictions")
    assert [e.step for e in logged] == [2, 4]
    assert (logged[-1].height, logged[-1].width) == picture.shape[:2]


class FakeTrainer:
    def __init__(self, loggers, root):
        self.loggers, self.global_step, self.default_root_dir = loggers, 7, str(root)


def test_wandb_gets_the_image_with_prediction_and_ground_truth_masks(tmp_path, monkeypatch):
    import wandb

    logger = WandbLogger(offline=True, save_dir=str(tmp_path))  # no run is started: log_image is recorded
    calls = []
    monkeypatch.setattr(logger, "log_image", lambda **kw: calls.append(kw))
    image = np.zeros((8, 10, 3), np.uint8)
    gt, pred = np.full((8, 10), 255, np.uint8), np.ones((8, 10), np.uint8)
    gt[:4] = 1
    callback = LogValPredictions(num_samples=1)
    callback.log_to(
        FakeTrainer([logger], tmp_path), [image], [gt], [pred], ["a"], ["bg", "fg"], [[0, 0, 0], [255, 0, 0]]
    )
    (call,) = calls
    assert call["key"] == "val/predictions" and call["step"] == 7 and call["caption"] == ["a"]
    masks = call["masks"][0]
    assert masks["predictions"]["mask_data"] is pred and masks["ground_truth"]["mask_data"] is gt
    assert masks["predictions"]["class_labels"] == {0: "bg", 1: "fg", 255: "ignore"}
    wandb.Image(image, masks=masks)  # wandb accepts the payload as given
    assert not (tmp_path / "val_predictions").exists()  # an image logger is active, no CSV logger: no PNG


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="every_n_val=0"):
        LogValPredictions(every_n_val=0)
