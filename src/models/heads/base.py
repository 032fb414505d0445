"""The base of every decode head, as MMSegmentation's `BaseDecodeHead`: features -> logits at feature resolution.

It holds what all heads share: input selection, dropout + the 1x1 classifier (`cls_seg`), and the template
methods `loss_by_feat` and `predict_by_feat`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.binary import resolve_binary, two_class_logits
from src.models.losses import CrossEntropyLoss
from src.models.samplers import PixelSampler
from src.models.utils import resize


class BaseDecodeHead(nn.Module):
    """Args:
    in_channels: channels of the selected input(s).
    channels: channels of the head's inner layers (before the classifier).
    num_classes: number of classes; 1 means binary segmentation with one sigmoid logit (`src.models.binary`).
    in_index: which backbone output(s) to use; an int or, with `input_transform`, a list.
    input_transform: None (one input), "resize_concat" (resize all to the first and concat) or
        "multiple_select" (pass the list on), as MMSegmentation.
    dropout_ratio: Dropout2d before the classifier.
    norm: "bn", "syncbn" or "gn".
    align_corners: for every bilinear resize of this head.
    losses: the weighted, named loss terms (default: cross-entropy, weight 1).
    sampler: optional pixel sampler (`.sample(logits, masks) -> [N, H, W] weights`, e.g. `src.models.samplers`'s
        OHEM); its weights are passed to every loss term as `weight=`.
    out_channels: logit channels, `num_classes` by default; 1 (with `num_classes` 2) is MMSegmentation's
        spelling of binary segmentation with a sigmoid. With one channel every loss needs `use_sigmoid: true`.
    threshold: foreground when `sigmoid(logit) > threshold`, one-channel heads only (default 0.3, as
        MMSegmentation). `num_classes` is then 2 (background, foreground): what metrics and masks see.
    ignore_index: the label its losses (and sampler) ignore, given once for all of them (the configs pass the
        dataset's), as MMSegmentation's head passes its `ignore_index` to every loss call; None keeps each loss's.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        num_classes: int,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        dropout_ratio: float = 0.1,
        norm: str = "bn",
        align_corners: bool = False,
        losses: Sequence[nn.Module] | None = None,
        sampler: PixelSampler | None = None,
        out_channels: int | None = None,
        threshold: float | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        num_classes, out_channels, threshold = resolve_binary(num_classes, out_channels, threshold)
        if input_transform not in (None, "resize_concat", "multiple_select"):
            raise ValueError(
                f"input_transform='{input_transform}': expected None, resize_concat or multiple_select"
            )
        if input_transform is not None and not isinstance(in_index, Sequence):
            raise ValueError(f"input_transform='{input_transform}' needs a list in_index, got {in_index}")
        self.input_transform = input_transform
        self.in_index = list(in_index) if isinstance(in_index, Sequence) else in_index
        if input_transform == "resize_concat":
            in_channels = sum(in_channels)
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.threshold = threshold
        self.norm = norm
        self.align_corners = align_corners
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, out_channels, kernel_size=1)
        default_loss = CrossEntropyLoss(use_sigmoid=out_channels == 1)
        self.losses = nn.ModuleList(losses if losses is not None else [default_loss])
        if out_channels == 1:
            softmax = [lo.loss_name for lo in self.losses if not getattr(lo, "use_sigmoid", False)]
            if softmax:
                raise ValueError(
                    f"{type(self).__name__}: one output channel (num_classes 1: binary, sigmoid) but the losses "
                    f"{softmax} are softmax losses; give each `use_sigmoid: true`"
                )
            if sampler is not None:
                raise ValueError(
                    f"{type(self).__name__}: the pixel sampler ranks softmax probabilities; it does not work "
                    "with one sigmoid output channel (num_classes 1)"
                )
        if ignore_index is not None:
            for part in [*self.losses, sampler]:
                if hasattr(part, "ignore_index"):
                    part.ignore_index = int(ignore_index)
        names = [loss.loss_name for loss in self.losses]
        if len(set(names)) != len(names):
            raise ValueError(f"loss names must be unique within a head, got {names}")
        if sampler is not None and not callable(getattr(sampler, "sample", None)):
            raise ValueError(
                f"sampler must have a sample(logits, masks) method, got {type(sampler).__name__}"
            )
        sampler_ignore = getattr(sampler, "ignore_index", None)
        for loss in self.losses:
            loss_ignore = getattr(loss, "ignore_index", None)
            if sampler_ignore is not None and loss_ignore is not None and sampler_ignore != loss_ignore:
                raise ValueError(
                    f"sampler ignore_index={sampler_ignore} differs from {loss.loss_name}'s {loss_ignore}"
                )
        self.sampler = sampler

    # the levels a head reads when its config does not say (`in_index`): the last one; multi-level heads, all four
    default_in_index: int | tuple[int, ...] = -1

    @classmethod
    def channels_from_features(
        cls,
        feature_channels: Sequence[int],
        in_index: int | Sequence[int] | None = None,
        input_transform: str | None = None,
        **_: object,
    ) -> dict[str, int | list[int]]:
        """The channel arguments this head needs, read off the channels of the features it is given, so that a
        config names only what it selects (`in_index`); heads with more inputs (DeepLabV3+'s skip) extend it."""
        in_index = cls.default_in_index if in_index is None else in_index
        if isinstance(in_index, Sequence):
            return {"in_channels": [int(feature_channels[i]) for i in in_index]}
        return {"in_channels": int(feature_channels[in_index])}

    def _transform_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if self.input_transform == "resize_concat":
            feats = [inputs[i] for i in self.in_index]
            size = feats[0].shape[2:]
            feats = [resize(f, size, align_corners=self.align_corners) for f in feats]
            return torch.cat(feats, dim=1)
        if self.input_transform == "multiple_select":
            return [inputs[i] for i in self.in_index]
        return inputs[self.in_index]

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(feat))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_by_feat(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each loss term on logits resized to the label size (MMSegmentation resizes logits, not labels), with the
        sampler's per-pixel weights as `weight=` when there is one.

        The logits are cast to float32 first (under autocast the upsampling, the sampler and the losses still
        work in float32) and made contiguous (NCHW; a small map): channels_last full-resolution logits would be
        copied back to NCHW by the softmax over classes and the upsampling's backward.
        """
        logits = resize(logits.float().contiguous(), masks.shape[-2:], align_corners=self.align_corners)
        extra = {} if self.sampler is None else {"weight": self.sampler.sample(logits, masks)}
        return {loss.loss_name: loss(logits, masks, **extra) for loss in self.losses}

    def predict_by_feat(self, logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Logits resized to `size`, in float32 (also under autocast: argmax and softmax of bf16 logits tie).

        A one-channel (sigmoid) head returns two class logits whose argmax is `sigmoid(x) > threshold`
        (`src.models.binary.two_class_logits`), so that every caller sees `num_classes` (2) channels."""
        logits = resize(logits.float().contiguous(), size, align_corners=self.align_corners)
        if self.out_channels == 1:
            return two_class_logits(logits, self.threshold)
        return logits
