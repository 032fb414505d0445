"""MultiLevelNeck (MMSegmentation's ViT -> pyramid neck): output shapes and channels per scale, values against
MMSegmentation's computation written out here, its parameter count at ViT-B size, and its MMSegmentation key map
against `../shared/mmseg/keys/vit-b16_mln_upernet.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.heads import UPerHead
from src.models.necks import MultiLevelNeck
from src.weights.keymaps import keymap_for

KEYS_JSON = Path(__file__).resolve().parents[3] / "shared" / "mmseg" / "keys" / "vit-b16_mln_upernet.json"
SCALES = [4, 2, 1, 0.5]


def _vit_feats(n: int = 2, c: int = 6, h: int = 6, w: int = 8) -> list[torch.Tensor]:
    """Four blocks of a plain ViT: one stride (16), one size."""
    return [torch.randn(n, c, h, w) for _ in range(4)]


def test_output_shapes_and_channels_for_scales_4_2_1_half():
    neck = MultiLevelNeck([6] * 4, out_channels=5, scales=SCALES)
    outs = neck(_vit_feats())
    assert [tuple(o.shape) for o in outs] == [(2, 5, 24, 32), (2, 5, 12, 16), (2, 5, 6, 8), (2, 5, 3, 4)]
    assert neck.out_channels == [5, 5, 5, 5]
    # odd sizes: the downsampled level rounds down, as F.interpolate (and MMSegmentation)
    outs = neck(_vit_feats(h=7, w=5))
    assert [tuple(o.shape[2:]) for o in outs] == [(28, 20), (14, 10), (7, 5), (3, 2)]


def test_values_are_mmsegmentations():
    """1x1 lateral conv, bilinear resize by the scale factor, 3x3 conv; convs with a bias, no norm, no act."""
    torch.manual_seed(0)
    neck = MultiLevelNeck([6, 5, 4, 3], out_channels=4, scales=SCALES).eval()
    feats = [torch.randn(2, c, 5, 7) for c in (6, 5, 4, 3)]
    for i, (out, x, s) in enumerate(zip(neck(feats), feats, SCALES, strict=True)):
        lat = F.conv2d(x, neck.lateral_convs[i].conv.weight, neck.lateral_convs[i].conv.bias)
        lat = F.interpolate(lat, scale_factor=s, mode="bilinear", align_corners=False)
        expected = F.conv2d(lat, neck.convs[i].conv.weight, neck.convs[i].conv.bias, padding=1)
        torch.testing.assert_close(out, expected)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in neck.modules())


def test_one_input_level_feeds_every_output():
    neck = MultiLevelNeck([6], out_channels=5, scales=SCALES)
    x = torch.randn(1, 6, 4, 4)
    outs = neck([x])
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]
    assert len(neck.lateral_convs) == 1 and len(neck.convs) == 4


def test_norm_and_activation_options():
    neck = MultiLevelNeck([6] * 4, out_channels=32, scales=SCALES, norm="gn", act=True).train()
    assert neck.convs[0].conv.bias is None  # a norm follows: no conv bias, as MMCV's ConvModule
    assert isinstance(neck.convs[0].bn, nn.GroupNorm)
    outs = neck(_vit_feats(n=1))
    assert all((o >= 0).all() for o in outs)  # ReLU
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_wrong_levels_are_refused():
    with pytest.raises(ValueError, match="one level or one per scale"):
        MultiLevelNeck([6, 6], out_channels=5, scales=SCALES)
    neck = MultiLevelNeck([6] * 4, out_channels=5, scales=SCALES)
    with pytest.raises(ValueError, match="got 3 feature maps, built for 4"):
        neck(_vit_feats()[:3])


def test_neck_then_uper_head_gives_stride_4_logits():
    neck = MultiLevelNeck([6] * 4, out_channels=8, scales=SCALES)
    head = UPerHead(in_channels=neck.out_channels, channels=8, num_classes=3).train()
    logits = head(neck(_vit_feats(h=4, w=6)))  # stride 16 -> the head decodes at stride 4
    assert logits.shape == (2, 3, 16, 24)
    logits.mean().backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_parameter_count_equals_mmsegmentation():
    """ViT-B/16 + MLN (vit_vit-b16_mln_upernet): 23,599,104 in MMSegmentation 1.2.2."""
    with torch.device("meta"):
        neck = MultiLevelNeck([768] * 4, out_channels=768, scales=SCALES)
    assert sum(p.numel() for p in neck.parameters()) == 23_599_104


def test_mmsegmentation_neck_keys_map_and_load_strictly():
    if not KEYS_JSON.is_file():
        pytest.skip(f"{KEYS_JSON} not found")
    keys = json.loads(KEYS_JSON.read_text())["keys"]
    mm = {k[len("neck.") :]: torch.empty(s, device="meta") for k, s in keys.items() if k.startswith("neck.")}
    with torch.device("meta"):
        neck = MultiLevelNeck([768] * 4, out_channels=768, scales=SCALES)
    ours = keymap_for(neck)(mm, neck)
    assert mm == {}, f"unmapped: {sorted(mm)}"
    neck.load_state_dict(ours, strict=True, assign=True)


@pytest.mark.slow
def test_neck_and_uper_head_export_to_onnx_with_dynamic_size(tmp_path):
    """The neck resizes by scale factors (an ONNX Resize by scales), so the exported graph follows any input
    size: ONNX Runtime equals PyTorch at sizes other than the traced one (~15 s, the exporter)."""
    ort = pytest.importorskip("onnxruntime")
    from src.serve.export import exportable_pooling

    class Net(nn.Module):  # a stride-16 "ViT" stem, the neck, the head
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 16, stride=16)
            self.neck = MultiLevelNeck([6] * 4, out_channels=8, scales=SCALES)
            self.head = UPerHead(in_channels=self.neck.out_channels, channels=8, num_classes=3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.stem(x)
            return self.head(self.neck([f, f, f, f]))

    torch.manual_seed(0)
    net = Net().eval()
    dyn = torch.export.Dim.DYNAMIC
    with exportable_pooling(), torch.no_grad():
        program = torch.onnx.export(
            net,
            (torch.rand(1, 3, 256, 256),),  # stride 32: 8x8, no PPM scale coincides with it
            input_names=["x"],
            dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}},
            dynamo=True,
        )
    program.save(tmp_path / "mln_uper.onnx")
    session = ort.InferenceSession(str(tmp_path / "mln_uper.onnx"))
    for h, w in [(96, 128), (80, 208)]:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            expected = net(x)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        assert out.shape == (2, 3, h // 4, w // 4)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
