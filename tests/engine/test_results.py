"""Experiment tracking: one tiny run with `logger=many` (CSV + TensorBoard + wandb offline) gives every logger the
config, the metrics, the test per-class table and confusion matrix; the run leaves its record (results.json);
a failing run still closes wandb. The offline wandb run is read back from its `.wandb` transaction log."""

from __future__ import annotations

import json
import logging
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning import Callback

from src.data.io import load_mask
from src.tools.log_analysis import load_scalars
from src.train import train
from tests.helpers import TINY_TRAIN, compose_cfg

CLASSES = ["background", "disc", "box", "triangle", "ring", "star"]


# ------------------------------------------------------------------ helpers
def wandb_records(path: Path) -> list:
    """The records of an offline run's `.wandb` file (wandb's LevelDB-style log of protobuf `Record`s: a 7-byte
    file header, 32 KiB blocks, each chunk `crc32 (4) | length (2) | type (1: full, 2: first, 3: middle,
    4: last)`); wandb >= 0.2x has no Python reader of its own any more (wandb-core, in Go, reads them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _items(records: list, kind: str) -> dict[str, object]:
    """Key -> last JSON value of the history / summary / config items of the records."""
    values: dict[str, object] = {}
    for r in records:
        if r.WhichOneof("record_type") != kind:
            continue
        items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update}.get(kind)
        entries = items(r) if items else r.config.update
        for item in entries:
            key = item.key or "/".join(item.nested_key)
            values[key] = json.loads(item.value_json)
    return values


class Boom(Callback):
    """Fails the run as soon as training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise RuntimeError("boom")


