"""Loss terms: each a named, weighted `nn.Module` so that a head holds a list of them and every term is logged
as `train/<loss_name>` (MMSegmentation's `loss_decode` list).

Every term is called as `loss(logits [N, C, H, W], target [N, H, W] long, weight=None) -> scalar`, already
multiplied by its `loss_weight`. `weight` is an optional per-pixel weight `[N, H, W]` (the OHEM sampler's
`seg_weight`, see `src.models.samplers`); each term applies it where it has a meaning (documented per class).
Pixels labelled `ignore_index` contribute nothing, and neither do the logits at those pixels (no value, no
gradient).

A head's losses in a config, e.g. MMSegmentation's UNet recipe (`loss_decode=[CE 1.0, Dice 3.0]`):

    losses:
      - {_target_: src.models.losses.CrossEntropyLoss, loss_weight: 1.0}
      - {_target_: src.models.losses.DiceLoss, loss_weight: 3.0}

`use_sigmoid: true` (CE, Dice, Focal, Lovasz) scores each logit channel with a sigmoid instead of a softmax over
the channels. With ONE channel (a binary head, `num_classes: 1`, see `src.models.binary`) the channel is the
foreground and the target is `label == 1`; with C channels each is one-vs-all against the one-hot label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses._functional import focal_loss_with_logits
from torch import nn


class LossTerm(nn.Module):
    """What every loss term shares: the key it is logged under, its weight, the ignored label, and optional
    per-class weights (a list or a file) as a non-persistent buffer that follows the module's device."""

    def __init__(
        self,
        loss_weight: float,
        ignore_index: int,
        loss_name: str,
        class_weight: Sequence[float] | str | None = None,
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.loss_name = loss_name
        self.register_buffer("class_weight", _read_class_weight(class_weight), persistent=False)


class CrossEntropyLoss(LossTerm):
    """Pixel-wise cross-entropy with MMSegmentation's reduction.

    PyTorch's `reduction="mean"` divides by the summed class weights of the valid pixels; MMSegmentation divides
    by the number of pixels: all of them (`avg_non_ignore=False`, its default, so ignored pixels count as zero
    loss) or only the non-ignored ones (`avg_non_ignore=True`). We keep MMSegmentation's so that its loss weights
    and learning rates carry over.

    A per-pixel `weight` multiplies each pixel's loss before the reduction and leaves the denominator as it is
    (all pixels, or the non-ignored ones), as MMSegmentation's `weight_reduce_loss`: with OHEM the loss of the
    kept pixels is divided by the count of all (valid) pixels, not of the kept ones.

    Args:
        loss_weight: multiplier of this term.
        class_weight: per-class weights, a list or the path of a text/JSON file with one number per class.
        avg_non_ignore: average over non-ignored pixels only.
        ignore_index: label that contributes no loss.
        label_smoothing: as `F.cross_entropy` (softmax only).
        loss_name: the key under which the term is returned and logged.
        use_sigmoid: binary cross-entropy with logits (MMSegmentation's `use_sigmoid=True`): per pixel and channel
            against the target `label == 1` (one channel) or the one-hot label (C channels), `class_weight` as
            BCE's `pos_weight` per channel; the reduction is the same (all pixels, or the non-ignored ones with
            `avg_non_ignore`), times the channels for C > 1 (MMSegmentation's mean over the [N, C, H, W] loss).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        class_weight: Sequence[float] | str | None = None,
        avg_non_ignore: bool = False,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
        loss_name: str = "loss_ce",
        use_sigmoid: bool = False,
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name, class_weight)
        self.avg_non_ignore = avg_non_ignore
        self.label_smoothing = label_smoothing
        self.use_sigmoid = bool(use_sigmoid)
        if self.use_sigmoid and label_smoothing:
            raise ValueError(
                f"{loss_name}: label_smoothing is for the softmax loss, not with use_sigmoid: true"
            )

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        class_weight = _check_class_weight(self.class_weight, logits)
        if self.use_sigmoid:
            return self._sigmoid(logits, target, weight, class_weight)
        loss = F.cross_entropy(
            logits.float(),
            target,
            weight=class_weight,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        if weight is not None:
            loss = loss * _check_pixel_weight(weight, target, self.loss_name)
        if self.avg_non_ignore:
            denom = (target != self.ignore_index).sum().clamp_min(1)
        else:
            denom = target.numel()
        return self.loss_weight * loss.sum() / denom

    def _sigmoid(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        class_weight: torch.Tensor | None,
    ) -> torch.Tensor:
        valid = target != self.ignore_index
        logits = logits.float().masked_fill(~valid.unsqueeze(1), 0.0)
        goal = sigmoid_target(target, valid, logits.shape[1])
        pos_weight = None if class_weight is None else class_weight.view(-1, 1, 1)
        loss = F.binary_cross_entropy_with_logits(logits, goal, pos_weight=pos_weight, reduction="none")
        mask = valid.float()
        if weight is not None:
            mask = mask * _check_pixel_weight(weight, target, self.loss_name)
        loss = loss * mask.unsqueeze(1)
        pixels = valid.sum().clamp_min(1) if self.avg_non_ignore else target.numel()
        return self.loss_weight * loss.sum() / (pixels * logits.shape[1])


class DiceLoss(LossTerm):
    """Soft Dice loss (V-Net) in the form of MMSegmentation 0.x / 1.0's `DiceLoss`, the one its UNet recipes
    (`loss_decode=[CrossEntropyLoss 1.0, DiceLoss 3.0]`, e.g. `unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_chase-db1`)
    were trained and published with:

        p = softmax(logits), t = one-hot(target), v = valid-pixel mask (times the per-pixel weight)
        loss_{n,c} = 1 - (2 sum_px p t v + smooth) / (sum_px (p^exponent + t^exponent) v + smooth)
        loss = loss_weight * mean_n( sum_{c != ignore_index} class_weight_c * loss_{n,c} / C )

    i.e. one Dice per image and class, averaged over classes (divided by C even with class weights) and images.

    Deviations, and why:
    - MMSegmentation masks ignored pixels in the numerator only: their predicted probabilities, and a one-hot of
      class C-1 (it clamps 255 to C-1), still enter the denominator (reported as a bug, open-mmlab/
      mmsegmentation#2996). Here the mask applies to the denominator too, so ignored pixels and the logits there
      contribute nothing. Without ignored pixels the value is MMSegmentation's (tested).
    - MMSegmentation 1.1+ (PR #3002, #3237; so 1.2.2) replaced this class with MMDetection's Dice: sigmoid by
      default (`use_sigmoid=True`, also on multi-class logits), all classes pooled into one Dice per image,
      `eps=1e-3` instead of `smooth`, optional `naive_dice` (exponent 1), and ignored pixels still in the
      denominator. We keep the per-class softmax form above (the arguments `smooth`, `exponent`, `class_weight`
      are its own), which is what the published UNet numbers used.
    - smp's `DiceLoss` is not reused: it pools the batch into one Dice per class, uses exponent 1 with
      `smooth=0`, and zeroes classes absent from the batch, so its values differ from MMSegmentation's.
    - per-pixel `weight` (OHEM): multiplies the valid mask `v`, in numerator and denominator, so a 0/1 weight
      computes the Dice over the kept pixels only. MMSegmentation 0.x silently drops the weight (its `forward`
      swallows it in `**kwargs`) and 1.2.2 fails on it.

    Args:
        loss_weight: multiplier of this term.
        ignore_index: label that contributes no loss (also a class index skipped in the class sum, as MMSeg).
        smooth: added to numerator and denominator.
        exponent: power of p and t in the denominator (2: V-Net; 1: the "naive" Dice).
        loss_name: the key under which the term is returned and logged.
        class_weight: per-class weights, a list or a file (as `CrossEntropyLoss`).
        use_sigmoid: `p = sigmoid(logits)` per channel instead of the softmax, same formula; one channel is the
            foreground Dice (target `label == 1`), the only term. (MMSegmentation 1.2.2's sigmoid Dice pools all
            channels into one Dice per image; here each channel keeps its own, as the softmax form above.)
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        smooth: float = 1.0,
        exponent: float = 2,
        loss_name: str = "loss_dice",
        class_weight: Sequence[float] | str | None = None,
        use_sigmoid: bool = False,
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name, class_weight)
        self.smooth = smooth
        self.exponent = exponent
        self.use_sigmoid = bool(use_sigmoid)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        num_classes = logits.shape[1]
        class_weight = _check_class_weight(self.class_weight, logits)
        valid = target != self.ignore_index
        # a constant at ignored pixels: no value and no gradient reaches the logits there
        logits = logits.float().masked_fill(~valid.unsqueeze(1), 0.0)
        if self.use_sigmoid:
            prob, one_hot = logits.sigmoid(), sigmoid_target(target, valid, num_classes)
        else:
            prob = logits.softmax(dim=1)
            one_hot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).float()
        mask = valid.float()
        if weight is not None:
            mask = mask * _check_pixel_weight(weight, target, self.loss_name)
        mask = mask.unsqueeze(1)
        num = 2 * (prob * one_hot * mask).sum(dim=(2, 3)) + self.smooth
        den = ((prob.pow(self.exponent) + one_hot.pow(self.exponent)) * mask).sum(dim=(2, 3)) + self.smooth
        per_class = 1 - num / den  # [N, C]
        if class_weight is not None:
            per_class = per_class * class_weight
        if 0 <= self.ignore_index < num_classes and num_classes > 1:  # MMSeg skips that class, divides by C
            i = self.ignore_index  # slices, not a boolean mask: no host-device sync
            per_class = torch.cat([per_class[:, :i], per_class[:, i + 1 :]], dim=1)
        return self.loss_weight * (per_class.sum(dim=1) / num_classes).mean()


class FocalLoss(LossTerm):
    """Sigmoid focal loss over the one-hot target (one-vs-all per class), via smp's `focal_loss_with_logits`:
    the value of `smp.losses.FocalLoss(mode="multiclass", alpha, gamma, ignore_index)` (tested), i.e. per class
    the mean over the non-ignored pixels, then the mean over classes (the class-weighted mean with
    `class_weight`, smp's `class_weights`).

    Deviations, and why:
    - smp's module is not called directly because it has no per-pixel weight; we call the same function it calls
      with `reduction="none"` and reduce ourselves. A per-pixel `weight` multiplies each pixel's loss; the
      denominator stays the count of non-ignored pixels (as `CrossEntropyLoss(avg_non_ignore=True)`).
    - `alpha=0.5` by default, MMSegmentation's default (smp's is None, no balancing; 0.5 halves the loss).
    - MMSegmentation's `FocalLoss` (same formula) divides by all pixels x classes, ignored ones included; smp's
      (kept here) by the non-ignored ones. The two differ by the fraction of valid pixels.
    - no valid pixel at all: 0 (with a gradient graph) instead of smp's NaN.

    Args:
        loss_weight: multiplier of this term.
        gamma: focusing exponent.
        alpha: weight of the positive (target class) term, `1 - alpha` of the negatives; None: no balancing.
        ignore_index: label that contributes no loss.
        loss_name: the key under which the term is returned and logged.
        class_weight: per-class weights (list or file), normalised by their sum as smp's `class_weights`.
        use_sigmoid: the loss is always the sigmoid one (MMSegmentation's FocalLoss supports only
            `use_sigmoid=True`); accepted so that configs read alike. One logit channel is smp's
            `FocalLoss(mode="binary")` (target `label == 1`, tested).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        gamma: float = 2.0,
        alpha: float | None = 0.5,
        ignore_index: int = 255,
        loss_name: str = "loss_focal",
        class_weight: Sequence[float] | str | None = None,
        use_sigmoid: bool = True,
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name, class_weight)
        if not use_sigmoid:
            raise ValueError(f"{loss_name}: FocalLoss is a sigmoid loss; use_sigmoid must be true")
        self.gamma = gamma
        self.alpha = alpha
        self.use_sigmoid = True

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        num_classes = logits.shape[1]
        class_weight = _check_class_weight(self.class_weight, logits)
        valid = target != self.ignore_index
        # as smp, ignored pixels count for nothing and their logits get no gradient; they are masked (a constant
        # logit, a zero weight) rather than dropped by boolean indexing, which would sync the host with the device
        pred = logits.float().masked_fill(~valid.unsqueeze(1), 0.0).movedim(1, -1).reshape(-1, num_classes)
        one_hot = sigmoid_target(target, valid, num_classes).movedim(1, -1).reshape(-1, num_classes)
        loss = focal_loss_with_logits(pred, one_hot, gamma=self.gamma, alpha=self.alpha, reduction="none")
        pixel_weight = valid.float()
        if weight is not None:
            pixel_weight = pixel_weight * _check_pixel_weight(weight, target, self.loss_name)
        loss = loss * pixel_weight.reshape(-1, 1)  # [P, C]
        per_class = loss.sum(dim=0) / valid.sum().clamp_min(1)  # [C]
        if class_weight is not None:
            value = (per_class * class_weight).sum() / class_weight.sum()
        else:
            value = per_class.mean()
        return self.loss_weight * value


class LovaszLoss(LossTerm):
    """Lovasz-Softmax loss (Berman et al., CVPR 2018) over the classes present, smp's
    `LovaszLoss(mode="multiclass", per_image, ignore_index)`, which is also MMSegmentation's default
    (`classes="present"`, `per_image=False`).

    Deviations, and why:
    - The Lovasz extension is not a sum over pixels, so a per-pixel weight has no meaning beyond selecting
      pixels: a 0/1 `weight` (the OHEM sampler's) treats the pixels of weight 0 as ignored; any other value
      raises a ValueError. (MMSegmentation uses `weight` as a per-image weight only with `per_image=True`.)
    - `per_image=True` loops over the images here: an image without valid pixels counts as 0 in the mean, which
      smp intends but gets wrong (it returns an empty tensor for such an image); same for a batch without valid
      pixels with `per_image=False`.

    Args:
        loss_weight: multiplier of this term.
        ignore_index: label that contributes no loss.
        loss_name: the key under which the term is returned and logged.
        per_image: one loss per image, averaged, instead of one over the batch.
        use_sigmoid: the binary Lovasz hinge of smp's `LovaszLoss(mode="binary")` on a one-channel logit
            (target `label == 1`).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        loss_name: str = "loss_lovasz",
        per_image: bool = False,
        use_sigmoid: bool = False,
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name)
        self.per_image = per_image
        self.use_sigmoid = bool(use_sigmoid)
        mode = "binary" if self.use_sigmoid else "multiclass"
        self._lovasz = smp.losses.LovaszLoss(mode=mode, per_image=False, ignore_index=ignore_index)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = logits.float()
        if self.use_sigmoid and logits.shape[1] != 1:
            raise ValueError(f"{self.loss_name}: use_sigmoid takes one logit channel, got {logits.shape[1]}")
        if weight is not None:
            weight = _check_pixel_weight(weight, target, self.loss_name)
            if not ((weight == 0) | (weight == 1)).all():
                raise ValueError(
                    f"{self.loss_name}: LovaszLoss takes only a 0/1 per-pixel weight (pixels to keep), "
                    "e.g. the OHEM sampler's; got other values"
                )
            target = target.masked_fill(weight == 0, self.ignore_index)
        if self.per_image:
            value = torch.stack([self._one(lg[None], tg[None]) for lg, tg in zip(logits, target)]).mean()
        else:
            value = self._one(logits, target)
        return self.loss_weight * value

    def _one(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        if self.use_sigmoid:  # smp's binary mode: [N, H, W] logits, 0/1 labels (ignored ones stay ignored)
            return self._lovasz(logits[:, 0], target)
        return self._lovasz(logits, target)


def sigmoid_target(target: torch.Tensor, valid: torch.Tensor, channels: int) -> torch.Tensor:
    """The float target `[N, channels, H, W]` of sigmoid losses: `label == 1` for one channel (binary: the
    foreground), the one-hot label for several; 0 at ignored pixels."""
    if channels == 1:
        return (valid & (target == 1)).float().unsqueeze(1)
    return F.one_hot(torch.where(valid, target, 0), channels).permute(0, 3, 1, 2).float()


def _check_pixel_weight(weight: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if weight.shape != target.shape:
        raise ValueError(
            f"{name}: per-pixel weight has shape {tuple(weight.shape)}, expected the target's {tuple(target.shape)}"
        )
    return weight.float()


def _check_class_weight(class_weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    if class_weight is not None and class_weight.numel() != logits.shape[1]:
        raise ValueError(
            f"class_weight has {class_weight.numel()} values but the model has {logits.shape[1]} classes"
        )
    return class_weight


def _read_class_weight(class_weight: Sequence[float] | str | None) -> torch.Tensor | None:
    if class_weight is None:
        return None
    if isinstance(class_weight, str | Path):
        path = Path(class_weight)
        if not path.is_file():
            raise FileNotFoundError(f"class_weight file '{path}' does not exist")
        text = path.read_text().replace(",", " ").replace("[", " ").replace("]", " ")
        try:
            class_weight = [float(v) for v in text.split()]
        except ValueError as err:
            raise ValueError(f"class_weight file '{path}': expected numbers, one per class ({err})") from err
    return torch.tensor(list(class_weight), dtype=torch.float32)
