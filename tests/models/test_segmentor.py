"""The model spine: preprocessor, backbone, FCN head, losses and the EncoderDecoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models import EncoderDecoder, SegDataPreProcessor, TimmBackbone
from src.models.heads import FCNHead
from src.models.losses import CrossEntropyLoss
from src.schedulers import PolyLR


def test_preprocessor_normalises_pads_to_divisor_with_0_and_255():
    pre = SegDataPreProcessor(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 5.0], size_divisor=8)
    a = torch.full((3, 5, 6), 50, dtype=torch.uint8)
    b = torch.full((3, 7, 3), 40, dtype=torch.uint8)
    ma, mb = torch.zeros(5, 6, dtype=torch.long), torch.ones(7, 3, dtype=torch.long)
    images, masks = pre([a, b], [ma, mb])
    assert images.shape == (2, 3, 8, 8) and masks.shape == (2, 8, 8)
    # image pixels normalised per channel, padding is (0 - mean) / std
    assert torch.allclose(images[0, :, :5, :6], torch.tensor([20.0, 7.5, 4.0]).view(3, 1, 1).expand(3, 5, 6))
    assert torch.allclose(images[0, :, 5:, :], torch.tensor([-5.0, -5.0, -6.0]).view(3, 1, 1).expand(3, 3, 8))
    assert (masks[0, :5, :6] == 0).all() and (masks[0, 5:, :] == 255).all() and (masks[0, :, 6:] == 255).all()
    assert (masks[1, :7, :3] == 1).all() and (masks[1, :, 3:] == 255).all()


def test_preprocessor_bgr_to_rgb_flips_channels():
    pre = SegDataPreProcessor(mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True)
    x = torch.stack([torch.full((2, 2), v, dtype=torch.uint8) for v in (1, 2, 3)])
    images, _ = pre([x])
    assert images[0, :, 0, 0].tolist() == [3.0, 2.0, 1.0]


def test_backbone_output_stride_8_keeps_last_stages_at_eighth_resolution():
    bb = TimmBackbone("resnet18", out_indices=(1, 2, 3, 4), output_stride=8, stem_type="deep", stem_width=32)
    feats = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512] == bb.out_channels
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]
    # deep stem: three 3x3 convs (32, 32, 64 channels), as ResNet-V1c
    assert bb.body.conv1[0].out_channels == 32 and bb.body.conv1[0].kernel_size == (3, 3)


def test_backbone_pretrained_path_loads_local_weights(tmp_path):
    src = TimmBackbone("resnet18", output_stride=32)
    path = tmp_path / "weights.pth"
    torch.save(src.body.state_dict(), path)
    dst = TimmBackbone("resnet18", output_stride=32, pretrained=True, pretrained_path=str(path))
    for k, v in src.body.state_dict().items():
        assert torch.equal(v, dst.body.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        TimmBackbone("resnet18", pretrained_path=str(tmp_path / "missing.pth"))


def test_fcn_head_shapes_and_parameters():
    head = FCNHead(in_channels=16, channels=8, num_classes=5, num_convs=2, concat_input=True, in_index=-1)
    logits = head([torch.randn(2, 4, 9, 9), torch.randn(2, 16, 9, 9)])
    assert logits.shape == (2, 5, 9, 9)
    # 2 convs + concat conv (no bias, BN) + 1x1 classifier with bias
    expected = (16 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8) + (24 * 8 * 9 + 2 * 8) + (8 * 5 + 5)
    assert sum(p.numel() for p in head.parameters()) == expected


def _tiny_segmentor(num_classes: int = 4, aux: bool = True, test_cfg=None) -> EncoderDecoder:
    bb = TimmBackbone("resnet18", out_indices=(1, 2, 3, 4), output_stride=8)
    head = FCNHead(in_channels=512, channels=16, num_classes=num_classes, in_index=3)
    aux_head = (
        FCNHead(
            in_channels=256,
            channels=8,
            num_classes=num_classes,
            in_index=2,
            num_convs=1,
            concat_input=False,
            losses=[CrossEntropyLoss(loss_weight=0.4)],
        )
        if aux
        else None
    )
    return EncoderDecoder(bb, head, auxiliary_head=aux_head, test_cfg=test_cfg)


def test_encoder_decoder_loss_terms_and_predict_size():
    torch.manual_seed(0)
    model = _tiny_segmentor()
    images = torch.randn(2, 3, 40, 40)
    masks = torch.randint(0, 4, (2, 40, 40))
    masks[:, :5] = 255
    losses = model.loss(images, masks)
    assert set(losses) == {"loss_ce", "aux_loss_ce"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    assert model.predict(images).shape == (2, 4, 40, 40)
    # postprocess crops the padding and resizes to the original size
    out = model.postprocess(
        model.predict(images), img_shapes=[(40, 40), (30, 20)], ori_shapes=[(40, 40), (60, 40)]
    )
    assert out[0].shape == (4, 40, 40) and out[1].shape == (4, 60, 40)


def test_aux_loss_weight_scales_the_term():
    torch.manual_seed(0)
    model = _tiny_segmentor()
    images, masks = torch.randn(1, 3, 32, 32), torch.randint(0, 4, (1, 32, 32))
    model.eval()  # no dropout, BN in eval: deterministic
    losses = model.loss(images, masks)
    head = model.auxiliary_heads[0]
    logits = F.interpolate(
        head(model.extract_feat(images)), size=(32, 32), mode="bilinear", align_corners=False
    )
    assert losses["aux_loss_ce"].item() == pytest.approx(
        0.4 * F.cross_entropy(logits, masks).item(), rel=1e-5
    )


class PerPixel(nn.Module):
    """A 1x1-conv 'head' over the image itself: a per-pixel function, so slide inference must equal whole."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.align_corners = False
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, feats):
        return self.conv(feats[0])

    def predict_by_feat(self, logits, size):
        return logits


