"""Loss terms against independent references: MMSegmentation 1.2.2's recorded values (`loss_case`), hand-written
formulas, torch's functional, smp's modules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from src.models.losses import CrossEntropyLoss, DiceLoss, FocalLoss, LovaszLoss

IGNORE = 255


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5) * 2
    target = torch.randint(0, 4, (2, 6, 5))
    target[0, :2] = IGNORE
    target[1, 3, 1:4] = IGNORE
    return logits, target


def _all_losses():
    return [
        CrossEntropyLoss(),
        CrossEntropyLoss(avg_non_ignore=True, class_weight=[1.0, 2.0, 0.5, 1.5], label_smoothing=0.1),
        DiceLoss(),
        DiceLoss(use_sigmoid=False, naive_dice=True, eps=0.5),
        FocalLoss(),
        FocalLoss(alpha=None, gamma=1.5),
        LovaszLoss(),
        LovaszLoss(per_image=True),
    ]


LOSS_IDS = [
    "ce",
    "ce_options",
    "dice",
    "dice_options",
    "focal",
    "focal_options",
    "lovasz",
    "lovasz_per_image",
]


# ---------------------------------------------------------------- properties shared by every term


def _not_dice():
    return [(loss, i) for loss, i in zip(_all_losses(), LOSS_IDS) if not isinstance(loss, DiceLoss)]


@pytest.mark.parametrize("loss", [lo for lo, _ in _not_dice()], ids=[i for _, i in _not_dice()])
def test_logits_at_ignored_pixels_change_nothing_and_get_no_gradient(loss, batch):
    logits, target = batch
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    other = logits.clone()
    other[ignored] = torch.randn(int(ignored.sum())) * 50  # wild values where the label is ignored
    x = logits.clone().requires_grad_(True)
    value = loss(x, target)
    value.backward()
    torch.testing.assert_close(loss(other, target), value.detach())
    assert torch.isfinite(x.grad).all()
    assert (x.grad[ignored] == 0).all()
    assert x.grad[~ignored].abs().sum() > 0  # gradients flow to the valid pixels


@pytest.mark.parametrize("loss", _all_losses(), ids=LOSS_IDS)
def test_loss_weight_scales_and_name_is_kept(loss, batch):
    logits, target = batch
    base = loss(logits, target)
    loss.loss_weight = 2.5
    torch.testing.assert_close(loss(logits, target), 2.5 * base)
    assert loss.loss_name.startswith("loss_")


@pytest.mark.parametrize("loss", _all_losses(), ids=LOSS_IDS)
def test_unit_pixel_weight_equals_no_weight(loss, batch):
    logits, target = batch
    torch.testing.assert_close(loss(logits, target, weight=torch.ones(target.shape)), loss(logits, target))
    with pytest.raises(ValueError, match="per-pixel weight has shape"):
        loss(logits, target, weight=torch.ones(2, 6))


@pytest.mark.parametrize("loss", [lo for lo, _ in _not_dice()], ids=[i for _, i in _not_dice()])
def test_all_ignored_gives_a_finite_zero_with_a_graph(loss):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    if getattr(loss, "class_weight", None) is not None:
        loss.class_weight = loss.class_weight[:3]
    value = loss(logits, torch.full((2, 4, 4), IGNORE))
    value.backward()
    assert torch.isfinite(value) and (logits.grad == 0).all()
    assert value.item() == 0.0


@pytest.mark.parametrize("loss", [DiceLoss(), LovaszLoss(), LovaszLoss(per_image=True)], ids=str)
def test_zero_pixel_weight_acts_as_ignore_for_set_losses(loss, batch):
    """Dice and Lovasz are set functions: a 0/1 weight (OHEM) restricts the set to the kept pixels. For Lovasz
    that is the same as ignoring the dropped pixels; for Dice it is the Dice of the kept pixels alone (ignored
    pixels, by MMSegmentation's definition, still count in its denominator)."""
    logits, target = batch
    keep = torch.rand(target.shape) > 0.4
    if isinstance(loss, DiceLoss):
        kept = [_mmseg_dice_reference(lg[:, k][None], tg[k][None]) for lg, tg, k in zip(logits, target, keep)]
        torch.testing.assert_close(loss(logits, target, weight=keep.float()), torch.stack(kept).mean())
        return
    torch.testing.assert_close(
        loss(logits, target, weight=keep.float()), loss(logits, target.masked_fill(~keep, IGNORE))
    )


# ---------------------------------------------------------------- cross-entropy


def test_cross_entropy_pixel_weight_multiplies_before_the_mmseg_reduction(batch):
    logits, target = batch
    w = torch.rand(target.shape)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    n_valid = (target != IGNORE).sum().item()
    assert CrossEntropyLoss()(logits, target, weight=w).item() == pytest.approx(
        (per_pixel * w).sum().item() / target.numel()
    )
    # avg_non_ignore: the denominator stays the count of non-ignored pixels, whatever the weights
    assert CrossEntropyLoss(avg_non_ignore=True)(logits, target, weight=w).item() == pytest.approx(
        (per_pixel * w).sum().item() / n_valid
    )
    cw = [1.0, 2.0, 0.5, 3.0]
    weighted = F.cross_entropy(logits, target, weight=torch.tensor(cw), ignore_index=IGNORE, reduction="none")
    assert CrossEntropyLoss(class_weight=cw, loss_weight=0.4)(
        logits, target, weight=w
    ).item() == pytest.approx(0.4 * (weighted * w).sum().item() / _class_weight_sum(target, cw, ignored=1.0))


def _class_weight_sum(target, cw, ignored):
    """MMSegmentation's avg_factor with class weights, written out: each valid pixel's class weight, and
    `ignored` for each ignored pixel (where MMSegmentation itself fails)."""
    return sum(cw[v] if v != IGNORE else ignored for v in target.flatten().tolist())


def test_cross_entropy_class_weight_divides_by_the_pixels_class_weights(batch):
    logits, target = batch
    cw = [1.0, 2.0, 0.5, 3.0]
    summed = F.cross_entropy(logits, target, weight=torch.tensor(cw), ignore_index=IGNORE, reduction="sum")
    # avg_non_ignore: PyTorch's weighted mean; without it an ignored pixel counts 1, as without class weights
    torch.testing.assert_close(
        CrossEntropyLoss(class_weight=cw, avg_non_ignore=True)(logits, target),
        F.cross_entropy(logits, target, weight=torch.tensor(cw), ignore_index=IGNORE),
    )
    assert CrossEntropyLoss(class_weight=cw)(logits, target).item() == pytest.approx(
        summed.item() / _class_weight_sum(target, cw, ignored=1.0)
    )


# ---------------------------------------------------------------- Dice


def _mmseg_dice_reference(logits, target, sigmoid=True, naive=False, eps=1e-3, ignore_index=IGNORE):
    """MMSegmentation 1.2.2's Dice written out image by image: probabilities of every pixel, a one-hot target
    that is empty at ignored pixels, the channel `ignore_index` dropped, one Dice over all channels and pixels."""
    c = logits.shape[1]
    values = []
    for lg, tg in zip(logits, target):
        p = lg.sigmoid() if sigmoid else lg.softmax(0)
        t = torch.stack([(tg == k).float() for k in range(c)])
        keep = [k for k in range(c) if k != ignore_index]
        p, t = p[keep].flatten(), t[keep].flatten()
        if naive:
            dice = (2 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)
        else:
            dice = 2 * (p * t).sum() / ((p * p).sum() + eps + (t * t).sum() + eps)
        values.append(1 - dice)
    return torch.stack(values).mean()


@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("naive", [False, True])
def test_dice_equals_mmsegmentation_1x_formula(batch, sigmoid, naive):
    logits, target = batch
    ours = DiceLoss(use_sigmoid=sigmoid, naive_dice=naive, loss_weight=3.0)(logits, target)
    torch.testing.assert_close(ours, 3.0 * _mmseg_dice_reference(logits, target, sigmoid, naive))
    # a class index as ignore_index drops that channel, as MMSegmentation
    clean = target.masked_fill(target == IGNORE, 0)
    torch.testing.assert_close(
        DiceLoss(ignore_index=2, use_sigmoid=sigmoid)(logits, clean),
        _mmseg_dice_reference(logits, clean, sigmoid, ignore_index=2),
    )


def test_dice_defaults_are_mmsegmentation_1x():
    loss = DiceLoss()
    assert (loss.use_sigmoid, loss.naive_dice, loss.eps, loss.activate) == (True, False, 1e-3, True)


def test_dice_predictions_at_ignored_pixels_enter_the_denominator(batch):
    """MMSegmentation's definition: an ignored pixel has no target but its prediction counts, so it gets a
    gradient pushing it towards 0 (kept for equal values)."""
    logits, target = batch
    x = logits.clone().requires_grad_(True)
    DiceLoss()(x, target).backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(x)
    assert (x.grad[ignored] > 0).all()  # d loss / d p > 0 there: lowering p lowers the loss


def test_dice_perfect_prediction_is_near_zero_and_one_channel_targets_the_foreground():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (1, 8, 8))
    logits = (F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 2 - 1) * 30
    assert DiceLoss()(logits, target).item() < 1e-3
    # one channel: the foreground (label 1) is the target, where MMSegmentation 1.2.2 takes the background
    binary = torch.randint(0, 2, (2, 8, 8))
    sure = torch.where(binary == 1, 30.0, -30.0)[:, None]
    assert DiceLoss()(sure, binary).item() < 1e-3
    assert DiceLoss()(-sure, binary).item() > 0.99
    with pytest.raises(ValueError, match="use_sigmoid: true"):
        DiceLoss(use_sigmoid=False)(sure, binary)


