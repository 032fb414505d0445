"""Loss terms: each a named, weighted `nn.Module`, so that a head holds a list of them (MMSegmentation's
`loss_decode`) and each is logged as `train/<loss_name>`.

Every term is called as `loss(logits [N, C, H, W], target [N, H, W] long, weight=None) -> scalar`, already times
its `loss_weight`; `weight` is an optional per-pixel weight `[N, H, W]` (the OHEM sampler's, `src.models.samplers`).
Pixels labelled `ignore_index` get no target, and their logits no value and no gradient, except in `DiceLoss`
(MMSegmentation's denominator holds every pixel's prediction). Arguments, defaults and values are MMSegmentation
1.2.2's (equal on `../shared/mmseg/loss_case`, tests/models/test_losses.py); each class says where it departs:

    losses:
      - {_target_: src.models.losses.CrossEntropyLoss, loss_weight: 1.0}
      - {_target_: src.models.losses.DiceLoss, loss_weight: 3.0}

`use_sigmoid: true` scores each logit channel with a sigmoid instead of a softmax over the channels: with ONE
channel (a binary head, `src.models.binary`) against the foreground `label == 1`, with C channels one-vs-all
against the one-hot label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses._functional import focal_loss_with_logits
from torch import nn


class LossTerm(nn.Module):
    """What every term shares. `loss_weight`: multiplier of the term; `ignore_index`: the label that contributes
    no target; `loss_name`: the key the term is returned and logged under; `class_weight`: per-class weights, a
    list or the path of a text/JSON file with one number per class (a non-persistent buffer: it follows the
    module's device)."""

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
    """Pixel-wise cross-entropy with MMSegmentation 1.2.2's reduction.

    PyTorch's `reduction="mean"` divides by the summed class weights of the valid pixels; MMSegmentation divides
    by the number of pixels: all of them (`avg_non_ignore=False`, its default: ignored pixels count as zero loss)
    or the non-ignored ones (`avg_non_ignore=True`); with `class_weight`, by the summed class weights of those
    pixels (`avg_factor`). Kept so that MMSegmentation's loss weights and learning rates carry over.

    Where MMSegmentation 1.2.2 fails: with `class_weight`, a label holding the ignore index raises an IndexError
    there (`class_weight[255]`). Here an ignored pixel counts with 0 (`avg_non_ignore=True`: PyTorch's weighted
    mean) or with 1 (`avg_non_ignore=False`); without ignored pixels both are MMSegmentation's value.

    A per-pixel `weight` multiplies each pixel's loss and leaves the denominator as it is (MMSegmentation's
    `weight_reduce_loss`): with OHEM the loss of the kept pixels is divided by the count of all valid pixels.

    `use_sigmoid`: binary cross-entropy per pixel and channel against the sigmoid target (module doc),
    `class_weight` as BCE's `pos_weight` per channel, the same denominator times the channels for C > 1
    (MMSegmentation's mean over the [N, C, H, W] loss). `label_smoothing`: as `F.cross_entropy`, softmax only.
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
            # MMSegmentation's avg_factor (ignored pixels: see the class docstring)
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
    """MMSegmentation 1.2.2's `DiceLoss`:

        p = sigmoid(logits) (use_sigmoid, the default) or softmax(logits); t = one-hot(target), 0 at ignored pixels
        the channel `ignore_index` is dropped when it is a class index
        per image n, pooling every remaining channel and pixel:
          V-Net (naive_dice=False): dice_n = 2 sum(p t) / ((sum(p^2) + eps) + (sum(t^2) + eps))
          naive (naive_dice=True):  dice_n = (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)
        loss = loss_weight * mean_n(1 - dice_n)     (reduction="sum": the sum over images)

    Kept for equal values: ignored pixels still enter `sum(p^2)` (or `sum(p)`), which pushes their probabilities
    towards 0 (open-mmlab/mmsegmentation#2996); with `use_sigmoid` all classes pool into ONE Dice per image, as
    MMSegmentation's UNet `..._ce-1.0-dice-3.0_...` recipes train in 1.2.2 (their published figures were made
    with 0.x's per-class softmax Dice, a different loss).

    Departures: with one logit channel the target is the foreground `label == 1`, as every sigmoid loss here
    (MMSegmentation 1.2.2 cuts the one-hot to its first column: the background). A per-pixel `weight` multiplies
    `p` and `t`, so a 0/1 weight takes the Dice over the kept pixels (MMSegmentation fails on one). smp's
    `DiceLoss` is not reused: it keeps one Dice per class over the batch, with other smoothing.
    `activate=False`: the logits are already probabilities.
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
        goal = sigmoid_target(target, valid, channels)
        if weight is not None:
            pixel = _check_pixel_weight(weight, target, self.loss_name).unsqueeze(1)
            pred, goal = pred * pixel, goal * pixel
        if channels > 1 and 0 <= self.ignore_index < channels:  # MMSeg drops it (slices: no host sync)
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
    """Sigmoid focal loss, one-vs-all per class, via smp's `focal_loss_with_logits`: the value of
    `smp.losses.FocalLoss(mode="multiclass", alpha, gamma, ignore_index)` (one channel: `mode="binary"`), i.e.
    per class the mean over the non-ignored pixels, then the mean over classes (weighted by `class_weight`,
    normalised by its sum as smp's `class_weights`).

    Departures: smp's module takes no per-pixel weight, so the function it calls is reduced here; a `weight`
    multiplies each pixel's loss over the same denominator. `alpha=0.5` by default, MMSegmentation's (smp's
    None). MMSegmentation divides by all pixels x classes, ignored ones included (smp's denominator is kept).
    No valid pixel gives 0 instead of smp's NaN. `use_sigmoid` must be true (MMSegmentation's FocalLoss supports
    only that); it is accepted so that configs read alike.
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
    """Lovasz-Softmax (Berman et al., CVPR 2018) and Lovasz hinge as MMSegmentation 1.2.2's `LovaszLoss`:

        multi_class: p = softmax(logits) over the valid pixels; for each class c of `classes` ("present": those
        in the labels, "all", or a list), the dot product of the sorted errors |[label == c] - p_c| with the
        Lovasz gradient of the Jaccard loss, times `class_weight[c]`; the mean over those classes
        binary: the Lovasz hinge of the one-channel logit against `label == 1` (`use_sigmoid`: older spelling)
        per_image: that loss per image, then the mean (`reduction="mean"`) or sum over the images

    Not smp's: its `LovaszLoss` has no `classes` list and no `class_weight` (equal values for the defaults).
    Departures: the Lovasz extension is not a sum over pixels, so a per-pixel `weight` may only select pixels
    (0/1, as OHEM's: weight 0 is ignored; other values raise), where MMSegmentation uses it per image with
    `per_image`. No valid pixels count as 0 (MMSegmentation's stack of empty results fails). `reduction` has no
    effect without `per_image` (MMSegmentation requires "none" there).
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
