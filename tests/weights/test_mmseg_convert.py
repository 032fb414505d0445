"""MMSegmentation checkpoints: reading (weights-only, metadata objects inert), conversion by key map (every tensor
placed, readable refusals), parity with MMSegmentation's own logits, and the ways a user loads one: `load_from`,
`src.eval model=... dataset=...`, `Segmenter.from_checkpoint(..., model=, dataset=)`, the conversion script and
`model.backbone.pretrained_path` with mmcv's ResNet names.

The reference material (an MMSegmentation-written checkpoint, image, logits and key lists, see its README.md) is
read from `$SEGKIT_MMSEG_REF` (default `<repo>/../shared/mmseg`); the tests that need it skip when it is absent.
MMSegmentation-named checkpoints of other models are made here from our own model by the inverse renaming,
written out in `to_mmseg_names` independently of the key maps.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from src.eval import evaluate
from src.loading.checkpoint import build_segmentor, load_matching_weights
from src.loading.mmseg import compose_model_dataset
from src.models.backbones import TimmBackbone
from src.models.backbones.unet import UNet
from src.serve.segmenter import Segmenter
from src.weights.mmseg import (
    MMSegCheckpointError,
    convert_mmseg_state_dict,
    load_mmseg_state_dict,
)
from tests.helpers import TINY_TRAIN, TinyRun, compose_cfg, to_mmseg_names

ROOT = Path(__file__).resolve().parents[2]
REF = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg"))
needs_ref = pytest.mark.skipif(
    not (REF / "pspnet_r18-d8.pth").is_file(), reason=f"no MMSegmentation reference material in {REF}"
)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)

# keys/<name>.json -> the config of this project that builds the same model
OUR_CONFIG = {
    "fcn_r18-d8": "fcn_r18-d8",
    "fcn_r50-d8": "fcn_r50-d8",
    "fcn_r101-d8": "fcn_r101-d8",
    "pspnet_r18-d8": "pspnet_r18-d8",
    "pspnet_r50-d8": "pspnet_r50-d8",
    "pspnet_r101-d8": "pspnet_r101-d8",
    "deeplabv3_r18-d8": "deeplabv3_r18-d8",
    "deeplabv3_r50-d8": "deeplabv3_r50-d8",
    "deeplabv3plus_r18-d8": "deeplabv3plus_r18-d8",
    "deeplabv3plus_r50-d8": "deeplabv3plus_r50-d8",
    "unet-s5-d16_fcn": "unet-s5-d16_fcn",
    "unet-s5-d16_deeplabv3": "unet-s5-d16_deeplabv3",
    "upernet_r18": "upernet_r18",
    "upernet_r50": "upernet_r50",
    "upernet_swin-t": "upernet_swin-t",
    "upernet_convnext-t": "upernet_convnext-t",
    "segformer_mit-b0": "segformer_mit-b0",
    "vit-b16_mln_upernet": "vit_vit-b16_mln_upernet",
}
# the dataset of MMSegmentation's config (its path names it) -> ours
DATASETS = ("cityscapes", "ade20k", "drive")
KEY_FILES = sorted((REF / "keys").glob("*.json")) if (REF / "keys").is_dir() else []
KEY_PARAMS = [pytest.param(p, id=p.stem) for p in KEY_FILES] or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"no MMSegmentation key lists in {REF / 'keys'}"))
]


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters and classifier biases (the convolutions keep their
    random initialisation), so that a misplaced tensor changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bn.bias", "bn1.bias", "bn2.bias", "conv_seg.bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif name.endswith(("bn.weight", "bn1.weight", "bn2.weight")):
                t.copy_(1 + torch.randn(t.shape, generator=gen) * 0.1)
    return model


def reference_image() -> torch.Tensor:
    """The shared image, RGB, normalised as MMSegmentation's data preprocessor did: `[1, 3, 240, 320]`."""
    rgb = np.array(Image.open(REF / "stanford_0000047.png").convert("RGB"))
    return ((torch.from_numpy(rgb).permute(2, 0, 1).float() - MEAN) / STD)[None]


