"""`runtime.precision: auto` (src/utils/precision.py): the choice per hardware, with the detection mocked."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from src.utils import precision as P
from src.utils.precision import (
    apply_precision,
    choose_precision,
    cpu_flags,
    cpu_native_bf16,
    resolve_precision,
)

REAL_KERNEL_ISA_LIMIT = P.kernel_isa_limit  # before any test replaces it
X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
X86_AVX512 = "processor\t: 0\nflags\t\t: fpu avx avx2 avx512f avx512bw avx512vl\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.fixture
def machine(monkeypatch):
    """Set what the machine looks like: CPU flags, CUDA (and its compute capability), MPS."""

    def set_machine(cpuinfo: str = X86_AVX2, cuda: tuple[int, int] | None = None, mps: bool = False) -> None:
        monkeypatch.setattr(P, "cpu_flags", lambda text=None: cpu_flags(cpuinfo if text is None else text))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda is not None)
        if cuda is not None:
            monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: cuda)
            monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: f"GPU sm{cuda[0]}{cuda[1]}")
        monkeypatch.setattr(P, "mps_available", lambda: mps)
        monkeypatch.setattr(P, "kernel_isa_limit", lambda: None)  # PyTorch's kernels use what the CPU has

    return set_machine


def test_cpu_flags_from_x86_and_arm_cpuinfo():
    assert {"avx2", "fma"} <= cpu_flags(X86_AVX2) and "avx512_bf16" not in cpu_flags(X86_AVX2)
    assert "bf16" in cpu_flags(ARM_BF16)
    assert cpu_native_bf16(cpu_flags(X86_BF16))[0] and cpu_native_bf16(cpu_flags(ARM_BF16))[0]
    assert not cpu_native_bf16(cpu_flags(X86_AVX512))[0]  # AVX-512 without bf16: emulated, slower
    assert not cpu_native_bf16(set())[0]


def test_kernel_caps_turn_a_bf16_cpu_to_float32(machine, monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU: bf16 would be emulated, so fp32."""
    machine(X86_BF16)
    monkeypatch.setattr(
        P, "kernel_isa_limit", REAL_KERNEL_ISA_LIMIT
    )  # with torch's answer and the env mocked
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    choice = choose_precision("auto")
    assert choice.precision == "32-true" and "PyTorch runs AVX2 kernels" in choice.reason
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert choose_precision("auto").precision == "bf16-mixed"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    choice = choose_precision("auto")
    assert choice.precision == "32-true" and "oneDNN is capped at AVX2" in choice.reason
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert choose_precision("auto").precision == "bf16-mixed"


@pytest.mark.parametrize(
    ("cpuinfo", "expected", "reason"),
    [
        (X86_AVX2, ("32-true", False), "no native bf16 (best vector ISA: avx2"),
        (X86_AVX512, ("32-true", False), "best vector ISA: avx512f"),
        (X86_BF16, ("bf16-mixed", True), "native bf16 (amx_bf16, avx512_bf16)"),
        (ARM_BF16, ("bf16-mixed", True), "native bf16 (bf16)"),
    ],
)
def test_cpu_choice(machine, cpuinfo, expected, reason):
    machine(cpuinfo)
    choice = choose_precision("auto")
    assert (choice.precision, choice.channels_last) == expected and reason in choice.reason


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed"), ((7, 5), "16-mixed"), ((7, 0), "16-mixed")],
)
def test_gpu_choice(machine, capability, expected):
    machine(X86_AVX2, cuda=capability)  # the CPU does not matter when training on the GPU
    choice = choose_precision("auto")
    assert choice.precision == expected and choice.channels_last
    assert f"compute capability {capability[0]}.{capability[1]}" in choice.reason
    # accelerator=cpu on a GPU machine: the CPU decides
    assert choose_precision("cpu").precision == "32-true"


def test_mps_stays_float32(machine):
    machine(X86_BF16, mps=True)
    assert choose_precision("auto").precision == "32-true"
    assert choose_precision("cpu").precision == "bf16-mixed"


def test_explicit_values_are_kept(machine):
    machine(X86_BF16)
    assert resolve_precision("32-true", "auto") == P.PrecisionChoice(
        "32-true", False, "runtime.precision set in the config"
    )
    assert resolve_precision("bf16-mixed", "auto").channels_last
    # Lightning's other spellings of fp32 keep the fp32 memory format too
    assert not resolve_precision("32", "auto").channels_last
    assert not resolve_precision("64-true", "auto").channels_last
    assert resolve_precision("auto", False) == P.PrecisionChoice(
        "bf16-mixed", False, choose_precision().reason
    )
    assert resolve_precision("32-true", True).channels_last


def test_apply_precision_resolves_the_config_for_the_trainer(machine):
    machine(X86_AVX2)
    cfg = OmegaConf.create(
        {
            "runtime": {
                "precision": "auto",
                "channels_last": "auto",
                "trainer": {"accelerator": "auto", "precision": "${runtime.precision}"},
            }
        }
    )
    choice = apply_precision(cfg)
    assert cfg.runtime.trainer.precision == "32-true" and cfg.runtime.channels_last is False
    assert choice.as_record() == {
        "precision": "32-true",
        "channels_last": False,
        "precision_reason": choice.reason,
    }


def test_default_runtime_is_auto(make_train_cfg):
    cfg = make_train_cfg("runtime.precision=auto")  # the tests pin 32-true; the shipped default is auto
    from tests.helpers import compose_cfg

    shipped = compose_cfg("train", [], Path(cfg.paths.output_dir))
    assert shipped.runtime.precision == "auto" and shipped.runtime.channels_last == "auto"


def test_the_choice_and_its_reason_reach_the_run_record(make_train_cfg, machine):
    from src.train import train

    machine(X86_AVX2)
    cfg = make_train_cfg(
        "runtime.precision=auto", "schedule.max_steps=2", "schedule.val_interval=2", "test=false"
    )
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert record["precision"] == "32-true" and record["channels_last"] is False
    assert "no native bf16" in record["precision_reason"]


def test_build_module_reads_channels_last_auto_as_the_precision_says(make_train_cfg):
    from src.train import build_module

    classes = SimpleNamespace(classes=[str(i) for i in range(6)], palette=[[0, 0, 0]] * 6, ignore_index=255)
    assert build_module(make_train_cfg(), classes).channels_last is False  # 32-true
    assert build_module(make_train_cfg("runtime.precision=bf16-mixed"), classes).channels_last is True
    assert build_module(make_train_cfg("runtime.channels_last=true"), classes).channels_last is True
