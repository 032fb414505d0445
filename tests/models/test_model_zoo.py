"""Every model config against MMSegmentation 1.2.2: parameter counts (total, backbone, decode head, auxiliary
head) equal those of MMSegmentation's own configs, and each r18 config trains one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from tests.helpers import CONF_DIR, compose_cfg

# Counted from MMSegmentation 1.2.2's configs (SyncBN -> BN), 19 classes unless noted.
# config, classes, total, backbone, neck, decode head, auxiliary head
MMSEG_PARAMS = [
    ("fcn_r50-d8", 19, 49_497_734, 23_527_264, 0, 23_605_779, 2_364_691),
    ("pspnet_r50-d8", 19, 48_975_494, 23_527_264, 0, 23_083_539, 2_364_691),
    ("deeplabv3_r50-d8", 19, 68_113_030, 23_527_264, 0, 42_221_075, 2_364_691),
    ("deeplabv3plus_r50-d8", 19, 43_589_878, 23_527_264, 0, 17_697_923, 2_364_691),
    ("pspnet_r101-d8", 19, 67_967_622, 42_519_392, 0, 23_083_539, 2_364_691),
    ("fcn_r18-d8", 19, 12_822_342, 11_195_744, 0, 1_477_779, 148_819),
    ("pspnet_r18-d8", 19, 12_790_086, 11_195_744, 0, 1_445_523, 148_819),
    ("deeplabv3_r18-d8", 19, 13_986_374, 11_195_744, 0, 2_641_811, 148_819),
    ("deeplabv3plus_r18-d8", 19, 12_468_962, 11_195_744, 0, 1_124_399, 148_819),
    ("pspnet_r50-d8", 150, 49_076_364, 23_527_264, 0, 23_150_742, 2_398_358),  # ADE20K
    # issue 13's table: UPerNet, SegFormer, Swin, ConvNeXt, ViT + MultiLevelNeck (ADE20K: 150 classes)
    ("vit_vit-b16_mln_upernet", 150, 144_172_844, 86_432_256, 23_599_104, 32_332_950, 1_808_534),
    ("upernet_r50", 19, 66_415_238, 23_527_264, 0, 40_523_283, 2_364_691),
    ("upernet_r18", 19, 41_402_502, 11_195_744, 0, 29_611_539, 595_219),
    ("upernet_swin-t", 150, 59_941_862, 27_520_698, 0, 31_497_366, 923_798),
    ("upernet_convnext-t", 150, 60_242_636, 27_821_472, 0, 31_497_366, 923_798),
    ("segformer_mit-b0", 150, 3_753_718, 3_319_392, 0, 434_326, 0),
    ("segformer_mit-b0", 19, 3_720_051, 3_319_392, 0, 400_659, 0),
    ("segformer_mit-b2", 150, 24_761_686, 24_196_288, 0, 565_398, 0),
    ("fcn_r50-d8", 150, 49_598_604, 23_527_264, 0, 23_672_982, 2_398_358),
    ("deeplabv3plus_r50-d8", 21, 43_591_418, 23_527_264, 0, 17_698_949, 2_365_205),  # VOC
]
# The other r101 configs, derived from the rows above (ResNet-101 backbone + the r50 heads, which take the
# same 2048/1024-channel inputs), not counted from MMSegmentation directly.
DERIVED_PARAMS = [
    ("fcn_r101-d8", 19, 68_489_862, 42_519_392, 0, 23_605_779, 2_364_691),
    ("deeplabv3_r101-d8", 19, 87_105_158, 42_519_392, 0, 42_221_075, 2_364_691),
    ("deeplabv3plus_r101-d8", 19, 62_582_006, 42_519_392, 0, 17_697_923, 2_364_691),
]
R18_MODELS = ["fcn_r18-d8", "pspnet_r18-d8", "deeplabv3_r18-d8", "deeplabv3plus_r18-d8"]


def _build(name: str, num_classes: int, tmp_path: Path) -> torch.nn.Module:
    overrides = [f"model={name}", f"dataset.num_classes={num_classes}", f"paths.data_dir={tmp_path}"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    return instantiate(cfg.model)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# MMSegmentation-named configs without an MMSegmentation count here: MiT-B1 (not in the table) and the
# DINOv2 variant (no MMSegmentation counterpart); both are built in test_other_named_models_build.
UNCOUNTED = {"segformer_mit-b1", "upernet_vit-s_dinov2"}


def test_every_model_config_is_covered():
    """Each MMSegmentation-named model config (not smp_*, not unet: test_unet.py counts those) has a row."""
    configs = {
        p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if not p.stem.startswith(("smp_", "unet"))
    }
    covered = {row[0] for row in MMSEG_PARAMS + DERIVED_PARAMS}
    assert configs == covered | UNCOUNTED
    for row in DERIVED_PARAMS:
        assert row[2] == sum(row[3:])


@pytest.mark.parametrize(
    "name, num_classes, total, backbone, neck, decode, aux",
    MMSEG_PARAMS + DERIVED_PARAMS,
    ids=[f"{row[0]}-{row[1]}cls" for row in MMSEG_PARAMS + DERIVED_PARAMS],
)
def test_parameter_counts_equal_mmsegmentation(
    name, num_classes, total, backbone, neck, decode, aux, tmp_path
):
    model = _build(name, num_classes, tmp_path)
    assert model.name == name and model.num_classes == num_classes
    counts = (
        _count(model),
        _count(model.backbone),
        _count(model.neck) if model.neck is not None else 0,
        _count(model.decode_head),
        _count(model.auxiliary_heads),
    )
    assert counts == (total, backbone, neck, decode, aux)


@pytest.mark.parametrize("name", sorted(UNCOUNTED))
def test_other_named_models_build(name, tmp_path):
    model = _build(name, 150, tmp_path)
    assert model.name == name and model.num_classes == 150
    assert _count(model.decode_head) > 0


@pytest.mark.parametrize("name", R18_MODELS)
def test_r18_config_trains_one_step(name, tmp_path):
    torch.manual_seed(0)
    model = _build(name, 19, tmp_path).train()
    # 2 images, not 1: with BatchNorm the 1x1-pooled branches of PSP / ASPP need >1 value per channel to train.
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randint(0, 19, (2, 64, 64))
    masks[:, :8] = 255
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = model.loss(images, masks)
    assert set(losses) == {"loss_ce", "aux_loss_ce"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    # every head parameter moved; in the backbone, the branch parameters behind timm's zero-initialised last
    # BN of each residual block (MMSegmentation's zero_init_residual) get no gradient on the first step
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not [k for k in unchanged if not k.startswith("backbone.")]
    assert all(k.endswith(".bias") for k in unchanged)
    assert not any(k.startswith("backbone.body.conv1") for k in unchanged)
    model.eval()
    assert model.predict(images).shape == (2, 19, 64, 64)


def _conv_dilations(body: torch.nn.Module, stage: str) -> list[tuple[str, int]]:
    return [
        (n.split(".", 1)[1], m.dilation[0])
        for n, m in body.named_modules()
        if isinstance(m, torch.nn.Conv2d) and n.startswith(stage) and "downsample" not in n
    ]


def test_r18_d8_dilations_are_mmsegmentations():
    """MMSegmentation's BasicBlock dilates conv1 only, with the first block of a dilated stage at half the
    dilation (contract_dilation): stage 3 convs (1, 1), (2, 1); stage 4 (2, 1), (4, 1)."""
    from src.models.backbones import TimmBackbone

    body = TimmBackbone("resnet18", output_stride=8, stem_type="deep", stem_width=32).body
    assert _conv_dilations(body, "layer3") == [("0.conv1", 1), ("0.conv2", 1), ("1.conv1", 2), ("1.conv2", 1)]
    assert _conv_dilations(body, "layer4") == [("0.conv1", 2), ("0.conv2", 1), ("1.conv1", 4), ("1.conv2", 1)]
    timm_own = TimmBackbone("resnet18", output_stride=8, mmseg_basic_block=False).body
    assert _conv_dilations(timm_own, "layer4")[1] == ("0.conv2", 4)


def test_r50_d8_dilations_are_mmsegmentations():
    """Bottleneck: the 3x3 conv2 carries the dilation; first block at half (contract_dilation)."""
    from src.models.backbones import TimmBackbone

    body = TimmBackbone("resnet50c", output_stride=8).body
    conv2 = [d for n, d in _conv_dilations(body, "layer4") if n.endswith("conv2")]
    assert conv2 == [2, 4, 4]
    assert [d for n, d in _conv_dilations(body, "layer3") if n.endswith("conv2")] == [1] + [2] * 5
