"""The inference API: a checkpoint in one line, predictions on paths, arrays, lists, folders or videos.

    seg = Segmenter.from_checkpoint("last.ckpt", device="cpu")          # tta=True: multi-scale + flip
    result = seg("street.png", out_dir="out/", opacity=0.5)          # result.masks[0]: [H, W] uint8 indices
    seg.predict_video("drive.mp4", "drive_seg.mp4")                  # every frame overlaid, same fps and size

It needs nothing but the checkpoint: the model, the test-time pipeline, classes and palette all come from the
metadata the training wrote into it. Predictions go through `EncoderDecoder.predict_images`, the same path as
validation and `src.eval`, so the masks are the same as theirs.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from tqdm import tqdm

from src.data.io import load_image
from src.data.transforms import build_pipeline
from src.loading.sources import load_model
from src.models.bn_folding import fold_batchnorm
from src.models.compile import compile_segmentor
from src.serve.visualization import overlay, prediction_panel, with_legend
from src.serve.writers import write_mask, write_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")

log = logging.getLogger(__name__)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` -> CUDA when there is one, else CPU; a named CUDA device on a machine without CUDA is an error
    here, not at the first tensor moved."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name}: CUDA is not available on this machine; use device=cpu or device=auto"
        )
    return device


def _run_record_beside(path: str | Path) -> dict[str, Any] | None:
    """The run record (`results.json`) of the run a checkpoint belongs to (`<run>/checkpoints/x.ckpt`), if any."""
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        record = folder / "results.json"
        if path.is_file() and record.is_file():
            try:
                return json.loads(record.read_text())
            except (OSError, ValueError):
                return None
    return None


def test_cfg_source() -> str:
    """ "config" when the command line of this Hydra run sets `model.test_cfg...` (the user chose the test mode),
    else "checkpoint" (an MMSegmentation checkpoint is tested as its own config says)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "checkpoint"
    keys = [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    user_set = any(k == "model.test_cfg" or k.startswith("model.test_cfg.") for k in keys)
    return "config" if user_set else "checkpoint"


def prediction_model(segmentor: Any, fold_bn: bool = True, compile: bool = False) -> Any:
    """What predicts for an eval-mode `segmentor`: a copy with its BatchNorm folded (`fold_bn`), compiled
    (`compile`), or the segmentor itself."""
    model = segmentor
    if fold_bn:
        model, folded = fold_batchnorm(segmentor)
        if folded:
            log.info(f"fold_bn: {folded} BatchNorm layers folded into their convolutions for prediction")
    if compile:
        compile_segmentor(model)
    return model


@dataclass
class SegResult:
    """Per input: `masks` (uint8 class indices at the input's size), `names`, optional `overlays` and `probs`."""

    masks: list[np.ndarray]
    names: list[str]
    overlays: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    paths: list[dict[str, str]] = field(default_factory=list)


class Segmenter:
    """Predicts class masks with a trained segmentor.

    Args:
        segmentor: an `EncoderDecoder` in eval mode.
        classes, palette: names and colours of the classes.
        pipeline: test-time transform applied to each RGB image (`pipeline(image=...)["image"]`), or None.
        device: where the model runs.
        batch_size: images (or video frames) per forward pass.
        tta: test-time augmentation: False, True (the model's `test_cfg.tta`), or `{scales: [...], flip: bool}`.
        compile: `torch.compile` the model (`src.models.compile`: eager after one warning where it fails).
        fold_bn: predict with a copy whose BatchNorms are folded into their convolutions (`src.models.bn_folding`:
            the same masks, faster); `segmentor` itself, what `save_pretrained` writes, stays as it is.
    """

    def __init__(
        self,
        segmentor: nn.Module,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        pipeline: Any = None,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        tta: Any = False,
        compile: bool = False,
        fold_bn: bool = True,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}: expected at least 1")
        self.device = torch.device(device)
        self.segmentor = segmentor.to(self.device).eval()
        self.predictor = prediction_model(self.segmentor, fold_bn, compile)  # the segmentor itself, or a copy
        self.classes = list(classes)
        self.palette = [list(c) for c in palette]
        self.pipeline = pipeline
        self.batch_size = int(batch_size)
        self.tta = tta
        self.meta: dict[str, Any] | None = None  # the checkpoint's metadata (config, classes, palette)
        self.record: dict[str, Any] | None = None  # its run's record (results.json), if found beside it

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        tta: Any = False,
        model: Any = None,
        dataset: Any = None,
        test_cfg_from: str = "checkpoint",
        backend: str = "auto",
        compile: bool = False,
        fold_bn: bool = True,
    ) -> Segmenter:
        """Model, test pipeline, classes and palette from any model source of `src.loading.sources.load_model`
        (a checkpoint of `src.train`, an exported file, ...).

        An MMSegmentation checkpoint names neither its model nor its dataset: give them, by config name
        (`model="pspnet_r18-d8", dataset="cityscapes"`, composed from `conf/` as `src.eval` does) or as config
        nodes. Given for a checkpoint of this project, they replace its own. An MMSegmentation checkpoint whose
        `meta` carries its config is tested as that config says (`test_cfg_from="config"`: as `model` says)."""
        model_cfg, dataset_cfg = model, dataset
        if isinstance(model, str) or isinstance(dataset, str):
            from src.loading.mmseg import compose_model_dataset

            composed = compose_model_dataset(
                model if isinstance(model, str) else None, dataset if isinstance(dataset, str) else None
            )
            model_cfg = composed.get("model") if isinstance(model, str) else model
            dataset_cfg = composed.get("dataset") if isinstance(dataset, str) else dataset
        segmentor, meta = load_model(
            path, device, backend, model_cfg=model_cfg, dataset_cfg=dataset_cfg, test_cfg_from=test_cfg_from
        )
        seg = cls._from_loaded(segmentor, meta, device, batch_size, tta, compile, fold_bn)
        seg.record = _run_record_beside(path)
        return seg

    @classmethod
    def from_pretrained(
        cls, source: str | Path, device: str | torch.device = "cpu", batch_size: int = 4, tta: Any = False
    ) -> Segmenter:
        """A model shared as `save_pretrained` writes it: a local folder, or a Hugging Face Hub id (`user/name`,
        downloaded once into huggingface_hub's cache and used from there without network; `src.loading.pretrained`)."""
        from src.loading.pretrained import load_pretrained

        segmentor, meta = load_pretrained(source, device)
        return cls._from_loaded(segmentor, meta, device, batch_size, tta)

    @classmethod
    def _from_loaded(
        cls,
        segmentor: Any,
        meta: dict[str, Any],
        device: str | torch.device,
        batch_size: int,
        tta: Any,
        compile: bool = False,
        fold_bn: bool = True,
    ) -> Segmenter:
        """A loaded model with the test pipeline, classes and palette of its metadata."""
        pipeline_cfg = (meta["config"].get("dataset") or {}).get("test_pipeline")
        pipeline = build_pipeline(instantiate(pipeline_cfg)) if pipeline_cfg else None
        seg = cls(
            segmentor, meta["classes"], meta["palette"], pipeline, device, batch_size, tta, compile, fold_bn
        )
        seg.meta = meta
        return seg

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `model.safetensors`, `config.json` (the composed model and dataset configs, classes, palette) and a
        `README.md` model card (the run's metrics and training command when its record was found) into `folder`:
        what `from_pretrained`, `src.eval ckpt_path=<folder>` and the Hugging Face Hub take."""
        from src.loading.pretrained import write_pretrained

        if self.meta is None:
            raise ValueError("save_pretrained needs the model's config: make the Segmenter from a checkpoint")
        return write_pretrained(folder, self.segmentor, self.meta, self.record)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """`save_pretrained` into a temporary folder and upload it to the Hub repository `repo_id` (created if
        needed; a token from `huggingface-cli login` or `token=`). Returns the repository's URL."""
        import tempfile

        from src.loading.pretrained import push_pretrained

        with tempfile.TemporaryDirectory() as tmp:
            return push_pretrained(self.save_pretrained(tmp), repo_id, private=private, token=token)

    @classmethod
    def from_zoo(
        cls, name: str, device: str | torch.device = "cpu", batch_size: int = 4, tta: Any = False
    ) -> Segmenter:
        """A checkpoint of MMSegmentation's model zoo by name (`conf/zoo.yaml`, e.g.
        "pspnet_r50-d8_4xb2-40k_cityscapes-512x1024"): downloaded once into `$SEGKIT_CACHE/zoo` and verified
        (`src.weights.zoo`), converted, built with the model and dataset configs of its entry."""
        from src.weights.zoo import ZOO_PREFIX

        return cls.from_checkpoint(ZOO_PREFIX + name.removeprefix(ZOO_PREFIX), device, batch_size, tta)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def collect_inputs(inputs: Any) -> list[tuple[str, np.ndarray | Path]]:
        """(name, path-or-array) for a path, a folder (sorted images in it), an array, or a list of those."""
        if isinstance(inputs, np.ndarray) or isinstance(inputs, str | Path):
            inputs = [inputs]
        items: list[tuple[str, np.ndarray | Path]] = []
        for i, item in enumerate(inputs):
            if isinstance(item, np.ndarray):
                items.append((f"array_{i:04d}", item))
                continue
            path = Path(item)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise FileNotFoundError(
                        f"input folder '{path}' has no images ({', '.join(IMAGE_SUFFIXES)})"
                    )
                items += [(str(p.relative_to(path).with_suffix("")), p) for p in files]
            elif path.is_file() and is_video(path):
                raise ValueError(
                    f"input '{path}' is a video: use Segmenter.predict_video(path, output) "
                    "(or `python -m src.infer input=<video>`)"
                )
            elif path.is_file():
                items.append((path.stem, path))
            else:
                raise FileNotFoundError(f"input '{path}' is neither an image file nor a folder")
        return items

    # --------------------------------------------------------------- predicting
    @torch.no_grad()
    def predict_arrays(
        self, images: Sequence[np.ndarray], return_probs: bool = False
    ) -> list[tuple[np.ndarray, Any]]:
        """RGB uint8 images -> (mask, probs or None) each, masks at each image's own size."""
        tensors, img_shapes, ori_shapes = [], [], []
        for image in images:
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            ori_shapes.append(image.shape[:2])
            if self.pipeline is not None:
                image = self.pipeline(image=image)["image"]
            img_shapes.append(image.shape[:2])
            tensors.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self.device))
        model = self.predictor
        if model is not self.segmentor:  # a folded copy: in the segmentor's test mode as it is now
            model.test_cfg, model.tta_cfg = self.segmentor.test_cfg, self.segmentor.tta_cfg
        out = []
        for lg in model.predict_images(tensors, img_shapes, ori_shapes, tta=self.tta):
            mask = lg.argmax(0).to(torch.uint8).cpu().numpy()
            probs = lg.softmax(0).float().cpu().numpy() if return_probs else None
            out.append((mask, probs))
        return out

    def __call__(
        self,
        inputs: Any,
        out_dir: str | Path | None = None,
        opacity: float = 0.5,
        return_overlays: bool = False,
        return_probs: bool = False,
        progress: bool = False,
        legend: bool = False,
        panel: bool = False,
    ) -> SegResult:
        """Predict masks; with `out_dir`, write `pred/<name>.png` (class indices) and `vis/<name>.png` (overlay).

        `return_overlays`: also return the colour overlays (RGB); `return_probs`: the softmax probabilities
        `[C, H, W]`; `legend`: overlays get a legend of the classes present on their right; `panel`: the
        visualisation is image | overlay, with the legend.
        """
        items = self.collect_inputs(inputs)
        result = SegResult(masks=[], names=[])
        starts = range(0, len(items), self.batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
            chunk = items[start : start + self.batch_size]
            images = [load_image(x) if isinstance(x, Path) else x for _, x in chunk]
            for (name, _), image, (mask, probs) in zip(
                chunk, images, self.predict_arrays(images, return_probs)
            ):
                result.masks.append(mask)
                result.names.append(name)
                if return_probs:
                    result.probs.append(probs)
                vis = (
                    self.render(image, mask, opacity, legend, panel) if (out_dir or return_overlays) else None
                )
                if return_overlays:
                    result.overlays.append(vis)
                if out_dir is not None:
                    result.paths.append(self.save(Path(out_dir), name, mask, vis))
        return result

    def render(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        opacity: float = 0.5,
        legend: bool = False,
        panel: bool = False,
    ) -> np.ndarray:
        """The palette overlay of a mask on its image, with a legend of the present classes when asked; or
        (`panel`) image | overlay with the legend."""
        if panel:
            return prediction_panel(image, mask, self.palette, self.classes, opacity=opacity)
        vis = overlay(image, mask, self.palette, opacity)
        if legend:
            vis = with_legend(vis, self.classes, self.palette, present=np.unique(mask).tolist())
        return vis

    @torch.no_grad()
    def predict_video(
        self, src: str | Path, dst: str | Path, opacity: float = 0.5, progress: bool = False
    ) -> dict[str, Any]:
        """Overlay every frame of a video (predicted `batch_size` at a time) and write them as a video of the same
        size and fps (mp4v codec). Returns frames, fps, size and path."""
        src, dst = Path(src), Path(dst)
        cap = cv2.VideoCapture(str(src))
        if not cap.isOpened():
            raise ValueError(f"input '{src}': OpenCV cannot open it as a video ({', '.join(VIDEO_SUFFIXES)})")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not fps or fps != fps or fps <= 0:  # some containers do not store it
            log.warning(f"'{src}' does not report its frame rate; writing at 25 fps")
            fps = 25.0
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        dst.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            cap.release()
            raise ValueError(f"output '{dst}': OpenCV cannot write an mp4v video there")
        bar = tqdm(
            total=total if total > 0 else None, desc=f"video {src.name}", unit="frame", disable=not progress
        )
        frames = 0
        try:
            for batch in _frame_batches(cap, self.batch_size):
                rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in batch]
                for image, (mask, _) in zip(rgb, self.predict_arrays(rgb)):
                    writer.write(cv2.cvtColor(overlay(image, mask, self.palette, opacity), cv2.COLOR_RGB2BGR))
                frames += len(batch)
                bar.update(len(batch))
        finally:
            cap.release()
            writer.release()
            bar.close()
        if frames == 0:
            raise ValueError(f"input '{src}': no frame could be read from the video")
        return {"path": str(dst), "frames": frames, "fps": fps, "size": size}

    @staticmethod
    def save(out_dir: Path, name: str, mask: np.ndarray, vis: np.ndarray | None) -> dict[str, str]:
        paths = {"pred": str(write_mask(out_dir / "pred" / f"{name}.png", mask))}
        if vis is not None:
            paths["vis"] = str(write_rgb(out_dir / "vis" / f"{name}.png", vis))
        return paths


def _frame_batches(cap: cv2.VideoCapture, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Lists of up to `batch_size` BGR frames, read in order until the video ends."""
    reads = itertools.takewhile(lambda read: read[0], iter(cap.read, None))  # (ok, frame) until not ok
    frames = (frame for _, frame in reads)
    while batch := list(itertools.islice(frames, batch_size)):
        yield batch
