"""`ImageAsFeatures`: the 'backbone' of a segmentor whose decode head is a whole smp model (`SMPHead`, which
owns its encoder): it hands the normalised image on as the one feature level."""

from __future__ import annotations

import torch
from torch import nn


class ImageAsFeatures(nn.Module):
    """The 'backbone' of an `SMPHead` segmentor: returns the image itself as a one-level feature list."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.out_channels: list[int] = [in_chans]
        self.reductions: list[int] = [1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]
