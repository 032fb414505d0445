"""The inference API and `src.infer`: inputs of every kind, batching, probabilities, overlays, TTA and video."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from src.data.io import load_image, load_mask
from src.infer import infer
from src.loading.checkpoint import load_segmentor
from src.serve.segmenter import Segmenter
from tests.helpers import TinyRun, compose_cfg

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def _direct_mask(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """The prediction computed by hand: normalise, run backbone and head, resize, argmax."""
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - MEAN) / STD
    with torch.no_grad():
        logits = model.decode_head(model.backbone(x))
        logits = torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear")
    return logits[0].argmax(0).to(torch.uint8).numpy()


def test_api_accepts_a_path_an_array_a_list_and_a_folder(tiny_run: TinyRun):
    seg = Segmenter.from_checkpoint(tiny_run.ckpt, device="cpu", batch_size=3)  # 4 images: 2 batches
    paths = tiny_run.test_images
    images = [load_image(p) for p in paths]
    expected = [_direct_mask(seg.segmentor, im) for im in images]
    assert len({int(v) for m in expected for v in np.unique(m)}) > 2, (
        "the tiny model predicts several classes"
    )

    folder = seg(tiny_run.data_root / "img_dir" / "test")
    assert folder.names == [p.stem for p in paths]
    for got, want in zip(folder.masks, expected):
        assert got.dtype == np.uint8 and got.shape == (32, 32)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(seg(str(paths[1])).masks[0], expected[1])
    np.testing.assert_array_equal(seg(images[2]).masks[0], expected[2])
    mixed = seg([paths[0], images[3]])
    assert mixed.names == [paths[0].stem, "array_0001"]
    np.testing.assert_array_equal(mixed.masks[1], expected[3])


def test_api_returns_probabilities_overlays_and_writes_files(tiny_run: TinyRun, tmp_path):
    seg = Segmenter.from_checkpoint(tiny_run.ckpt)
    path = tiny_run.test_images[0]
    result = seg(path, out_dir=tmp_path, opacity=0.5, return_overlays=True, return_probs=True)
    mask, probs, vis = result.masks[0], result.probs[0], result.overlays[0]
    assert probs.shape == (6, 32, 32)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), mask)
    image = load_image(path).astype(np.float64)
    palette = np.asarray(seg.palette, dtype=np.float64)
    np.testing.assert_array_equal(vis, np.round(0.5 * image + 0.5 * palette[mask]).astype(np.uint8))
    np.testing.assert_array_equal(load_mask(tmp_path / "pred" / f"{path.stem}.png"), mask)
    np.testing.assert_array_equal(load_image(tmp_path / "vis" / f"{path.stem}.png"), vis)
    # legend and panel variants are wider than the image
    assert seg(path, return_overlays=True, legend=True).overlays[0].shape[1] > 32
    assert seg(path, return_overlays=True, panel=True).overlays[0].shape[1] > 2 * 32


def test_api_tta_uses_the_checkpoints_tta_config(tiny_run: TinyRun):
    plain = Segmenter.from_checkpoint(tiny_run.ckpt)
    tta = Segmenter.from_checkpoint(tiny_run.ckpt, tta=True)
    image = load_image(tiny_run.test_images[0])
    ((mask, probs),) = tta.predict_arrays([image], return_probs=True)
    # the checkpoint's test_cfg.tta: scales 0.75, 1.0, 1.5 with flip -> 6 views averaged
    assert tta.segmentor.tta_cfg.num_views == 6
    x = torch.from_numpy(image).permute(2, 0, 1)
    expected = tta.segmentor.predict_images([x], tta={"scales": [0.75, 1.0, 1.5], "flip": True})[0].softmax(0)
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mask, expected.argmax(0).numpy())
    ((_, plain_probs),) = plain.predict_arrays([image], return_probs=True)
    assert not np.allclose(probs, plain_probs, atol=1e-3)


def test_api_runs_a_model_trained_with_syncbn_on_cpu(tiny_run: TinyRun, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    model, _ = load_segmentor(tiny_run.ckpt)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    ckpt["state_dict"] = {f"segmentor.{k}": v for k, v in synced.state_dict().items()}
    path = tmp_path / "syncbn.ckpt"
    torch.save(ckpt, path)
    seg = Segmenter.from_checkpoint(path, device="cpu")
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in seg.segmentor.modules())
    np.testing.assert_array_equal(
        seg(tiny_run.test_images[0]).masks[0],
        Segmenter.from_checkpoint(tiny_run.ckpt)(tiny_run.test_images[0]).masks[0],
    )


def test_bad_inputs_are_clear_errors(tiny_run: TinyRun, tmp_path):
    seg = Segmenter.from_checkpoint(tiny_run.ckpt)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        seg(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no images"):
        seg(tmp_path / "empty")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    with pytest.raises(ValueError, match="is a video: use Segmenter.predict_video"):
        seg(video)
    with pytest.raises(ValueError, match="cannot open it as a video"):
        seg.predict_video(video, tmp_path / "out.mp4")


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _read_video(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps, size


def _infer_cfg(tmp_path: Path, *overrides: str):
    cfg = compose_cfg("infer", list(overrides), tmp_path / "run")
    GlobalHydra.instance().clear()
    return cfg


def test_infer_cli_video_in_video_out_same_frames_fps_and_size(tiny_run: TinyRun, tmp_path):
    # 7 frames (not a multiple of batch_size=3) of 40x32, cut from the test images, at 12 fps
    images = [np.pad(load_image(p), ((0, 0), (0, 8), (0, 0)), mode="edge") for p in tiny_run.test_images]
    frames = [images[i % len(images)] for i in range(7)]
    src = tmp_path / "clip.mp4"
    _write_video(src, frames, fps=12.0)
    source_frames, _, _ = _read_video(src)

    out = tmp_path / "seg.mp4"
    cfg = _infer_cfg(tmp_path, f"ckpt_path={tiny_run.ckpt}", f"input={src}", f"output={out}", "batch_size=3")
    info = infer(cfg)
    assert info["frames"] == 7
    written, fps, size = _read_video(out)
    assert len(written) == 7 and fps == pytest.approx(12.0) and size == (40, 32)
    # every frame is the overlay of that frame's prediction, up to the codec's loss: much nearer to it than to
    # the source frame
    seg = Segmenter.from_checkpoint(tiny_run.ckpt)
    for src_frame, out_frame in zip(source_frames, written):
        expected = seg(src_frame, return_overlays=True).overlays[0]
        to_overlay = np.abs(out_frame.astype(int) - expected.astype(int)).mean()
        to_source = np.abs(out_frame.astype(int) - src_frame.astype(int)).mean()
        assert to_overlay < to_source / 2, (to_overlay, to_source)

    # output as a folder: <folder>/<name>.mp4
    info = infer(
        _infer_cfg(tmp_path, f"ckpt_path={tiny_run.ckpt}", f"input={src}", f"output={tmp_path / 'vids'}")
    )
    assert (
        Path(info["path"]) == tmp_path / "vids" / "clip.mp4" and len(_read_video(Path(info["path"]))[0]) == 7
    )


def test_infer_cli_folder_writes_masks_and_overlays(tiny_run: TinyRun, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(tiny_run.data_root / "img_dir" / "test", folder)
    out = tmp_path / "out"
    cfg = _infer_cfg(
        tmp_path, f"ckpt_path={tiny_run.ckpt}", f"input={folder}", f"output={out}", "legend=true"
    )
    paths = infer(cfg)
    assert len(paths) == 4
    api = Segmenter.from_checkpoint(tiny_run.ckpt)(folder)
    for name, mask in zip(api.names, api.masks):
        np.testing.assert_array_equal(load_mask(out / "pred" / f"{name}.png"), mask)
        assert load_image(out / "vis" / f"{name}.png").shape[1] > 32  # the overlay with its legend
    with pytest.raises(ValueError, match="is a video file but input"):
        infer(
            _infer_cfg(
                tmp_path, f"ckpt_path={tiny_run.ckpt}", f"input={folder}", f"output={tmp_path / 'x.mp4'}"
            )
        )


def test_folded_batchnorm_predicts_the_same_masks_in_the_segmentors_current_test_mode(tiny_run: TinyRun):
    folded = Segmenter.from_checkpoint(tiny_run.ckpt)
    plain = Segmenter.from_checkpoint(tiny_run.ckpt, fold_bn=False)
    assert folded.predictor is not folded.segmentor and plain.predictor is plain.segmentor
    assert (
        folded.segmentor.state_dict().keys() == plain.segmentor.state_dict().keys()
    )  # what save_pretrained writes
    images = [load_image(p) for p in tiny_run.test_images]
    for seg in (folded, plain):  # the test mode is read off `segmentor` at each call
        seg.segmentor.test_cfg = {"mode": "slide", "crop_size": [16, 16], "stride": [8, 8]}
    got, want = folded(images, return_probs=True), plain(images, return_probs=True)
    for a, b, pa, pb in zip(got.masks, want.masks, got.probs, want.probs):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(pa, pb, atol=1e-5)


def test_prediction_model_compiles_the_folded_copy_and_leaves_the_model_eager():
    """`compile=true` in src.eval / src.infer / Segmenter compiles what predicts, not the model that is saved."""
    from hydra.utils import instantiate

    from src.models.compile import is_compiled
    from src.serve.segmenter import prediction_model
    from tests.helpers import tiny_model_cfg

    model = instantiate(tiny_model_cfg(num_classes=3)).eval()
    predictor = prediction_model(model, fold_bn=True, compile=True)  # compiled lazily: nothing runs here
    assert predictor is not model and is_compiled(predictor) and not is_compiled(model)
    assert prediction_model(model, fold_bn=False) is model
