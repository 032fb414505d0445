"""Lightning callbacks of the training recipe: weight EMA, preemption checkpoints, resumable random state."""

from src.engine.callbacks.ema import EMA
from src.engine.callbacks.preemption import PREEMPTED_EXIT_CODE, PreemptionCheckpoint
from src.engine.callbacks.rng_state import RNGStateCheckpoint

__all__ = ["EMA", "PREEMPTED_EXIT_CODE", "PreemptionCheckpoint", "RNGStateCheckpoint"]