def _isolate_wandb(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """No API key anywhere (-> offline), and wandb's own folders in the test's tmp dir."""
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.delenv("WANDB_MODE", raising=False)
    mp.setenv("NETRC", str(tmp / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        mp.setenv(var, str(tmp / var.lower()))


# ------------------------------------------------------------------ the run
@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        _isolate_wandb(mp, tmp)
        overrides = [o for o in TINY_TRAIN if not o.startswith("logger=")]
        cfg = compose_cfg(
            "train",
            [*overrides, f"paths.data_dir={tmp / 'data'}", "experiment=fcn_shapes", "logger=many",
             "logger.wandb.log_model=true"],
            tmp / "run",
        )  # fmt: skip
        root = logging.getLogger()
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.INFO)
        try:
            metrics = train(cfg)
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            GlobalHydra.instance().clear()
    return cfg, metrics, "\n".join(r.getMessage() for r in records)


def test_wandb_offline_run_holds_config_metrics_tables_and_the_checkpoint(tracked_run):
    cfg, metrics, log_text = tracked_run
    out = Path(cfg.paths.output_dir)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = runs[0]
    # wandb's service process appends the last records (the final summary) to the log on its own schedule, which
    # `wandb.finish()` does not always wait for: read until the summary has the test metrics, for 20 s at most
    deadline = time.monotonic() + 20
    records = wandb_records(next(run.glob("*.wandb")))
    while "test/mIoU" not in _items(records, "summary") and time.monotonic() < deadline:
        time.sleep(0.5)
        records = wandb_records(next(run.glob("*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]

    # identity: MMSegmentation-style name, group = the experiment, tags from the experiment
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.display_name == cfg.run_name == "fcn_r18-d8_1xb4-4_shapes-32x32"
    assert run_record.run_group == "fcn_shapes"
    assert list(run_record.tags) == ["fcn", "shapes", "quickstart"]

    # the resolved config
    config = _items(records, "config")
    assert config["run_name"] == cfg.run_name
    assert config["model"]["name"] == "fcn_r18-d8"
    assert config["schedule"]["max_steps"] == 4

    # metrics: training curves, validation, and the test metrics in the summary
    history = _items(records, "history")
    assert {"train/loss", "val/mIoU", "val/IoU/star", "lr-SGD"} <= set(history)
    summary = _items(records, "summary")
    assert summary["test/mIoU"] == pytest.approx(metrics["test/mIoU"])

    # the per-class table as a wandb.Table, with the dataset's class names
    (table_file,) = run.glob("files/media/table/test/per_class_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["class", "IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"]
    assert [row[0] for row in table["data"]] == CLASSES
    iou = {row[0]: row[1] for row in table["data"]}
    assert iou["star"] == pytest.approx(metrics["test/IoU/star"])
    # the confusion matrix: a picture and wandb's chart; validation predictions with masks
    assert list(run.glob("files/media/images/test/confusion_matrix_*.png"))
    assert list(run.glob("files/media/table/test/confusion_matrix_chart_table_*.table.json"))
    assert list(run.glob("files/media/images/mask/val/predictions_*.mask.png"))

    # the checkpoint as a model artifact (logger.wandb.log_model=true), recorded offline for `wandb sync`
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    model = [a for a in artifacts if a.type == "model"]
    files = {json.loads(a.metadata)["original_filename"] for a in model}
    assert "last.ckpt" in files and any(f.startswith("best_mIoU_iter_") for f in files)
    assert "iter_2.ckpt" not in files  # logged when training ended, not each checkpoint as it was written
    assert any("best" in a.aliases for a in model) and all("latest" in a.aliases for a in model)
    assert all([e.path for e in a.manifest.contents] == ["model.ckpt"] for a in model)

    # closed (exit code 0) and the upload command printed
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0
    assert kinds[-1] == "exit"
    assert f"wandb sync {run}" in log_text
    import wandb

    assert wandb.run is None


def test_tensorboard_and_csv_hold_the_same_content(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, metrics, _ = tracked_run
    out = Path(cfg.paths.output_dir)
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"test/confusion_matrix", "val/predictions"} <= set(tags["images"])
    assert {"config/text_summary", "test/per_class/text_summary"} <= set(tags["tensors"])
    text = acc.Tensors("test/per_class/text_summary")[0].tensor_proto.string_val[0].decode()
    assert all(f"| {name} |" in text for name in CLASSES)
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"run_name: {cfg.run_name}" in config_text
    assert acc.Scalars("test/mIoU")[-1].value == pytest.approx(metrics["test/mIoU"])

    # CSV run: metrics.csv, hparams.yaml and the test report files in the run folder
    assert cfg.run_name in (out / "csv" / "hparams.yaml").read_text()
    scalars, _, _ = load_scalars(out, "csv")
    assert scalars["test/mIoU"][-1][1] == pytest.approx(metrics["test/mIoU"])
    per_class = (out / "test" / "per_class.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in per_class[1:]] == CLASSES
    report = json.loads((out / "test" / "metrics.json").read_text())
    assert report["summary"]["mIoU"] == pytest.approx(metrics["test/mIoU"])
    # the confusion matrix counts every labelled test pixel once (independent count from the mask files)
    confmat = np.array(json.loads((out / "test" / "confusion_matrix.json").read_text())["matrix"])
    masks = sorted((Path(cfg.dataset.data_root) / "ann_dir" / "test").glob("*.png"))
    assert len(masks) == 4
    assert confmat.sum() == sum(int((load_mask(m) != 255).sum()) for m in masks)
    assert (out / "test" / "confusion_matrix.png").stat().st_size > 0


def test_the_run_writes_its_record(tracked_run):
    cfg, metrics, _ = tracked_run
    record = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert (record["method"], record["backbone"], record["crop"], record["iters"]) == (
        "fcn",
        "r18-d8",
        "32x32",
        4,
    )
    assert record["experiment"] == "fcn_shapes" and record["dataset"] == "shapes"
    assert record["mmseg_config"] is None  # the built-in recipe reproduces no MMSegmentation config
    assert record["train_memory_kind"] == "cpu_peak_rss" and 0.05 < record["train_memory_gb"] < 64
    assert record["test_fps"] > 0 and record["test_images_timed"] == 4
    assert record["metrics"]["test/mIoU"] == pytest.approx(metrics["test/mIoU"])
    assert record["metrics"]["val/mIoU"] == pytest.approx(metrics["val/mIoU"])
    assert Path(record["ckpt_path"]).is_file()


def test_a_failing_run_still_closes_wandb_with_its_exit_code(tmp_path, monkeypatch, caplog):
    _isolate_wandb(monkeypatch, tmp_path)
    overrides = [o for o in TINY_TRAIN if not o.startswith("logger=")]
    cfg = compose_cfg(
        "train",
        [*overrides, f"paths.data_dir={tmp_path / 'data'}", "logger=wandb",
         "+runtime.callbacks.boom={_target_: tests.engine.test_results.Boom}"],
        tmp_path / "run",
    )  # fmt: skip
    try:
        with caplog.at_level("INFO"), pytest.raises(RuntimeError, match="boom"):
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    import wandb

    assert wandb.run is None
    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    exits = [
        r.exit for r in wandb_records(next(run.glob("*.wandb"))) if r.WhichOneof("record_type") == "exit"
    ]
    assert [e.exit_code for e in exits] == [1]
    assert f"wandb sync {run}" in caplog.text
    assert not (tmp_path / "run" / "results.json").exists()  # no record for a run that did not finish


def test_analyze_logs_draws_the_runs_curves_from_csv_and_tensorboard(tracked_run, tmp_path):
    import subprocess
    import sys

    import cv2

    cfg, _, _ = tracked_run
    out = Path(cfg.paths.output_dir)
    from_csv, _, _ = load_scalars(out, "csv")
    from_tb, _, _ = load_scalars(out, "tensorboard")
    for key in ("train/loss", "lr-SGD", "val/mIoU"):
        assert [s for s, _ in from_tb[key]] == [s for s, _ in from_csv[key]], key
        assert [v for _, v in from_tb[key]] == pytest.approx([v for _, v in from_csv[key]], rel=1e-6), key
    assert len(from_csv["train/loss"]) == 4 and len(from_csv["val/mIoU"]) == 2  # 4 steps, validation every 2
    script = Path(__file__).resolve().parents[2] / "scripts" / "analyze_logs.py"
    for source in ("csv", "tensorboard"):
        png = tmp_path / f"{source}.png"
        cmd = [sys.executable, str(script), str(out), "--source", source, "--out", str(png)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        image = cv2.imread(str(png))
        assert image is not None and image.shape[:2] == (840, 800) and image.std() > 0
