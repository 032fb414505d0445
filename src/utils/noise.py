"""The third-party console lines a run does not need, filtered in this one place (every entry point calls
`quiet_third_party` through `src.utils.task.extras`). Each filter matches one known message; every other
warning and log line, a user's config, data or numerics included, is shown as before.

- Lightning's `GPU available: ..., used: ...`, `TPU available: ...` and `HPU available: ...` lines: this project
  logs the device and precision a run uses, once, with the reason (`Precision ...: ...`, src/utils/precision.py).
- Lightning's tip to install litlogger (`💡 Tip: ... LitLogger`): an advertisement, printed by every Trainer.
- `isinstance(treespec, LeafSpec)` is deprecated: Lightning 2.x's own `utilities/_pytree.py` calling an API that
  PyTorch deprecated; nothing a user can act on, printed twice a run (at fit and at test).
"""

from __future__ import annotations

import logging
import warnings

#: the loggers Lightning's `rank_zero_info` writes through (pytorch's module sets the shared one, fabric's its own)
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
#: the starts of Lightning's info lines that are dropped
DROPPED_INFO = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")
#: warning messages (regular expressions, matched at the start) that are dropped
DROPPED_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class _DropKnownInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(DROPPED_INFO)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownInfo) for f in logger.filters):
            logger.addFilter(_DropKnownInfo())
    for message in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
