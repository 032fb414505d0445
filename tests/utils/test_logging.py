"""The project's logger prints on rank zero only, and also where Lightning never set a rank (a plain script)."""

from __future__ import annotations

import logging

from lightning_utilities.core.rank_zero import rank_zero_only

from src.utils.logging import get_logger


def _passes(rank: int | None) -> bool:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "m", None, None)
    saved = getattr(rank_zero_only, "rank", None)
    try:
        if rank is None:
            if hasattr(rank_zero_only, "rank"):
                del rank_zero_only.rank
        else:
            rank_zero_only.rank = rank
        return get_logger("tests.utils.logging").filter(record)
    finally:
        if saved is not None:
            rank_zero_only.rank = saved


def test_rank_zero_and_an_unset_rank_print_other_ranks_do_not() -> None:
    assert _passes(0)
    assert _passes(None)  # the inference API in a script that never imported Lightning
    assert not _passes(1)