# ------------------------------------------------------------------------------------------------ reading
def test_reads_mmengine_and_bare_state_dicts(tmp_path: Path):
    state = {"backbone.stem.0.weight": torch.randn(2, 3, 3, 3), "decode_head.conv_seg.bias": torch.randn(4)}
    torch.save(
        {"meta": {"mmseg_version": "1.2.2", "config": "model = dict()"}, "state_dict": state},
        tmp_path / "a.pth",
    )
    torch.save(state, tmp_path / "b.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "c.pth")  # DDP-wrapped names
    for name in ("a.pth", "b.pth", "c.pth"):
        got = load_mmseg_state_dict(tmp_path / name)
        assert list(got) == list(state) and all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_mmseg_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MMSegCheckpointError, match="junk.pth"):
        load_mmseg_state_dict(tmp_path / "junk.pth")


def test_metadata_objects_are_read_inert_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MMEngine pickles objects beside the weights (message hub, numpy scalars): the weights-only loader
    refuses them, ours reads them as placeholders, and a callable the file names is not called, even though
    its module is importable here."""
    sentinel = tmp_path / "ran"
    (tmp_path / "mmengine_like.py").write_text(
        "from pathlib import Path\n"
        "class HistoryBuffer:\n    def __init__(self, values):\n        self.values = values\n"
        "def side_effect(path):\n    Path(path).write_text('ran')\n"
        "class Trap:\n    def __init__(self, path):\n        self.path = path\n"
        "    def __reduce__(self):\n        return (side_effect, (self.path,))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mmengine_like

    state = {"decode_head.conv_seg.weight": torch.randn(3, 2, 1, 1)}
    ckpt = {
        "meta": {"seed": np.int64(3), "hub": mmengine_like.HistoryBuffer(np.arange(3)), "trap": mmengine_like.Trap(str(sentinel))},
        "state_dict": state,
        "message_hub": {"log_scalars": mmengine_like.HistoryBuffer([1.0])},
    }  # fmt: skip
    torch.save(ckpt, tmp_path / "mmengine.pth")
    torch.save(ckpt, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)  # torch < 1.6 files
    for name in ("mmengine.pth", "legacy.pth"):
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(tmp_path / name, weights_only=True)
        got = load_mmseg_state_dict(tmp_path / name)
        assert torch.equal(got["decode_head.conv_seg.weight"], state["decode_head.conv_seg.weight"])
        assert not sentinel.exists()
    # what PyTorch blocks outright (os, subprocess, ...) stays refused, with the file named
    torch.save({"state_dict": state, "meta": {"x": _OsSystem(f"touch {sentinel}")}}, tmp_path / "evil.pth")
    with pytest.raises(MMSegCheckpointError, match="evil.pth.*weights-only"):
        load_mmseg_state_dict(tmp_path / "evil.pth")
    assert not sentinel.exists()
    sys.modules.pop("mmengine_like", None)


class _OsSystem:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


# ------------------------------------------------------------------------------------------------ parity
@pytest.fixture(scope="module")
def reference_model() -> torch.nn.Module:
    """pspnet_r18-d8 (19 classes) with MMSegmentation's weights, in eval mode."""
    if not (REF / "pspnet_r18-d8.pth").is_file():
        pytest.skip(f"no MMSegmentation reference material in {REF}")
    cfg = compose_model_dataset("pspnet_r18-d8", "cityscapes")
    model = build_segmentor(cfg.model)
    path = REF / "pspnet_r18-d8.pth"
    model.load_state_dict(
        convert_mmseg_state_dict(load_mmseg_state_dict(path), model, source=path), strict=True
    )
    return model.eval()


