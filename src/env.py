"""`python -m src.env` (`make env`): the environment a run would see, in one screen, MMSegmentation's "verify the
installation" step: versions, devices, native bf16 and `runtime.precision=auto`'s choice, threads, and the data
and cache folders. Paste its output into a bug report. Exit code 0; nothing is downloaded or written.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import torch

from src.utils.precision import mps_available

#: (label, distribution names to try): the distribution's version, not an import (fast, and no side effects)
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Lightning", ("lightning", "pytorch-lightning")),
    ("timm", ("timm",)),
    ("smp", ("segmentation-models-pytorch", "segmentation_models_pytorch")),
    ("Albumentations", ("albumentations",)),
    ("torchmetrics", ("torchmetrics",)),
    ("Hydra", ("hydra-core",)),
    ("OmegaConf", ("omegaconf",)),
    ("torchvision", ("torchvision",)),
    ("wandb", ("wandb",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("onnx", ("onnx",)),
    ("mlflow", ("mlflow", "mlflow-skinny")),
)


def package_version(names: tuple[str, ...]) -> str:
    for name in names:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if name == names[0] else f"{version} ({name})"
    return "not installed"


def versions() -> list[tuple[str, str]]:
    cuda = torch.version.cuda or "none (CPU build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if cudnn:  # 90100 -> 9.1.0
        cudnn = f"{cudnn // 10000}.{cudnn % 10000 // 100}.{cudnn % 100}"
    from src import __version__

    rows = [
        ("segkit", f"{__version__} ({Path(__file__).resolve().parents[1]})"),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("Platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("torch", torch.__version__),
        ("CUDA (torch build)", cuda),
        ("cuDNN", str(cudnn) if cudnn else "not available"),
    ]
    return rows + [(label, package_version(names)) for label, names in PACKAGES]


def devices() -> list[tuple[str, str]]:
    rows = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            memory = f"{props.total_memory / 2**30:.1f} GiB"
            rows.append(
                (f"cuda:{i}", f"{props.name}, {memory}, compute capability {props.major}.{props.minor}")
            )
    else:
        rows.append(("CUDA", "no GPU visible (torch.cuda.is_available() is False)"))
    if mps_available():
        rows.append(("mps", "Apple GPU available"))
    rows.append(("CPU", cpu_name()))
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision() -> list[tuple[str, str]]:
    """Native bf16 on the CPU, and what `runtime.precision=auto` picks here (`src/utils/precision.py`)."""
    from src.utils.precision import choose_precision, cpu_native_bf16

    native, why = cpu_native_bf16()
    worth = "yes: bf16-mixed + channels_last" if native else "no: emulated bf16 is slower than float32"
    auto = choose_precision("auto")
    return [
        ("CPU native bf16", f"{'yes' if native else 'no'}: {why}"),
        ("bf16-mixed on this CPU", worth),
        ("runtime.precision=auto", f"{auto.precision}, channels_last={auto.channels_last} ({auto.reason})"),
    ]


def threads() -> list[tuple[str, str]]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    usable = f", {affinity} usable by this process" if affinity else ""
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return [
        ("CPU cores", f"{os.cpu_count()} logical{usable}"),
        ("torch threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"),
        ("thread variables", ", ".join(f"{k}={v}" for k, v in env.items()) or "none set"),
    ]


def folders() -> list[tuple[str, str]]:
    """paths.data_dir and paths.log_dir as `conf/paths/default.yaml` resolves them, and the download cache."""
    from src.utils.resolvers import project_root
    from src.weights.zoo import cache_dir

    root = Path(project_root())
    data = Path(os.environ.get("SEGKIT_DATA_DIR") or root / "data")
    source = "$SEGKIT_DATA_DIR" if os.environ.get("SEGKIT_DATA_DIR") else "default"
    cache = cache_dir()
    cache_source = "$SEGKIT_CACHE" if os.environ.get("SEGKIT_CACHE") else "default"
    return [
        ("paths.data_dir", f"{data} ({source}; {_exists(data)})"),
        ("paths.log_dir", f"{root / 'logs'} ({_exists(root / 'logs')})"),
        ("cache (weights)", f"{cache} ({cache_source}; {_exists(cache)})"),
    ]


def _exists(path: Path) -> str:
    if path.is_dir():
        return "exists"
    return "exists, not a folder" if path.exists() else "missing"


def report() -> list[tuple[str, list[tuple[str, str]]]]:
    """The sections and their (label, value) lines."""
    return [
        ("Versions", versions()),
        ("Devices", devices()),
        ("Precision", precision()),
        ("Threads", threads()),
        ("Folders", folders()),
    ]


def format_report(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    width = max(len(label) for _, rows in sections for label, _ in rows)
    lines = []
    for title, rows in sections:
        lines.append(f"{title}:")
        lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def main() -> int:
    print(format_report(report()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
