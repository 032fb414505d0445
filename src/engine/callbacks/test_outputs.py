"""The test after training as tables and pictures, beyond the scalars the `LightningModule` logs.

- wandb: the per-class table (`test/per_class`), the row-normalised confusion matrix as an image
  (`test/confusion_matrix`) and as wandb's interactive chart (`test/confusion_matrix_chart`);
- TensorBoard: the per-class table as Markdown text and the confusion matrix as an image, under the same keys;
- always, in `<run dir>/test/`: the files `python -m src.eval` writes (`src.serve.writers`).

It reads the module's `test_metrics`, which keeps its counts from the end of a test until the next one starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from src.loading.checkpoint import last_checkpoint
from src.metrics import PER_CLASS_KEYS, SegMetrics
from src.serve.writers import markdown_table, save_confusion_matrix, save_metrics
from src.utils.logging import get_logger

log = get_logger(__name__)


class LogTestReport(Callback):
    """Args:
    dirpath: folder of the files (default `<trainer.default_root_dir>/test`).
    key: prefix of the logged tables and images.
    """

    def __init__(self, dirpath: str | None = None, key: str = "test") -> None:
        self.dirpath = dirpath
        self.key = key

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metric = getattr(pl_module, "test_metrics", None)
        if not isinstance(metric, SegMetrics) or not metric.update_called:
            return
        results = metric.report()  # on every rank (a collective under DDP), written by rank zero
        if not trainer.is_global_zero:
            return
        rows, summary = results["per_class"], results["summary"]
        classes = [str(r["class"]) for r in rows]
        confmat = np.asarray(results["confusion_matrix"])
        out = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "test"
        # the tested checkpoint: trainer.test's ckpt_path, else the run's last one, else none (train=false
        # without a checkpoint tests the weights in memory)
        ckpt_path = trainer.ckpt_path or last_checkpoint(trainer)
        info = {"ckpt_path": None if ckpt_path is None else str(ckpt_path), "backend": "torch"}
        save_metrics(out, rows, summary, info | {"split": "test", "tta": False})
        save_confusion_matrix(out, confmat, classes)
        from src.serve.visualization import plot_confusion_matrix  # matplotlib, imported once a test ends

        picture = plot_confusion_matrix(confmat, classes)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self.to_wandb(logger, rows, confmat, picture, classes)
            elif isinstance(logger, TensorBoardLogger):
                self.to_tensorboard(logger, rows, summary, picture, trainer.global_step)

    # ---------------------------------------------------------------- wandb
    def to_wandb(
        self,
        logger: WandbLogger,
        rows: list[dict[str, Any]],
        confmat: np.ndarray,
        picture: np.ndarray,
        classes: list[str],
    ) -> None:
        import wandb

        columns = ["class", *PER_CLASS_KEYS]
        data = [[r["class"], *(_finite(r[k]) for k in PER_CLASS_KEYS)] for r in rows]
        logger.log_table(key=f"{self.key}/per_class", columns=columns, data=data)
        logger.log_image(
            key=f"{self.key}/confusion_matrix",
            images=[picture],
            caption=["rows: ground truth (normalised to 1), columns: prediction"],
        )
        # wandb's own confusion-matrix chart takes (actual, predicted, count) rows: built from the summed
        # matrix (wandb.plot.confusion_matrix would need every pixel's label and prediction)
        table = wandb.Table(
            columns=["Actual", "Predicted", "nPredictions"],
            data=[
                [classes[i], classes[j], int(confmat[i, j])]
                for i in range(len(classes))
                for j in range(len(classes))
            ],
        )
        chart = wandb.plot_table(
            "wandb/confusion_matrix/v1",
            table,
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": "Test confusion matrix (pixels)"},
        )
        logger.experiment.log({f"{self.key}/confusion_matrix_chart": chart})

    # ----------------------------------------------------------- tensorboard
    def to_tensorboard(
        self,
        logger: TensorBoardLogger,
        rows: list[dict[str, Any]],
        summary: dict[str, float],
        picture: np.ndarray,
        step: int,
    ) -> None:
        writer = logger.experiment
        writer.add_text(f"{self.key}/per_class", markdown_table(rows, summary), global_step=step)
        writer.add_image(f"{self.key}/confusion_matrix", picture, global_step=step, dataformats="HWC")
        writer.flush()


def _finite(value: float) -> float | None:
    """NaN (a class absent from labels and predictions) as None: JSON, and so wandb tables, have no NaN."""
    return None if value is None or math.isnan(value) else float(value)