# ---------------------------------------------------------------- Focal


def _focal_reference(logits, target, gamma, alpha, pixel_weight=None):
    """Hand-written one-vs-all sigmoid focal loss: per class mean over valid pixels, then mean over classes."""
    c = logits.shape[1]
    valid = target != IGNORE
    x = logits.movedim(1, -1)[valid]  # [P, C]
    t = F.one_hot(target[valid], c).float()
    p = torch.sigmoid(x)
    pt = p * t + (1 - p) * (1 - t)
    loss = -((1 - pt) ** gamma) * torch.log(pt)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    if pixel_weight is not None:
        loss = loss * pixel_weight[valid].unsqueeze(1)
    return (loss.sum(0) / valid.sum()).mean()


def test_focal_matches_smp_and_a_hand_written_formula(batch):
    logits, target = batch
    ours = FocalLoss(gamma=2.0, alpha=0.5)(logits, target)
    smp_value = smp.losses.FocalLoss(mode="multiclass", alpha=0.5, gamma=2.0, ignore_index=IGNORE)(
        logits, target
    )
    torch.testing.assert_close(ours, smp_value)
    torch.testing.assert_close(ours, _focal_reference(logits, target, 2.0, 0.5))
    torch.testing.assert_close(
        FocalLoss(alpha=None, gamma=1.0)(logits, target), _focal_reference(logits, target, 1.0, None)
    )
    cw = [1.0, 2.0, 0.5, 1.0]
    torch.testing.assert_close(
        FocalLoss(class_weight=cw)(logits, target),
        smp.losses.FocalLoss(mode="multiclass", alpha=0.5, ignore_index=IGNORE, class_weights=cw)(
            logits, target
        ),
    )


