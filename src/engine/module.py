"""The `LightningModule`: training, validation and test steps around an `EncoderDecoder`.

It owns what the model should not: the optimiser with per-module parameter groups (`optim.py`), the
per-iteration LR schedule (`schedulers.py`), the metrics and their logging (`train/loss`, `val/mIoU`,
`val/IoU/<class>`) and the checkpoint's metadata (resolved config, classes, palette). Precision, accumulation,
DDP and checkpointing are the Trainer's (`conf/runtime/`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from src.engine.optim import build_param_groups
from src.engine.schedulers import build_lr_scheduler
from src.loading.checkpoint import CHECKPOINT_META_KEY
from src.metrics import SegMetrics
from src.models.layers import convert_sync_batchnorm, revert_sync_batchnorm
from src.utils.logging import get_logger
from src.utils.rich_utils import print_metrics_table

log = get_logger(__name__)

__all__ = ["CHECKPOINT_META_KEY", "SegmentationModule", "TimmSyncBatchNorm", "quiet_epoch_sync_advice"]


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's `sync_batchnorm=True` (runtime `sync_bn`) with timm's conversion.

    Lightning's `nn.SyncBatchNorm.convert_sync_batchnorm` turns timm's `BatchNormAct2d` (every `conv_module` of
    the heads and necks) into a plain SyncBatchNorm that no longer calls its ReLU; timm's conversion keeps it.
    On CPUs it converts nothing (PyTorch's SyncBatchNorm refuses CPU tensors while training): per-process
    BatchNorm, as `norm: syncbn` there (`setup` below) and MMEngine. `apply` runs after the model is moved."""

    def apply(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters(), torch.empty(0)).device
        if device.type == "cpu":
            log.warning(
                "runtime.sync_bn on CPUs: BatchNorm is not converted to SyncBatchNorm (PyTorch synchronises batch "
                "statistics on GPUs only); each process normalises with its own batch"
            )
            return model
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_batchnorm(model)


