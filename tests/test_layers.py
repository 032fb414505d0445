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

import src.serve.segmenter, src.serve.writers, src.loading.checkpoint
assert "src.engine.module" not in sys.modules, "loading a model for inference imports the LightningModule"

import src.engine.module
assert warnings.filters == filters, ("src.engine.module installs warning filters", warnings.filters[:3])
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    with src.engine.module.quiet_epoch_sync_advice():  # silenced inside the block only
        warnings.warn("... when logging on epoch level in distributed setting ...", PossibleUserWarning)
    warnings.warn("... when logging on epoch level in distributed setting ...", PossibleUserWarning)
assert len(seen) == 1, [str(w.message) for w in seen]

import src.engine.callbacks.test_outputs, src.engine.callbacks.log_predictions, src.infer
entry = sorted(m for m in ("src.eval", "src.train") if m in sys.modules)
assert not entry, f"the library, the engine or src.infer imports the entry points {entry}"
import src.train, src.eval
tools = sorted(m for m in sys.modules if m.startswith("src.tools"))
assert not tools, f"the library or an entry point imports the tools {tools}"
"""


INFERENCE_WITHOUT_LIGHTNING = """
import sys
import src.serve.segmenter, src.loading.checkpoint, src.serve.export, src.serve.writers, src.serve.visualization
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


# the layers, lowest first (DESIGN.md): a module imports only from its own layer and the ones below.
# recipes.fields and recipes.mmseg read MMSegmentation configs (no project import): the loaders use them.
LAYERS = (
    ("src.utils", 0),
    ("src.recipes.fields", 1),
    ("src.recipes.mmseg", 1),
    ("src.data", 1),
    ("src.weights", 1),
    ("src.models", 2),
    ("src.metrics", 2),
    ("src.loading", 3),
    ("src.engine", 4),
    ("src.serve", 4),
    ("src.recipes", 4),
    ("src.train", 5),
    ("src.eval", 5),
    ("src.infer", 5),
    ("src.env", 5),
    ("src.tools", 6),
)


def _layer(module: str) -> int | None:
    found = [
        (len(prefix), layer)
        for prefix, layer in LAYERS
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(found)[1] if found else None


def _imports() -> dict[str, set[str]]:
    """Module -> the `src` modules it imports (functions' imports too), read from the code."""
    import ast

    edges: dict[str, set[str]] = {}
    for path in (ROOT / "src").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = edges.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("src")
                and not node.level
            ):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("src.")}
    return edges


def test_no_module_imports_a_layer_above_its_own_and_there_is_no_cycle() -> None:
    edges = _imports()
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in edges.items()
        for t in targets
        if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)
    ]
    assert not upward, upward
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in edges.get(module, ()):
            if state.get(target) == 1:
                return [*path, module, target]
            if not state.get(target) and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = 2
        return None

    cycles = [c for m in sorted(edges) if not state.get(m) and (c := visit(m, []))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
    # the house shows its architecture: packages, and at most six modules beside them
    modules = sorted(p.stem for p in (ROOT / "src").glob("*.py") if p.stem != "__init__")
    assert len(modules) <= 6, modules


def test_the_tests_mirror_src() -> None:
    """Every folder of tests holds the tests of the `src/` package of the same path (docs/development.md)."""
    folders = {p.parent.relative_to(ROOT / "tests") for p in (ROOT / "tests").rglob("test_*.py")} - {
        Path(".")
    }
    unmatched = sorted(str(f) for f in folders if not (ROOT / "src" / f / "__init__.py").is_file())
    assert not unmatched, f"tests/ folders with no src/ package of that path: {unmatched}"
