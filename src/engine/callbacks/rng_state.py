"""Random state in checkpoints, so that a resumed run draws the same random numbers as an uninterrupted one.

Lightning (2.6) restores weights, optimiser, schedule and loop counters but re-seeds the random generators, so a
resumed run's data order, augmentations and dropout differ. This callback saves with every checkpoint the state
of torch's CPU and CUDA generators, numpy's and Python's, and the training pipelines' Albumentations generators
(`src/data/transforms.seed_pipeline`), and restores it when `fit` resumes. Three rules make it hold:
- the state saved is the one after the last training batch, even when the checkpoint is written later;
- validation and the sanity check (their loader iterators draw from torch's generator) put it back after them,
  so `val_interval` does not change training either;
- on resume it is restored at load and again at `on_train_start`: Lightning creates a training iterator before
  that hook and, resuming at an epoch's end, replaces it; the first one's draw must not shift the stream.

Exact when the checkpoint ends an epoch (Lightning restarts an interrupted epoch from its first batch) and no
loader worker persists (`persistent_workers=false`: a persistent worker's generators are in no checkpoint).
Under DDP rank 0's state is saved and every rank restores it (`seed_everything` gives all the same streams).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn


class RNGStateCheckpoint(Callback):
    """Saves and restores the random state of training (see the module docstring)."""

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] | None = None
        self._loaded: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None

    # ---------------------------------------------------------------- snapshots
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is not None:
            restore_rng_state(trainer, self._loaded)
            self._loaded = None
        self._snapshot = capture_rng_state(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._snapshot = capture_rng_state(trainer)

    on_train_epoch_start = on_sanity_check_start = on_train_batch_end

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_snapshot(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._restore_snapshot(trainer)

    def _restore_snapshot(self, trainer: L.Trainer) -> None:
        if self._snapshot is not None:
            restore_rng_state(trainer, self._snapshot)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self._snapshot is not None:
            return self._snapshot
        return capture_rng_state(self._trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # called only when `fit` resumes, after the datasets are set up and before any iterator is created
        self._snapshot = self._loaded = state_dict
        restore_rng_state(self._trainer, state_dict)


def capture_rng_state(trainer: L.Trainer | None = None) -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python generators, and the training pipelines', as checkpoint-safe data
    (tensors, numbers, strings: loadable with `weights_only=True`)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
        "pipelines": [
            [(g.random_generator.bit_generator.state, g.py_random.getstate()) for g in _generator_owners(p)]
            for p in _train_pipelines(trainer)
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(trainer: L.Trainer | None, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    pipelines = _train_pipelines(trainer)
    saved = state["pipelines"]
    counts = [len(_generator_owners(p)) for p in pipelines]
    if counts != [len(s) for s in saved]:
        # a resume with another dataset.train_pipeline: it goes on, with the pipelines' own seeding
        rank_zero_warn(
            f"The checkpoint's random state holds {[len(s) for s in saved]} augmentation generators per training "
            f"pipeline, dataset.train_pipeline has {counts}: their state is not restored, so the augmentations "
            "differ from those of an uninterrupted run"
        )
        return
    for pipeline, generators in zip(pipelines, saved):
        for owner, (np_state, py_state) in zip(_generator_owners(pipeline), generators):
            owner.random_generator.bit_generator.state = np_state
            owner.py_random.setstate(_as_tuples(py_state))


def _train_pipelines(trainer: L.Trainer | None) -> list[Any]:
    """The Albumentations pipelines of the training dataset (its parts, when concatenated)."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    dataset = getattr(datamodule, "datasets", {}).get("train") if datamodule is not None else None
    if dataset is None:
        return []
    parts = getattr(dataset, "datasets", [dataset])
    return [p.pipeline for p in parts if getattr(p, "pipeline", None) is not None]


def _generator_owners(pipeline: Any) -> list[Any]:
    """The pipeline and its transforms (recursively) that hold Albumentations generators."""
    owners = [pipeline] if hasattr(pipeline, "random_generator") and hasattr(pipeline, "py_random") else []
    for transform in getattr(pipeline, "transforms", None) or []:
        owners.extend(_generator_owners(transform))
    return owners


def _as_tuples(value: Any) -> Any:
    """Python's generator state is nested tuples; a checkpoint may give them back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
