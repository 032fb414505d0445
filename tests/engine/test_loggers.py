"""Loggers: the default works offline; wandb falls back to offline mode without a key and never prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.train import train
from src.utils.instantiators import wandb_api_key_configured


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_key_detection_reads_env_and_netrc(monkeypatch, tmp_path, no_wandb_key):
    assert not wandb_api_key_configured()
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_api_key_configured()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_configured()


def test_wandb_without_key_runs_offline_and_writes_its_run(make_train_cfg, no_wandb_key, caplog):
    cfg = make_train_cfg("logger=wandb", "test=false")
    with caplog.at_level("INFO"):
        train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its log file"
    import wandb

    assert wandb.run is None  # closed by the task wrapper
    assert f"wandb sync {runs[0]}" in caplog.text  # the upload command is printed at the end


def test_default_logger_writes_csv_and_tensorboard(make_train_cfg):
    cfg = make_train_cfg("logger=default", "test=false")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "csv" / "metrics.csv").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
