"""Semantic-segmentation metrics with MMSegmentation 1.x's definitions.

``SegMetrics`` reproduces ``mmseg.evaluation.metrics.IoUMetric`` as a torchmetrics ``Metric`` whose only state is
a ``[C, C]`` int64 confusion matrix ``M`` (rows label, columns prediction), filled on the metric's device by one
``torch.bincount`` per ``update`` and summed over DDP ranks. With MMSeg's areas ``I = diag(M)`` (intersect),
``P = M.sum(0)`` (pred_label), ``L = M.sum(1)`` (label), ``total_area_to_metrics`` is::

    IoU = I / (P + L - I)    Acc = Recall = I / L    Dice = 2I / (P + L)    Precision = I / P
    Fscore = (1 + b^2) * Precision * Recall / (b^2 * Precision + Recall)
    aAcc = sum(I) / sum(L);   mX = nanmean(X) over classes

0/0 is NaN (as in MMSeg) and drops out of the means; values are fractions, not MMSeg's rounded percents.
Not torchmetrics' ``MulticlassConfusionMatrix`` / ``JaccardIndex``: they drop ignored pixels by boolean indexing,
a host sync per update, and give IoU alone.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["PER_CLASS_KEYS", "SCALAR_KEYS", "SegMetrics"]

#: Keys of ``SegMetrics.compute()`` holding one value per class (shape ``[C]``).
PER_CLASS_KEYS: tuple[str, ...] = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")
#: Keys of ``SegMetrics.compute()`` holding a scalar (0-d tensor).
SCALAR_KEYS: tuple[str, ...] = ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall")

_MAX_REPORTED_VALUES = 20


def _format_values(values: Tensor) -> str:
    """Sorted unique values of ``values`` as a short string (error path only)."""
    uniq = torch.unique(values).tolist()
    shown = ", ".join(str(v) for v in uniq[:_MAX_REPORTED_VALUES])
    more = f", ... ({len(uniq)} distinct)" if len(uniq) > _MAX_REPORTED_VALUES else ""
    return f"[{shown}{more}]"


def _as_int(value: Any, name: str) -> int:
    """``value`` as a Python int (accepts NumPy integers), else ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


