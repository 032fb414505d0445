"""Training curves of one or several runs, as MMSegmentation's `tools/analysis_tools/analyze_logs.py`, for
`scripts/analyze_logs.py`: `load_scalars` reads a run's CSV log or TensorBoard events into
`{key: [(step, value), ...]}`; `plot_curves` draws one panel per key pattern, one line per run, into a PNG.
"""

from __future__ import annotations

import csv
import fnmatch
from collections.abc import Sequence
from pathlib import Path

Series = list[tuple[int, float]]
Scalars = dict[str, Series]

DEFAULT_KEYS = ("train/loss", "lr-*", "val/mIoU")
_CSV_NAME = "metrics.csv"
_TB_GLOB = "events.out.tfevents.*"


def find_log(path: str | Path, source: str = "auto") -> tuple[str, Path]:
    """("csv" | "tensorboard", the file or folder to read) for a run folder or a log file/folder.

    `source="auto"` prefers the CSV log when a run folder has both (it holds every logged value as written)."""
    path = Path(path)
    if source not in ("auto", "csv", "tensorboard"):
        raise ValueError(f"source='{source}': expected auto, csv or tensorboard")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected a run folder or a training log)")
    kinds = ("csv", "tensorboard") if source == "auto" else (source,)
    if path.is_file():
        is_tb = fnmatch.fnmatch(path.name, _TB_GLOB)
        kind = "csv" if path.suffix == ".csv" else "tensorboard" if is_tb else None
        if kind not in kinds:
            raise ValueError(
                f"{path}: not a {'training log' if source == 'auto' else source + ' log'}; expected a "
                f"{_CSV_NAME} (CSV) or an {_TB_GLOB} file (TensorBoard)"
            )
        return kind, path
    for kind in kinds:
        if kind == "csv":
            found = [c for c in (path / _CSV_NAME, path / "csv" / _CSV_NAME) if c.is_file()]
        else:
            found = [c for c in (path, path / "tensorboard") if c.is_dir() and any(c.glob(_TB_GLOB))]
        if found:
            return kind, found[0]
    wanted = " or ".join(f"csv/{_CSV_NAME}" if k == "csv" else f"tensorboard/{_TB_GLOB}" for k in kinds)
    raise FileNotFoundError(
        f"{path}: no training log found; expected {wanted} in a run folder (logger=csv, logger=tensorboard "
        "or logger=default write them)"
    )


def read_csv_scalars(path: str | Path) -> Scalars:
    """Lightning's `CSVLogger` file: one row per logging call, a `step` column, empty cells for the others."""
    scalars: Scalars = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "step" not in reader.fieldnames:
            raise ValueError(
                f"{path}: expected a Lightning CSV log with a 'step' column, got {reader.fieldnames}"
            )
        for row in reader:
            step = int(float(row["step"]))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    scalars.setdefault(key, []).append((step, float(value)))
                except ValueError:
                    continue
    return scalars


def read_tensorboard_scalars(path: str | Path) -> Scalars:
    """Every scalar of a TensorBoard event file, or of all event files in a folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_scalars(path: str | Path, source: str = "auto") -> tuple[Scalars, str, Path]:
    """(scalars, the log kind, the log read) of a run folder or a log file/folder."""
    kind, log = find_log(path, source)
    scalars = read_csv_scalars(log) if kind == "csv" else read_tensorboard_scalars(log)
    return {k: sorted(v) for k, v in scalars.items()}, kind, log


def select(scalars: Scalars, pattern: str) -> Scalars:
    """The series whose key is `pattern` or matches it as a glob (`lr-*`, `val/IoU/*`)."""
    if pattern in scalars:
        return {pattern: scalars[pattern]}
    return {k: v for k, v in sorted(scalars.items()) if fnmatch.fnmatchcase(k, pattern)}


def run_label(path: str | Path) -> str:
    """A short name for a run: its folder (a sweep job `0_<run name>`, or `<run name>/<time>`)."""
    path = Path(path).resolve()
    if path.is_file():
        path = path.parent
    if path.name in ("csv", "tensorboard"):
        path = path.parent
    return (
        path.name if "_" in path.name and not path.name[:4].isdigit() else f"{path.parent.name}/{path.name}"
    )


def plot_curves(
    runs: Sequence[tuple[str, Scalars]],
    keys: Sequence[str],
    out: str | Path,
    title: str | None = None,
) -> Path:
    """One panel per key pattern, one line per run (and per matched key), against the iteration; saved as `out`.

    A pattern that matches nothing in any run is an error naming it and the logged keys."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for pattern in keys:
        lines = [(label, key, series) for label, sc in runs for key, series in select(sc, pattern).items()]
        if not lines:
            logged = sorted({k for _, sc in runs for k in sc})
            raise KeyError(f"key '{pattern}' matches no logged scalar of the runs; logged keys: {logged}")
        panels.append((pattern, lines))
    fig = Figure(figsize=(8, 2.8 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)  # headless: no pyplot, no display
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (pattern, lines) in zip(axes, panels):
        several_keys = len({key for _, key, _ in lines}) > 1
        for label, key, series in lines:
            steps, values = zip(*series)
            name = (key if len(runs) == 1 else f"{label}: {key}") if several_keys else label
            sparse = len(series) <= 20  # validation metrics: a point every val_interval
            ax.plot(steps, values, marker="o" if sparse else None, markersize=3, linewidth=1.2, label=name)
        ax.set_ylabel(pattern)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("iteration")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
