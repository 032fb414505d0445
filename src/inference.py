"""The inference API: a checkpoint in one line, predictions on paths, arrays, lists or folders.

    seg = Segmenter.from_checkpoint("last.ckpt", device="cpu")
    result = seg("street.png", out_dir="out/")      # result.masks[0]: [H, W] uint8 class indices

It needs nothing but the checkpoint: the model, the test-time pipeline, classes and palette all come from the
metadata the training wrote into it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from src.checkpoint import load_segmentor
from src.data.io import load_image
from src.data.transforms import build_pipeline
from src.visualization import overlay

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        segmentor: nn.Module,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        pipeline: Any = None,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
    ) -> None:
        self.device = torch.device(device)
        self.segmentor = segmentor.to(self.device).eval()
        self.classes = list(classes)
        self.palette = [list(c) for c in palette]
        self.pipeline = pipeline
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 4
    ) -> Segmenter:
        segmentor, meta = load_segmentor(path, device)
        pipeline_cfg = (meta["config"].get("dataset") or {}).get("test_pipeline")
        pipeline = build_pipeline(instantiate(pipeline_cfg)) if pipeline_cfg else None
        return cls(segmentor, meta["classes"], meta["palette"], pipeline, device, batch_size)

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
        out = []
        for lg in self.segmentor.predict_images(tensors, img_shapes, ori_shapes):
            mask = lg.argmax(0).to(torch.uint8).cpu().numpy()
            probs = lg.softmax(0).float().cpu().numpy() if return_probs else None
            out.append((mask, probs))
        return out

    def _batches(self, items: list[tuple[str, Any]]) -> Iterator[list[tuple[str, Any]]]:
        for start in range(0, len(items), self.batch_size):
            yield items[start : start + self.batch_size]

    def __call__(
        self,
        inputs: Any,
        out_dir: str | Path | None = None,
        opacity: float = 0.5,
        return_overlays: bool = False,
        return_probs: bool = False,
        progress: bool = False,
    ) -> SegResult:
        """Predict masks; with `out_dir`, write `pred/<name>.png` (class indices) and `vis/<name>.png` (overlay)."""
        items = self.collect_inputs(inputs)
        result = SegResult(masks=[], names=[])
        batches = self._batches(items)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=-(-len(items) // self.batch_size), desc="predict", unit="batch")
        for chunk in batches:
            images = [load_image(x) if isinstance(x, Path) else x for _, x in chunk]
            for (name, _), image, (mask, probs) in zip(
                chunk, images, self.predict_arrays(images, return_probs)
            ):
                result.masks.append(mask)
                result.names.append(name)
                if return_probs:
                    result.probs.append(probs)
                vis = overlay(image, mask, self.palette, opacity) if (out_dir or return_overlays) else None
                if return_overlays:
                    result.overlays.append(vis)
                if out_dir is not None:
                    result.paths.append(self.save(Path(out_dir), name, mask, vis))
        return result

    @staticmethod
    def save(out_dir: Path, name: str, mask: np.ndarray, vis: np.ndarray | None) -> dict[str, str]:
        pred_path = out_dir / "pred" / f"{name}.png"
        pred_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(pred_path), mask)
        paths = {"pred": str(pred_path)}
        if vis is not None:
            vis_path = out_dir / "vis" / f"{name}.png"
            vis_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(vis_path), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
            paths["vis"] = str(vis_path)
        return paths