@needs_ref
def test_whole_mode_logits_equal_mmsegmentations(reference_model: torch.nn.Module):
    ref = torch.from_numpy(np.load(REF / "pspnet_r18-d8.logits.npy"))
    info = json.loads((REF / "pspnet_r18-d8.json").read_text())
    with torch.no_grad():
        logits = reference_model.predict(reference_image(), mode="whole")[0]
    assert tuple(logits.shape) == tuple(ref.shape) == tuple(info["logits_shape"])
    assert (logits - ref).abs().max().item() <= 1e-4
    pred = logits.argmax(0)
    assert torch.equal(pred, ref.argmax(0))
    assert torch.bincount(pred.flatten(), minlength=19).tolist() == info["mmseg_pred_hist"]


@needs_ref
def test_slide_mode_with_converted_weights(reference_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch):
    image = reference_image()
    ref = torch.from_numpy(np.load(REF / "pspnet_r18-d8.logits.npy"))
    model = reference_model
    monkeypatch.setattr(model, "test_cfg", dict(model.test_cfg))
    # one window covering the image: slide inference is whole inference, so MMSegmentation's logits again
    model.test_cfg.update(mode="slide", crop_size=[256, 384], stride=[171, 256])
    with torch.no_grad():
        one = model.predict(image)[0]
    assert (one - ref).abs().max().item() <= 1e-4 and torch.equal(one.argmax(0), ref.argmax(0))
    # overlapping 160x224 windows at stride 96x128: 2 x 2, the last row and column moved back inside the image.
    # Each window's logits are recorded as the model computes them (whole mode, checked above), and the result
    # must be their sum over the windows covering a pixel divided by that count, MMSegmentation's rule.
    model.test_cfg.update(crop_size=[160, 224], stride=[96, 128])
    windows: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = model.encode_decode

    def recording(crop: torch.Tensor) -> torch.Tensor:
        out = forward(crop)
        windows.append((crop, out))
        return out

    monkeypatch.setattr(model, "encode_decode", recording)
    with torch.no_grad():
        slide = model.predict(image)[0]
    total, count = torch.zeros_like(slide), torch.zeros(1, *slide.shape[-2:])
    origins = []
    for y in (0, 80):
        for x in (0, 96):
            crop, logits = next(
                (c, lg) for c, lg in windows if torch.equal(c, image[:, :, y : y + 160, x : x + 224])
            )
            total[:, y : y + 160, x : x + 224] += logits[0]
            count[:, y : y + 160, x : x + 224] += 1
            origins.append((y, x))
    assert len(windows) == len(origins) == 4 and count.min() >= 1
    assert (slide - total / count).abs().max().item() <= 1e-5
    # windows see less context than the whole image, yet most pixels keep MMSegmentation's whole-image class
    assert (slide.argmax(0) == ref.argmax(0)).float().mean().item() > 0.5


# --------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("key_file", KEY_PARAMS)
def test_mmseg_state_dict_round_trips_into_our_model(key_file: Path):
    """Random tensors with MMSegmentation's names and shapes convert and load strictly, nothing left over."""
    spec = json.loads(key_file.read_text())
    ours = OUR_CONFIG.get(key_file.stem)
    assert ours is not None, f"{key_file.name}: add its config name to OUR_CONFIG"
    if not (ROOT / "conf" / "model" / f"{ours}.yaml").is_file():
        pytest.skip(
            f"conf/model/{ours}.yaml does not exist yet (the model of {key_file.name} is not built here)"
        )
    dataset = next(d for d in DATASETS if d in spec["config"])
    model = build_segmentor(compose_model_dataset(ours, dataset).model)
    gen = torch.Generator().manual_seed(0)
    mm = {k: _random_like_mmseg(k, shape, gen) for k, shape in spec["keys"].items()}
    converted = convert_mmseg_state_dict(mm, model, source=key_file.name)
    assert len(converted) == len(model.state_dict())
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # renaming maps move tensors unchanged: each lands once (no tensor duplicated or dropped). The heads and
    # necks of every model are renamed; transformer backbones are also re-laid out (split, permuted, resized).
    renamed = (
        ("",)
        if isinstance(model.backbone, (TimmBackbone, UNet))
        else ("decode_head.", "auxiliary_head", "neck.")
    )
    ours_renamed = ("",) if renamed == ("",) else ("decode_head.", "auxiliary_heads.", "neck.")
    sums = sorted(round(float(v.double().sum()), 3) for k, v in mm.items() if k.startswith(renamed))
    state = model.state_dict()
    assert (
        sorted(round(float(v.double().sum()), 3) for k, v in state.items() if k.startswith(ours_renamed))
        == sums
    )


