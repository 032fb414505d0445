"""The known third-party console noise is filtered (`src.utils.noise`), and nothing else is."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from src.utils.noise import quiet_third_party


def test_lightnings_device_lines_and_tip_are_dropped_other_lines_kept(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter
    assert len(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters) == 1
    with caplog.at_level(logging.INFO):
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("TPU available: False, using: 0 TPU cores")
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("Seed set to 42")
    assert [r.getMessage() for r in caplog.records] == ["Seed set to 42"]


def test_the_leafspec_deprecation_is_dropped_other_warnings_kept():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn(
            "The number of training batches (1) is smaller than the logging interval",
            UserWarning,
            stacklevel=1,
        )
    assert [str(w.message) for w in seen] == [
        "The number of training batches (1) is smaller than the logging interval"
    ]


@pytest.fixture(autouse=True)
def _restore_filters():
    saved = warnings.filters[:]
    yield
    warnings.filters[:] = saved