@contextmanager
def quiet_epoch_sync_advice() -> Iterator[None]:
    """Silence, inside the block only, Lightning's advice to log epoch metrics with `sync_dist=True` under DDP:
    torchmetrics already reduced them over the ranks. Lightning gives it at the epoch's end, outside the
    module's hooks, so `src.train` wraps `fit`/`test` in this."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*when logging on epoch level in distributed setting",
            category=PossibleUserWarning,
        )
        yield


class SegmentationModule(LightningModule):
    """Args:
    segmentor: an `EncoderDecoder` (any module with `data_preprocessor`, `loss`, `predict`, `postprocess`).
    optimizer: partial optimiser, called with the parameters.
    scheduler: partial LR scheduler, called with the optimiser; stepped every iteration.
    class_names: for per-class metric keys; taken from the datamodule when not given.
    ignore_index: label ignored by the metrics.
    paramwise: per-module LR / weight-decay rules (`schedule.paramwise`, see `src/engine/optim.py`); None: one group.
    warmup_iters, warmup_ratio: linear warm-up from `warmup_ratio` x each group's LR before `scheduler`.
    clip_grad: gradient clipping by norm, MMSegmentation's `clip_grad` (`schedule.clip_grad`):
        `{max_norm, norm_type (default 2)}`, or None for none. Done here and only here, after the mixed-precision
        unscale: Lightning's own clipping knows the 2-norm only.
    channels_last: keep the segmentor's weights and its input images in channels_last (NHWC) memory format
        (`runtime.channels_last`): oneDNN's and cuDNN's fast convolution layout, needed for bf16 speed on CPUs.
        Values are those of the default layout (up to float rounding); checkpoints load either way.
    """

    def __init__(
        self,
        segmentor: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        paramwise: Mapping[str, Any] | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 1e-6,
        clip_grad: Mapping[str, float] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.optimizer_fn = optimizer
        self.scheduler_fn = scheduler
        self.paramwise = dict(paramwise) if paramwise else None
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.clip_grad = _clip_settings(clip_grad)
        self.channels_last = bool(channels_last)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        n = segmentor.num_classes
        self.val_metrics = SegMetrics(n, ignore_index=ignore_index, class_names=class_names)
        self.test_metrics = SegMetrics(n, ignore_index=ignore_index, class_names=class_names)
        self.checkpoint_meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.strategy.root_device.type == "cpu":
            synced = [m for m in self.segmentor.modules() if isinstance(m, nn.SyncBatchNorm)]
            if synced:  # before the strategy wraps the model and the optimiser takes the parameters
                revert_sync_batchnorm(self.segmentor)
                log.warning(
                    f"norm: syncbn on CPUs: {len(synced)} SyncBatchNorm layers train as BatchNorm (PyTorch "
                    "synchronises batch statistics on GPUs only); each process normalises with its own batch"
                )
        if self.channels_last:  # before the optimiser exists, so that its state takes the same layout
            self.segmentor.to(memory_format=torch.channels_last)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.class_names is None and dm is not None and hasattr(dm, "classes"):
            self.class_names = list(dm.classes)
        if self.class_names is not None:
            if len(self.class_names) != self.segmentor.num_classes:
                raise ValueError(
                    f"the dataset has {len(self.class_names)} classes but the model predicts "
                    f"{self.segmentor.num_classes}; set model num_classes to match"
                )
            for metric in (self.val_metrics, self.test_metrics):
                metric.class_names = list(self.class_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmentor(images)

    # --------------------------------------------------------------- training
    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """(total loss, each named term, batch size) of a collated batch: the work of a training step without its
        logging (also what `src.tools.benchmark`'s bare PyTorch loop runs). No host-device synchronisation."""
        images, masks = self.segmentor.data_preprocessor(batch["inputs"], batch["masks"])
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        losses = self.segmentor.loss(images, masks)
        return torch.stack(list(losses.values())).sum(), losses, images.shape[0]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, losses, bs = self.compute_losses(batch)
        # averaged over DDP ranks, as MMSegmentation's logged losses. Not `prog_bar=True`, which reads them back
        # to the host after every step (a sync per step on a GPU): `LossProgressBar` reads train/loss itself
        self.log("train/loss", loss, batch_size=bs, sync_dist=True)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=bs, sync_dist=True)
        return loss

    # ------------------------------------------------------- validation/test
    def predict_batch(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Class-index maps at each image's original size, for a collated batch."""
        metas = batch["metas"]
        logits = self.segmentor.predict_images(
            batch["inputs"], [m["img_shape"] for m in metas], [m["ori_shape"] for m in metas]
        )
        return [lg.argmax(0) for lg in logits]

    def _eval_step(self, batch: dict[str, Any], metric: SegMetrics) -> None:
        preds = self.predict_batch(batch)
        masks = [m.to(preds[0].device) for m in batch["masks"]]
        if all(p.shape == preds[0].shape for p in preds):
            metric.update(torch.stack(preds), torch.stack(masks))
        else:
            for pred, mask in zip(preds, masks):
                metric.update(pred, mask)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, metric: SegMetrics, prefix: str) -> dict[str, Any]:
        report = metric.report()  # a collective under DDP: every rank computes it
        summary, rows = report["summary"], report["per_class"]
        logged: dict[str, float] = {f"{prefix}/{k}": v for k, v in summary.items()}
        for row in rows:
            for key in ("IoU", "Acc", "Dice"):
                logged[f"{prefix}/{key}/{row['class']}"] = row[key]
        # The metric state is already reduced over ranks by torchmetrics: no second sync here.
        self.log_dict(logged, sync_dist=False, rank_zero_only=False)
        return report

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_metrics(self.val_metrics, "val")
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        # the test metric keeps its counts until the next test: the test report (src/engine/callbacks/test_outputs.py)
        # reads them from `test_metrics` when the test ends
        _print_table(self._log_metrics(self.test_metrics, "test"), "test")

    # ------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> dict[str, Any]:
        if self.paramwise:
            keywords = getattr(self.optimizer_fn, "keywords", {})
            if "lr" not in keywords:
                raise ValueError("schedule.paramwise needs the base LR as schedule.optimizer.lr")
            params: Any = build_param_groups(
                self.segmentor, keywords["lr"], keywords.get("weight_decay", 0.0), self.paramwise
            )
        else:
            params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_fn(params=params)
        if self.scheduler_fn is None:
            return {"optimizer": optimizer}
        scheduler = build_lr_scheduler(optimizer, self.scheduler_fn, self.warmup_iters, self.warmup_ratio)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """`clip_grad` by its norm type; with none, Lightning's own settings (the Trainer's, None by default)."""
        if self.clip_grad is None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(
            params, self.clip_grad["max_norm"], norm_type=self.clip_grad["norm_type"]
        )

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.checkpoint_meta


@rank_zero_only
def _print_table(results: dict[str, Any], split: str) -> None:
    print_metrics_table(results["per_class"], results["summary"], title=f"{split} metrics per class")


def _clip_settings(clip_grad: Mapping[str, float] | None) -> dict[str, float] | None:
    """`{max_norm, norm_type}` with the 2-norm by default; None or `max_norm: null` turn clipping off."""
    if not clip_grad or clip_grad.get("max_norm") is None:
        return None
    unknown = set(clip_grad) - {"max_norm", "norm_type"}
    if unknown:
        raise ValueError(
            f"schedule.clip_grad: unknown keys {sorted(unknown)}; expected max_norm and norm_type"
        )
    return {"max_norm": float(clip_grad["max_norm"]), "norm_type": float(clip_grad.get("norm_type", 2.0))}
