"""Every named dataset config against a tiny synthetic copy of its on-disk layout.

For each `conf/dataset/<name>.yaml`: the files are written where the real release (after its converter) puts
them, the real config is composed and instantiated, and the splits, sample sizes and label handling
(reduce_zero_label, label_map, palette-mode PNGs, 255) are checked against the values written.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from src.data.converters.download import REGISTRY
from src.data.datamodule import SegDataModule
from src.data.datasets import BaseSegDataset
from src.data.transforms import rescale_size
from tests.helpers import compose_cfg

HW = (40, 48)  # synthetic image size (h, w)
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253


@dataclass(frozen=True)
class Part:
    """One folder pair of a layout: the names written in it, and the split file listing them (if any)."""

    img_dir: str
    ann_dir: str
    names: tuple[str, ...]
    split_file: str | None = None
    palette_png: bool = False  # masks written as palette-mode PNGs (VOC's SegmentationClass)


@dataclass(frozen=True)
class Layout:
    root: str  # data_root, relative to paths.data_dir
    num_classes: int  # the official count
    img_suffix: str
    seg_suffix: str
    stored: tuple[int, ...]  # mask values on disk ...
    expected: tuple[int, ...]  # ... and what the dataset must return for them
    parts: tuple[Part, ...]
    train_len: int = 2


def _retinal(root: str, seg_suffix: str, train: tuple[str, ...], val: tuple[str, ...]) -> Layout:
    return Layout(
        root, 2, ".png", seg_suffix, (0, 1), (0, 1),
        (Part("images/training", "annotations/training", train),
         Part("images/validation", "annotations/validation", val)),
    )  # fmt: skip


LAYOUTS: dict[str, Layout] = {
    # trainIds 0..18 and 255 are kept as they are
    "cityscapes": Layout(
        "cityscapes", 19, "_leftImg8bit.png", "_gtFine_labelTrainIds.png", (0, 5, 18, 255), (0, 5, 18, 255),
        (Part("leftImg8bit/train", "gtFine/train",
              ("aachen/aachen_000000_000019", "bremen/bremen_000001_000019")),
         Part("leftImg8bit/val", "gtFine/val",
              ("frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"))),
    ),
    # reduce_zero_label: 0 (other) -> 255, k -> k - 1
    "ade20k": Layout(
        "ade/ADEChallengeData2016", 150, ".jpg", ".png", (0, 1, 75, 150), (255, 0, 74, 149),
        (Part("images/training", "annotations/training", ("ADE_train_00000001", "ADE_train_00000002")),
         Part("images/validation", "annotations/validation", ("ADE_val_00000001", "ADE_val_00000002"))),
    ),
    # palette-mode PNGs read as indices; train = train.txt + aug.txt (concatenated)
    "voc12aug": Layout(
        "VOCdevkit/VOC2012", 21, ".jpg", ".png", (0, 1, 20, 255), (0, 1, 20, 255),
        (Part("JPEGImages", "SegmentationClass", ("2007_000032", "2007_000039"),
              "ImageSets/Segmentation/train.txt", palette_png=True),
         Part("JPEGImages", "SegmentationClassAug", ("2008_000002", "2008_000003", "2008_000007"),
              "ImageSets/Segmentation/aug.txt"),
         Part("JPEGImages", "SegmentationClass", ("2007_000033", "2007_000042"),
              "ImageSets/Segmentation/val.txt", palette_png=True)),
        train_len=5,
    ),
    # label_map {11: 255}: SegNet's "unlabelled"
    "camvid": Layout(
        "CamVid", 11, ".png", ".png", (0, 5, 10, 11), (0, 5, 10, 255),
        (Part("train", "trainannot", ("0001TP_006690", "0001TP_006720")),
         Part("val", "valannot", ("0016E5_07959", "0016E5_07961")),
         Part("test", "testannot", ("0001TP_008550", "0001TP_008580"))),
    ),
    # converted: 31 classes 0..30 (Wall = 30), Void already 255
    "camvid32": Layout(
        "CamVid32", 31, ".png", ".png", (0, 17, 30, 255), (0, 17, 30, 255),
        (Part("train", "train_annot", ("0001TP_006690", "0001TP_006720")),
         Part("val", "val_annot", ("0016E5_07959", "0016E5_07961")),
         Part("test", "test_annot", ("0001TP_008550", "0001TP_008580"))),
    ),
    "stanford_background": Layout(
        "stanford_background", 8, ".jpg", ".png", (0, 3, 7, 255), (0, 3, 7, 255),
        (Part("images", "labels", ("0000047", "0000051"), "splits/train.txt"),
         Part("images", "labels", ("0000059", "0000072"), "splits/val.txt")),
    ),
    "drive": _retinal("DRIVE", "_manual1.png", ("21_training", "22_training"), ("01_test", "02_test")),
    "chase_db1": _retinal("CHASE_DB1", "_1stHO.png", ("Image_01L", "Image_01R"), ("Image_11L", "Image_11R")),
    "stare": _retinal("STARE", ".ah.png", ("im0001", "im0002"), ("im0081", "im0082")),
    "hrf": _retinal("HRF", ".png", ("01_h", "01_g"), ("06_h", "06_dr")),
    "custom": Layout(
        "custom", 2, ".jpg", ".png", (0, 1, 255), (0, 1, 255),
        (Part("images/train", "masks/train", ("a", "b")), Part("images/val", "masks/val", ("c", "d"))),
    ),
}  # fmt: skip
NAMED = [n for n in LAYOUTS if n != "custom"]


def stripes(values: tuple[int, ...], hw: tuple[int, int] = HW) -> np.ndarray:
    """A mask of vertical stripes, one per value (every value present, none dominant)."""
    idx = np.arange(hw[1]) * len(values) // hw[1]
    return np.broadcast_to(np.asarray(values, np.uint8)[idx], hw).copy()


def write_layout(root: Path, layout: Layout, stored: tuple[int, ...] | None = None) -> np.ndarray:
    """Write `layout` under `root`; returns the mask every sample has."""
    mask = stripes(stored or layout.stored)
    rng = np.random.default_rng(0)
    for part in layout.parts:
        for name in part.names:
            img = root / part.img_dir / f"{name}{layout.img_suffix}"
            ann = root / part.ann_dir / f"{name}{layout.seg_suffix}"
            img.parent.mkdir(parents=True, exist_ok=True)
            ann.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img), rng.integers(0, 256, (*HW, 3), dtype=np.uint8))
            pil = Image.fromarray(mask, mode="P" if part.palette_png else "L")
            if part.palette_png:
                pil.putpalette(VOC_PALETTE)
            pil.save(ann)
        if part.split_file:
            (root / part.split_file).parent.mkdir(parents=True, exist_ok=True)
            (root / part.split_file).write_text("".join(f"{n}\n" for n in part.names))
    return mask


def test_every_dataset_config_has_a_layout():
    configs = {p.stem for p in (Path(__file__).parents[2] / "conf" / "dataset").glob("*.yaml")}
    assert configs - {"shapes"} == set(LAYOUTS)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_config_reads_its_layout(name, tmp_path):
    layout = LAYOUTS[name]
    mask = write_layout(tmp_path / layout.root, layout)
    cfg = compose_cfg("train", [f"dataset={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, SegDataModule)
    assert (
        len(dm.classes) == len(dm.palette) == dm.num_classes == cfg.dataset.num_classes == layout.num_classes
    )
    assert cfg.model.decode_head.num_classes == layout.num_classes

    train, val, test = (dm.split_dataset(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (layout.train_len, 2, 2)

    # training: a crop of exactly crop_size (padded with 255 where the image is smaller), no new labels
    crop = tuple(cfg.dataset.crop_size)
    sample = train[0]
    assert tuple(sample["inputs"].shape) == (3, *crop) and tuple(sample["masks"].shape) == crop
    assert set(sample["masks"].unique().tolist()) <= set(layout.expected) | {255}

    # val / test: the image resized to the config's scale, the mask untouched at the original size
    lut = np.arange(256)
    lut[list(layout.stored)] = layout.expected
    scale = cfg.dataset.test_pipeline[0].scale
    for ds in (val, test):
        sample = ds[1]
        assert tuple(sample["inputs"].shape[1:]) == rescale_size(HW, scale)
        assert sample["metas"]["ori_shape"] == HW
        np.testing.assert_array_equal(sample["masks"].numpy(), lut[mask])


def test_scale_makes_retinal_resize_a_no_op(tmp_path):
    """MMSegmentation's img_scale for the retinal sets is the images' own size (long, short edges)."""
    sizes_wh = {"drive": (565, 584), "chase_db1": (999, 960), "stare": (700, 605), "hrf": (3504, 2336)}
    for name, (w, h) in sizes_wh.items():
        cfg = compose_cfg("train", [f"dataset={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
        assert rescale_size((h, w), cfg.dataset.test_pipeline[0].scale) == (h, w), name


def _convert_subcommands() -> set[str]:
    path = Path(__file__).parents[2] / "scripts" / "convert_dataset.py"
    spec = importlib.util.spec_from_file_location("convert_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module.build_parser()
    return set(parser._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", NAMED)
def test_missing_folder_names_it_and_the_commands_that_create_it(name, tmp_path):
    cfg = compose_cfg("train", [f"dataset={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    dm = instantiate(cfg.dataset)
    with pytest.raises(FileNotFoundError) as err:
        dm.split_dataset("train")
    msg = str(err.value)
    first = LAYOUTS[name].parts[0]
    assert str(tmp_path / LAYOUTS[name].root / first.img_dir) in msg
    downloads = re.findall(r"scripts/download_dataset\.py (\w+)", msg)
    converts = re.findall(r"scripts/convert_dataset\.py (\w+)", msg)
    assert downloads or converts, msg
    assert set(downloads) <= set(REGISTRY), msg  # the commands named exist
    assert set(converts) <= _convert_subcommands(), msg


def test_voc_train_concatenates_train_and_aug_with_their_own_masks(tmp_path):
    layout = LAYOUTS["voc12aug"]
    write_layout(tmp_path / layout.root, layout)
    cfg = compose_cfg("train", ["dataset=voc12aug", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    train = instantiate(cfg.dataset).split_dataset("train")
    masks = [Path(train[i]["metas"]["seg_map_path"]) for i in range(len(train))]
    assert [p.parent.name for p in masks] == ["SegmentationClass"] * 2 + ["SegmentationClassAug"] * 3
    assert [p.stem for p in masks] == [*layout.parts[0].names, *layout.parts[1].names]


def test_custom_classes_from_the_command_line(tmp_path):
    root = tmp_path / "mine"
    mask = write_layout(root, LAYOUTS["custom"], stored=(0, 1, 2, 255))
    overrides = [
        "dataset=custom",
        f"paths.data_dir={tmp_path}",
        f"dataset.data_root={root}",
        "dataset.train_dataset.classes=[road,car,person]",
        "dataset.num_classes=3",
    ]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    assert cfg.model.decode_head.num_classes == 3
    dm = instantiate(cfg.dataset)
    assert dm.classes == ["road", "car", "person"] and dm.num_classes == 3 and len(dm.palette) == 3
    val = dm.split_dataset("val")
    assert isinstance(val, BaseSegDataset) and val.metainfo["classes"] == ["road", "car", "person"]
    np.testing.assert_array_equal(val[0]["masks"].numpy(), mask)

    # classes without the matching num_classes: a clear error, not a silently wrong model
    cfg = compose_cfg("train", overrides[:-1], tmp_path / "run")
    with pytest.raises(
        InstantiationException, match=r"dataset.num_classes=2 but the dataset declares 3 classes"
    ):
        instantiate(cfg.dataset)