def _random_like_mmseg(name: str, shape: list[int], gen: torch.Generator) -> torch.Tensor:
    """A random tensor for an MMSegmentation state-dict entry; buffers that are a function of the config (Swin's
    relative position index, as MMSegmentation's `WindowMSA` builds it) get their true value."""
    if name.endswith("num_batches_tracked"):
        return torch.randint(0, 100, shape, generator=gen)
    if name.endswith("relative_position_index"):
        w = round(shape[0] ** 0.5)  # a square window of w x w
        seq = (torch.arange(0, (2 * w - 1) * w, 2 * w - 1)[:, None] + torch.arange(w)[None, :]).reshape(1, -1)
        return (seq + seq.T).flip(1).contiguous()
    return torch.randn(shape, generator=gen)


# ------------------------------------------------------------------------------------------------ refusals
@pytest.fixture(scope="module")
def fcn_shapes() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """fcn_r18-d8 for the 6 shapes classes with random weights, and its state dict under MMSegmentation's names."""
    torch.manual_seed(0)
    model = randomise(build_segmentor(compose_model_dataset("fcn_r18-d8", "shapes").model)).eval()
    return model, to_mmseg_names(model.state_dict())


def test_refusal_names_file_and_first_unmapped_and_missing_tensors(fcn_shapes):
    model, mm = fcn_shapes
    extra = dict(mm)
    extra["backbone.layer5.0.conv1.weight"] = torch.zeros(1)
    extra["decode_head.mystery.weight"] = torch.zeros(1)
    with pytest.raises(MMSegCheckpointError) as err:
        convert_mmseg_state_dict(extra, model, source="other.pth")
    text = str(err.value)
    assert "'other.pth'" in text and "2 of its tensors have no place" in text
    assert "backbone.layer5.0.conv1.weight" in text and "decode_head.mystery.weight" in text
    lacking = {k: v for k, v in mm.items() if not k.startswith("auxiliary_head.")}
    with pytest.raises(
        MMSegCheckpointError, match=r"tensors of the model are not in it, e\.g\. \['auxiliary_heads\.0\."
    ):
        convert_mmseg_state_dict(lacking, model, source="other.pth")
    other_classes = dict(mm)
    for k in (
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
        "auxiliary_head.conv_seg.weight",
        "auxiliary_head.conv_seg.bias",
    ):
        other_classes[k] = torch.zeros(19, *mm[k].shape[1:])
    with pytest.raises(MMSegCheckpointError, match="it predicts 19 classes and the model 6"):
        convert_mmseg_state_dict(other_classes, model, source="other.pth")
    bad_shape = dict(mm, **{"backbone.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(
        MMSegCheckpointError, match=r"backbone\.layer1\.0\.conv1\.weight: checkpoint \[64, 64, 1, 1\]"
    ):
        convert_mmseg_state_dict(bad_shape, model, source="other.pth")  # fmt: skip


def test_pretrained_path_reads_mmcv_resnet_names(tmp_path: Path):
    """`model.backbone.pretrained_path=<open-mmlab resnet*_v1c file>`: mmcv's names (deep stem `stem.N`, an
    ImageNet classifier `fc`) load into timm's ResNet-V1c; every backbone tensor comes from the file."""
    reference = randomise(TimmBackbone("resnet18c", output_stride=8), seed=1)
    mmcv = {
        re.sub(r"^body\.", "", k): v
        for k, v in to_mmseg_names({f"backbone.{k}": v for k, v in reference.state_dict().items()}).items()
    }
    mmcv = {k.removeprefix("backbone."): v for k, v in mmcv.items()}
    assert "stem.7.running_var" in mmcv and "layer4.1.bn2.weight" in mmcv
    mmcv |= {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    torch.save({"state_dict": mmcv, "meta": {}}, tmp_path / "resnet18_v1c.pth")
    loaded = TimmBackbone("resnet18c", output_stride=8, pretrained_path=str(tmp_path / "resnet18_v1c.pth"))
    got = loaded.state_dict()
    assert torch.equal(got["body.conv1.0.weight"], mmcv["stem.0.weight"])
    assert torch.equal(got["body.conv1.4.running_mean"], mmcv["stem.4.running_mean"])
    assert torch.equal(got["body.bn1.running_var"], mmcv["stem.7.running_var"])
    assert torch.equal(got["body.layer3.0.downsample.1.weight"], mmcv["layer3.0.downsample.1.weight"])
    assert all(torch.equal(got[k], v) for k, v in reference.state_dict().items())  # fmt: skip


# ------------------------------------------------------------------------- the ways a user loads a file
@pytest.fixture(scope="module")
def mmseg_file(fcn_shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fcn_shapes saved as MMEngine's CheckpointHook saves: {'meta', 'state_dict'}."""
    path = tmp_path_factory.mktemp("mmseg") / "fcn_r18-d8_shapes.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2", "seed": np.int64(0)}, "state_dict": fcn_shapes[1]}, path)
    return path


