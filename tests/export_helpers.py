"""Helpers of the export tests (`tests/serve/test_onnx.py`, `tests/serve/test_export_formats.py`; not a test module): tiny
models of each head, the model families of `conf/model/` every exporter is checked on, and the parity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from src.models import EncoderDecoder, SegDataPreProcessor
from src.models.heads import ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead
from tests.helpers import compose_cfg


# ------------------------------------------------------------------------------- tiny models per head
class TinyPyramid(nn.Module):
    """Two stages (stride 2, 8 channels; stride 4, 16 channels), for heads that read a low-level feature too."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        return [c1, self.stage2(c1)]


HEAD_KW = {"in_channels": 16, "channels": 8, "num_classes": 5, "in_index": 1, "dropout_ratio": 0.0}
HEADS = {
    "fcn": lambda: FCNHead(num_convs=2, concat_input=True, **HEAD_KW),
    "psp": lambda: PSPHead(pool_scales=(1, 2, 3, 6), **HEAD_KW),
    "aspp": lambda: ASPPHead(dilations=(1, 2, 3), **HEAD_KW),
    "sep_aspp": lambda: DepthwiseSeparableASPPHead(
        dilations=(1, 2, 3), c1_in_channels=8, c1_channels=4, **HEAD_KW
    ),
}


def tiny_segmentor(head: str, seed: int = 0, **kwargs) -> EncoderDecoder:
    torch.manual_seed(seed)
    model = EncoderDecoder(TinyPyramid(), HEADS[head](), **kwargs)
    with torch.no_grad():
        for m in model.modules():  # BN statistics that matter
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_export_model(head: str) -> EncoderDecoder:
    """`tiny_segmentor(head)` as the per-head export tests take it: for `fcn`, a preprocessor that pads to a
    multiple, flips BGR and pads with 7, so that its work is in the exported graph too."""
    if head == "fcn":
        return tiny_segmentor(
            head, data_preprocessor=SegDataPreProcessor(size_divisor=16, bgr_to_rgb=True, pad_val=7)
        )
    return tiny_segmentor(head)


# ------------------------------------------------------------------------ every family of conf/model
# smp architectures as decode heads (tests/models/test_smp_head.py)
SMP_CONFIGS = [
    "smp_unet_r18",
    "smp_unetplusplus_r18",
    "smp_fpn_r18",
    "smp_pspnet_r18",
    "smp_deeplabv3_r18",
    "smp_deeplabv3plus_r18",
    "smp_upernet_r18",
    "smp_segformer_r18",
]
FAMILIES = [
    "fcn_r18-d8",
    "pspnet_r18-d8",
    "deeplabv3_r18-d8",
    "deeplabv3plus_r18-d8",
    "unet-s5-d16_fcn",
    "unet-s5-d16_deeplabv3",
    "upernet_r18",
    "upernet_convnext-t",
    "upernet_swin-t",
    "segformer_mit-b0",
    "vit_vit-b16_mln_upernet",
    "upernet_vit-s_dinov2",
    *SMP_CONFIGS,
]


# ------------------------------------------------------------------------------------------- parity
def assert_parity(ref: torch.Tensor, out: torch.Tensor, rtol: float = 1e-4, min_equal: float = 0.999) -> None:
    """An exported model's logits equal PyTorch's (relative to the largest logit) and so do the classes."""
    from src.serve.export import compare_logits

    c = compare_logits(ref, out)
    assert c["max_abs_diff"] <= rtol * max(1.0, c["max_abs_logit"]), c
    assert c["equal_pixels"] >= min_equal, c


def assert_family_exports(name: str, tmp_path: Path, export: Any, runner_cls: Any, filename: str) -> None:
    """A named model (random weights) exported at 64x64 (Swin at its `min_dynamic_trace_size`, 225: the exporter
    raises the sample to it) by `export(model, path, sample_shape=...)` and run by
    `runner_cls(path)` gives PyTorch's logits at untraced sizes: multiples of 16 (UNet-S5-D16's need); 80 and 112
    are not multiples of 32, so smp's padding runs too."""
    from src.loading.checkpoint import build_segmentor
    from src.serve.export import InferenceNet

    cfg = compose_cfg("train", [f"model={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    model = build_segmentor(cfg.model).eval()  # random weights, pretrained switched off
    export(model, tmp_path / filename, sample_shape=(64, 64))
    runner = runner_cls(tmp_path / filename)
    for shape in [(2, 3, 96, 80), (1, 3, 112, 144)]:
        images = torch.rand(shape) * 255
        with torch.no_grad():
            ref = InferenceNet(model)(images)
        assert_parity(ref, runner.encode_decode(images))


def assert_runner_matches(model: Any, runner: Any, shapes: list[tuple[int, int, int, int]]) -> None:
    """`runner.encode_decode` (an exported file's) gives `InferenceNet(model)`'s logits at each input shape."""
    from src.serve.export import InferenceNet

    torch.manual_seed(1)
    for shape in shapes:
        images = torch.rand(shape) * 255
        with torch.no_grad():
            ref = InferenceNet(model)(images)
        out = runner.encode_decode(images)
        assert out.shape == (shape[0], model.num_classes, *shape[2:])
        assert_parity(ref, out)
