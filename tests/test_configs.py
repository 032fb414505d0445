"""Every config composes, and the parts it names instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.train import build_datamodule
from tests.helpers import CONF_DIR, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


def test_there_are_experiments_and_models():
    assert "fcn_shapes" in EXPERIMENTS and "fcn_r18-d8" in MODELS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_cfg("train", [f"experiment={experiment}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.run_name.startswith(cfg.model.name)
    if "pretrained" in cfg.model.backbone:
        # real-data experiments start from ImageNet weights, as MMSegmentation's; tests never download
        assert cfg.model.backbone.pretrained == (cfg.dataset.name != "shapes")
        cfg.model.backbone.pretrained = False
    model = instantiate(cfg.model)
    datamodule = build_datamodule(cfg)
    assert model.num_classes == datamodule.num_classes == cfg.dataset.num_classes
    for key in ("optimizer", "scheduler"):
        assert cfg.schedule[key]._partial_


@pytest.mark.parametrize("model", MODELS)
def test_model_config_builds(model, tmp_path):
    cfg = compose_cfg("train", [f"model={model}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    assert instantiate(cfg.model).name == model


def test_run_name_follows_mmsegmentation_convention(tmp_path):
    cfg = compose_cfg("train", ["schedule.max_steps=40000", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    assert cfg.run_name == "fcn_r18-d8_1xb8-40k_shapes-96x96"


def test_run_name_says_which_model_parts_the_command_line_swapped(tmp_path):
    overrides = ["model=upernet_r18", "model/backbone=swin_tiny", f"paths.data_dir={tmp_path}"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    assert cfg.run_name.startswith("upernet_r18+swin_tiny_1xb8-") and cfg.resume_dir.endswith(cfg.run_name)


@pytest.mark.parametrize(
    ("experiment", "run_name"),
    [
        ("pspnet_cityscapes", "pspnet_r50-d8_1xb2-40k_cityscapes-512x1024"),
        ("deeplabv3plus_ade20k", "deeplabv3plus_r50-d8_1xb4-80k_ade20k-512x512"),
        ("fcn_voc12aug", "fcn_r50-d8_1xb4-20k_voc12aug-512x512"),
        ("unet_drive", "unet-s5-d16_fcn_1xb4-40k_drive-64x64"),
        ("unet_chase_db1", "unet-s5-d16_fcn_1xb4-40k_chase_db1-128x128"),
        ("pspnet_stanford_background", "pspnet_r50-d8_1xb8-2k_stanford_background-256x256"),
    ],
)
def test_experiments_follow_mmsegmentation_settings(experiment, run_name, tmp_path):
    cfg = compose_cfg("train", [f"experiment={experiment}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    assert cfg.run_name == run_name
    assert cfg.schedule.optimizer.momentum == 0.9 and cfg.schedule.optimizer.weight_decay == 0.0005
    assert cfg.schedule.scheduler.power == 0.9 and cfg.schedule.scheduler.eta_min == 1e-4
    assert cfg.schedule.scheduler.total_iters == cfg.schedule.max_steps
    if cfg.model.test_cfg.mode == "slide":
        assert list(cfg.model.test_cfg.crop_size) == list(cfg.dataset.crop_size)


def test_command_line_overrides_reach_the_parts(tmp_path):
    cfg = compose_cfg(
        "train", ["schedule.lr=0.05", "dataset.batch_size=2", f"paths.data_dir={tmp_path}"], tmp_path / "run"
    )
    assert cfg.schedule.optimizer.lr == 0.05
    assert instantiate(cfg.dataset).batch_size == 2


def test_unknown_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigCompositionException, match="schedule.max_stepz"):
        compose_cfg("train", ["schedule.max_stepz=3"], tmp_path / "run")


@pytest.mark.parametrize("name", ["eval", "infer"])
def test_eval_and_infer_configs_compose(name, tmp_path):
    """Every interpolation resolves and the entry point's own config check passes."""
    from src.utils.config_check import EVAL_RULES, INFER_RULES, check_config

    cfg = compose_cfg(name, ["ckpt_path=x.ckpt"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # raises on a broken ${...}
    check_config(cfg, EVAL_RULES if name == "eval" else INFER_RULES)


@pytest.mark.parametrize("name", ["eval", "infer"])
def test_eval_and_infer_switches_must_be_true_or_false(name, tmp_path):
    from src.utils.config_check import EVAL_RULES, INFER_RULES, problems

    rules = EVAL_RULES if name == "eval" else INFER_RULES
    cfg = compose_cfg(name, ["ckpt_path=x.ckpt", "fold_bn=maybe", "compile=1"], tmp_path)
    assert problems(cfg, rules) == [
        "compile=1: expected true or false",
        "fold_bn='maybe': expected true or false",
    ]
    assert problems(compose_cfg(name, ["ckpt_path=x.ckpt", "fold_bn=false"], tmp_path), rules) == []


def test_export_switches_must_be_true_or_false(tmp_path):
    from src.utils.config_check import EXPORT_RULES, problems

    cfg = compose_cfg("export", ["ckpt_path=x.ckpt", "fold_bn=maybe", "parity=1"], tmp_path)
    assert problems(cfg, EXPORT_RULES) == [
        "fold_bn='maybe': expected true or false",
        "parity=1: expected true or false",
    ]
    assert problems(compose_cfg("export", ["ckpt_path=x.ckpt"], tmp_path), EXPORT_RULES) == []


def test_runtime_shortcuts_reach_the_trainer_and_callbacks(tmp_path):
    cfg = compose_cfg(
        "train",
        ["runtime.sync_bn=true", "optimized_metric=val/mDice", f"paths.data_dir={tmp_path}"],
        tmp_path,
    )
    assert cfg.runtime.trainer.sync_batchnorm is True
    best = cfg.runtime.callbacks.best_checkpoint
    assert best.monitor == "val/mDice" and best.filename == "best_mDice_iter_{step}"


def test_dataset_configs_state_only_what_differs():
    """A dataset config names its classes' dataset class, folders, scale, crop and batch; MMSegmentation's standard
    pipelines come from conf/dataset/_base_/mmseg.yaml (written once), the test split from the val split."""
    folder = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        assert len(text.splitlines()) <= 40, f"{path.name}: {len(text.splitlines())} lines"
        if path.stem != "shapes":  # the built-in set has its own, smaller pipeline
            assert "_base_/mmseg@_here_" in text and "train_pipeline:" not in text, path.name