def test_focal_pixel_weight(batch):
    logits, target = batch
    w = torch.rand(target.shape)
    torch.testing.assert_close(
        FocalLoss()(logits, target, weight=w), _focal_reference(logits, target, 2.0, 0.5, pixel_weight=w)
    )


# ---------------------------------------------------------------- Lovasz


def _lovasz_reference(logits, target):
    """Lovasz-Softmax (Berman et al., Alg. 1) over the classes present among the valid pixels, written out."""
    valid = target != IGNORE
    prob = logits.softmax(1).movedim(1, -1)[valid]  # [P, C]
    labels = target[valid]
    losses = []
    for c in range(prob.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - prob[:, c]).abs()
        order = errors.argsort(descending=True)
        e, g = errors[order], fg[order]
        jaccard = []
        for k in range(1, len(g) + 1):  # Jaccard loss of predicting the top-k errors as wrong
            inter = g.sum() - g[:k].sum()
            union = g.sum() + (1 - g[:k]).sum()
            jaccard.append(1 - inter / union)
        jaccard = torch.stack(jaccard)
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append((e * grad).sum())
    return torch.stack(losses).mean()


def test_lovasz_matches_smp_and_a_hand_written_reference(batch):
    logits, target = batch
    ours = LovaszLoss()(logits, target)
    torch.testing.assert_close(
        ours, smp.losses.LovaszLoss(mode="multiclass", ignore_index=IGNORE)(logits, target)
    )
    torch.testing.assert_close(ours, _lovasz_reference(logits, target))
    per_image = torch.stack([_lovasz_reference(lg[None], tg[None]) for lg, tg in zip(logits, target)]).mean()
    torch.testing.assert_close(LovaszLoss(per_image=True)(logits, target), per_image)


def test_lovasz_per_image_counts_an_all_ignored_image_as_zero(batch):
    logits, target = batch
    target = target.clone()
    target[1] = IGNORE
    expected = _lovasz_reference(logits[:1], target[:1]) / 2
    torch.testing.assert_close(LovaszLoss(per_image=True)(logits, target), expected)


