"""`python -m src.env`: every line of the environment report is there, with a value."""

from __future__ import annotations

import re

from src.env import main, report

LABELS = [
    "segkit", "Python", "torch", "CUDA (torch build)", "cuDNN", "Lightning", "timm", "smp", "Albumentations",
    "torchmetrics", "Hydra", "wandb", "onnxruntime", "mlflow",
    "CPU", "CPU native bf16", "bf16-mixed on this CPU", "runtime.precision=auto",
    "CPU cores", "torch threads", "thread variables",
    "paths.data_dir", "paths.log_dir", "cache (weights)",
]  # fmt: skip


def test_env_prints_every_line(capsys, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("SEGKIT_DATA_DIR", str(data))
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "no_cache"))
    assert main() == 0
    out = capsys.readouterr().out
    for title in ("Versions:", "Devices:", "Precision:", "Threads:", "Folders:"):
        assert title in out
    for label in LABELS:
        match = re.search(rf"^  {re.escape(label)}\s+(\S.*)$", out, flags=re.MULTILINE)
        assert match, f"no line for {label}:\n{out}"
    import torch

    assert re.search(rf"^  torch\s+{re.escape(torch.__version__)}$", out, flags=re.MULTILINE)
    from src import __version__

    assert re.search(rf"^  segkit\s+{re.escape(__version__)} \(", out, flags=re.MULTILINE)
    assert f"{data} ($SEGKIT_DATA_DIR; exists)" in out
    assert f"{tmp_path / 'no_cache'} ($SEGKIT_CACHE; missing)" in out


def test_bf16_lines_follow_the_cpu_flags(monkeypatch):
    import src.utils.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"avx2", "fma"})
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    lines = dict(dict(report())["Precision"])
    assert lines["CPU native bf16"].startswith("no") and lines["bf16-mixed on this CPU"].startswith("no")
    assert lines["runtime.precision=auto"].startswith("32-true")
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"avx512f", "avx512_bf16", "amx_bf16"})
    lines = dict(dict(report())["Precision"])
    assert lines["CPU native bf16"].startswith("yes") and "bf16-mixed" in lines["bf16-mixed on this CPU"]
    assert lines["runtime.precision=auto"].startswith("bf16-mixed")