class AsList(nn.Module):
    def forward(self, x):
        return [x]


def test_slide_inference_equals_whole_for_a_per_pixel_model():
    model = EncoderDecoder(
        AsList(), PerPixel(), test_cfg={"mode": "slide", "crop_size": [16, 16], "stride": [11, 11]}
    )
    x = torch.randn(2, 3, 37, 29)
    torch.testing.assert_close(model.predict(x, mode="slide"), model.predict(x, mode="whole"))


def test_cross_entropy_reduction_matches_mmsegmentation():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    # default: mean over all pixels, ignored ones counting as zero
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(per_pixel.sum().item() / 32)
    # avg_non_ignore: mean over the 28 valid pixels
    assert CrossEntropyLoss(avg_non_ignore=True)(logits, target).item() == pytest.approx(
        per_pixel.sum().item() / 28
    )
    w = [1.0, 2.0, 0.5]
    weighted = F.cross_entropy(logits, target, weight=torch.tensor(w), ignore_index=255, reduction="none")
    assert CrossEntropyLoss(class_weight=w, loss_weight=2.0)(logits, target).item() == pytest.approx(
        2.0 * weighted.sum().item() / 32
    )


def test_class_weight_from_file(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("1.0 2.0\n0.5\n")
    assert CrossEntropyLoss(class_weight=str(path)).class_weight.tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        CrossEntropyLoss(class_weight=str(tmp_path / "missing.txt"))


def test_poly_lr_follows_mmsegmentation_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = PolyLR(opt, total_iters=10, power=0.9, eta_min=1e-4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [(0.01 - 1e-4) * (1 - min(i, 10) / 10) ** 0.9 + 1e-4 for i in range(12)]
    assert lrs == pytest.approx(expected)


def test_backbone_norm_is_selectable():
    gn = TimmBackbone("resnet18", output_stride=8, norm="gn")
    assert any(isinstance(m, nn.GroupNorm) for m in gn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    assert [f.shape[1] for f in gn(torch.randn(1, 3, 32, 32))] == gn.out_channels
    with pytest.raises(ValueError, match="norm='ln'"):
        TimmBackbone("resnet18", norm="ln")


def test_model_trained_with_syncbn_runs_on_cpu(tmp_path):
    """SyncBatchNorm keeps BatchNorm's state keys: its weights load into the BN model the config builds."""
    from src.checkpoint import load_segmentor

    torch.manual_seed(0)
    model = _tiny_segmentor()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(_tiny_segmentor())
    synced.load_state_dict(model.state_dict())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    cfg = {
        "_target_": "tests.models.test_segmentor._tiny_segmentor",
    }
    path = tmp_path / "syncbn.ckpt"
    state = {f"segmentor.{k}": v for k, v in synced.state_dict().items()}
    torch.save(
        {"state_dict": state, "segkit": {"config": {"model": cfg}, "classes": [], "palette": []}}, path
    )
    loaded, _ = load_segmentor(path, "cpu")
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in loaded.modules())
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