def test_lovasz_classes_and_class_weight(batch):
    logits, target = batch
    valid = target != IGNORE
    # a list: those classes, each times its weight; "all": an absent class counts too (its largest probability)
    cw = [1.0, 2.0, 0.5, 1.5]
    per_class = [_lovasz_one_class(logits, target, c) for c in range(4)]
    torch.testing.assert_close(
        LovaszLoss(classes=[0, 2], class_weight=cw)(logits, target),
        (per_class[0] * cw[0] + per_class[2] * cw[2]) / 2,
    )
    absent = target.masked_fill(target == 3, 0)
    loss_all = LovaszLoss(classes="all")(logits, absent)
    loss_present = LovaszLoss()(logits, absent)
    torch.testing.assert_close(loss_all, (3 * loss_present + _lovasz_one_class(logits, absent, 3)) / 4)
    assert valid.any()


def _lovasz_one_class(logits, target, c):
    valid = target != IGNORE
    prob = logits.softmax(1).movedim(1, -1)[valid][:, c]
    fg = (target[valid] == c).float()
    errors, order = (fg - prob).abs().sort(descending=True)
    g = fg[order]
    k = torch.arange(1, len(g) + 1)
    inter = g.sum() - g.cumsum(0)
    union = g.sum() + (1 - g).cumsum(0)
    jaccard = 1 - inter / union
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    assert len(k) == len(grad)
    return (errors * grad).sum()


def test_lovasz_rejects_a_non_binary_pixel_weight(batch):
    logits, target = batch
    with pytest.raises(ValueError, match="0/1 per-pixel weight"):
        LovaszLoss()(logits, target, weight=torch.full(target.shape, 0.5))


def test_class_weight_length_must_match_the_classes(batch):
    logits, target = batch
    for loss in (
        CrossEntropyLoss(class_weight=[1.0, 2.0]),
        LovaszLoss(class_weight=[1.0]),
        FocalLoss(class_weight=[1, 2]),
    ):
        with pytest.raises(ValueError, match="class_weight has"):
            loss(logits, target)


def test_lovasz_and_focal_class_weight_from_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("[1.0, 2.0, 0.5]")
    assert LovaszLoss(class_weight=str(path)).class_weight.tolist() == [1.0, 2.0, 0.5]
    assert FocalLoss(class_weight=str(path)).class_weight.tolist() == [1.0, 2.0, 0.5]


# ---------------------------------------------------------------- MMSegmentation's own values

LOSS_CASE = Path(os.environ.get("SEGKIT_MMSEG_REF", Path(__file__).resolve().parents[3] / "shared" / "mmseg"))
LOSS_CASE = LOSS_CASE / "loss_case"
LOSSES = {"CrossEntropyLoss": CrossEntropyLoss, "DiceLoss": DiceLoss, "LovaszLoss": LovaszLoss}


def _loss_cases():
    path = LOSS_CASE / "losses.json"
    if not path.is_file():
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"'{path}' is absent (set SEGKIT_MMSEG_REF)"))
        ]
    cases = json.loads(path.read_text())["cases"]
    return [pytest.param(c, id=f"{c['type']}-{json.dumps(c['args'], sort_keys=True)}") for c in cases]


@pytest.mark.parametrize("case", _loss_cases())
def test_equals_mmsegmentation_on_its_recorded_case(case):
    """Each loss, built from the constructor arguments an MMSegmentation config writes, gives MMSegmentation
    1.2.2's recorded value; where MMSegmentation fails (`error`: CE with class_weight on ignored pixels) the value
    is this project's documented rule, computed here with PyTorch's functional."""
    logits = torch.from_numpy(np.load(LOSS_CASE / "logits.npy"))
    labels = torch.from_numpy(np.load(LOSS_CASE / "labels.npy")).long()
    value = LOSSES[case["type"]](ignore_index=IGNORE, **case["args"])(logits, labels)
    if "value" in case:
        assert value.item() == pytest.approx(case["value"], rel=1e-6, abs=1e-7)
        return
    assert "IndexError" in case["error"] and "class_weight" in case["args"]
    cw = case["args"]["class_weight"]
    summed = F.cross_entropy(logits, labels, weight=torch.tensor(cw), ignore_index=IGNORE, reduction="sum")
    ignored = 0.0 if case["args"].get("avg_non_ignore") else 1.0
    assert value.item() == pytest.approx(summed.item() / _class_weight_sum(labels, cw, ignored), rel=1e-6)
