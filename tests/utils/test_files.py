"""src/utils/files.py: atomic writes, the inter-process lock and the folder swap."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from src.utils.files import atomic_write_bytes, atomic_write_text, swap_in


def test_atomic_write_replaces_the_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic_write_text(target, "old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "previous")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("src.utils.files.os.replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "x" * 1000)
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _hold(lock: str, log: str, tag: str) -> None:
    from filelock import FileLock

    with FileLock(lock):
        with open(log, "a") as f:
            f.write(f"{tag} in\n")
        time.sleep(1.0)  # long enough that the two processes would overlap without the lock
        with open(log, "a") as f:
            f.write(f"{tag} out\n")


def test_the_shapes_lock_lets_one_process_in_at_a_time(tmp_path: Path) -> None:
    lock, log = str(tmp_path / "x.lock"), str(tmp_path / "log")
    procs = [mp.get_context("spawn").Process(target=_hold, args=(lock, log, t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    # "a in, a out, b in, b out" or b first: never interleaved
    tags = Path(log).read_text().splitlines()
    assert [t.split()[1] for t in tags] == ["in", "out", "in", "out"]
    assert tags[0].split()[0] == tags[1].split()[0] and tags[2].split()[0] == tags[3].split()[0]


def test_swap_in_replaces_the_named_entries_and_moves_the_marker_last(tmp_path: Path) -> None:
    root, new = tmp_path / "root", tmp_path / "new"
    for folder, text in ((root, "old"), (new, "new")):
        (folder / "img").mkdir(parents=True)
        (folder / "img" / "x.png").write_text(text)
        (folder / "meta.json").write_text(text)
    (root / "keep.txt").write_text("user's")
    swap_in(new, root, ["img"], "meta.json", tmp_path / "trash")
    assert (root / "img" / "x.png").read_text() == (root / "meta.json").read_text() == "new"
    assert (root / "keep.txt").read_text() == "user's"  # entries not named are left alone
    assert (tmp_path / "trash" / "img" / "x.png").read_text() == "old"
