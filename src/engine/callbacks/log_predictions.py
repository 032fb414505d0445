"""Validation predictions as pictures in the training logs: the first K validation samples, every N validations.

Each sample is an image | ground truth | prediction panel, predicted as validation predicts (no TTA), sent to
TensorBoard (one stacked picture under `key`), to wandb (the image with its `predictions` / `ground_truth`
masks, which its UI overlays) and, for CSV or no image-capable logger, to `<dirpath>/step_<n>.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from src.data.datasets.base import default_palette
from src.data.io import load_image
from src.serve.visualization import grid, prediction_panel


class LogValPredictions(Callback):
    """Args:
    every_n_val: log at every N-th validation run (1: every validation).
    num_samples: how many validation samples (the first ones, the same every time).
    opacity: of the colour masks over the images.
    dirpath: folder of the PNG files (default: `<trainer.default_root_dir>/val_predictions`).
    key: the name the images are logged under.
    """

    def __init__(
        self,
        every_n_val: int = 1,
        num_samples: int = 4,
        opacity: float = 0.5,
        dirpath: str | None = None,
        key: str = "val/predictions",
    ) -> None:
        if every_n_val < 1 or num_samples < 1:
            raise ValueError(
                f"LogValPredictions: every_n_val={every_n_val}, num_samples={num_samples}; both must be >= 1"
            )
        self.every_n_val = every_n_val
        self.ignore_index = 255  # set from the module (the dataset config's) when it logs
        self.num_samples = num_samples
        self.opacity = opacity
        self.dirpath = dirpath
        self.key = key
        self.val_runs = 0

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.val_runs += 1
        if self.val_runs % self.every_n_val != 0 or not trainer.is_global_zero:
            return
        samples = self._samples(trainer)
        if not samples:
            return
        classes, palette = self._metainfo(trainer, pl_module)
        self.ignore_index = int(getattr(pl_module, "ignore_index", 255))  # the dataset config's
        images, gts, preds = self.predict(pl_module, samples)
        names = [Path(s["metas"]["img_path"]).stem for s in samples]
        self.log_to(trainer, images, gts, preds, names, classes, palette)

    # ------------------------------------------------------------ predicting
    @torch.no_grad()
    def predict(
        self, pl_module: LightningModule, samples: list[dict[str, Any]]
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """RGB images, ground-truth masks and predicted masks (uint8) of the samples, at the masks' size."""
        segmentor = pl_module.segmentor
        was_training = segmentor.training
        segmentor.eval()
        try:
            logits = segmentor.predict_images(
                [s["inputs"].to(pl_module.device) for s in samples],
                [s["metas"]["img_shape"] for s in samples],
                [tuple(s["masks"].shape[-2:]) for s in samples],
            )
        finally:
            segmentor.train(was_training)
        images, gts, preds = [], [], []
        for sample, lg in zip(samples, logits):
            gt = sample["masks"].numpy()
            images.append(_image_for(sample, gt.shape))
            gts.append(gt)
            preds.append(lg.argmax(0).to(torch.uint8).cpu().numpy())
        return images, gts, preds

    # --------------------------------------------------------------- logging
    def log_to(
        self,
        trainer: Trainer,
        images: list[np.ndarray],
        gts: list[np.ndarray],
        preds: list[np.ndarray],
        names: list[str],
        classes: list[str],
        palette: list,
    ) -> None:
        """Send the samples to every active logger, each through its own image API."""
        step = trainer.global_step
        panels = [
            prediction_panel(
                im, pr, palette, classes, gt=gt, opacity=self.opacity, ignore_index=self.ignore_index
            )
            for im, gt, pr in zip(images, gts, preds)
        ]
        picture = grid(panels, ncols=1)
        wrote_image = False
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.key, picture, global_step=step, dataformats="HWC")
                wrote_image = True
            elif isinstance(logger, WandbLogger):
                labels = {i: str(c) for i, c in enumerate(classes)} | {self.ignore_index: "ignore"}
                masks = [
                    {
                        "predictions": {"mask_data": pr, "class_labels": labels},
                        "ground_truth": {"mask_data": gt, "class_labels": labels},
                    }
                    for gt, pr in zip(gts, preds)
                ]
                logger.log_image(key=self.key, images=images, step=step, masks=masks, caption=names)
                wrote_image = True
        if not wrote_image or any(isinstance(lg, CSVLogger) for lg in trainer.loggers):
            folder = (
                Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "val_predictions"
            )
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"step_{step}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    # --------------------------------------------------------------- helpers
    def _samples(self, trainer: Trainer) -> list[dict[str, Any]]:
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "split_dataset"):
            dataset = dm.split_dataset("val")
        else:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            dataset = getattr(loader, "dataset", None)
        if dataset is None:
            return []
        return [dataset[i] for i in range(min(self.num_samples, len(dataset)))]

    @staticmethod
    def _metainfo(trainer: Trainer, pl_module: LightningModule) -> tuple[list[str], list]:
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "classes") and hasattr(dm, "palette"):
            return list(dm.classes), [list(c) for c in dm.palette]
        n = pl_module.segmentor.num_classes
        names = getattr(pl_module, "class_names", None) or [str(i) for i in range(n)]
        return list(names), default_palette(n)


def _image_for(sample: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """The RGB image matching the mask: the original file in test mode (masks at the original size), else the
    pipeline's output (transformed together with the mask)."""
    if tuple(sample["metas"]["ori_shape"]) == tuple(shape):
        return load_image(sample["metas"]["img_path"])
    image = sample["inputs"].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    if image.shape[:2] != tuple(shape):
        image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return image
