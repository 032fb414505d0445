"""Loss terms: each a named, weighted `nn.Module` so that a head holds a list of them and every term is logged
as `train/<loss_name>` (MMSegmentation's `loss_decode` list).

Every term is called as `loss(logits [N, C, H, W], target [N, H, W] long, weight=None) -> scalar`, already
multiplied by its `loss_weight`. `weight` is an optional per-pixel weight `[N, H, W]` (the OHEM sampler's
`seg_weight`, see `src.models.samplers`); each term applies it where it has a meaning (documented per class).
Pixels labelled `ignore_index` contribute no target; the logits at those pixels get no value and no gradient,
except in `DiceLoss`, whose denominator holds every pixel's prediction as MMSegmentation 1.2.2's does.

The constructor arguments and defaults are MMSegmentation 1.2.2's (`CrossEntropyLoss(avg_non_ignore, class_weight,
use_sigmoid)`, `DiceLoss(use_sigmoid=True, naive_dice=False, eps=1e-3)`, `LovaszLoss(loss_type, classes,
per_image)`), so an entry of an MMSegmentation config's `loss_decode` means the same here: the values equal its
own on `../shared/mmseg/loss_case` (tests/models/test_losses.py); each class says where and why it departs.

A head's losses in a config, e.g. MMSegmentation's UNet recipe (`loss_decode=[CE 1.0, Dice 3.0]`):

    losses:
      - {_target_: src.models.losses.CrossEntropyLoss, loss_weight: 1.0}
      - {_target_: src.models.losses.DiceLoss, loss_weight: 3.0}

`use_sigmoid: true` (CE, Dice (its default), Focal; Lovasz's `loss_type: binary`) scores each logit channel with a
sigmoid instead of a softmax over the channels. With ONE channel (a binary head, `num_classes: 1`, see `src.models.binary`) the channel is the
foreground and the target is `label == 1`; with C channels each is one-vs-all against the one-hot label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    """Pixel-wise cross-entropy with MMSegmentation 1.2.2's reduction (equal to its values, tested on
    `../shared/mmseg/loss_case`).

    PyTorch's `reduction="mean"` divides by the summed class weights of the valid pixels; MMSegmentation divides
    by the number of pixels: all of them (`avg_non_ignore=False`, its default, so ignored pixels count as zero
    loss) or only the non-ignored ones (`avg_non_ignore=True`). With `class_weight` it divides by the summed
    class weights of those pixels instead (`avg_factor = sum(class_weight[label])`). We keep MMSegmentation's
    so that its loss weights and learning rates carry over.

    Where MMSegmentation 1.2.2 fails: with `class_weight`, any label holding the ignore index raises an
    IndexError there (`class_weight[255]`), even with `avg_non_ignore=True`, whose code then zeroes those very
    pixels. Here a valid pixel counts with its class's weight and an ignored one with 0 (`avg_non_ignore=True`,
    what that code computes once it stops failing: PyTorch's weighted mean) or with 1 (`avg_non_ignore=False`,
    as an ignored pixel counts without class weights). Without ignored pixels both are MMSegmentation's value.

    A per-pixel `weight` multiplies each pixel's loss before the reduction and leaves the denominator as it is,
    as MMSegmentation's `weight_reduce_loss`: with OHEM the loss of the kept pixels is divided by the count of
    all (valid) pixels, not of the kept ones.

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
        valid = target != self.ignore_index
        if class_weight is not None:
            # MMSegmentation's avg_factor: the class weights of the pixels (see the class docstring for ignored ones)
            counted = class_weight[torch.where(valid, target, 0)]
            denom = counted.masked_fill(~valid, 0.0 if self.avg_non_ignore else 1.0).sum()
            denom = torch.where(denom > 0, denom, 1.0)  # no valid pixel: the sum is 0 too
        elif self.avg_non_ignore:
            denom = valid.sum().clamp_min(1)
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
    """Dice loss as MMSegmentation 1.2.2's `DiceLoss` (its arguments, defaults and values; tested on
    `../shared/mmseg/loss_case`), so that a `loss_decode` entry of an MMSegmentation config means the same here:

        p = sigmoid(logits) (use_sigmoid, the default) or softmax(logits); t = one-hot(target), 0 at ignored pixels
        the channel `ignore_index` is dropped when it is a class index
        per image n, pooling every remaining channel and pixel:
          V-Net (naive_dice=False): dice_n = 2 sum(p t) / ((sum(p^2) + eps) + (sum(t^2) + eps))
          naive (naive_dice=True):  dice_n = (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)
        loss = loss_weight * mean_n(1 - dice_n)     (reduction="sum": the sum over images)

    What follows from MMSegmentation's definition, kept here for equal values:
    - ignored pixels have an all-zero target, but their predictions still enter `sum(p^2)` (or `sum(p)`): the
      loss pushes every probability there towards 0 (open-mmlab/mmsegmentation#2996);
    - with `use_sigmoid=True` (the default, also for multi-class logits) each channel is a sigmoid, not a
      distribution over classes, and all classes pool into ONE Dice per image. MMSegmentation's UNet recipes
      `..._ce-1.0-dice-3.0_...` train with exactly this in 1.2.2 (their published figures were made with 0.x's
      per-class softmax Dice, a different loss).

    Where this differs, and why:
    - one logit channel (a binary head, `src.models.binary`): the target is the foreground, `label == 1`, as
      for every sigmoid loss here. MMSegmentation 1.2.2 cuts the one-hot of {0, 1} to its first column, so its
      target there is the background (the opposite of its own sigmoid cross-entropy's target).
    - a per-pixel `weight` (the OHEM sampler's) multiplies `p` and `t` pixel by pixel, so a 0/1 weight takes the
      Dice over the kept pixels; MMSegmentation 1.2.2 takes only a per-image weight and fails on a per-pixel one.
    - smp's `DiceLoss` is not reused: it keeps one Dice per class over the batch, with other smoothing.

    Args:
        loss_weight: multiplier of this term.
        ignore_index: label that contributes no target (and a class channel dropped, as MMSegmentation).
        loss_name: the key under which the term is returned and logged.
        use_sigmoid: sigmoid per channel (True, MMSegmentation 1.x's default) or softmax over the channels.
        activate: apply the sigmoid/softmax (False: the logits are already probabilities).
        naive_dice: first powers in the denominator (see above) instead of V-Net's squares.
        eps: MMSegmentation's `eps` (1e-3), where the formulas above put it.
        reduction: "mean" or "sum" over the images.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        loss_name: str = "loss_dice",
        use_sigmoid: bool = True,
        activate: bool = True,
        naive_dice: bool = False,
        eps: float = 1e-3,
        reduction: str = "mean",
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name)
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"{loss_name}: reduction='{reduction}': expected mean or sum (a head needs one value)"
            )
        self.use_sigmoid = bool(use_sigmoid)
        self.activate = bool(activate)
        self.naive_dice = bool(naive_dice)
        self.eps = float(eps)
        self.reduction = reduction

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        channels = logits.shape[1]
        if channels == 1 and self.activate and not self.use_sigmoid:
            raise ValueError(
                f"{self.loss_name}: one logit channel needs use_sigmoid: true (no softmax over one)"
            )
        valid = target != self.ignore_index
        pred = logits.float()
        if self.activate:
            pred = pred.sigmoid() if self.use_sigmoid else pred.softmax(dim=1)
        goal = sigmoid_target(
            target, valid, channels
        )  # one-hot, 0 at ignored pixels; `label == 1` for one channel
        if weight is not None:
            pixel = _check_pixel_weight(weight, target, self.loss_name).unsqueeze(1)
            pred, goal = pred * pixel, goal * pixel
        if (
            channels > 1 and 0 <= self.ignore_index < channels
        ):  # MMSeg drops that channel (slices: no host sync)
            i = self.ignore_index
            pred = torch.cat([pred[:, :i], pred[:, i + 1 :]], dim=1)
            goal = torch.cat([goal[:, :i], goal[:, i + 1 :]], dim=1)
        pred, goal = pred.flatten(1), goal.flatten(1)
        inter = (pred * goal).sum(1)
        if self.naive_dice:
            dice = (2 * inter + self.eps) / (pred.sum(1) + goal.sum(1) + self.eps)
        else:
            dice = 2 * inter / ((pred * pred).sum(1) + self.eps + (goal * goal).sum(1) + self.eps)
        loss = 1 - dice
        return self.loss_weight * (loss.mean() if self.reduction == "mean" else loss.sum())


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
    """Lovasz-Softmax (Berman et al., CVPR 2018) and Lovasz hinge as MMSegmentation 1.2.2's `LovaszLoss`, with its
    arguments (`loss_type`, `classes`, `per_image`, `reduction`, `class_weight`) and values (tested on
    `../shared/mmseg/loss_case`):

        multi_class: p = softmax(logits) over the valid pixels; for each class c of `classes` ("present": those
        in the labels, "all", or a list), the dot product of the sorted errors |[label == c] - p_c| with the
        Lovasz gradient of the Jaccard loss, times `class_weight[c]`; the mean over those classes
        binary: the Lovasz hinge of the one-channel logit against `label == 1`
        per_image: that loss per image, then the mean (`reduction="mean"`) or sum over the images

    Written here rather than taken from smp: smp's `LovaszLoss` has no `classes` list and no `class_weight`; its
    multi-class values are the same as this one's for the default arguments (tested).

    Deviations, and why:
    - The Lovasz extension is not a sum over pixels, so a per-pixel weight has no meaning beyond selecting
      pixels: a 0/1 `weight` (the OHEM sampler's) treats the pixels of weight 0 as ignored; any other value
      raises a ValueError. (MMSegmentation uses `weight` as a per-image weight only with `per_image=True`.)
    - An image (or a batch) without valid pixels counts as 0, where MMSegmentation's stack of empty results fails.
    - MMSegmentation requires `reduction="none"` when `per_image=False` (there is nothing to reduce); any value
      is accepted here and has no effect then.

    Args:
        loss_weight: multiplier of this term.
        ignore_index: label that contributes no loss.
        loss_name: the key under which the term is returned and logged.
        loss_type: "multi_class" (softmax) or "binary" (one logit channel, hinge).
        classes: "present", "all", or a list of class indices to average over.
        per_image: one loss per image, reduced over the images, instead of one over the batch.
        reduction: "mean" or "sum" over the images (with `per_image`).
        class_weight: per-class weights (list or file), multiplied into each class's loss (multi_class).
        use_sigmoid: this project's older spelling of `loss_type="binary"`.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        loss_name: str = "loss_lovasz",
        loss_type: str = "multi_class",
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        reduction: str = "mean",
        class_weight: Sequence[float] | str | None = None,
        use_sigmoid: bool = False,
    ) -> None:
        super().__init__(loss_weight, ignore_index, loss_name, class_weight)
        if use_sigmoid:
            loss_type = "binary"
        if loss_type not in ("multi_class", "binary"):
            raise ValueError(f"{loss_name}: loss_type='{loss_type}': expected multi_class or binary")
        if isinstance(classes, str) and classes not in ("present", "all"):
            raise ValueError(
                f"{loss_name}: classes='{classes}': expected present, all or a list of class indices"
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{loss_name}: reduction='{reduction}': expected mean or sum")
        if per_image and reduction == "none":
            raise ValueError(f"{loss_name}: per_image needs reduction mean or sum (a head needs one value)")
        self.loss_type = loss_type
        self.use_sigmoid = loss_type == "binary"
        self.classes = classes if isinstance(classes, str) else [int(c) for c in classes]
        self.per_image = bool(per_image)
        self.reduction = reduction

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = logits.float()
        if self.use_sigmoid and logits.shape[1] != 1:
            raise ValueError(
                f"{self.loss_name}: loss_type binary takes one logit channel, got {logits.shape[1]}"
            )
        class_weight = None if self.use_sigmoid else _check_class_weight(self.class_weight, logits)
        if weight is not None:
            weight = _check_pixel_weight(weight, target, self.loss_name)
            if not ((weight == 0) | (weight == 1)).all():
                raise ValueError(
                    f"{self.loss_name}: LovaszLoss takes only a 0/1 per-pixel weight (pixels to keep), "
                    "e.g. the OHEM sampler's; got other values"
                )
            target = target.masked_fill(weight == 0, self.ignore_index)
        scores = logits if self.use_sigmoid else logits.softmax(dim=1)
        if self.per_image:
            per = torch.stack([self._flat(s[None], t[None], class_weight) for s, t in zip(scores, target)])
            value = per.mean() if self.reduction == "mean" else per.sum()
        else:
            value = self._flat(scores, target, class_weight)
        return self.loss_weight * value

    def _flat(
        self, scores: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss over the valid pixels of `scores` [N, C, H, W] (probabilities, or one logit for binary)."""
        valid = (target != self.ignore_index).flatten()
        flat = scores.movedim(1, -1).reshape(-1, scores.shape[1])[valid]  # [P, C]
        labels = target.flatten()[valid]
        if labels.numel() == 0:
            return scores.sum() * 0.0  # keeps the graph
        if self.use_sigmoid:  # Lovasz hinge: errors of the margins, sorted
            signs = 2.0 * (labels == 1).float() - 1.0
            errors = 1.0 - flat[:, 0] * signs
            errors, order = errors.sort(descending=True)
            return torch.dot(F.relu(errors), _lovasz_grad((labels[order] == 1).float()))
        chosen = range(flat.shape[1]) if isinstance(self.classes, str) else self.classes
        losses = []
        for c in chosen:
            fg = (labels == c).float()
            if self.classes == "present" and not fg.any():
                continue
            errors, order = (fg - flat[:, c]).abs().sort(descending=True)
            loss = torch.dot(errors, _lovasz_grad(fg[order]))
            losses.append(loss * class_weight[c] if class_weight is not None else loss)
        return torch.stack(losses).mean() if losses else scores.sum() * 0.0


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. the sorted errors (Berman et al., Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def sigmoid_target(target: torch.Tensor, valid: torch.Tensor, channels: int) -> torch.Tensor:
    """The float target `[N, channels, H, W]` of sigmoid losses: `label == 1` for one channel (binary: the
    foreground), the one-hot label for several; 0 at ignored pixels."""
    if channels == 1:
        return (valid & (target == 1)).float().unsqueeze(1)
    one_hot = F.one_hot(torch.where(valid, target, 0), channels).permute(0, 3, 1, 2).float()
    return one_hot * valid.unsqueeze(1)


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
