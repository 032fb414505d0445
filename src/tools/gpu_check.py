"""Helpers of `scripts/gpu_check.sh`: ONNX Runtime on CUDA, and the figures of a check as one Markdown file.

python -m src.tools.gpu_check onnx RUN_DIR OUT.json    # export RUN_DIR's last.ckpt, time ONNX Runtime on CUDA
python -m src.tools.gpu_check summary OUT_DIR           # Markdown tables of OUT_DIR's JSON files, to stdout
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the project's root: scripts/export_onnx.py runs from there


def onnx_cuda(
    run_dir: Path, out: Path, size: tuple[int, int] = (512, 1024), calls: int = 10
) -> dict[str, Any]:
    """Export the run's last checkpoint and time ONNX Runtime's CUDA provider on one image of `size`."""
    import onnxruntime as ort

    report: dict[str, Any] = {"providers_available": ort.get_available_providers()}
    if "CUDAExecutionProvider" not in report["providers_available"]:
        report["skipped"] = "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu for it)"
        return _write(report, out)
    ckpts = sorted(run_dir.rglob("last.ckpt"))
    if not ckpts:
        report["skipped"] = f"no last.ckpt under {run_dir} (the DDP step did not finish)"
        return _write(report, out)
    onnx_path = out.with_suffix(".onnx")
    cmd = [
        sys.executable,
        "scripts/export_onnx.py",
        f"ckpt_path={ckpts[0]}",
        f"output={onnx_path}",
        "device=cuda",
    ]
    report["export_rc"] = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    import torch

    from src.loading.exported import OnnxSegmentor
    from src.tools.benchmark import time_calls

    seg = OnnxSegmentor(onnx_path, device="cuda")
    report["providers"] = seg.session.get_providers()
    images = torch.rand(1, 3, *size, device="cuda") * 255
    # one warm-up call: CUDA kernels and memory arena
    times = time_calls(lambda: seg.encode_decode(images), 1, calls, torch.device("cuda"))
    report |= {"size": list(size), "calls": calls, "s_median": statistics.median(times)}
    report["fps"] = 1.0 / report["s_median"]
    return _write(report, out)


def _write(report: dict[str, Any], out: Path) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out_dir: Path) -> str:
    """The check's figures: step status, family table (fp32 against `auto`), compile, benchmark tables, ONNX Runtime."""
    lines = [f"# GPU check ({out_dir.name})", ""]
    env = None
    status = out_dir / "status.tsv"
    if status.exists():
        lines += ["| step | exit code | seconds |", "|---|---|---|"]
        for row in status.read_text().splitlines():
            name, rc, seconds = (row.split("\t") + ["", "", ""])[:3]
            lines.append(f"| {name} | {rc} | {seconds} |")
        lines.append("")
    families = _load(out_dir / "families.json")
    if families and families.get("markdown"):
        env = families.get("environment")
        lines += ["Every family (scripts/benchmark.py --families):", "", families["markdown"], ""]
    rows = []
    for path in [out_dir / "compile_fcn_r18-d8.json", *sorted(out_dir.glob("bench_*.json"))]:
        report = _load(path)
        if not report:
            continue
        env = env or report.get("environment")
        s = report.get("settings", {})
        train = report.get("train") or {}
        infer = {r["mode"]: r for r in report.get("infer", [])}
        rows.append(
            f"| {path.stem} | {s.get('precision')} | {str(s.get('compile')).lower()} | "
            f"{_f(train.get('lightning_s_median'))} | {_f(train.get('ratio_median'))} | "
            f"{_f((train.get('peak_memory') or {}).get('mib'), 0)} | "
            f"{_f(infer.get('whole', {}).get('fps'))} | {_f(infer.get('slide', {}).get('fps'))} |"
        )
    if rows:
        lines += [
            "| run | precision | compile | train s/step | Lightning/bare | peak MiB | whole fps | slide fps |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    onnx = _load(out_dir / "onnx_cuda.json")
    if onnx:
        if onnx.get("skipped"):
            lines += [f"ONNX Runtime on CUDA: skipped ({onnx['skipped']})", ""]
        else:
            lines += [
                f"ONNX Runtime on CUDA ({onnx['providers'][0]}): {onnx['fps']:.1f} img/s at {onnx['size']}",
                "",
            ]
    if env:
        lines += [f"Machine: {env.get('gpu') or env.get('cpu')}, torch {env.get('torch')}", ""]
    return "\n".join(lines)


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "onnx":
        onnx_cuda(Path(argv[1]), Path(argv[2]))
        return 0
    if len(argv) == 2 and argv[0] == "summary":
        print(summary(Path(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