class SegMetrics(Metric):
    """IoU / Acc / Dice / Fscore / Precision / Recall per class and their means, as MMSeg.

    Args:
        num_classes: number of classes ``C``; labels and predictions are in ``[0, C)``.
        ignore_index: label whose pixels are skipped whatever the prediction (as MMSeg).
        class_names: ``C`` names for :meth:`per_class_table` (default ``"0"``, ``"1"``, ...).
        beta: weight of recall in the F-score (MMSeg's ``beta``, default 1 = F1).
        validate_labels: if True (default), ``update`` raises ``ValueError`` naming any non-ignored target
            value or integer prediction outside ``[0, C)``, at the cost of one device-to-host sync per update.
            If False such pixels are silently dropped.
        threshold: with ``num_classes=2``, one-channel logits ``[N, 1, H, W]`` (a binary sigmoid model, see
            ``src.models.binary``) are read as foreground where ``sigmoid(logit) > threshold`` (default 0.3,
            MMSegmentation's); the table still has two rows, background and foreground.
        **kwargs: forwarded to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        beta: float = 1.0,
        validate_labels: bool = True,
        threshold: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        num_classes = _as_int(num_classes, "num_classes")
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        ignore_index = _as_int(ignore_index, "ignore_index")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        if class_names is None:
            names = [str(i) for i in range(num_classes)]
        else:
            names = [str(n) for n in class_names]
            if len(names) != num_classes:
                raise ValueError(f"class_names has {len(names)} entries but num_classes is {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = names
        self.beta = float(beta)
        self.validate_labels = bool(validate_labels)
        self.threshold = float(threshold)
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    # ------------------------------------------------------------------ update
    def _to_indices(self, preds: Tensor, target: Tensor) -> tuple[Tensor, bool]:
        """Return integer predictions shaped like ``target`` and whether they came from logits."""
        if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
            raise TypeError(
                f"preds and target must be torch.Tensor, got {type(preds).__name__} "
                f"and {type(target).__name__}"
            )
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        if preds.is_floating_point() and preds.ndim == target.ndim + 1 and preds.ndim in (3, 4):
            # Logits / probabilities: [N, C, H, W] with target [N, H, W] or [C, H, W] with [H, W].
            cdim = preds.ndim - 3
            spatial = preds.shape[:cdim] + preds.shape[cdim + 1 :]
            if spatial != target.shape:
                raise ValueError(
                    f"preds logits shape {tuple(preds.shape)} does not match target shape "
                    f"{tuple(target.shape)} (expected logits [N, C, H, W] for target [N, H, W])"
                )
            if preds.shape[cdim] == 1 and self.num_classes == 2:  # one sigmoid logit: background/foreground
                return (preds.select(cdim, 0).sigmoid() > self.threshold).long(), True
            if preds.shape[cdim] != self.num_classes:
                raise ValueError(
                    f"preds logits shape {tuple(preds.shape)} has {preds.shape[cdim]} channels in dim "
                    f"{cdim} but num_classes is {self.num_classes}"
                )
            return preds.argmax(dim=cdim), True
        if preds.shape != target.shape:
            raise ValueError(
                f"preds shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}; "
                "expected class indices of the same shape as target ([N, H, W] or [H, W]) "
                "or floating-point logits [N, C, H, W]"
            )
        if preds.is_floating_point() or preds.is_complex():
            raise TypeError(
                f"preds has floating dtype {preds.dtype} and the same shape as target; pass integer "
                "class indices, or logits with a class dimension ([N, C, H, W])"
            )
        return preds, False

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` class indices ``[N, H, W]`` / ``[H, W]`` or logits ``[N, C, H, W]`` / ``[C, H, W]``
        (argmax taken), ``target`` integer labels (``ignore_index`` skipped). Skipped pixels go to an extra
        trash bin ``C * C`` of the one ``bincount`` (boolean indexing would sync the host)."""
        pred, from_logits = self._to_indices(preds, target)
        c = self.num_classes
        target = target.long()
        pred = pred.long()

        keep = target != self.ignore_index
        in_range = (target >= 0) & (target < c)
        if not from_logits:  # argmax output is in range by construction
            in_range &= (pred >= 0) & (pred < c)

        if self.validate_labels:
            bad = keep & ~in_range
            if bool(bad.any()):  # the single host sync of the optional check
                raise ValueError(self._describe_bad(pred, target, keep))
        keep &= in_range

        index = torch.where(keep, target * c + pred, c * c)
        counts = torch.bincount(index.reshape(-1), minlength=c * c + 1)
        self.confmat += counts[: c * c].reshape(c, c)

    def _describe_bad(self, pred: Tensor, target: Tensor, keep: Tensor) -> str:
        """Error message naming the out-of-range values (only built when raising)."""
        c = self.num_classes
        parts = []
        bad_t = keep & ((target < 0) | (target >= c))
        if bool(bad_t.any()):
            parts.append(
                f"target has values {_format_values(target[bad_t])} outside [0, {c}) that are not "
                f"ignore_index={self.ignore_index} ({int(bad_t.sum())} pixels); check num_classes, "
                "ignore_index and the label mapping (e.g. reduce_zero_label)"
            )
        bad_p = keep & ((pred < 0) | (pred >= c))
        if bool(bad_p.any()):
            parts.append(
                f"preds has class indices {_format_values(pred[bad_p])} outside [0, {c}) at "
                f"{int(bad_p.sum())} non-ignored pixels"
            )
        return "SegMetrics.update: " + "; ".join(parts) + f" (num_classes={c})"

    # ----------------------------------------------------------------- compute
    def compute(self) -> dict[str, Tensor]:
        """``[C]`` tensors for ``PER_CLASS_KEYS``, 0-d for ``SCALAR_KEYS``: float32 on the metric's device,
        computed in float64 from the exact counts. A class predicted but never labelled has IoU = Dice =
        Precision = 0 and NaN Acc/Recall/Fscore; as in MMSeg, Fscore is also NaN when Precision = Recall = 0."""
        device = self.confmat.device
        # float64 is unavailable on MPS; the matrix is tiny, so do the arithmetic on CPU there.
        cm = self.confmat.to("cpu" if device.type == "mps" else device, torch.float64)
        inter = cm.diagonal()
        area_pred = cm.sum(dim=0)
        area_label = cm.sum(dim=1)
        union = area_pred + area_label - inter

        b2 = self.beta**2
        precision = inter / area_pred
        recall = inter / area_label
        per_class = {
            "IoU": inter / union,
            "Acc": recall,
            "Dice": 2 * inter / (area_pred + area_label),
            "Fscore": (1 + b2) * precision * recall / (b2 * precision + recall),
            "Precision": precision,
            "Recall": recall,
        }
        out: dict[str, Tensor] = {k: v.to(device, torch.float32) for k, v in per_class.items()}
        out["aAcc"] = (inter.sum() / area_label.sum()).to(device, torch.float32)
        for k, v in per_class.items():
            out["m" + k] = torch.nanmean(v).to(device, torch.float32)
        return out

    # ----------------------------------------------------------------- helpers
    def per_class_table(self, results: dict[str, Tensor] | None = None) -> list[dict[str, Any]]:
        """One row per class, ``{"class": name, "IoU": float, ..., "Recall": float}``, of ``results`` (a
        ``compute()`` output, computed when not given)."""
        if results is None:
            results = self.compute()
        columns = {k: torch.as_tensor(results[k]).detach().cpu().double().tolist() for k in PER_CLASS_KEYS}
        return [
            {"class": name, **{k: float(columns[k][i]) for k in PER_CLASS_KEYS}}
            for i, name in enumerate(self.class_names)
        ]

    def report(self) -> dict[str, Any]:
        """Everything the tables and files show: `summary` (floats), `per_class` (rows) and `confusion_matrix`
        (a CPU `[C, C]` tensor: rows ground truth, columns prediction). Under DDP the counts are summed over the
        ranks (a collective: call it on every rank)."""
        results = self.compute()
        # compute() restores each rank's own counts afterwards: sum them again (a no-op on one process)
        with self.sync_context():
            confmat = self.confmat.detach().cpu().clone()
        return {
            "summary": self.summary(results),
            "per_class": self.per_class_table(results),
            "confusion_matrix": confmat,
        }

    def summary(self, results: dict[str, Tensor] | None = None) -> dict[str, float]:
        """The ``SCALAR_KEYS`` (aAcc and the class means) as Python floats."""
        if results is None:
            results = self.compute()
        return {k: float(torch.as_tensor(results[k]).detach().cpu().double()) for k in SCALAR_KEYS}
