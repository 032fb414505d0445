"""Pixel samplers: which pixels a head's loss is computed on. The head (`BaseDecodeHead(sampler=...)`) passes
`sampler.sample(logits, masks)` to each loss term as `weight=`. In a config, under `decode_head:` (MMSegmentation's
Cityscapes OHEM recipes):

    sampler: {_target_: src.models.samplers.OHEMPixelSampler, thresh: 0.7, min_kept: 100000}
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class PixelSampler(Protocol):
    def sample(self, seg_logit: torch.Tensor, seg_label: torch.Tensor) -> torch.Tensor: ...


class OHEMPixelSampler:
    """Online hard example mining over pixels, as MMSegmentation's `OHEMPixelSampler`.

    `sample(seg_logit [N, C, H, W], seg_label [N, H, W] or [N, 1, H, W]) -> seg_weight [N, H, W]` (float32, 0/1),
    without gradients and without a host-device synchronisation (a GPU step is not stalled). Ignored pixels get 0.
    With `batch_kept = min_kept * N` (`min_kept` is per image, as MMSegmentation's):

    - thresh mode (`thresh` in (0, 1]): p = softmax probability of the label class; the pixels with
      p < max(thresh, p_sorted[min(batch_kept, n_valid - 1)]) are kept: all those below `thresh`, and at least
      the `batch_kept` least confident ones.
    - loss mode (`thresh=None`): the `batch_kept` valid pixels of highest cross-entropy.

    Deviations from MMSegmentation, and why:
    - thresh mode also keeps the `batch_kept` lowest-p pixels explicitly (a superset of MMSegmentation's set):
      its strict `p < threshold` keeps fewer when probabilities tie at the threshold (a saturated softmax gives
      many exact 1.0s), and drops the most confident pixel when `n_valid <= batch_kept`.
    - loss mode ranks by plain cross-entropy, MMSegmentation by the sum of the head's loss terms: the same for a
      head whose only loss is unweighted cross-entropy (its OHEM recipes); Dice or Lovasz have no per-pixel value.
    - `ignore_index` is an argument (MMSegmentation reads the head's); the head checks it equals the losses'.
    """

    def __init__(self, thresh: float | None = None, min_kept: int = 100000, ignore_index: int = 255) -> None:
        if thresh is not None and not 0.0 < thresh <= 1.0:
            raise ValueError(f"OHEMPixelSampler: thresh={thresh}, expected a probability in (0, 1] or None")
        if int(min_kept) != min_kept or min_kept < 1:
            raise ValueError(f"OHEMPixelSampler: min_kept={min_kept}, expected a positive integer")
        self.thresh = thresh
        self.min_kept = int(min_kept)
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(thresh={self.thresh}, min_kept={self.min_kept}, "
            f"ignore_index={self.ignore_index})"
        )

    @torch.no_grad()
    def sample(self, seg_logit: torch.Tensor, seg_label: torch.Tensor) -> torch.Tensor:
        if seg_label.dim() == 4:
            seg_label = seg_label.squeeze(1)
        if seg_logit.shape[0] != seg_label.shape[0] or seg_logit.shape[2:] != seg_label.shape[1:]:
            raise ValueError(
                f"OHEMPixelSampler: logits {tuple(seg_logit.shape)} and label {tuple(seg_label.shape)} differ "
                "in batch or spatial size (resize the logits to the label first)"
            )
        seg_logit = seg_logit.detach().float()
        seg_label = seg_label.long()
        batch_kept = self.min_kept * seg_label.shape[0]
        valid = seg_label != self.ignore_index
        label = torch.where(valid, seg_label, 0)
        # Over all pixels, ignored ones ranked last, with tensors only: no boolean indexing, no `.item()`, so no
        # host-device synchronisation. A stable sort ranks ties in pixel order, as a sort of the valid pixels would.
        if self.thresh is not None:
            prob = F.softmax(seg_logit, dim=1).gather(1, label.unsqueeze(1)).reshape(-1)
            prob = prob.masked_fill(~valid.reshape(-1), 2.0)  # above every probability: sorted last
            sort_prob, sort_idx = prob.sort(stable=True)
            # the probability ranked min(batch_kept, n_valid - 1) among the valid pixels
            kth = (valid.sum() - 1).clamp(min=0, max=min(batch_kept, prob.numel() - 1))
            threshold = sort_prob.gather(0, kth.reshape(1)).clamp_min(self.thresh)
            kept = prob < threshold
        else:
            loss = F.cross_entropy(seg_logit, label, reduction="none").reshape(-1)
            loss = loss.masked_fill(~valid.reshape(-1), -1.0)  # below every loss: sorted last
            _, sort_idx = loss.sort(descending=True, stable=True)
            kept = torch.zeros_like(loss, dtype=torch.bool)
        rank = torch.empty_like(sort_idx).scatter_(
            0, sort_idx, torch.arange(sort_idx.numel(), device=sort_idx.device)
        )
        kept = (kept | (rank < batch_kept)) & valid.reshape(-1)
        return kept.float().reshape(seg_label.shape)
