"""Any backbone under any head, through the configs a user writes: `model/decode_head=<head>` and
`model.backbone.model_name=<timm name>` (or a backbone group) with no in_channels edited anywhere.

Each pair builds, runs forward + backward on 2x3x64x96 and returns logits of the input's size. Widths are cut
down (`channels`, timm's depth/width kwargs) so that the 60 pairs run in seconds.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers import compose_cfg

# (id, overrides selecting the backbone): timm names through the generic backbone, and the faithful backbones
# (Swin, MiT, ViT) through their groups, made tiny with the model's own width/depth arguments.
BACKBONES = {
    "resnet18d": ["model/backbone=timm", "model.backbone.model_name=resnet18d"],
    "resnet50_v1c": ["model/backbone=resnet50_v1c"],
    "convnext_atto": ["model/backbone=timm", "model.backbone.model_name=convnext_atto"],
    "efficientnet_b0": ["model/backbone=timm", "model.backbone.model_name=efficientnet_b0"],
    "mobilenetv3_small_100": ["model/backbone=timm", "model.backbone.model_name=mobilenetv3_small_100"],
    "regnety_002": ["model/backbone=timm", "model.backbone.model_name=regnety_002"],
    "swin_tiny(timm)": [
        "model/backbone=timm",
        "model.backbone.model_name=swin_tiny_patch4_window7_224",
        "+model.backbone.embed_dim=16",
        "+model.backbone.depths=[1,1,1,1]",
        "+model.backbone.num_heads=[1,1,1,1]",
    ],
    "mit_b0": ["model/backbone=mit_b0"],
    "vit_tiny(timm)": [
        "model/backbone=timm",
        "model.backbone.model_name=vit_tiny_patch16_224",
        "+model.backbone.depth=4",
        "+model.backbone.dynamic_img_size=true",
    ],
}
# (id, decode head group, tiny-width overrides)
HEADS = {
    "fcn": ["model/decode_head=fcn", "model.decode_head.channels=8"],
    "psp": ["model/decode_head=psp", "model.decode_head.channels=8"],
    "aspp": ["model/decode_head=aspp", "model.decode_head.channels=8"],
    "sep_aspp": [
        "model/decode_head=sep_aspp",
        "model.decode_head.channels=8",
        "model.decode_head.c1_channels=4",
    ],
    "uper": ["model/decode_head=uper", "model.decode_head.channels=8"],
    "segformer": ["model/decode_head=segformer", "model.decode_head.channels=8"],
}


def _compose(backbone: list[str], head: list[str], tmp_path):
    overrides = [
        "model=upernet_r50",  # output stride 32: every backbone keeps its own
        "dataset.num_classes=6",
        f"paths.data_dir={tmp_path}",
        *backbone,
        *head,
        "model.auxiliary_head.channels=8",
    ]
    return compose_cfg("train", overrides, tmp_path / "run")


@pytest.fixture(scope="module")
def built_backbones():
    """Each backbone is built once and shared by its six heads (building a ResNet-50 costs more than a step)."""
    return {}


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_any_backbone_under_any_head(backbone, head, tmp_path, built_backbones):
    torch.manual_seed(0)
    cfg = _compose(BACKBONES[backbone], HEADS[head], tmp_path)
    if backbone not in built_backbones:
        built_backbones[backbone] = instantiate(cfg.model.backbone)
    shared = built_backbones[backbone].train()
    shared.zero_grad(set_to_none=True)
    # the heads are built from the composed config, their in_channels from the backbone's levels
    model = instantiate(cfg.model, backbone=shared).train()
    images = torch.randn(2, 3, 64, 96)
    masks = torch.randint(0, 6, (2, 64, 96))
    losses = model.loss(images, masks)
    assert set(losses) == {"loss_ce", "aux_loss_ce"}
    sum(losses.values()).backward()
    # the gradient reaches the backbone's first layer through the decode head
    first = next(p for p in model.backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model.predict(images)
    assert logits.shape == (2, 6, 64, 96)
    assert torch.isfinite(logits).all()


def test_backbone_swap_needs_no_other_edit(tmp_path):
    """The issue's example: PSPNet-R50-D8 with a ConvNeXt, by its timm name alone (stride 8 by dilation)."""
    cfg = compose_cfg(
        "train",
        ["model=pspnet_r50-d8", "model.backbone.model_name=convnext_atto", f"paths.data_dir={tmp_path}"],
        tmp_path / "run",
    )
    model = instantiate(cfg.model).eval()
    assert model.backbone.out_channels == [40, 80, 160, 320]
    assert model.decode_head.in_channels == 320 and model.auxiliary_heads[0].in_channels == 160
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8: the last two stages dilated


def test_unsupported_output_stride_is_one_readable_error(tmp_path):
    cfg = compose_cfg(
        "train",
        ["model=pspnet_r50-d8", "model/backbone=swin_tiny", f"paths.data_dir={tmp_path}"],
        tmp_path / "run",
    )
    cfg.model.backbone.output_stride = 8
    with pytest.raises(Exception) as err:
        instantiate(cfg.model)
    message = str(err.value)
    assert "output_stride" in message and "swin" in message.lower() and "32" in message


@pytest.mark.parametrize("name", ["fcn_r18-d8", "upernet_r50"])
def test_auxiliary_head_none_removes_it_even_where_the_model_sets_its_keys(name, tmp_path):
    """fcn_r18-d8 sets auxiliary_head.channels itself; `model/auxiliary_head=none` still means no head."""
    cfg = compose_cfg(
        "train",
        [f"model={name}", "model/auxiliary_head=none", f"paths.data_dir={tmp_path}"],
        tmp_path / "run",
    )
    model = instantiate(cfg.model)
    assert len(model.auxiliary_heads) == 0
    losses = model.loss(torch.randn(2, 3, 64, 64), torch.randint(0, 6, (2, 64, 64)))
    assert set(losses) == {"loss_ce"}
