"""The `LightningDataModule`: builds the split datasets from partial configs and their loaders.

Datasets are given as partials (Hydra `_partial_: true`) so that nothing touches the disk before
`prepare_data` (which may generate or convert the data) has run. A split may list several partials, which
are concatenated (MMSegmentation's `ConcatDataset`, e.g. VOC train + SBD aug).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import torch
from lightning import LightningDataModule
from lightning.fabric.utilities.seed import pl_worker_init_function
from omegaconf import ListConfig
from torch.utils.data import ConcatDataset, DataLoader, Dataset, get_worker_info

from src.data.datasets.base import BaseSegDataset, seg_collate
from src.data.transforms import seed_pipeline
from src.utils.logging import get_logger

log = get_logger(__name__)

DatasetFn = Callable[..., BaseSegDataset]


class SegDataModule(LightningDataModule):
    """Args:
    train_dataset, val_dataset, test_dataset: partials of a `BaseSegDataset` subclass, or lists of them.
    num_classes: declared in the config for the model; checked against the dataset's classes.
    batch_size: training batch per device; val_batch_size: for validation and test.
    num_workers, pin_memory, persistent_workers: DataLoader settings; `num_workers="auto"`: `auto_num_workers`.
    prepare: optional callable run once per node before setup (generate, download or convert data).
    name: the dataset's short name, used in run names.
    data_root: the dataset's folder, given to every split dataset that does not name its own.
    train_pipeline, test_pipeline: the transforms of the training split and of validation and test (each split
        dataset gets its own copy unless it names its own `pipeline`); inference applies `test_pipeline`.
    crop_size: the training crop `(h, w)`, written once in the dataset config (its pipelines, the run name and
        the benchmark read `dataset.crop_size`).
    scale: MMSegmentation's `img_scale`, the `(w, h)` box the standard pipelines resize to.
    decoder: how the training split reads its files (`BaseSegDataset`'s `decoder`); the others read them whole.
    ignore_index: the label that is neither trained on nor evaluated (losses, preprocessor and metrics read it).
    label_map: stored label -> training label for every split, in place of each split dataset's own
        (`+dataset.label_map={255:1}` for masks saved as 0/255).
    """

    def __init__(
        self,
        train_dataset: DatasetFn | list[DatasetFn],
        val_dataset: DatasetFn | list[DatasetFn],
        test_dataset: DatasetFn | list[DatasetFn] | None = None,
        num_classes: int | None = None,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int | str = "auto",
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prepare: Callable[[], Any] | None = None,
        name: str | None = None,
        data_root: str | None = None,
        crop_size: Any = None,
        scale: Any = None,
        decoder: str = "plain",
        train_pipeline: Any = None,
        test_pipeline: Any = None,
        ignore_index: int = 255,
        label_map: dict[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.dataset_fns = {
            "train": _as_list(train_dataset),
            "val": _as_list(val_dataset),
            "test": _as_list(test_dataset or val_dataset),
        }
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self._workers_logged = False  # `auto` is logged once, at the first loader
        self.prepare = prepare
        self.name = name
        self.data_root = data_root
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size is not None else None
        self.scale = tuple(int(v) for v in scale) if scale is not None else None
        self.decoder = decoder
        self.pipelines = {"train": train_pipeline, "val": test_pipeline, "test": test_pipeline}
        self.ignore_index = int(ignore_index)
        self.label_map = {int(k): int(v) for k, v in dict(label_map).items()} if label_map else None
        self.datasets: dict[str, Dataset] = {}
        self.metainfo = _metainfo(self.dataset_fns["train"][0])
        if num_classes is not None and num_classes != len(self.metainfo["classes"]):
            raise ValueError(
                f"dataset.num_classes={num_classes} but the dataset declares {len(self.metainfo['classes'])} "
                f"classes {self.metainfo['classes']}"
            )
        self.num_classes = len(self.metainfo["classes"])

    @property
    def classes(self) -> list[str]:
        return self.metainfo["classes"]

    @property
    def test_pipeline(self) -> Any:
        """The transforms of validation and test, also what inference applies to new images."""
        return self.pipelines["test"]

    @property
    def palette(self) -> list[list[int]]:
        return self.metainfo["palette"]

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            self.split_dataset(split)

    def build_split(self, split: str, **overrides: Any) -> Dataset:
        """A new dataset of `split` (its parts concatenated), with keyword `overrides` (e.g. `test_mode`)."""
        if split not in self.dataset_fns:
            raise ValueError(f"split='{split}': expected one of {sorted(self.dataset_fns)}")
        overrides = {"ignore_index": self.ignore_index, **overrides}  # one ignore label: the dataset config's
        if self.label_map is not None:
            overrides = {"label_map": self.label_map, **overrides}
        shared = {"data_root": self.data_root, "pipeline": self.pipelines.get(split)}
        if split == "train":
            shared["decoder"] = self.decoder
        parts = []
        for fn in self.dataset_fns[split]:
            own = fn.keywords if isinstance(fn, partial) else {}
            # a copy of the pipeline per dataset, as separate configs would give: its random state is its own
            defaults = {k: copy.deepcopy(v) for k, v in shared.items() if v is not None and k not in own}
            parts.append(fn(**{**defaults, **overrides}))
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def split_dataset(self, split: str) -> Dataset:
        """The dataset of `split` (train, val or test), built on first use."""
        if split not in self.datasets:
            self.datasets[split] = self.build_split(split)
        return self.datasets[split]

    def loader_workers(self) -> int:
        """`num_workers`, with `auto` resolved for the processes this node runs (the Trainer's devices)."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        trainer = self.trainer  # LightningDataModule's: None until a Trainer uses it
        processes = trainer.num_devices if trainer is not None else 1
        workers = auto_num_workers(processes)
        if not self._workers_logged:
            self._workers_logged = True
            log.info(
                f"DataLoader workers: {workers} per process (num_workers=auto: {usable_cpus()} usable cores, "
                f"{processes} process(es) on this node)"
            )
        return workers

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = self.loader_workers()
        return DataLoader(
            self.split_dataset(split),
            batch_size=self.batch_size if split == "train" else self.val_batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            collate_fn=seg_collate,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask: a container's or job's CPU set), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_num_workers(processes: int = 1, cap: int = 8) -> int:
    """Loader workers per training process: the usable cores shared among the node's processes, 1 to `cap`.

    Each worker runs single-threaded (`seed_worker`), so one per core keeps the cores busy without
    oversubscribing them; beyond about 8 per GPU more workers only cost memory."""
    return max(1, min(cap, usable_cpus() // max(1, processes)))


def seed_worker(worker_id: int) -> None:
    """Lightning's worker seeding, plus each dataset's Albumentations pipeline (seeded apart from numpy), and
    OpenCV single-threaded (as MMEngine does): the workers already run in parallel, and OpenCV's thread pool
    would only oversubscribe the cores."""
    cv2.setNumThreads(0)
    pl_worker_init_function(worker_id)
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    for part in getattr(dataset, "datasets", [dataset]):
        seed_pipeline(getattr(part, "pipeline", None), info.seed if info is not None else None)


def _as_list(fn: DatasetFn | list[DatasetFn]) -> list[DatasetFn]:
    return list(fn) if isinstance(fn, (list, tuple, ListConfig)) else [fn]


def _metainfo(dataset_fn: DatasetFn) -> dict[str, list]:
    """Classes and palette of a dataset partial without building it (so without touching the disk)."""
    if isinstance(dataset_fn, partial) and isinstance(dataset_fn.func, type):
        kw = dataset_fn.keywords
        return dataset_fn.func.resolve_metainfo(kw.get("classes"), kw.get("palette"))
    return dataset_fn().metainfo
