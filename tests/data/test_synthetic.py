"""Tests for the built-in procedural "shapes" dataset (src/data/synthetic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data.synthetic import (
    GENERATOR_VERSION,
    IGNORE_INDEX,
    SHAPES_CLASSES,
    SHAPES_PALETTE,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)

TINY = {"num_train": 6, "num_val": 2, "num_test": 2, "image_size": 48, "seed": 0}
SPLITS = ("train", "val", "test")


def _files(root: Path) -> dict[str, bytes]:
    """All files under img_dir/ann_dir, keyed by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for sub in ("img_dir", "ann_dir")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


def _masks(root: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted((root / "ann_dir").rglob("*.png"))]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "tiny"
    generate_shapes_dataset(root, **TINY)
    return root


def test_public_constants() -> None:
    assert len(SHAPES_CLASSES) == 6 and SHAPES_CLASSES[0] == "background"
    assert len(set(SHAPES_CLASSES)) == 6
    assert len(SHAPES_PALETTE) == 6 and len(set(SHAPES_PALETTE)) == 6
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in SHAPES_PALETTE)
    assert IGNORE_INDEX == 255


def test_layout_counts_sizes_modes(tiny_root: Path) -> None:
    for split in SPLITS:
        expected = [f"{split}_{i:04d}.png" for i in range(TINY[f"num_{split}"])]
        for sub in ("img_dir", "ann_dir"):
            assert sorted(p.name for p in (tiny_root / sub / split).iterdir()) == expected
        for name in expected:
            img = Image.open(tiny_root / "img_dir" / split / name)
            ann = Image.open(tiny_root / "ann_dir" / split / name)
            assert img.mode == "RGB" and ann.mode == "L"
            assert img.size == ann.size == (TINY["image_size"], TINY["image_size"])
            values = set(np.unique(np.array(ann)).tolist())
            assert values <= {*range(len(SHAPES_CLASSES)), IGNORE_INDEX}


def test_meta_json(tiny_root: Path) -> None:
    meta = json.loads((tiny_root / "meta.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["spec"] == TINY
    assert meta["classes"] == list(SHAPES_CLASSES)
    assert [tuple(c) for c in meta["palette"]] == list(SHAPES_PALETTE)
    assert meta["counts"] == {"train": 6, "val": 2, "test": 2}


def test_no_temporary_leftovers(tiny_root: Path) -> None:
    assert sorted(p.name for p in tiny_root.parent.iterdir()) == ["tiny"]
    assert {p.name for p in tiny_root.iterdir()} == {"img_dir", "ann_dir", "meta.json"}


def test_every_class_appears_and_ignore_is_a_minority(tmp_path: Path) -> None:
    generate_shapes_dataset(tmp_path, num_train=40, num_val=0, num_test=0, image_size=64)
    masks = np.stack(_masks(tmp_path))
    assert masks.shape == (40, 64, 64)
    present = set(np.unique(masks).tolist())
    assert set(range(len(SHAPES_CLASSES))) <= present
    ignore = float((masks == IGNORE_INDEX).mean())
    assert 0.0 < ignore < 0.2
    assert all(((m > 0) & (m != IGNORE_INDEX)).any() for m in masks), "every image should show an object"


def test_images_are_not_flat(tiny_root: Path) -> None:
    for p in sorted((tiny_root / "img_dir").rglob("*.png")):
        img = np.array(Image.open(p)).astype(np.float64)
        assert img.std() > 5.0


def test_deterministic_across_roots(tmp_path: Path, tiny_root: Path) -> None:
    other = tmp_path / "again"
    generate_shapes_dataset(other, **TINY)
    assert _files(other) == _files(tiny_root)
    assert (other / "meta.json").read_bytes() == (tiny_root / "meta.json").read_bytes()


def test_different_seed_gives_different_images(tmp_path: Path, tiny_root: Path) -> None:
    other = tmp_path / "seed1"
    generate_shapes_dataset(other, **{**TINY, "seed": 1})
    a, b = _files(tiny_root), _files(other)
    assert a.keys() == b.keys()
    img_keys = [k for k in a if k.startswith("img_dir")]
    assert all(a[k] != b[k] for k in img_keys)


def test_ensure_generates_once_and_regenerates_on_change(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    assert ensure_shapes_dataset(root, **TINY) is True
    assert ensure_shapes_dataset(root, **TINY) is False
    changed = {**TINY, "num_train": 3, "num_val": 1}
    assert ensure_shapes_dataset(root, **changed) is True
    meta = json.loads((root / "meta.json").read_text())
    assert meta["counts"] == {"train": 3, "val": 1, "test": 2}
    assert meta["spec"] == changed
    assert sorted(p.name for p in (root / "img_dir" / "train").iterdir()) == [
        f"train_{i:04d}.png" for i in range(3)
    ]  # stale files of the older, larger generation are gone
    assert (root / "notes.txt").read_text() == "mine"
    assert ensure_shapes_dataset(root, **changed) is False


def test_ensure_fills_defaults_for_missing_keys(tmp_path: Path) -> None:
    spec = {k: v for k, v in TINY.items() if k != "seed"}
    assert ensure_shapes_dataset(tmp_path, **spec) is True
    assert ensure_shapes_dataset(tmp_path, **spec, seed=0) is False


def test_ensure_regenerates_incomplete_dataset(tmp_path: Path) -> None:
    assert ensure_shapes_dataset(tmp_path, **TINY) is True
    (tmp_path / "meta.json").unlink()  # as if a run was interrupted before meta.json was written
    assert ensure_shapes_dataset(tmp_path, **TINY) is True
    (tmp_path / "ann_dir" / "val" / "val_0001.png").unlink()
    assert ensure_shapes_dataset(tmp_path, **TINY) is True
    assert (tmp_path / "ann_dir" / "val" / "val_0001.png").is_file()


def test_image_and_mask_sizes_match(tiny_root: Path) -> None:
    for img_path in sorted((tiny_root / "img_dir").rglob("*.png")):
        ann_path = tiny_root / "ann_dir" / img_path.relative_to(tiny_root / "img_dir")
        assert Image.open(img_path).size == Image.open(ann_path).size


def test_invalid_spec_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ensure_shapes_dataset(tmp_path, num_trian=3)
    with pytest.raises(ValueError):
        generate_shapes_dataset(tmp_path, image_size=8)
    assert not (tmp_path / "meta.json").exists()