def _data_overrides(run: TinyRun) -> list[str]:
    return [f"paths.data_dir={run.data_root.parent}", *[o for o in TINY_TRAIN if o.startswith("dataset.")]]


def test_load_from_fine_tunes_from_mmseg_checkpoint(fcn_shapes, mmseg_file: Path, tmp_path: Path):
    source, mm = fcn_shapes
    model = build_segmentor(compose_model_dataset("fcn_r18-d8", "shapes").model)
    report = load_matching_weights(model, mmseg_file)
    assert len(report["loaded"]) == len(model.state_dict()) and not report["missing"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    # another class count: every tensor but the classifiers loads; they keep their initialisation
    cityscapes = build_segmentor(compose_model_dataset("fcn_r18-d8", "cityscapes").model)
    before = cityscapes.decode_head.conv_seg.weight.clone()
    report = load_matching_weights(cityscapes, mmseg_file)
    assert sorted(report["shape_mismatch"]) == sorted(
        f"{h}.conv_seg.{p}" for h in ("decode_head", "auxiliary_heads.0") for p in ("weight", "bias")
    )
    assert torch.equal(cityscapes.decode_head.conv_seg.weight, before)
    assert torch.equal(cityscapes.backbone.body.bn1.running_var, source.backbone.body.bn1.running_var)
    # a checkpoint of another model is refused with its unmapped names, not silently half-loaded
    torch.save(
        {"state_dict": dict(mm, **{"decode_head.psp_modules.0.1.conv.weight": torch.zeros(1)})},
        tmp_path / "x.pth",
    )
    with pytest.raises(ValueError, match=r"x\.pth.*decode_head\.psp_modules\.0\.1\.conv\.weight"):
        load_matching_weights(model, tmp_path / "x.pth")  # fmt: skip


def test_eval_api_and_converted_checkpoint_agree(
    fcn_shapes, mmseg_file: Path, tiny_run: TinyRun, tmp_path: Path
):
    """`src.eval ckpt_path=<mmseg.pth> model= dataset=`, the API with the same names, and the converted
    checkpoint (`src.eval ckpt_path=<out.ckpt>` with nothing else) give the same masks and metrics, which are
    the source model's own predictions."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from convert_mmseg_checkpoint import convert, main
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source, _ = fcn_shapes
    data = _data_overrides(tiny_run)
    out = tmp_path / "converted.ckpt"
    summary = convert(mmseg_file, out, ["model=fcn_r18-d8", "dataset=shapes", *data])
    assert summary["tensors"] == len(source.state_dict()) and summary["classes"] == 6
    assert main([str(mmseg_file), str(tmp_path / "no.ckpt"), "model=fcn_r18-d8"]) == 1  # no dataset: refused
    assert not (tmp_path / "no.ckpt").exists()
    base = ["num_workers=0", "device=cpu", "batch_size=2"]
    direct = compose_cfg(
        "eval",
        [f"ckpt_path={mmseg_file}", "model=fcn_r18-d8", "dataset=shapes", *data, *base],
        tmp_path / "e1",
    )
    GlobalHydra.instance().clear()
    from_mmseg = evaluate(direct)
    converted = compose_cfg("eval", [f"ckpt_path={out}", *base], tmp_path / "e2")
    GlobalHydra.instance().clear()
    from_converted = evaluate(converted)
    assert json.dumps(from_mmseg["summary"]) == json.dumps(from_converted["summary"])  # NaN-aware equality
    assert np.array_equal(from_mmseg["confusion_matrix"], from_converted["confusion_matrix"])

    api = Segmenter.from_checkpoint(mmseg_file, model="fcn_r18-d8", dataset="shapes")
    assert api.classes == Segmenter.from_checkpoint(out).classes and len(api.classes) == 6
    masks = api(tiny_run.test_images).masks
    again = Segmenter.from_checkpoint(out)(tiny_run.test_images).masks
    images = [
        torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
        for p in tiny_run.test_images
    ]
    with torch.no_grad():
        expected = [lg.argmax(0).numpy() for lg in source.predict_images(images)]
    for a, b, e in zip(masks, again, expected, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, e)
    assert (
        len(np.unique(np.stack(masks))) > 1
    )  # the random model is not constant: the comparison means something
    with pytest.raises(ValueError, match="model=pspnet_r18-d8 dataset=cityscapes"):
        Segmenter.from_checkpoint(mmseg_file)  # fmt: skip


def test_auxiliary_head_list_and_groupnorm_names():
    """MMSegmentation writes a list of auxiliary heads as `auxiliary_head.N.` (ours: `auxiliary_heads.N`) and
    names a GroupNorm of mmcv's ConvModule `gn` (ours, timm's ConvNormAct: `bn`)."""
    from src.models import EncoderDecoder
    from src.models.heads import FCNHead

    def head(in_index: int, in_channels: int) -> FCNHead:
        return FCNHead(in_channels=in_channels, channels=32, num_classes=3, in_index=in_index, num_convs=1, concat_input=False, norm="gn")  # fmt: skip

    backbone = UNet(base_channels=32, num_stages=2, strides=[1, 1], enc_num_convs=[1, 1], dec_num_convs=[1],
                    downsamples=[True], enc_dilations=[1, 1], dec_dilations=[1], norm="gn")  # fmt: skip
    model = EncoderDecoder(backbone, head(1, 32), auxiliary_head=[head(0, 64), head(1, 32)]).eval()
    randomise(model)
    mm = {}
    for name, value in model.state_dict().items():
        name = re.sub(r"^auxiliary_heads\.(\d)\.", r"auxiliary_head.\1.", name)
        mm[re.sub(r"\.bn\.", ".gn.", name)] = value.clone() + 1
    assert "auxiliary_head.1.convs.0.gn.weight" in mm and "backbone.encoder.1.1.convs.0.gn.bias" in mm
    converted = convert_mmseg_state_dict(mm, model)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.auxiliary_heads[1].convs[0].bn.weight, mm["auxiliary_head.1.convs.0.gn.weight"])
    assert torch.equal(
        model.backbone.encoder[1][1].convs[0].bn.bias, mm["backbone.encoder.1.1.convs.0.gn.bias"]
    )
