"""SegDataModule gives its split datasets the shared settings of the dataset config: the folder, the split's
pipeline (a copy each) and the ignore label, unless a split dataset names its own."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import albumentations as A

from src.data.datamodule import SegDataModule
from src.data.datasets import ShapesDataset
from src.data.synthetic import ensure_shapes_dataset


def test_split_datasets_get_the_folder_and_their_own_copy_of_the_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    ensure_shapes_dataset(root=str(root), num_train=2, num_val=1, num_test=1, image_size=32, seed=0)
    other = tmp_path / "other"
    ensure_shapes_dataset(root=str(other), num_train=3, num_val=1, num_test=1, image_size=32, seed=1)
    part = partial(ShapesDataset, img_dir="img_dir/train", ann_dir="ann_dir/train")
    dm = SegDataModule(
        train_dataset=[part, partial(part, data_root=str(other))],  # the second names its own folder
        val_dataset=partial(ShapesDataset, img_dir="img_dir/val", ann_dir="ann_dir/val", test_mode=True),
        data_root=str(root),
        crop_size=[16, 16],
        train_pipeline=[A.RandomCrop(16, 16), A.HorizontalFlip(p=0.5)],
        test_pipeline=[],
        ignore_index=255,
        num_workers=0,
    )
    first, second = dm.split_dataset("train").datasets
    assert (first.data_root, second.data_root) == (root, other)
    assert (len(first), len(second)) == (2, 3)
    assert first[0]["inputs"].shape[-2:] == second[0]["inputs"].shape[-2:] == (16, 16)  # the train pipeline
    crops = [t for ds in (first, second) for t in ds.pipeline.transforms if isinstance(t, A.RandomCrop)]
    assert len(crops) == 2 and crops[0] is not crops[1]  # one copy per dataset: its random state its own
    val = dm.split_dataset("val")
    assert val.data_root == root and val[0]["inputs"].shape[-2:] == (
        32,
        32,
    )  # the test pipeline: whole images
    assert dm.crop_size == (16, 16)  # ignore_index reaches every split too: tests/test_ignore_index.py
