"""The model spine: preprocessor, backbone, FCN head, losses and the EncoderDecoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.engine.schedulers import PolyLR
from src.models import EncoderDecoder, SegDataPreProcessor, TimmBackbone
from src.models.heads import FCNHead
from src.models.losses import CrossEntropyLoss
from tests.helpers import AsList


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
    # class weights: divided by the pixels' summed class weights (MMSegmentation 1.x's avg_factor), an ignored
    # pixel counting 1 (where MMSegmentation fails, see src/models/losses.py)
    summed = sum(w[v] if v != 255 else 1.0 for v in target.flatten().tolist())
    assert CrossEntropyLoss(class_weight=w, loss_weight=2.0)(logits, target).item() == pytest.approx(
        2.0 * weighted.sum().item() / summed
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
    from src.loading.checkpoint import load_segmentor

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


# ---------------------------------------------------------------------------------------------- test modes, TTA
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


class Conv3x3Head(PerPixel):
    """A 3x3 conv (zero padding) over the image: flip-equivariant exactly when every kernel is mirror-symmetric."""

    def __init__(self, num_classes: int = 3, symmetric: bool = True) -> None:
        super().__init__(num_classes)
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        if symmetric:
            with torch.no_grad():
                w = self.conv.weight
                w.copy_((w + w.flip(-1)) / 2)


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_slide_averages_overlapping_windows_over_a_count_map():
    """Each crop's output is its own mean: pixels covered by two windows get the mean of the two."""

    class CropMean(PerPixel):
        def forward(self, feats):
            x = feats[0][:, :1]
            return x.mean(dim=(2, 3), keepdim=True).expand(-1, self.num_classes, *x.shape[-2:])

    model = EncoderDecoder(
        AsList(), CropMean(), test_cfg={"mode": "slide", "crop_size": [4, 4], "stride": [4, 2]}
    )
    x = torch.arange(24.0).view(1, 1, 4, 6).expand(1, 3, 4, 6).contiguous()
    out = model.predict(x)[0, 0]
    # windows (by hand): columns 0-3 and 2-5 over all 4 rows
    m0, m1 = x[0, 0, :, 0:4].mean(), x[0, 0, :, 2:6].mean()
    expected = torch.stack([m0, m0, (m0 + m1) / 2, (m0 + m1) / 2, m1, m1]).expand(4, 6)
    torch.testing.assert_close(out, expected)


def test_slide_equals_whole_through_predict_images_with_tta():
    """Each TTA view runs in the configured mode: slide == whole holds view by view for a per-pixel model."""
    tta = {"scales": [0.5, 1.0, 1.5], "flip": True}
    slide = EncoderDecoder(
        AsList(),
        PerPixel(),
        test_cfg={"mode": "slide", "crop_size": [16, 16], "stride": [11, 11], "tta": tta},
    )
    whole = EncoderDecoder(AsList(), PerPixel(), test_cfg={"mode": "whole", "tta": tta})
    whole.load_state_dict(slide.state_dict())
    images = [_image(37, 29), _image(20, 40, seed=1)]  # larger than the crop, and of different sizes
    for tta_arg in (False, True):
        for a, b in zip(slide.predict_images(images, tta=tta_arg), whole.predict_images(images, tta=tta_arg)):
            torch.testing.assert_close(a, b)


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
    model = EncoderDecoder(AsList(), Conv3x3Head(symmetric=True))
    images = [_image(12, 17)]
    plain = model.predict_images(images)[0].softmax(0)
    flipped = model.predict_images(images, tta={"scales": [1.0], "flip": True})[0].softmax(0)
    torch.testing.assert_close(flipped, plain)


def test_flip_tta_averages_the_prediction_and_the_mirrored_prediction_of_the_mirrored_image():
    model = EncoderDecoder(AsList(), Conv3x3Head(symmetric=False))
    image = _image(12, 17)
    conv = model.decode_head.conv
    x = (image[None].float() - MEAN) / STD
    expected = (conv(x).softmax(1) + conv(x.flip(-1)).flip(-1).softmax(1))[0] / 2
    got = model.predict_images([image], tta={"scales": [1.0], "flip": True})[0].softmax(0)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, model.predict_images([image])[0].softmax(0), atol=1e-3)


