"""Binary segmentation with one sigmoid logit, MMSegmentation's way (`out_channels=1`, `threshold`).

A head with `num_classes: 1` (the short spelling) or `num_classes: 2, out_channels: 1` (MMSegmentation's) has ONE
output channel, a foreground logit `x`, trained with sigmoid losses (`use_sigmoid: true`); a pixel is foreground
when `sigmoid(x) > threshold` (0.3 by default, MMSegmentation's `BaseDecodeHead` default).

So that nothing after the head (metrics, `src.eval`, the inference API, export, slide and TTA merging: all take
`argmax` of class logits) needs a binary branch, `predict_by_feat` returns two class logits `[logit(threshold), x]`:
`argmax` is 1 exactly where `sigmoid(x) > threshold` (ties go to background, as MMSegmentation's strict `>`), and
the foreground's `softmax` is `sigmoid(x - logit(threshold))`, the probability shifted so that the threshold sits
at 0.5. Merging views averages these (slide: the logits, TTA: the softmax); MMSegmentation's TTA averages
`sigmoid(x)` and thresholds that, which can differ at a few borderline pixels.
"""

from __future__ import annotations

import math

import torch

#: MMSegmentation's default threshold when `out_channels == 1` and none is given
DEFAULT_THRESHOLD = 0.3


def resolve_binary(
    num_classes: int, out_channels: int | None, threshold: float | None, where: str = "decode_head"
) -> tuple[int, int, float | None]:
    """(classes predicted, logit channels, threshold) from a head's arguments.

    `num_classes=1` is read as one sigmoid logit for two classes (background, foreground); so is
    `num_classes=2, out_channels=1`. Otherwise `out_channels` must equal `num_classes` (softmax)."""
    if num_classes < 1:
        raise ValueError(f"model.{where}.num_classes={num_classes}: expected a positive number of classes")
    if out_channels is None:
        out_channels = 1 if num_classes == 1 else num_classes
    if num_classes == 1:
        num_classes = 2  # background + foreground: what metrics, eval and masks see
    if out_channels not in (1, num_classes):
        raise ValueError(
            f"model.{where}: out_channels={out_channels} with num_classes={num_classes}; out_channels is "
            "num_classes (softmax), or 1 for binary segmentation with a sigmoid (num_classes 1 or 2)"
        )
    if out_channels == 1 and num_classes != 2:
        raise ValueError(
            f"model.{where}: out_channels=1 (a sigmoid) predicts 2 classes, but num_classes={num_classes}"
        )
    if out_channels != 1:
        return num_classes, out_channels, threshold
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"model.{where}.threshold={threshold}: expected a probability in (0, 1)")
    return num_classes, out_channels, threshold


def two_class_logits(logit: torch.Tensor, threshold: float) -> torch.Tensor:
    """`[N, 1, H, W]` foreground logits -> `[N, 2, H, W]` class logits `[logit(threshold), x]` (module doc)."""
    background = torch.full_like(logit, math.log(threshold / (1.0 - threshold)))
    return torch.cat([background, logit], dim=1)
