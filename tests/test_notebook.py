"""notebooks/tutorial.ipynb runs top to bottom (nbclient, on an ipykernel of this Python), writing only to its
output folder (here a temporary one, through SEGKIT_TUTORIAL_OUT). Slow: it trains for 100 iterations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"


def test_tutorial_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_tutorial_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # a kernel spec for this very interpreter (the .venv), found first on JUPYTER_PATH
    spec_dir = tmp_path / "jupyter" / "kernels" / "segkit-test"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "segkit", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    out = tmp_path / "tutorial"
    monkeypatch.setenv("SEGKIT_TUTORIAL_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=1800, kernel_name="segkit-test", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs)
    assert len(images) >= 5  # data, crops, curves, predictions, video frames (+ Stanford Background)
    assert (out / "train" / "checkpoints" / "last.ckpt").is_file()
    assert (out / "pan_seg.mp4").stat().st_size > 0 and (out / "model.onnx").is_file()
    assert "% of the pixels get the same class" in text and "-> ok" in text
    assert sorted(p.name for p in (out / "predictions" / "vis").glob("*.png"))
