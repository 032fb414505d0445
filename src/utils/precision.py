"""`runtime.precision: auto`: the numeric precision the hardware runs fastest without losing accuracy.

- a CUDA GPU with bf16 (compute capability >= 8.0: Ampere, Hopper, Ada, Blackwell): `bf16-mixed` + channels_last;
- an older CUDA GPU (Volta, Turing): `16-mixed` (fp16 autocast with a gradient scaler) + channels_last;
- a CPU with native bf16 instructions (x86 `avx512_bf16` or AMX `amx_bf16`; Arm `bf16`): `bf16-mixed` +
  channels_last, oneDNN's fast path;
- any other CPU (AVX2 only, or AVX-512 without bf16; also a bf16 CPU whose PyTorch or oneDNN kernels are capped
  below it by `ATEN_CPU_CAPABILITY` / `ONEDNN_MAX_CPU_ISA`) and Apple's MPS: `32-true`. Without native bf16, oneDNN
  emulates it: a 3x3 convolution under bf16 autocast ran 11x slower than in fp32 on an AVX2-only EPYC.

`runtime.channels_last: auto` follows the choice (on with a mixed precision, off in fp32). An explicit
`runtime.precision` / `runtime.channels_last` is kept as given. The choice and its reason are logged at start
and stored in the run record (`results.json`: `precision`, `channels_last`, `precision_reason`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from src.utils.logging import get_logger

log = get_logger(__name__)

AUTO = "auto"
# CPU flags (/proc/cpuinfo) that mean bf16 arithmetic in hardware
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    channels_last: bool
    reason: str

    def as_record(self) -> dict[str, Any]:
        """The run record's keys."""
        out = asdict(self)
        out["precision_reason"] = out.pop("reason")
        return out


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo; empty where it is unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_native_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """(has native bf16, which flags say so or why not)."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return False, f"CPU flags unreadable on {platform.system()} ({platform.machine()})"
    found = sorted(f for f in (*X86_BF16_FLAGS, *ARM_BF16_FLAGS) if f in flags)
    limit = kernel_isa_limit() if any(f in X86_BF16_FLAGS for f in found) else None
    if limit:
        return False, f"CPU has bf16 ({', '.join(found)}) but {limit}"
    if found:
        return True, f"CPU has native bf16 ({', '.join(found)})"
    best = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no AVX2"
    return False, f"CPU has no native bf16 (best vector ISA: {best}; no avx512_bf16/amx_bf16)"


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still include its bf16 instructions
ONEDNN_BF16_ISAS = (
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT",
)  # fmt: skip


def kernel_isa_limit() -> str | None:
    """Why PyTorch would not run an x86 CPU's bf16 instructions although the CPU has them, or None: its kernels
    capped below AVX-512 (`ATEN_CPU_CAPABILITY=avx2`, also a way to emulate an AVX2-only machine) or oneDNN's
    (`ONEDNN_MAX_CPU_ISA`) below AVX512_CORE_BF16. Either way bf16 would be emulated, as on an AVX2 CPU."""
    capability = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()).upper()
    if capability and not capability.startswith("AVX512"):
        return f"PyTorch runs {capability} kernels (ATEN_CPU_CAPABILITY)"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa and isa not in ONEDNN_BF16_ISAS:
        return f"oneDNN is capped at {isa} (ONEDNN_MAX_CPU_ISA)"
    return None


def choose_precision(accelerator: str = "auto") -> PrecisionChoice:
    """What `auto` means on this machine for the Trainer's `accelerator`."""
    if str(accelerator).lower() in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        gpu = f"{torch.cuda.get_device_name(0)}, compute capability {major}.{minor}"
        if major >= 8:  # bf16 from Ampere on
            return PrecisionChoice("bf16-mixed", True, f"GPU supports bf16 ({gpu})")
        return PrecisionChoice("16-mixed", True, f"GPU without bf16 ({gpu}): fp16 autocast + gradient scaler")
    if str(accelerator).lower() in ("auto", "mps") and mps_available():
        return PrecisionChoice("32-true", False, "Apple MPS: float32 (its mixed precision is incomplete)")
    native, why = cpu_native_bf16()
    if native:
        return PrecisionChoice("bf16-mixed", True, why)
    return PrecisionChoice("32-true", False, f"{why}: float32 (emulated bf16 is slower)")


def resolve_precision(precision: str, channels_last: Any, accelerator: str = "auto") -> PrecisionChoice:
    """The precision and memory format to run with, from the config's values (either may be `auto`)."""
    precision = str(precision)
    if precision == AUTO:
        choice = choose_precision(accelerator)
    else:
        full = ("32", "32-true", "64", "64-true")  # Lightning's spellings of full precision
        choice = PrecisionChoice(precision, precision not in full, "runtime.precision set in the config")
    if str(channels_last).lower() != AUTO:
        return PrecisionChoice(choice.precision, bool(channels_last), choice.reason)
    return choice


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def apply_precision(cfg: Any) -> PrecisionChoice:
    """Resolve `runtime.precision` / `runtime.channels_last` in a training config for this machine, in place
    (the Trainer's `precision: ${runtime.precision}` then reads the choice), and log the choice and its reason."""
    runtime = cfg.runtime
    choice = resolve_precision(
        runtime.get("precision", "32-true"),
        runtime.get("channels_last", False),
        runtime.trainer.get("accelerator", "auto"),
    )
    with open_dict(cfg):
        runtime.precision = choice.precision
        runtime.channels_last = choice.channels_last
    log.info(
        f"Precision {choice.precision}, channels_last {str(choice.channels_last).lower()}: {choice.reason}"
    )
    return choice
