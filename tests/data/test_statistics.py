"""Dataset statistics (counts, frequencies, median-frequency weights, bad files) and the picture grids."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from rich.console import Console
from torch.utils.data import ConcatDataset

from src.data.datamodule import SegDataModule
from src.data.datasets import BaseSegDataset
from src.data.statistics import (
    SplitStats,
    format_class_weights,
    format_report,
    median_frequency_weights,
    scan_dataset,
    scan_split,
)
from src.serve.browse import photo_wall, pipeline_grid
from src.utils import resolvers  # noqa: F401

CLASSES = ["a", "b", "c", "d"]
PALETTE = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]]
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def write_pair(
    root: Path, name: str, mask: np.ndarray, image_hw: tuple[int, int] | None = None, value: int | None = None
) -> None:
    """A lossless PNG image (constant grey `value`, or a pattern) and its index mask."""
    h, w = image_hw or mask.shape
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    if value is None:
        img = (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 251).astype(np.uint8)
    else:
        img = np.full((h, w, 3), value, dtype=np.uint8)
    cv2.imwrite(str(root / "img" / f"{name}.png"), img)
    cv2.imwrite(str(root / "ann" / f"{name}.png"), mask.astype(np.uint8))


def dataset(root: Path, **kw) -> BaseSegDataset:
    return BaseSegDataset(
        data_root=root,
        img_dir="img",
        ann_dir="ann",
        img_suffix=".png",
        classes=CLASSES,
        palette=PALETTE,
        **kw,
    )


def test_counts_and_frequencies_equal_numpy(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.choice([0, 1, 2, 255], size=(5, 7), p=[0.5, 0.2, 0.2, 0.1]) for _ in range(3)]
    masks.append(np.full((6, 4), 0))
    for i, m in enumerate(masks):
        write_pair(tmp_path, f"s{i}", m)
    stats = scan_dataset(dataset(tmp_path), "train")

    flat = np.concatenate([m.ravel() for m in masks])
    counts = np.bincount(flat[flat != 255], minlength=4)
    assert stats.num_samples == 4 and stats.problems == []
    assert stats.pixel_counts == counts.tolist()
    assert stats.ignore_pixels == int((flat == 255).sum())
    np.testing.assert_allclose(stats.frequencies, counts / counts.sum())
    assert stats.image_counts == [sum(int((m == c).any()) for m in masks) for c in range(4)]
    present = [sum(int((m != 255).sum()) for m in masks if (m == c).any()) for c in range(4)]
    assert stats.present_pixels == present
    assert stats.image_sizes == {"7x5": 3, "4x6": 1}
    assert stats.unseen_classes == ["d"]


def test_median_frequency_weights_hand_computed(tmp_path, caplog):
    # image 1: 3 a + 1 b; image 2: 2 a + 2 c; d never. freq a = 5/8, b = 1/4, c = 2/4; median 1/2
    write_pair(tmp_path, "one", np.array([[0, 0], [0, 1]]))
    write_pair(tmp_path, "two", np.array([[0, 2], [0, 2]]))
    stats = scan_dataset(dataset(tmp_path), "train")
    assert "classes ['d'] never appear (class weight 0)" in caplog.text
    assert stats.pixel_counts == [5, 1, 2, 0] and stats.present_pixels == [8, 4, 4, 0]
    np.testing.assert_allclose(stats.class_weights, [0.8, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(median_frequency_weights([5, 1, 2, 0], [8, 4, 4, 0]), [0.8, 2.0, 1.0, 0.0])


def test_class_weights_text_is_a_valid_override_and_yaml():
    text = format_class_weights(
        SplitStats("train", CLASSES, pixel_counts=[5, 1, 2, 0], present_pixels=[8, 4, 4, 0])
    )
    assert "class_weight: [0.8000, 2.0000, 1.0000, 0.0000]" in text
    assert "model.decode_head.losses[0].class_weight" in text
    override = text.split("'")[-2]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override])
    assert list(cfg.model.decode_head.losses[0].class_weight) == [0.8, 2.0, 1.0, 0.0]


def test_bad_files_are_all_reported_with_paths_and_the_scan_goes_on(tmp_path):
    write_pair(tmp_path, "good", np.array([[0, 1], [2, 3]]))
    write_pair(tmp_path, "mismatch", np.zeros((4, 6)), image_hw=(5, 6))
    write_pair(tmp_path, "outofrange", np.array([[0, 7], [1, 1]]))
    write_pair(tmp_path, "corrupt", np.zeros((2, 2)))
    (tmp_path / "img" / "corrupt.png").write_bytes(b"not a png")
    stats = scan_dataset(dataset(tmp_path), "val")

    assert stats.num_samples == 4 and stats.pixel_counts == [1, 1, 1, 1]
    by_name = {Path(p.image).stem: p for p in stats.problems}
    assert sorted(by_name) == ["corrupt", "mismatch", "outofrange"]
    assert str(tmp_path / "ann" / "mismatch.png") in by_name["mismatch"].message
    assert "6x4" in by_name["mismatch"].message and "6x5" in by_name["mismatch"].message
    assert str(tmp_path / "ann" / "outofrange.png") in by_name["outofrange"].message
    assert "[7]" in by_name["outofrange"].message
    assert str(tmp_path / "img" / "corrupt.png") in by_name["corrupt"].message
    out = Console(file=io.StringIO(), width=300, record=True)
    out.print(format_report(stats))
    text = out.export_text()
    assert "3 with problems" in text and "mismatch.png" in text and "outofrange.png" in text


def test_dataset_label_handling_applies(tmp_path):
    write_pair(tmp_path, "m", np.array([[0, 1, 2], [3, 4, 255]]))
    stats = scan_dataset(dataset(tmp_path, reduce_zero_label=True), "train")
    assert stats.pixel_counts == [1, 1, 1, 1] and stats.ignore_pixels == 2 and stats.problems == []


def test_concatenated_parts_are_summed(tmp_path):
    write_pair(tmp_path / "x", "p", np.array([[0, 1]]))
    write_pair(tmp_path / "y", "q", np.array([[1, 1]]))
    stats = scan_dataset(ConcatDataset([dataset(tmp_path / "x"), dataset(tmp_path / "y")]), "train")
    assert stats.num_samples == 2 and stats.pixel_counts == [1, 3, 0, 0]


def test_a_split_that_cannot_be_built_is_one_problem(tmp_path):
    fn = partial(BaseSegDataset, data_root=tmp_path / "nowhere", img_dir="img", classes=CLASSES)
    stats, ds = scan_split(SegDataModule(train_dataset=fn, val_dataset=fn), "val")
    assert ds is None and stats.num_samples == 0
    assert len(stats.problems) == 1 and str(tmp_path / "nowhere" / "img") in stats.problems[0].message


def test_photo_wall_blends_the_palette_and_hatches_ignore(tmp_path):
    mask = np.zeros((8, 8))
    mask[:, 4:] = 1
    mask[0, 0] = 255
    write_pair(tmp_path, "m", mask, value=100)
    wall = photo_wall(dataset(tmp_path), n=4, ncols=2, opacity=0.5, legend=False)
    y0, x0 = 2 + 14, 2  # grid pad, caption strip
    assert wall.shape == (y0 + 8 + 2, x0 + 8 + 2, 3)
    assert wall[y0 + 3, x0 + 6].tolist() == [50, 150, 50]  # 0.5 grey + 0.5 (0, 200, 0)
    assert wall[y0 + 3, x0 + 2].tolist() == [150, 50, 50]  # 0.5 grey + 0.5 (200, 0, 0)
    assert wall[y0, x0].tolist() == [255, 255, 255]  # ignore, on a hatch line
    with_legend = photo_wall(dataset(tmp_path), n=4, ncols=2)
    assert with_legend.shape[1] > wall.shape[1] and with_legend.std() > 0


def test_pipeline_grid_has_a_row_per_sample_and_differing_repeats(tmp_path):
    for name in ("a", "b", "c"):
        write_pair(tmp_path, name, np.arange(256).reshape(16, 16) % 3)
    pipe = A.Compose([A.RandomCrop(8, 8), A.HorizontalFlip(p=0.5)])
    img = pipeline_grid(dataset(tmp_path, pipeline=pipe), n=2, repeats=3, legend=False)
    cell_h, cell_w = 14 + 16, 16  # the original (16 px) sets the cell size
    assert img.shape == (2 * (cell_h + 2) + 2, 4 * (cell_w + 2) + 2, 3)
    augs = [img[2 + 14 : 2 + 14 + 8, x : x + 8] for x in (2 + 18, 2 + 36, 2 + 54)]
    assert not all(np.array_equal(augs[0], a) for a in augs[1:])
    with pytest.raises(ValueError, match="test_mode"):
        pipeline_grid(dataset(tmp_path, pipeline=pipe, test_mode=True))
