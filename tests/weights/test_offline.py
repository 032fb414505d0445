"""Pretrained weights offline first: cached weights load with no network; missing ones fail in seconds, named."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from src.models.backbones import TimmBackbone
from src.weights import offline
from src.weights.offline import (
    PretrainedWeightsError,
    local_weights,
    smp_weights_source,
    timm_pretrained,
    timm_weights_source,
)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache for the test (huggingface_hub reads this constant on every call)."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    offline.probe.cache_clear()
    yield cache
    offline.probe.cache_clear()


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, as huggingface_hub has read it."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """Online mode, but the hub endpoint is a local port nobody answers on (a closed network)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return endpoint


def put_in_hf_cache(cache: Path, repo_id: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """Lay a file out as huggingface_hub caches it: models--<org>--<name>/{refs/main, snapshots/<commit>/}."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / filename))
    return snapshot / filename


def test_timm_weights_source_is_timms_pretrained_config():
    source = timm_weights_source("resnet50c")
    cfg = timm.models.get_pretrained_cfg("resnet50c")
    assert source.hub_id == cfg.hf_hub_id == "timm/resnet50c.gluon_in1k"
    assert source.filenames == ("model.safetensors", "pytorch_model.bin")
    assert timm_weights_source("resnet18.a1_in1k").hub_id == "timm/resnet18.a1_in1k"
    assert timm_weights_source("resnet18c") is None  # registered by this project, no weights


def test_smp_weights_source_timm_and_smp_encoders():
    assert smp_weights_source("tu-resnet18", True).hub_id == timm_weights_source("resnet18").hub_id
    source = smp_weights_source("resnet34", "imagenet")
    assert source.hub_id == "smp-hub/resnet34.imagenet" and source.all_files
    assert smp_weights_source("resnet34", None) is None


def test_offline_without_cache_fails_fast_naming_weights_and_ways_out(hf_cache, hub_offline):
    started = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as err:
        TimmBackbone("resnet50c", output_stride=8, pretrained=True)
    elapsed = time.perf_counter() - started
    message = str(err.value)
    assert "timm/resnet50c.gluon_in1k" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "model.backbone.pretrained=false" in message
    assert "model.backbone.pretrained_path=<file>" in message
    assert str(hf_cache) in message
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_unreachable_hub_fails_fast(hf_cache, hub_unreachable):
    started = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match="cannot be reached") as err:
        TimmBackbone("resnet18", pretrained=True)
    assert time.perf_counter() - started < 5
    assert "timm/resnet18.a1_in1k" in str(err.value)


@pytest.mark.parametrize("network", ["hub_offline", "hub_unreachable"])
def test_cached_weights_load_without_network(hf_cache, network, request):
    request.getfixturevalue(network)
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.normal_(reference.conv1.weight)  # values no initialisation would give
    put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", "model.safetensors", reference.state_dict())
    assert local_weights(timm_weights_source("resnet18")) is not None
    started = time.perf_counter()
    backbone = TimmBackbone("resnet18", pretrained=True)
    assert time.perf_counter() - started < 10
    assert torch.equal(backbone.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(backbone.body.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert constants.HF_HUB_OFFLINE is (network == "hub_offline")  # the guard restored the client's mode


def test_smp_encoder_weights_offline(hf_cache, hub_offline):
    from src.models.heads.smp import SMPHead

    with pytest.raises(PretrainedWeightsError) as err:
        SMPHead(arch="Unet", encoder_name="resnet34", num_classes=2, encoder_weights="imagenet")
    message = str(err.value)
    assert "smp-hub/resnet34.imagenet" in message
    assert "model.decode_head.encoder_weights=null" in message
    assert "model.decode_head.pretrained_path=<file>" in message


def test_no_pretrained_needs_no_check(hf_cache, hub_offline):
    with timm_pretrained("resnet18c"):  # no weights known: nothing to check, timm decides
        pass
    TimmBackbone("resnet18", pretrained=False)  # builds offline