def test_multiscale_tta_averages_softmax_resized_to_the_original_size():
    """Independent computation: per ratio, rescale the uint8 image (rounded), normalise, 1x1 conv, resize the
    logits to the original size, softmax; then the mean over ratios."""
    model = EncoderDecoder(
        AsList(), PerPixel(), test_cfg={"mode": "whole", "tta": {"scales": [0.5, 1.0, 1.5], "flip": False}}
    )
    image, ori = _image(12, 10), (24, 20)  # the test pipeline had halved the original image
    conv = model.decode_head.conv
    probs = []
    for r in (0.5, 1.0, 1.5):
        size = (int(12 * r + 0.5), int(10 * r + 0.5))
        scaled = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False).round()
        logits = conv((scaled - MEAN) / STD)
        probs.append(F.interpolate(logits, size=ori, mode="bilinear", align_corners=False).softmax(1)[0])
    expected = torch.stack(probs).mean(0)
    got = model.predict_images([image], ori_shapes=[ori], tta=True)[0]
    assert got.shape == (3, 24, 20)
    torch.testing.assert_close(got.softmax(0), expected)
    torch.testing.assert_close(got.argmax(0), expected.argmax(0))
    plain = model.predict_images([image], ori_shapes=[ori])[0].softmax(0)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the scales do change the result


def test_tta_config_is_kept_apart_checked_and_defaults_to_mmsegmentation():
    model = EncoderDecoder(
        AsList(), PerPixel(), test_cfg={"mode": "whole", "tta": {"scales": [1.0, 2.0], "flip": False}}
    )
    assert model.test_cfg == {"mode": "whole"}
    assert model.tta_cfg.scales == (1.0, 2.0) and model.tta_cfg.flip is False
    default = EncoderDecoder(AsList(), PerPixel())
    assert (
        default.resolve_tta(True).scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
        and default.resolve_tta(True).flip
    )
    with pytest.raises(ValueError, match=r"model.test_cfg.tta.scales=\[0.0, 1.0\]"):
        EncoderDecoder(AsList(), PerPixel(), test_cfg={"tta": {"scales": [0.0, 1.0]}})
    with pytest.raises(ValueError, match="unknown keys \\['flips'\\]"):
        EncoderDecoder(AsList(), PerPixel(), test_cfg={"tta": {"flips": True}})


def test_validation_predicts_without_tta(monkeypatch):
    """The LightningModule's validation path never runs the TTA views, even for a model configured with TTA."""
    from functools import partial

    import src.models.segmentor as segmentor_module
    from src.engine.module import SegmentationModule

    model = EncoderDecoder(AsList(), PerPixel(), test_cfg={"mode": "whole", "tta": {"scales": [0.5, 1.0]}})
    module = SegmentationModule(model, optimizer=partial(torch.optim.SGD, lr=0.1))

    def no_tta(*args, **kwargs):
        raise AssertionError("validation must not use TTA")

    monkeypatch.setattr(segmentor_module, "tta_probabilities", no_tta)
    image = _image(8, 8)
    batch = {"inputs": [image], "metas": [{"img_shape": (8, 8), "ori_shape": (8, 8)}]}
    (pred,) = module.predict_batch(batch)
    torch.testing.assert_close(pred, model.predict_images([image])[0].argmax(0))
    with pytest.raises(AssertionError, match="must not use TTA"):
        model.predict_images([image], tta=True)


def test_slide_windows_in_batches_give_the_logits_of_one_window_at_a_time(monkeypatch):
    """Batching the windows (up to SLIDE_BATCH_PIXELS per forward) changes no window's logits: 2 images, 12
    windows each, in batches of 5 windows (the last one shorter) vs one window per forward."""
    from src.models import segmentor as module

    torch.manual_seed(0)
    model = _tiny_segmentor().eval()
    model.test_cfg.update(mode="slide", crop_size=[32, 32], stride=[20, 20])
    x = torch.randn(2, 3, 84, 64)
    monkeypatch.setitem(module.SLIDE_BATCH_PIXELS, "cpu", 5 * 2 * 32 * 32)
    batched = model.predict(x)
    monkeypatch.setitem(module.SLIDE_BATCH_PIXELS, "cpu", 1)
    torch.testing.assert_close(batched, model.predict(x), rtol=1e-5, atol=1e-5)
