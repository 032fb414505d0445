"""logger=mlflow: a file store in the run folder holds the run's metrics and config; logger=many takes MLflow only
when it is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.engine.loggers import mlflow_logger
from src.train import train
from src.utils.instantiators import instantiate_loggers

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")


@needs_mlflow
def test_mlflow_run_folder_holds_the_metrics(make_train_cfg):
    cfg = make_train_cfg("logger=mlflow", "test=false")
    assert cfg.logger.mlflow.tracking_uri == f"file:{cfg.paths.output_dir}/mlruns"
    metrics = train(cfg)
    store = Path(cfg.paths.output_dir) / "mlruns"
    runs = [p for p in store.glob("*/*") if (p / "metrics").is_dir()]
    assert len(runs) == 1
    run = runs[0]
    # one file per metric key ("/" makes folders): the loss per logged step, val/mIoU at each validation
    loss = (run / "metrics" / "train" / "loss").read_text().split("\n")
    assert len([line for line in loss if line]) == 4  # 4 steps, log_interval 1
    lines = [line.split() for line in (run / "metrics" / "val" / "mIoU").read_text().splitlines()]
    assert [int(step) for _, _, step in lines] == [1, 3]  # validations after steps 2 and 4 (0-based)
    assert float(lines[-1][1]) == pytest.approx(metrics["val/mIoU"], abs=1e-6)
    assert (run / "metrics" / "val" / "IoU" / "disc").is_file()
    # the resolved config as parameters, the run name as MLflow's
    assert (run / "params" / "model" / "name").read_text() == "fcn_r18-d8"
    assert cfg.run_name in (run / "meta.yaml").read_text()


def test_logger_many_leaves_mlflow_out_when_not_installed(make_train_cfg, monkeypatch, caplog):
    cfg = make_train_cfg("logger=many")
    assert cfg.logger.mlflow.optional is True
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    kwargs = {k: v for k, v in cfg.logger.mlflow.items() if k not in ("_target_", "optional")}  # resolved
    assert mlflow_logger(optional=True, **kwargs) is None
    assert "MLflow is not installed" in caplog.text
    with pytest.raises(ImportError, match=r"pip install -e '\.\[mlflow\]'"):
        mlflow_logger(optional=False, **kwargs)
    # the loggers of the run: the others, without a None in their place
    only = OmegaConf.create(
        {k: OmegaConf.to_container(cfg.logger[k], resolve=True) for k in ("csv", "mlflow")}
    )
    assert [type(lg).__name__ for lg in instantiate_loggers(only)] == ["CSVLogger"]
