"""Loss terms against independent references: hand-written formulas, torch's functional, smp's modules."""

from __future__ import annotations

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
        DiceLoss(exponent=1, smooth=0.5, class_weight=[1.0, 2.0, 0.5, 1.5]),
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


@pytest.mark.parametrize("loss", _all_losses(), ids=LOSS_IDS)
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


@pytest.mark.parametrize("loss", _all_losses(), ids=LOSS_IDS)
def test_all_ignored_gives_a_finite_zero_with_a_graph(loss):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    if getattr(loss, "class_weight", None) is not None:
        loss.class_weight = loss.class_weight[:3]
    value = loss(logits, torch.full((2, 4, 4), IGNORE))
    value.backward()
    assert torch.isfinite(value) and (logits.grad == 0).all()
    assert value.item() == 0.0  # Dice: 1 - smooth / smooth


@pytest.mark.parametrize("loss", [DiceLoss(), LovaszLoss(), LovaszLoss(per_image=True)], ids=str)
def test_zero_pixel_weight_acts_as_ignore_for_set_losses(loss, batch):
    """Dice and Lovasz are set functions: a 0/1 weight (OHEM) restricts the set to the kept pixels."""
    logits, target = batch
    keep = torch.rand(target.shape) > 0.4
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
    ).item() == pytest.approx(0.4 * (weighted * w).sum().item() / target.numel())


# ---------------------------------------------------------------- Dice


def _mmseg_dice_reference(logits, target, smooth=1.0, exponent=2, class_weight=None):
    """MMSegmentation 0.x `dice_loss` as written there (loop over classes, binary Dice per image, mean over
    images), valid for targets without ignored pixels (where it and ours agree by design)."""
    pred = logits.softmax(1)
    n, c = pred.shape[:2]
    one_hot = F.one_hot(target, c)  # [N, H, W, C] as MMSeg
    total = 0.0
    for i in range(c):
        p = pred[:, i].reshape(n, -1)
        t = one_hot[..., i].reshape(n, -1).float()
        num = (p * t).sum(1) * 2 + smooth
        den = (p.pow(exponent) + t.pow(exponent)).sum(1) + smooth
        loss = (1 - num / den).mean()
        total = total + (loss * class_weight[i] if class_weight is not None else loss)
    return total / c


def _masked_dice_reference(logits, target, smooth=1.0, exponent=2):
    """Per image, keep the valid pixels only (boolean indexing), then MMSeg's per-class Dice."""
    c = logits.shape[1]
    per_image = []
    for lg, tg in zip(logits, target):
        valid = tg != IGNORE
        p = lg.softmax(0)[:, valid]  # [C, P]
        t = F.one_hot(tg[valid], c).T.float()
        num = 2 * (p * t).sum(1) + smooth
        den = (p**exponent + t**exponent).sum(1) + smooth
        per_image.append((1 - num / den).mean())
    return torch.stack(per_image).mean()


def test_dice_equals_mmsegmentation_formula_without_ignored_pixels(batch):
    logits, _ = batch
    target = torch.randint(0, 4, (2, 6, 5))
    torch.testing.assert_close(DiceLoss()(logits, target), _mmseg_dice_reference(logits, target))
    cw = [0.5, 1.0, 2.0, 1.0]
    torch.testing.assert_close(
        DiceLoss(smooth=0.1, exponent=1, class_weight=cw, loss_weight=3.0)(logits, target),
        3.0 * _mmseg_dice_reference(logits, target, smooth=0.1, exponent=1, class_weight=cw),
    )


def test_dice_with_ignored_pixels_is_the_dice_of_the_valid_pixels(batch):
    logits, target = batch
    torch.testing.assert_close(DiceLoss()(logits, target), _masked_dice_reference(logits, target))
    torch.testing.assert_close(
        DiceLoss(exponent=1, smooth=0.5)(logits, target),
        _masked_dice_reference(logits, target, smooth=0.5, exponent=1),
    )


def test_dice_perfect_prediction_is_near_zero_and_smp_differs():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (1, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 30
    assert DiceLoss()(logits, target).item() < 1e-6
    # smp's Dice (batch-pooled, exponent 1, smooth 0) is another formula: not what MMSeg's recipes used
    logits = torch.randn(2, 3, 8, 8)
    ours = DiceLoss()(logits, target.expand(2, 8, 8))
    theirs = smp.losses.DiceLoss(mode="multiclass")(logits, target.expand(2, 8, 8))
    assert abs(ours.item() - theirs.item()) > 1e-3


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


def test_lovasz_rejects_a_non_binary_pixel_weight(batch):
    logits, target = batch
    with pytest.raises(ValueError, match="0/1 per-pixel weight"):
        LovaszLoss()(logits, target, weight=torch.full(target.shape, 0.5))


def test_class_weight_length_must_match_the_classes(batch):
    logits, target = batch
    for loss in (
        CrossEntropyLoss(class_weight=[1.0, 2.0]),
        DiceLoss(class_weight=[1.0]),
        FocalLoss(class_weight=[1, 2]),
    ):
        with pytest.raises(ValueError, match="class_weight has"):
            loss(logits, target)


def test_dice_and_focal_class_weight_from_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("[1.0, 2.0, 0.5]")
    assert DiceLoss(class_weight=str(path)).class_weight.tolist() == [1.0, 2.0, 0.5]
    assert FocalLoss(class_weight=str(path)).class_weight.tolist() == [1.0, 2.0, 0.5]
