"""Loss terms: each a named, weighted `nn.Module` so that a head holds a list of them and every term is logged
as `train/<loss_name>` (MMSegmentation's `loss_decode` list).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy with MMSegmentation's reduction.

    PyTorch's `reduction="mean"` divides by the summed class weights of the valid pixels; MMSegmentation divides
    by the number of pixels: all of them (`avg_non_ignore=False`, its default, so ignored pixels count as zero
    loss) or only the non-ignored ones (`avg_non_ignore=True`). We keep MMSegmentation's so that its loss weights
    and learning rates carry over.

    Args:
        loss_weight: multiplier of this term.
        class_weight: per-class weights, a list or the path of a text/JSON file with one number per class.
        avg_non_ignore: average over non-ignored pixels only.
        ignore_index: label that contributes no loss.
        label_smoothing: as `F.cross_entropy`.
        loss_name: the key under which the term is returned and logged.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        class_weight: Sequence[float] | str | None = None,
        avg_non_ignore: bool = False,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
        loss_name: str = "loss_ce",
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.loss_name = loss_name
        weight = _read_class_weight(class_weight)
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.class_weight
        if weight is not None and weight.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weight has {weight.numel()} values but the model has {logits.shape[1]} classes"
            )
        loss = F.cross_entropy(
            logits.float(),
            target,
            weight=weight,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        if self.avg_non_ignore:
            denom = (target != self.ignore_index).sum().clamp_min(1)
        else:
            denom = target.numel()
        return self.loss_weight * loss.sum() / denom


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
