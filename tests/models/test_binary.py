"""Binary segmentation: sigmoid losses on one logit, the threshold prediction, two metric rows, and masks saved as
0/255 refused until a label_map says what 255 is."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from PIL import Image

from src.data.datasets.base import BaseSegDataset
from src.metrics import SegMetrics
from src.models.binary import resolve_binary, two_class_logits
from src.models.heads import FCNHead
from src.models.losses import CrossEntropyLoss, DiceLoss, FocalLoss, LovaszLoss
from src.train import train
from tests.helpers import TINY_TRAIN, compose_cfg


def _logits_target(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 1, 6, 7, generator=gen)
    target = torch.randint(0, 2, (2, 6, 7), generator=gen)
    target[0, :2, :3] = 255
    return logits, target


# ------------------------------------------------------------------ losses
def test_sigmoid_ce_is_bce_over_all_pixels_and_over_valid_ones():
    logits, target = _logits_target()
    valid = target != 255
    bce = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float(), reduction="sum")
    loss = CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0)
    assert loss(logits, target).item() == pytest.approx(2.0 * bce.item() / target.numel(), rel=1e-5)
    loss = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=True)
    assert loss(logits, target).item() == pytest.approx(bce.item() / valid.sum().item(), rel=1e-5)
    # ignored pixels: no gradient reaches their logits
    logits.requires_grad_(True)
    CrossEntropyLoss(use_sigmoid=True)(logits, target).backward()
    assert logits.grad[0, 0, :2, :3].abs().sum() == 0 and logits.grad.abs().sum() > 0


def test_sigmoid_ce_pos_weight_and_multichannel_one_vs_all():
    logits, target = _logits_target()
    valid = target != 255
    pos = CrossEntropyLoss(use_sigmoid=True, class_weight=[3.0], avg_non_ignore=True)(logits, target)
    ref = F.binary_cross_entropy_with_logits(
        logits[:, 0][valid], target[valid].float(), pos_weight=torch.tensor(3.0)
    )
    assert pos.item() == pytest.approx(ref.item(), rel=1e-5)
    # C channels: BCE against the one-hot label, mean over the [N, C, H, W] elements
    multi = torch.randn(2, 3, 6, 7)
    tgt = torch.randint(0, 3, (2, 6, 7))
    one_hot = F.one_hot(tgt, 3).permute(0, 3, 1, 2).float()
    ref = F.binary_cross_entropy_with_logits(multi, one_hot)
    assert CrossEntropyLoss(use_sigmoid=True)(multi, tgt).item() == pytest.approx(ref.item(), rel=1e-5)


def test_sigmoid_focal_equals_smp_binary_mode():
    logits, target = _logits_target()
    ours = FocalLoss(alpha=0.25, gamma=2.0, use_sigmoid=True)(logits, target)
    ref = smp.losses.FocalLoss(mode="binary", alpha=0.25, gamma=2.0, ignore_index=255)(
        logits, target[:, None]
    )
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="use_sigmoid must be true"):
        FocalLoss(use_sigmoid=False)


def test_sigmoid_dice_is_the_foreground_dice_per_image():
    """MMSegmentation 1.2.2's V-Net Dice of one sigmoid channel against the foreground: every pixel's probability
    in the denominator (ignored ones too), the target only at valid foreground pixels."""
    logits, target = _logits_target()
    p, t = logits[:, 0].sigmoid(), ((target != 255) & (target == 1)).float()
    dice = 2 * (p * t).sum(dim=(1, 2)) / ((p * p).sum(dim=(1, 2)) + 1e-3 + (t * t).sum(dim=(1, 2)) + 1e-3)
    ref = (1 - dice).mean()
    assert DiceLoss(use_sigmoid=True)(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)
    # a perfect, confident prediction has (almost) no loss
    perfect = torch.where(target == 1, 20.0, -20.0).float()[:, None]
    assert DiceLoss(use_sigmoid=True)(perfect, target).item() < 1e-3


def test_sigmoid_lovasz_equals_smp_binary_mode():
    logits, target = _logits_target()
    ours = LovaszLoss(use_sigmoid=True)(logits, target)
    ref = smp.losses.LovaszLoss(mode="binary", ignore_index=255)(logits[:, 0], target)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


# ------------------------------------------------------------ head + metrics
def test_one_logit_head_predicts_sigmoid_over_threshold_as_two_classes():
    head = FCNHead(
        in_channels=4, channels=4, num_convs=1, num_classes=1, losses=[CrossEntropyLoss(use_sigmoid=True)]
    )
    assert head.conv_seg.out_channels == 1 and head.num_classes == 2 and head.threshold == 0.3
    logit = torch.randn(2, 1, 5, 5) * 3
    two = head.predict_by_feat(logit, (5, 5))
    assert two.shape == (2, 2, 5, 5)
    assert torch.equal(two.argmax(1), (logit[:, 0].sigmoid() > 0.3).long())
    # threshold 0.5: the softmax is the sigmoid probability itself
    p = two_class_logits(logit, 0.5).softmax(1)[:, 1]
    torch.testing.assert_close(p, logit[:, 0].sigmoid())
    # MMSegmentation's spelling gives the same head
    assert resolve_binary(2, 1, None) == (2, 1, 0.3) == resolve_binary(1, None, None)
    assert resolve_binary(2, None, None) == (2, 2, None)


def test_one_logit_head_refuses_softmax_losses_and_bad_settings():
    with pytest.raises(ValueError, match="use_sigmoid: true"):
        FCNHead(in_channels=4, channels=4, num_classes=1, losses=[CrossEntropyLoss()])
    with pytest.raises(ValueError, match="use_sigmoid: true"):
        FCNHead(in_channels=4, channels=4, num_classes=1, losses=[DiceLoss(use_sigmoid=False)])
    with pytest.raises(ValueError, match="out_channels=1"):
        resolve_binary(3, 1, None)
    with pytest.raises(ValueError, match="threshold"):
        resolve_binary(1, None, 1.5)


def test_metrics_of_one_logit_have_two_rows():
    metric = SegMetrics(2, class_names=["background", "vessel"], threshold=0.3)
    logit = torch.tensor([[[[-3.0, -0.5], [0.0, 2.0]]]])  # sigmoid: 0.05, 0.38, 0.5, 0.88
    target = torch.tensor([[[0, 1], [1, 0]]])
    metric.update(logit, target)  # prediction: [[0, 1], [1, 1]]
    rows = metric.per_class_table()
    assert [r["class"] for r in rows] == ["background", "vessel"]
    assert rows[0]["IoU"] == pytest.approx(1 / 2) and rows[1]["IoU"] == pytest.approx(2 / 3)


# --------------------------------------------------------- 0/255 datasets
def _write_binary_set(root: Path, n_train: int = 8, n_val: int = 4, size: int = 32, value: int = 255) -> Path:
    """images/{train,val}/*.png with masks/{train,val}/*.png: a bright square (mask `value`) on a dark noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            image[y : y + size // 2, x : x + size // 2] += 150
            mask[y : y + size // 2, x : x + size // 2] = value
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{i:03d}.png")
    return root


def _binary_overrides(root: Path) -> list[str]:
    return [
        "dataset=custom",
        f"dataset.data_root={root}",
        "dataset.train_dataset.img_suffix=.png",
        "dataset.crop_size=[32,32]",
        "dataset.scale=[32,32]",
    ]


def test_0_255_masks_are_refused_naming_the_file_and_the_fix(tmp_path):
    root = _write_binary_set(tmp_path / "binary", n_train=2, n_val=1)
    with pytest.raises(ValueError) as err:
        BaseSegDataset(root, "images/train", "masks/train", img_suffix=".png", classes=["bg", "fg"])
    message = str(err.value)
    assert str(root / "masks" / "train" / "000.png") in message
    assert "+dataset.label_map={255:1}" in message and "binary_drive" in message
    # with a label_map the same files load, 255 -> 1
    ds = BaseSegDataset(
        root, "images/train", "masks/train", img_suffix=".png", classes=["bg", "fg"], label_map={255: 1}
    )
    assert set(np.unique(ds[0]["masks"].numpy())) == {0, 1}
    # {255: 255} says that 255 is the ignore label: accepted as it is
    ds = BaseSegDataset(
        root, "images/train", "masks/train", img_suffix=".png", classes=["bg", "fg"], label_map={255: 255}
    )
    assert set(np.unique(ds[0]["masks"].numpy())) == {0, 255}
    # a 0/1 binary set and a dataset with 255 classes or more are not concerned
    ok = _write_binary_set(tmp_path / "ok", n_train=1, n_val=1, value=1)
    BaseSegDataset(ok, "images/train", "masks/train", img_suffix=".png", classes=["bg", "fg"])
    many = [str(i) for i in range(256)]
    BaseSegDataset(root, "images/train", "masks/train", img_suffix=".png", classes=many)


def test_a_0_255_mask_after_the_first_is_refused_when_loaded(tmp_path):
    root = _write_binary_set(tmp_path / "binary", n_train=2, n_val=1, value=1)
    mask = np.zeros((32, 32), np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(root / "masks" / "train" / "001.png")
    ds = BaseSegDataset(root, "images/train", "masks/train", img_suffix=".png", classes=["bg", "fg"])
    ds[0]
    with pytest.raises(ValueError, match=r"001\.png' holds only the values 0 and 255"):
        ds[1]


def test_check_dataset_reports_the_0_255_masks(tmp_path, capsys):
    from scripts.check_dataset import main

    root = _write_binary_set(tmp_path / "binary", n_train=2, n_val=1)
    overrides = _binary_overrides(root)
    assert main([*overrides, "--out", str(tmp_path / "report")]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert "000.png' holds only the values 0 and 255" in out and "label_map" in out
    assert main([*overrides, "+dataset.label_map={255:1}", "--out", str(tmp_path / "report2")]) == 0


def _train_cfg(root: Path, out: Path, *overrides: str):
    """The tiny training run of tests/conftest.py on the 0/255 set (its shapes-only keys left out)."""
    tiny = [o for o in TINY_TRAIN if not o.startswith("dataset.prepare.")]
    return compose_cfg("train", [*tiny, *_binary_overrides(root), *overrides], out)


def _tiny_binary_model() -> list[str]:
    return [
        "model.backbone.base_channels=8",
        "model.decode_head.channels=8",
        "model.auxiliary_head.channels=8",
    ]


def test_label_map_makes_a_0_255_set_train(tmp_path):
    root = _write_binary_set(tmp_path / "binary")
    cfg = _train_cfg(root, tmp_path / "run", "+dataset.label_map={255:1}", "test=false")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert {"val/IoU/background", "val/IoU/foreground"} <= set(metrics)


def test_sigmoid_model_trains_and_reports_two_classes(tmp_path):
    root = _write_binary_set(tmp_path / "binary")
    cfg = _train_cfg(
        root,
        tmp_path / "run",
        "experiment=binary_drive",
        "+dataset.label_map={255:1}",
        *_tiny_binary_model(),
        # the experiment's schedule and crop, back to the tiny run's
        "schedule.max_steps=4",
        "schedule.val_interval=2",
        "schedule.ckpt_interval=2",
        "dataset.batch_size=4",
        "dataset.val_batch_size=4",
    )
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert math.isfinite(metrics["train/loss"]) and "train/loss_dice" in metrics
    # the metrics have two rows: background and foreground, in the logged metrics and the test table
    for split in ("val", "test"):
        assert {f"{split}/IoU/background", f"{split}/IoU/foreground"} <= set(metrics)
        assert not any(
            k.startswith(f"{split}/IoU/") and k.split("/")[-1] not in ("background", "foreground")
            for k in metrics
        )
    header = next(csv.reader(open(out / "csv" / "metrics.csv")))
    assert "val/IoU/foreground" in header
    # the checkpoint predicts class indices 0/1 through the inference API
    from src.serve.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(metrics["ckpt_path"])
    image = np.asarray(Image.open(root / "images" / "val" / "000.png"))
    mask = seg(image).masks[0]
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    assert seg.segmentor.decode_head.conv_seg.out_channels == 1 and seg.classes == [
        "background",
        "foreground",
    ]


def test_binary_drive_composes_with_one_logit_heads(tmp_path):
    cfg = compose_cfg("train", ["experiment=binary_drive"], tmp_path)
    assert cfg.model.decode_head.num_classes == 1 and cfg.model.auxiliary_head.num_classes == 1
    assert all(loss.use_sigmoid for loss in cfg.model.decode_head.losses)
    assert all(loss.use_sigmoid for loss in cfg.model.auxiliary_head.losses)
    assert cfg.model.decode_head.threshold == 0.3
