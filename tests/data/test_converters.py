"""Dataset converters on tiny synthetic releases in their real formats: exact output files and values."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from src.data.converters import cityscapes, colour_masks, download, retinal, voc_aug
from src.data.converters.chase_db1 import convert_chase_db1
from src.data.converters.drive import convert_drive
from src.data.converters.hrf import convert_hrf
from src.data.converters.stanford_background import convert_stanford_background, split_ids
from src.data.converters.stare import convert_stare

ROOT = Path(__file__).resolve().parents[2]
RED = (255, 0, 0)


# ---------------------------------------------------------------- helpers: tiny files in release formats
def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[0, 0] = RED  # one known pixel: channel order must survive the conversion
    return img


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt) if mode else Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def vessels(h: int, w: int) -> np.ndarray:
    """A grey label with values around the threshold: 0, 127 -> 0 and 128, 255 -> 1."""
    lab = np.zeros((h, w), np.uint8)
    lab[0, :4] = [0, 127, 128, 255]
    lab[1:, 1] = 255
    return lab


VESSELS_01 = (vessels(4, 5) > 127).astype(np.uint8)


# ---------------------------------------------------------------- Stanford Background
def regions_txt(h: int, w: int, seed: int) -> tuple[bytes, np.ndarray]:
    mat = np.random.default_rng(seed).integers(-1, 8, (h, w))
    mat[0, 0] = -1
    text = "\n".join(" ".join(str(v) for v in row) for row in mat) + "\n"
    return text.encode(), mat


def stanford_release(n: int = 10, h: int = 4, w: int = 6) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    files, mats = {"iccv09Data/README": b"readme", "iccv09Data/horizons.txt": b""}, {}
    for i in range(n):
        key = f"{i * 37:07d}"
        files[f"iccv09Data/images/{key}.jpg"] = encode(rgb(h, w, i), "JPEG")
        files[f"iccv09Data/labels/{key}.regions.txt"], mats[key] = regions_txt(h, w, i)
        files[f"iccv09Data/labels/{key}.surfaces.txt"] = b"0\n"
    return files, mats


def test_stanford_background_from_tar_gz(tmp_path):
    files, mats = stanford_release()
    archive = make_tar(tmp_path / "iccv09Data.tar.gz", files)
    meta = convert_stanford_background(archive, tmp_path / "out")
    out = tmp_path / "out"
    ids = sorted(mats)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{k}.jpg" for k in ids]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{k}.png" for k in ids]
    for key, mat in mats.items():
        assert (out / "images" / f"{key}.jpg").read_bytes() == files[f"iccv09Data/images/{key}.jpg"]
        label = read_png(out / "labels" / f"{key}.png")
        assert label.dtype == np.uint8 and label.shape == mat.shape
        np.testing.assert_array_equal(label, np.where(mat < 0, 255, mat))
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert (len(train), len(val)) == (8, 2) and train == sorted(train) and val == sorted(val)
    assert set(train).isdisjoint(val) and sorted(train + val) == ids
    assert (train, val) == split_ids(ids, seed=0)
    assert meta["counts"] == {"images": 10, "train": 8, "val": 2}
    assert json.loads((out / "meta.json").read_text())["split"]["seed"] == 0


def test_stanford_background_folder_and_rerun_give_the_same_output(tmp_path):
    files, _ = stanford_release(n=5)
    archive = make_tar(tmp_path / "iccv09Data.tar.gz", files)
    folder = write_files(tmp_path / "extracted", files) / "iccv09Data"
    convert_stanford_background(archive, tmp_path / "a")
    convert_stanford_background(folder, tmp_path / "b")
    convert_stanford_background(archive, tmp_path / "a")  # a second run: same split, files replaced
    for rel in ("splits/train.txt", "splits/val.txt", "labels/0000037.png", "images/0000074.jpg"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert len((tmp_path / "a" / "splits" / "train.txt").read_text().split()) == 4  # int(0.8 * 5)
    assert not list((tmp_path / "a").rglob("*.tmp"))


def test_split_is_deterministic_and_seeded():
    ids = [f"{i:07d}" for i in range(715)]
    train, val = split_ids(ids)
    assert (len(train), len(val)) == (572, 143) and split_ids(list(reversed(ids))) == (train, val)
    assert split_ids(ids, seed=1) != (train, val)


def test_stanford_background_label_size_mismatch_names_the_file(tmp_path):
    files, _ = stanford_release(n=2)
    files["iccv09Data/labels/0000037.regions.txt"], _ = regions_txt(3, 6, 0)
    archive = make_tar(tmp_path / "iccv09Data.tar.gz", files)
    with pytest.raises(ValueError, match=r"iccv09Data\.tar\.gz:iccv09Data/labels/0000037\.regions\.txt.*6x3"):
        convert_stanford_background(archive, tmp_path / "out")


def test_stanford_background_missing_input_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tar.gz"):
        convert_stanford_background(tmp_path / "nowhere.tar.gz", tmp_path / "out")


# ---------------------------------------------------------------- DRIVE
def drive_release(h: int = 4, w: int = 5) -> dict[str, bytes]:
    files = {}
    for part, nums in (("training", ("21", "22")), ("test", ("01",))):
        for n in nums:
            files[f"{part}/images/{n}_{part}.tif"] = encode(rgb(h, w, int(n)), "TIFF")
            files[f"{part}/1st_manual/{n}_manual1.gif"] = encode(vessels(h, w), "GIF", "L")
            files[f"{part}/mask/{n}_{part}_mask.gif"] = encode(np.full((h, w), 255, np.uint8), "GIF", "L")
    return files


DRIVE_OUTPUTS = [
    "annotations/training/21_training_manual1.png",
    "annotations/training/22_training_manual1.png",
    "annotations/validation/01_test_manual1.png",
    "images/training/21_training.png",
    "images/training/22_training.png",
    "images/validation/01_test.png",
    "meta.json",
]


def outputs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_drive_from_folder(tmp_path):
    src = write_files(tmp_path / "DRIVE", drive_release())
    meta = convert_drive([src], tmp_path / "out")
    out = tmp_path / "out"
    assert outputs(out) == DRIVE_OUTPUTS
    assert meta["counts"] == {"training": 2, "validation": 1}
    label = read_png(out / "annotations/training/21_training_manual1.png")
    assert label.dtype == np.uint8 and label.ndim == 2
    np.testing.assert_array_equal(label, VESSELS_01)  # 127 -> 0, 128 -> 1, 255 -> 1
    image = np.array(Image.open(out / "images/validation/01_test.png"))
    np.testing.assert_array_equal(image, rgb(4, 5, 1))
    assert tuple(image[0, 0]) == RED


def test_drive_from_release_zips_matches_folder(tmp_path):
    files = drive_release()
    zips = [
        make_zip(tmp_path / f"{part}.zip", {k: v for k, v in files.items() if k.startswith(part)})
        for part in ("training", "test")
    ]
    convert_drive(zips, tmp_path / "from_zip")
    convert_drive([write_files(tmp_path / "DRIVE", files)], tmp_path / "from_dir")
    for rel in DRIVE_OUTPUTS[:-1]:
        assert (tmp_path / "from_zip" / rel).read_bytes() == (tmp_path / "from_dir" / rel).read_bytes()


def test_drive_skips_test_images_without_manual_with_a_warning(tmp_path):
    files = {k: v for k, v in drive_release().items() if not k.startswith("test/1st_manual")}
    with pytest.warns(UserWarning, match="skipped 1 images"):
        meta = convert_drive([write_files(tmp_path / "DRIVE", files)], tmp_path / "out")
    assert meta["counts"] == {"training": 2, "validation": 0}


def test_drive_missing_input_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DRIVE release '.*no_such_DRIVE'"):
        convert_drive([tmp_path / "no_such_DRIVE"], tmp_path / "out")


def test_retinal_label_size_mismatch_names_both_files(tmp_path):
    files = drive_release()
    files["training/1st_manual/22_manual1.gif"] = encode(vessels(3, 5), "GIF", "L")
    with pytest.raises(ValueError, match=r"22_manual1\.gif.*5x3.*22_training\.tif"):
        convert_drive([write_files(tmp_path / "DRIVE", files)], tmp_path / "out")


# ---------------------------------------------------------------- CHASE_DB1, STARE, HRF
def test_chase_db1_from_zip(tmp_path):
    files = {}
    for i, key in enumerate(("Image_01L", "Image_01R", "Image_02L")):
        files[f"{key}.jpg"] = encode(
            rgb(4, 5, i), "PNG"
        )  # lossless content, .jpg name: the test checks pixels
        files[f"{key}_1stHO.png"] = encode(vessels(4, 5), "PNG")
        files[f"{key}_2ndHO.png"] = encode(np.zeros((4, 5), np.uint8), "PNG")
    meta = convert_chase_db1([make_zip(tmp_path / "CHASEDB1.zip", files)], tmp_path / "out", n_train=2)
    assert outputs(tmp_path / "out") == [
        "annotations/training/Image_01L_1stHO.png",
        "annotations/training/Image_01R_1stHO.png",
        "annotations/validation/Image_02L_1stHO.png",
        "images/training/Image_01L.png",
        "images/training/Image_01R.png",
        "images/validation/Image_02L.png",
        "meta.json",
    ]
    assert meta["counts"] == {"training": 2, "validation": 1}
    np.testing.assert_array_equal(
        read_png(tmp_path / "out/annotations/validation/Image_02L_1stHO.png"), VESSELS_01
    )


def test_stare_from_tars_of_gzipped_ppm(tmp_path):
    keys = ("im0001", "im0002", "im0003")
    images = {f"{k}.ppm.gz": gzip.compress(encode(rgb(4, 5, i), "PPM")) for i, k in enumerate(keys)}
    labels = {f"{k}.ah.ppm.gz": gzip.compress(encode(np.stack([vessels(4, 5)] * 3, -1), "PPM")) for k in keys}
    tars = [
        make_tar(tmp_path / "stare-images.tar", images, "w"),
        make_tar(tmp_path / "labels-ah.tar", labels, "w"),
    ]
    meta = convert_stare(tars, tmp_path / "out", n_train=2)
    assert meta["counts"] == {"training": 2, "validation": 1}
    out = tmp_path / "out"
    assert (out / "images/validation/im0003.png").is_file()
    np.testing.assert_array_equal(read_png(out / "annotations/training/im0001.ah.png"), VESSELS_01)
    assert tuple(np.array(Image.open(out / "images/training/im0002.png"))[0, 0]) == RED


def test_hrf_splits_each_category(tmp_path):
    zips = []
    for cat, name in (("h", "healthy"), ("g", "glaucoma"), ("dr", "diabetic_retinopathy")):
        imgs = {f"{n}_{cat}.jpg": encode(rgb(4, 5), "PNG") for n in ("01", "02")}
        segs = {f"{n}_{cat}.tif": encode(vessels(4, 5), "TIFF") for n in ("01", "02")}
        segs[f"01_{cat}_mask.tif"] = encode(np.zeros((4, 5), np.uint8), "TIFF")  # field of view: not a label
        zips += [
            make_zip(tmp_path / f"{name}.zip", imgs),
            make_zip(tmp_path / f"{name}_manualsegm.zip", segs),
        ]
    meta = convert_hrf(zips, tmp_path / "out", n_train=1)
    out = tmp_path / "out"
    assert meta["counts"] == {"training": 3, "validation": 3}
    assert sorted(p.name for p in (out / "images/training").iterdir()) == [
        "01_dr.png",
        "01_g.png",
        "01_h.png",
    ]
    assert sorted(p.name for p in (out / "annotations/validation").iterdir()) == [
        "02_dr.png",
        "02_g.png",
        "02_h.png",
    ]
    np.testing.assert_array_equal(read_png(out / "annotations/training/01_g.png"), VESSELS_01)


def test_retinal_first_n_training_sorts_keys():
    assert retinal.first_n_training(["b", "c", "a"], 2) == {
        "a": "training",
        "b": "training",
        "c": "validation",
    }


# ---------------------------------------------------------------- Cityscapes
def test_cityscapes_label_ids_to_train_ids(tmp_path):
    ids = np.array([[0, 7, 8, 26], [33, 9, 4, 24]], np.uint8)
    paths = []
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        p = tmp_path / "gtFine" / split / city / f"{city}_000000_000019_gtFine_labelIds.png"
        p.parent.mkdir(parents=True)
        cv2.imwrite(str(p), ids)
        paths.append(p)
    assert cityscapes.convert_cityscapes(tmp_path, nproc=2) == 2
    for p in paths:
        out = p.with_name(p.name.replace("labelIds", "labelTrainIds"))
        np.testing.assert_array_equal(read_png(out), [[255, 0, 1, 13], [18, 255, 255, 11]])
    lut = cityscapes.train_id_lut()
    assert sorted(lut[lut != 255].tolist()) == list(range(19)) and lut[255] == 255


def test_cityscapes_missing_gtfine_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gtFine"):
        cityscapes.convert_cityscapes(tmp_path)


# ---------------------------------------------------------------- VOC + SBD
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192]


def palette_png(indices: np.ndarray) -> bytes:
    img = Image.fromarray(indices, "P")
    img.putpalette(VOC_PALETTE)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def sbd_mat(mask: np.ndarray) -> bytes:
    from scipy.io import savemat

    buf = io.BytesIO()
    gt = {"Segmentation": mask, "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.unique(mask)}
    savemat(buf, {"GTcls": gt})
    return buf.getvalue()


VOC_MASK = np.array([[0, 1], [2, 255]], np.uint8)  # VOC's own (with 255 boundaries)
SBD_MASK = np.array([[1, 1], [0, 2]], np.uint8)


def voc_release() -> tuple[dict[str, bytes], dict[str, bytes]]:
    seg = "VOCdevkit/VOC2012/ImageSets/Segmentation"
    voc = {
        f"{seg}/train.txt": b"a\nb\n",
        f"{seg}/val.txt": b"c\n",
        **{f"VOCdevkit/VOC2012/SegmentationClass/{k}.png": palette_png(VOC_MASK) for k in "abc"},
    }
    sbd = {
        "benchmark_RELEASE/dataset/train.txt": b"b\nd\n",
        "benchmark_RELEASE/dataset/val.txt": b"c\ne\n",
        **{f"benchmark_RELEASE/dataset/cls/{k}.mat": sbd_mat(SBD_MASK) for k in "bcde"},
    }
    return voc, sbd


def check_voc_aug(voc2012: Path, counts: dict) -> None:
    assert counts == {"mat_converted": 4, "copied_from_voc": 1, "aug": 4}
    lists = voc2012 / "ImageSets/Segmentation"
    assert (lists / "aug.txt").read_text() == "a\nb\nd\ne\n"  # SBD train+val + VOC train - VOC val
    aug = voc2012 / "SegmentationClassAug"
    assert sorted(p.name for p in aug.iterdir()) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    np.testing.assert_array_equal(read_png(aug / "a.png"), VOC_MASK)  # palette indices, not colours
    np.testing.assert_array_equal(read_png(aug / "b.png"), SBD_MASK)  # SBD wins where it has the id


def test_sbd_mat_indexing_matches_the_release_struct(tmp_path):
    from scipy.io import loadmat

    path = tmp_path / "x.mat"
    path.write_bytes(sbd_mat(SBD_MASK))
    np.testing.assert_array_equal(loadmat(path)["GTcls"][0]["Segmentation"][0], SBD_MASK)
    loaded = voc_aug.load_sbd_mask(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, SBD_MASK)


def test_voc_aug_from_folders(tmp_path):
    voc, sbd = voc_release()
    write_files(tmp_path, {**voc, **sbd})
    counts = voc_aug.convert_voc_aug(tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE")
    check_voc_aug(tmp_path / "VOCdevkit/VOC2012", counts)


def test_voc_aug_from_archives(tmp_path):
    voc, sbd = voc_release()
    tar = make_tar(tmp_path / "VOCtrainval_11-May-2012.tar", voc, "w")
    tgz = make_tar(tmp_path / "benchmark.tgz", sbd)
    counts = voc_aug.convert_voc_aug(tar, tgz, out=tmp_path / "VOCdevkit")
    check_voc_aug(tmp_path / "VOCdevkit/VOC2012", counts)
    assert (tmp_path / "VOCdevkit/benchmark_RELEASE/dataset/cls/d.mat").is_file()


def test_voc_aug_id_without_any_mask_names_it(tmp_path):
    voc, sbd = voc_release()
    del voc["VOCdevkit/VOC2012/SegmentationClass/a.png"]
    write_files(tmp_path, {**voc, **sbd})
    with pytest.raises(FileNotFoundError, match=r"'a'.*a\.mat.*SegmentationClass/a\.png"):
        voc_aug.convert_voc_aug(tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE")


# ---------------------------------------------------------------- colour masks (CamVid)
CLASS_DICT = "name,r,g,b\nAnimal,64,128,64\nVoid,0,0,0\nCar,64,0,128\nWall,64,192,0\n"


def camvid_root(tmp_path: Path, colours: np.ndarray) -> Path:
    root = tmp_path / "CamVid32"
    (root / "train_labels").mkdir(parents=True)
    (root / "class_dict.csv").write_text(CLASS_DICT)
    cv2.imwrite(str(root / "train_labels" / "0001TP_006690_L.png"), cv2.cvtColor(colours, cv2.COLOR_RGB2BGR))
    return root


def test_camvid_colour_masks_to_indices(tmp_path):
    colours = np.array([[[64, 128, 64], [0, 0, 0]], [[64, 0, 128], [64, 192, 0]]], np.uint8)
    root = camvid_root(tmp_path, colours)
    assert colour_masks.convert_camvid(root) == {"train": 1}
    mask = read_png(root / "train_annot" / "0001TP_006690.png")
    np.testing.assert_array_equal(mask, [[0, 255], [1, 2]])  # Void -> 255, the rest 0.. in CSV order
    assert (root / "classes.txt").read_text().split("\n")[:3] == ["Animal", "Car", "Wall"]
    names, palette = colour_masks.read_class_dict(root / "class_dict.csv")
    assert names[1] == "Void" and palette[2] == (64, 0, 128)


def test_colour_not_in_palette_names_file_colour_and_count(tmp_path):
    colours = np.array([[[64, 128, 64], [1, 2, 3]], [[1, 2, 3], [64, 192, 0]]], np.uint8)
    root = camvid_root(tmp_path, colours)
    with pytest.raises(ValueError, match=r"0001TP_006690_L\.png.* 2 pixels.*\(1, 2, 3\)"):
        colour_masks.convert_camvid(root)


# ---------------------------------------------------------------- download
def registry_for(tmp_path: Path, checksum: str | None) -> tuple[dict, Path]:
    src = tmp_path / "remote" / "release.tar.gz"
    src.parent.mkdir()
    src.write_bytes(b"release bytes")
    entry = download.DatasetEntry(
        "test",
        (download.RemoteFile(src.as_uri(), "release.tar.gz", checksum),),
        "convert {out}/release.tar.gz",
    )
    return {"toy": entry}, src


def test_download_verifies_md5_and_skips_when_present(tmp_path, capsys):
    md5 = hashlib.md5(b"release bytes").hexdigest()
    registry, src = registry_for(tmp_path, md5)
    (path,) = download.download("toy", tmp_path / "data", registry)
    assert path.read_bytes() == b"release bytes"
    assert f"next: convert {(tmp_path / 'data').as_posix()}/release.tar.gz" in capsys.readouterr().out
    src.unlink()  # a second call must not touch the network (here: the now missing source)
    assert download.download("toy", tmp_path / "data", registry) == [path]
    assert "present, md5 ok" in capsys.readouterr().out


def test_download_checksum_mismatch_is_an_error_with_both_digests(tmp_path):
    registry, _ = registry_for(tmp_path, "0" * 32)
    actual = hashlib.md5(b"release bytes").hexdigest()
    with pytest.raises(ValueError, match=rf"is {actual}, expected {'0' * 32}"):
        download.download("toy", tmp_path / "data", registry)
    assert not list((tmp_path / "data").iterdir())  # neither the file nor its .part is left


def test_download_registration_prints_instructions(tmp_path, capsys):
    assert download.download("cityscapes", tmp_path) == []
    out = capsys.readouterr().out
    assert "https://www.cityscapes-dataset.com/" in out and "gtFine_trainvaltest.zip" in out
    with pytest.raises(KeyError, match="Unknown dataset 'nope'"):
        download.download("nope", tmp_path)


def test_registry_checksums_are_well_formed():
    for entry in download.REGISTRY.values():
        for f in entry.files:
            assert f.checksum is None or len(f.checksum) == {"md5": 32, "sha1": 40}[f.algorithm]
        entry.registration.format(out="data") + entry.next_step.format(out="data")  # no stray braces
    assert download.REGISTRY["stanford_background"].files[0].checksum == "458c3d7d0a222b535accea2f6c0e8df1"


# ---------------------------------------------------------------- the command line
def test_convert_dataset_cli_end_to_end(tmp_path):
    files, _ = stanford_release(n=5)
    archive = make_tar(tmp_path / "iccv09Data.tar.gz", files)
    out = tmp_path / "sb"
    cmd = [sys.executable, str(ROOT / "scripts" / "convert_dataset.py"), "stanford_background", str(archive)]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("converted stanford_background") and '"train": 4' in done.stdout
    assert len(list((out / "labels").glob("*.png"))) == 5


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_dataset_cli_reports_a_missing_input(tmp_path, capsys):
    cli = load_script("convert_dataset")
    assert cli.main(["drive", str(tmp_path / "missing.zip")]) == 1
    assert "missing.zip" in capsys.readouterr().err


def test_download_dataset_cli_lists_the_registry(capsys):
    assert load_script("download_dataset").main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "6cd6e144f989b92b3379bac3b3de84fd" in listing and "drive.grand-challenge.org" in listing


def test_masks_are_written_with_up_filtered_rows(tmp_path):
    """`write_mask_png` (every converter's masks): the same indices back, and PNG's Up filter on every row where
    OpenCV has the flag (smaller files and a faster decode than OpenCV's default Sub rows, docs/benchmarks.md)."""
    from src.data.converters.writers import write_mask_png
    from src.data.io import load_mask

    labels = np.random.default_rng(0).choice(np.r_[0:19, 255], (16, 32)).astype(np.uint8)
    mask = cv2.resize(labels, (512, 256), interpolation=cv2.INTER_NEAREST)  # blocks, as label masks are
    path = write_mask_png(tmp_path / "m.png", mask)
    assert np.array_equal(load_mask(path), mask)
    data = path.read_bytes()
    default = cv2.imencode(".png", mask)[1].tobytes()
    assert len(data) < len(default) / 4
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        idat, pos = b"", 8
        while pos < len(data):  # the image data: IDAT chunks, concatenated
            length = int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 4 : pos + 8] == b"IDAT":
                idat += data[pos + 8 : pos + 8 + length]
            pos += 12 + length
        filters = np.frombuffer(zlib.decompress(idat), np.uint8)[:: 512 + 1]  # each row's first byte
        assert filters.tolist() == [2] * 256  # 2: Up
