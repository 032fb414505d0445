"""Learning-rate schedules stepped per iteration, as MMSegmentation's `param_scheduler`s.

torch's `PolynomialLR` decays to zero; MMSegmentation's `PolyLR` decays to `eta_min` (1e-4 in its configs),
which changes the last thousands of iterations of every schedule, so we keep MMSegmentation's formula.
Cosine is torch's `CosineAnnealingLR` (the same formula as MMEngine's), and the warm-up is torch's `LinearLR`
followed by the main schedule through `SequentialLR`, as MMSegmentation's `[LinearLR(begin=0, end=w),
PolyLR(begin=w, end=max_iters)]`. Every scheduler scales each parameter group from its own base LR.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR

# the keyword that holds a schedule's length: ours and torch's (PolyLR, LinearLR, PolynomialLR; CosineAnnealingLR)
LENGTH_KEYS = ("total_iters", "T_max")


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


def build_lr_scheduler(
    optimizer: Optimizer,
    scheduler: Callable[..., LRScheduler],
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
) -> LRScheduler:
    """`scheduler(optimizer)`, after a linear warm-up from `warmup_ratio` x the base LR when `warmup_iters` > 0.

    The configured length (`total_iters` or `T_max`) counts from iteration 0, so the main schedule, which
    starts after the warm-up, runs over `length - warmup_iters` iterations and ends where it would without one.
    """
    if warmup_iters < 0:
        raise ValueError(f"schedule.warmup_iters={warmup_iters}: expected >= 0")
    if warmup_iters == 0:
        return scheduler(optimizer=optimizer)
    if not 0.0 < warmup_ratio <= 1.0:
        raise ValueError(f"schedule.warmup_ratio={warmup_ratio}: expected a start factor in (0, 1]")
    keywords = getattr(scheduler, "keywords", {})
    length_key = next((k for k in LENGTH_KEYS if k in keywords), None)
    if length_key is None:
        raise ValueError(
            f"schedule.warmup_iters={warmup_iters} needs the schedule's length as one of {list(LENGTH_KEYS)} in "
            f"schedule.scheduler; it has {sorted(keywords)}"
        )
    remaining = int(keywords[length_key]) - warmup_iters
    if remaining <= 0:
        raise ValueError(
            f"schedule.warmup_iters={warmup_iters} is not shorter than schedule.scheduler.{length_key}="
            f"{keywords[length_key]}"
        )
    warmup = LinearLR(optimizer, start_factor=warmup_ratio, end_factor=1.0, total_iters=warmup_iters)
    main = scheduler(optimizer=optimizer, **{length_key: remaining})
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_iters])
