"""A logger that only prints on rank zero, so multi-GPU runs print each line once."""

from __future__ import annotations

import logging

# lightning_utilities' object, the one Lightning sets the rank on: no need to import Lightning itself, so that
# inference (src.serve.segmenter, src.loading.checkpoint) runs without it
from lightning_utilities.core.rank_zero import rank_zero_only


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Lightning sets the rank when it is imported; without it (the inference API in a plain script) the
        # process is the only one: rank 0
        return getattr(rank_zero_only, "rank", 0) == 0


def get_logger(name: str = __name__) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger
