"""Imports run one way (entry points -> engine -> library) and importing the library changes no process-wide
state: checked in a fresh interpreter (one, for time), where `sys.modules` shows what an import pulled in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECKS = """
import sys, warnings
import lightning.pytorch  # Lightning's own warning filters come first
from lightning.pytorch.utilities.warnings import PossibleUserWarning
filters = list(warnings.filters)

import src.inference, src.writers, src.checkpoint
assert "src.module" not in sys.modules, "loading a model for inference imports the LightningModule"

import src.module
assert warnings.filters == filters, ("src.module installs warning filters", warnings.filters[:3])
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    with src.module.quiet_epoch_sync_advice():  # silenced inside the block only
        warnings.warn("... when logging on epoch level in distributed setting ...", PossibleUserWarning)
    warnings.warn("... when logging on epoch level in distributed setting ...", PossibleUserWarning)
assert len(seen) == 1, [str(w.message) for w in seen]

import src.callbacks.test_report, src.callbacks.log_predictions, src.infer
entry = sorted(m for m in ("src.eval", "src.train") if m in sys.modules)
assert not entry, f"the library, the engine or src.infer imports the entry points {entry}"
import src.train, src.eval
tools = sorted(m for m in sys.modules if m.startswith("src.tools"))
assert not tools, f"the library or an entry point imports the tools {tools}"
"""


INFERENCE_WITHOUT_LIGHTNING = """
import sys
import src.inference, src.checkpoint, src.export, src.writers, src.visualization
pulled = sorted(m for m in sys.modules if m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")))
assert not pulled, f"loading and running a model for inference imports Lightning: {pulled[:5]}"
"""


def test_inference_needs_no_lightning() -> None:
    """The checkpoint loader, the inference API, export and the writers run in a process without Lightning."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INFERENCE_WITHOUT_LIGHTNING)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def test_imports_run_one_way_and_change_no_warning_filter() -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECKS)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
