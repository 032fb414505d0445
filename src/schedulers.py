"""Learning-rate schedules stepped per iteration, as MMSegmentation's `param_scheduler`s.

torch's `PolynomialLR` decays to zero; MMSegmentation's `PolyLR` decays to `eta_min` (1e-4 in its configs),
which changes the last thousands of iterations of every schedule, so we keep MMSegmentation's formula.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class PolyLR(LRScheduler):
    """lr = (base_lr - eta_min) * (1 - step / total_iters) ** power + eta_min, constant after total_iters."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int,
        power: float = 0.9,
        eta_min: float = 1e-4,
        last_epoch: int = -1,
    ) -> None:
        if total_iters <= 0:
            raise ValueError(f"PolyLR total_iters must be > 0, got {total_iters}")
        self.total_iters = total_iters
        self.power = power
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        progress = min(self.last_epoch, self.total_iters) / self.total_iters
        factor = (1.0 - progress) ** self.power
        return [(base - self.eta_min) * factor + self.eta_min for base in self.base_lrs]
