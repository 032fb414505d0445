"""OHEM pixel sampler: hand-made examples, its guarantees, and its use through a decode head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.models.heads import FCNHead
from src.models.losses import CrossEntropyLoss, DiceLoss
from src.models.samplers import OHEMPixelSampler, PixelSampler

IGNORE = 255


def _label_prob(logits, label):
    return logits.softmax(1).gather(1, label.clamp(max=logits.shape[1] - 1).unsqueeze(1)).squeeze(1)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * 2
    label = torch.randint(0, 3, (2, 8, 8))
    label[0, :3] = IGNORE
    label[1, :, :2] = IGNORE
    return logits, label


def test_hand_made_example_thresh_and_loss_modes():
    # one image, two classes, six pixels; logit of class 1 minus class 0 sets p(class 1)
    d = torch.tensor([[2.0, -1.0, 0.0], [3.0, 1.0, -3.0]])
    logits = torch.stack([torch.zeros(2, 3), d])[None]  # [1, 2, 2, 3]
    label = torch.tensor([[[1, 1, IGNORE], [0, 1, 1]]])
    # p(label): 0.881, 0.269, ignored, 0.047, 0.731, 0.047 (pixel (1,0) is class 0 at d=3)
    w = OHEMPixelSampler(thresh=0.7, min_kept=1).sample(logits, label)
    assert w.tolist() == [[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]]  # the three below 0.7
    w = OHEMPixelSampler(thresh=0.1, min_kept=3).sample(logits, label)
    assert w.tolist() == [[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]]  # two below 0.1, topped up to the 3 lowest
    w = OHEMPixelSampler(thresh=0.1, min_kept=4).sample(logits, label)
    assert w.tolist() == [[[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]]
    # loss mode: the 2 highest cross-entropy pixels are the two with p = 0.047
    w = OHEMPixelSampler(thresh=None, min_kept=2).sample(logits, label)
    assert w.tolist() == [[[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]]
    # more kept than valid pixels: every valid pixel, never the ignored one
    for thresh in (None, 0.5):
        w = OHEMPixelSampler(thresh=thresh, min_kept=10).sample(logits, label)
        assert w.tolist() == [[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]]


def test_thresh_mode_keeps_exactly_the_pixels_below_thresh_when_they_are_many(batch):
    logits, label = batch
    valid = label != IGNORE
    prob = _label_prob(logits, label)
    below = (prob < 0.7) & valid
    min_kept = 10  # per image: 20 for the batch
    assert below.sum() > 2 * min_kept
    w = OHEMPixelSampler(thresh=0.7, min_kept=min_kept).sample(logits, label)
    assert torch.equal(w.bool(), below)


def test_thresh_mode_keeps_at_least_min_kept_per_image_the_least_confident(batch):
    logits, label = batch
    valid = label != IGNORE
    prob = _label_prob(logits, label)
    w = OHEMPixelSampler(thresh=1e-6, min_kept=15).sample(logits, label)  # nothing below thresh
    assert w.sum() == 30 and w.dtype == torch.float32
    assert not w[~valid].any()
    assert prob[w.bool()].max() < prob[valid & ~w.bool()].min()  # the 30 lowest


def test_ties_at_the_threshold_still_keep_min_kept():
    # a saturated softmax gives equal probabilities; MMSeg's strict `p < threshold` would keep none
    logits, label = torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
    w = OHEMPixelSampler(thresh=0.3, min_kept=5).sample(logits, label)
    assert w.sum() == 5


def test_loss_mode_keeps_the_top_k_by_cross_entropy(batch):
    logits, label = batch
    valid = label != IGNORE
    ce = F.cross_entropy(logits, label, ignore_index=IGNORE, reduction="none")
    w = OHEMPixelSampler(thresh=None, min_kept=12).sample(logits, label)
    assert w.sum() == 24 and not w[~valid].any()
    kth_loss = ce[valid].topk(24).values[-1]
    assert torch.equal(w.bool(), valid & (ce >= kth_loss))  # no ties among random losses


def test_no_gradient_and_label_with_a_channel_axis(batch):
    logits, label = batch
    logits.requires_grad_(True)
    sampler = OHEMPixelSampler(thresh=0.7, min_kept=5)
    w = sampler.sample(logits, label)
    assert not w.requires_grad
    assert torch.equal(sampler.sample(logits, label[:, None]), w)
    assert isinstance(sampler, PixelSampler)


def test_all_ignored_keeps_nothing():
    w = OHEMPixelSampler(thresh=0.7, min_kept=5).sample(
        torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), IGNORE)
    )
    assert w.sum() == 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="thresh"):
        OHEMPixelSampler(thresh=1.5)
    with pytest.raises(ValueError, match="min_kept"):
        OHEMPixelSampler(min_kept=0)
    with pytest.raises(ValueError, match="spatial size"):
        OHEMPixelSampler(thresh=0.7).sample(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("thresh", [0.33, None])
def test_through_a_head_losses_use_the_sampler_weights(thresh):
    torch.manual_seed(0)
    sampler = OHEMPixelSampler(thresh=thresh, min_kept=30)
    head = FCNHead(
        in_channels=8,
        channels=8,
        num_classes=3,
        num_convs=1,
        losses=[CrossEntropyLoss(), DiceLoss(loss_weight=3.0)],
        sampler=sampler,
    )
    head.eval()
    feats = [torch.randn(2, 8, 6, 6)]
    masks = torch.randint(0, 3, (2, 12, 12))
    masks[:, :2] = IGNORE
    logits = head(feats)
    losses = head.loss_by_feat(logits, masks)
    up = F.interpolate(logits, size=(12, 12), mode="bilinear", align_corners=False)
    w = sampler.sample(up, masks)
    assert 0 < w.sum() < (masks != IGNORE).sum()  # some pixels dropped, so the check below means something
    ce = F.cross_entropy(up, masks, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(losses["loss_ce"], (ce * w).sum() / masks.numel())
    # Dice: the Dice of each image's kept pixels alone, averaged over the images
    kept = [
        DiceLoss(loss_weight=3.0)(u[:, k][None, :, :, None], m[k][None, :, None])
        for u, m, k in zip(up, masks, w > 0)
    ]
    torch.testing.assert_close(losses["loss_dice"], torch.stack(kept).mean())
    # without a sampler: the plain loss over all valid pixels
    head.sampler = None
    plain = head.loss_by_feat(logits, masks)["loss_ce"]
    torch.testing.assert_close(plain, ce.sum() / masks.numel())
    assert plain > 0


def test_head_rejects_a_sampler_with_another_ignore_index():
    with pytest.raises(ValueError, match="ignore_index"):
        FCNHead(
            in_channels=4, channels=4, num_classes=2, sampler=OHEMPixelSampler(thresh=0.7, ignore_index=0)
        )
    with pytest.raises(ValueError, match="sample"):
        FCNHead(in_channels=4, channels=4, num_classes=2, sampler=object())
