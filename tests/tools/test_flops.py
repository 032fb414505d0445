"""FLOPs and parameter counts (`src/tools/flops.py`, `scripts/get_flops.py`) against hand counts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.models.resized_concat_conv import ResizedConcatConv2d
from src.tools.benchmark import TRAIN_FLOP_FORMULAS
from src.tools.flops import count_flops, human, segmentor_complexity
from tests.helpers import compose_cfg, tiny_model_cfg

ROOT = Path(__file__).resolve().parents[2]


def _conv_flops(out_hw: tuple[int, int], c_in: int, c_out: int, k: int, groups: int = 1, n: int = 1) -> int:
    """2 FLOPs per multiply-add: every output value is a sum of (c_in / groups) * k * k products."""
    return 2 * n * c_out * out_hw[0] * out_hw[1] * (c_in // groups) * k * k


def test_flops_of_a_plain_conv_model_equal_the_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),  # 32x40 -> 16x20
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4),  # grouped, dilated: 16x20
        nn.Conv2d(16, 5, 1, bias=False),  # 16x20
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 7),
    ).eval()
    n = 2
    counted = count_flops(model, torch.randn(n, 3, 32, 40))
    hand = {
        "0": _conv_flops((16, 20), 3, 16, 3, n=n),
        "3": _conv_flops((16, 20), 16, 16, 3, groups=4, n=n),
        "4": _conv_flops((16, 20), 16, 5, 1, n=n),
        "7": 2 * n * 5 * 7,
    }
    assert counted["per_module"] == hand  # normalisation, activation, pooling and biases count nothing
    # multiply-adds per image: 16*16*20*27 + 16*16*20*36 + 5*16*20*16; the linear layer 5*7 per image
    assert counted["flops"] == sum(hand.values()) == 2 * n * (138240 + 184320 + 25600) + 2 * n * 35


def test_training_flops_count_a_depthwise_and_a_transposed_conv_backward_once_per_gradient():
    # torch 2.14's own formula counts a grouped conv's weight gradient `groups` times over
    depthwise = (nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16), torch.randn(2, 16, 12, 10))
    assert count_flops(*depthwise)["flops"] == _conv_flops((12, 10), 16, 16, 3, groups=16, n=2)
    for conv, x in [
        depthwise,
        (nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2), torch.randn(2, 8, 6, 5)),
        (nn.Conv2d(8, 12, 3, stride=2), torch.randn(2, 8, 12, 10)),
    ]:
        forward = count_flops(conv, x)["flops"]
        with FlopCounterMode(display=False, custom_mapping=TRAIN_FLOP_FORMULAS) as counter:
            conv(x.requires_grad_()).sum().backward()
        assert counter.get_total_flops() == 3 * forward  # forward, input gradient, weight gradient


def test_tiny_segmentor_flops_and_params_by_part():
    cfg = tiny_model_cfg()
    cfg["auxiliary_head"] = {**cfg["decode_head"], "in_index": 0}
    model = instantiate(cfg)
    report = segmentor_complexity(model, [32, 48], batch_size=1)
    # TinyBackbone: 3x3 stride-2 conv 3 -> 8 (16x24); FCN head: 3x3 conv 8 -> 8, 1x1 classifier 8 -> 6
    backbone = _conv_flops((16, 24), 3, 8, 3)
    head = _conv_flops((16, 24), 8, 8, 3) + _conv_flops((16, 24), 8, 6, 1)
    assert report["flops_per_module"] == {"backbone": backbone, "decode_head": head}  # aux: not at inference
    assert report["flops"] == backbone + head and report["macs"] * 2 == report["flops"]
    p = report["params"]
    assert p["total"] == sum(x.numel() for x in model.parameters())
    assert p["backbone"] + p["neck"] + p["decode_head"] + p["auxiliary_head"] == p["total"]
    assert p["decode_head"] == p["auxiliary_head"] == sum(x.numel() for x in model.decode_head.parameters())
    assert report["input_shape"] == [1, 3, 32, 48]
    assert human(713_186_869_248, "FLOPs") == "713.19 GFLOPs" and human(512) == "512"


def _build(name: str, tmp_path: Path) -> nn.Module:
    cfg = compose_cfg("train", [f"model={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    GlobalHydra.instance().clear()
    return instantiate(cfg.model)


def _hooked_conv_flops(model: nn.Module, x: torch.Tensor) -> int:
    """An independent count: forward hooks read every conv's output shape, the hand formula does the rest."""
    total = 0

    def hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * out.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_resnet_and_smp_models_count_every_conv(tmp_path):
    for name in ("fcn_r18-d8", "smp_unet_r18"):
        model = _build(name, tmp_path).eval()
        report = segmentor_complexity(model, [64, 96])
        assert report["flops"] == _hooked_conv_flops(model, torch.randn(1, 3, 64, 96)), name
        p = report["params"]
        assert p["backbone"] + p["neck"] + p["decode_head"] + p["auxiliary_head"] == p["total"]
        if name.startswith("smp"):  # the smp encoder is reported as the backbone
            assert p["backbone"] == sum(x.numel() for x in model.decode_head.model.encoder.parameters())


def test_get_flops_script_prints_and_writes_params_flops_and_macs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("get_flops_script", ROOT / "scripts" / "get_flops.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "flops.json"
    overrides = ["model=fcn_r18-d8", "dataset.num_classes=19", "shape=[64,128]", f"out_json={out}"]
    cfg = compose_cfg("get_flops", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    script.get_flops(cfg)
    report = json.loads(out.read_text())
    # MMSegmentation 1.2.2's fcn_r18-d8 (19 classes): the counts of tests/models/test_model_zoo.py
    assert report["params"] == {
        "total": 12_822_342, "backbone": 11_195_744, "neck": 0, "decode_head": 1_477_779, "auxiliary_head": 148_819,
    }  # fmt: skip
    assert report["input_shape"] == [1, 3, 64, 128] and report["flops"] == 2 * report["macs"] > 0
    printed = capsys.readouterr().out
    assert "GFLOPs" in printed and "GMACs" in printed and "12.82 M" in printed
    # shape: an int is a square, null the dataset's crop_size (shapes: 96x96)
    assert script.input_shape(compose_cfg("get_flops", ["shape=64"], tmp_path / "r2")) == [64, 64]
    assert script.input_shape(compose_cfg("get_flops", [], tmp_path / "r3")) == [96, 96]
    GlobalHydra.instance().clear()


def test_a_head_concatenation_is_counted_as_written_though_computed_with_less():
    """`ResizedConcatConv2d` convolves the coarse maps at their own size; FLOPs are the model's arithmetic, the
    convolution of the full-size concatenation (as MMSegmentation counts it)."""
    conv = ResizedConcatConv2d(4 * 64, 8, 3, padding=1)
    parts = [torch.randn(1, 64, 32 >> i, 32 >> i) for i in range(4)]
    assert count_flops(conv, parts)["flops"] == _conv_flops((32, 32), 4 * 64, 8, 3)
    with torch.no_grad(), FlopCounterMode(display=False) as computed:
        conv(parts)
    assert computed.get_total_flops() < 0.6 * _conv_flops((32, 32), 4 * 64, 8, 3)
