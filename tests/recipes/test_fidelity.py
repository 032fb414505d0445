"""Every recipe named after an MMSegmentation config IS that config, field by field, or the difference is listed
with its reason in docs/reproduction.md ("Allowed differences").

The recipes: every experiment with `mmseg_config` and every zoo entry (`recipe=<name>`), composed as `src.train`
composes them. The ground truth: MMSegmentation 1.2.2's resolved configs in `$SEGKIT_MMSEG_REF/configs/`
(default `../shared/mmseg`); the comparisons skip where they are absent, the composition checks do not.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.recipes.compare import ABSENT, differences, read_allowed, unexplained
from src.recipes.mmseg import mmseg_recipe, read_mmseg_config
from src.recipes.ours import our_recipe
from src.recipes.targets import compose_train, experiment_targets, recipe_targets, zoo_targets

ROOT = Path(__file__).resolve().parents[2]
REF = Path(os.environ.get("SEGKIT_MMSEG_REF", ROOT.parent / "shared" / "mmseg"))
CONFIGS = REF / "configs"
TARGETS = recipe_targets()
needs_configs = pytest.mark.skipif(
    not CONFIGS.is_dir(), reason=f"no MMSegmentation configs in {CONFIGS} (set SEGKIT_MMSEG_REF)"
)


@cache
def composed(name: str):
    target = next(t for t in TARGETS if t.name == name)
    return compose_train(target.overrides)


@cache
def ours(name: str) -> dict:
    return our_recipe(composed(name))


@cache
def theirs(config_name: str) -> dict:
    return mmseg_recipe(read_mmseg_config(CONFIGS / f"{config_name}.json"), config_name)


def _diffs(name: str):
    target = next(t for t in TARGETS if t.name == name)
    return differences(ours(name), theirs(target.config_name))


# ------------------------------------------------------------------------------------ what is covered
def test_every_experiment_and_zoo_entry_is_a_recipe_target():
    experiments = experiment_targets()
    zoo = zoo_targets()
    assert len(experiments) >= 20 and len(zoo) == 47
    # each experiment's config is also a zoo entry's: every recipe has a published figure
    assert {t.mmseg_config for t in experiments} <= {t.mmseg_config for t in zoo}
    for t in TARGETS:
        assert t.mmseg_config.startswith("configs/") and t.mmseg_config.endswith(".py"), t


@pytest.mark.parametrize("name", [t.name for t in TARGETS])
def test_recipe_composes_to_every_field(name: str):
    fields = ours(name)
    for key in (
        "test.mode",
        "decode_head.loss.0.type",
        "optimizer.type",
        "schedule.max_iters",
        "batch.per_gpu",
        "train_pipeline.steps",
        "test_pipeline.steps",
        "data.reduce_zero_label",
        "metric",
    ):
        assert fields.get(key) is not None, f"{name}: {key} is not set"
    target = next(t for t in TARGETS if t.name == name)
    assert (
        composed(name).mmseg_config == target.mmseg_config
    )  # the run record says which config it reproduces


# ------------------------------------------------------------------------------------- the comparison
@needs_configs
@pytest.mark.parametrize("name", [t.name for t in TARGETS])
def test_recipe_equals_its_mmsegmentation_config(name: str):
    target = next(t for t in TARGETS if t.name == name)
    path = CONFIGS / f"{target.config_name}.json"
    assert path.is_file(), f"{name}: no resolved config {path}"
    left = unexplained(name, _diffs(name), read_allowed())
    assert not left, (
        f"{name} differs from {target.mmseg_config} where docs/reproduction.md allows nothing:\n"
        + ("\n".join(f"  {d}" for d in left))
    )


@needs_configs
def test_every_allowed_difference_is_needed():
    """The table stays short: each row allows a difference that some recipe has."""
    rows = read_allowed()
    used = {id(row) for t in TARGETS for d in _diffs(t.name) for row in rows if row.allows(t.name, d)}
    idle = [f"{r.field} ({r.recipes})" for r in rows if id(r) not in used]
    assert not idle, f"rows of docs/reproduction.md's table that allow no actual difference: {idle}"


@needs_configs
def test_a_difference_that_is_not_listed_fails():
    """The check can fail: the CE + Dice model under the CE-only config's name differs in its losses, and no
    row of the table allows that."""
    cfg = compose_train(["experiment=unet_drive", "model=unet-s5-d16_fcn_ce-1.0-dice-3.0"])
    diffs = differences(our_recipe(cfg), theirs("unet-s5-d16_fcn_4xb4-40k_drive-64x64"))
    left = unexplained("unet_drive", diffs, read_allowed())
    assert {d.field for d in left} >= {"decode_head.loss.1.type", "decode_head.loss.1.loss_weight"}
    assert all(d.theirs == ABSENT for d in left if d.field.startswith("decode_head.loss.1."))


@needs_configs
def test_the_issues_cases_now_agree():
    """The recipes that differed: the UNet CE / CE + Dice pair, SegFormer's sliding window on Cityscapes, the
    128x128 windows of CHASE_DB1 and ConvNeXt's slide test."""
    dice = ours("unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_drive-64x64")
    assert dice["decode_head.loss.1.type"] == "DiceLoss" and dice["decode_head.loss.1.use_sigmoid"] is True
    assert "decode_head.loss.1.type" not in ours("unet_drive")
    for name in ("segformer_cityscapes", "segformer_mit-b0_8xb1-160k_cityscapes-1024x1024"):
        assert (ours(name)["test.crop_size"], ours(name)["test.stride"]) == ([1024, 1024], [768, 768])
    assert ours("unet-s5-d16_fcn_4xb4-40k_chase-db1-128x128")["test.stride"] == [85, 85]
    assert ours("convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512")["test.mode"] == "slide"


# ------------------------------------------------------------------------------------ per parameter
KEY_FILES = {  # experiment with a paramwise rule -> MMSegmentation's key list of its model
    "segformer_ade20k": "segformer_mit-b0",
    "upernet_swin_ade20k": "upernet_swin-t",
    "upernet_convnext_ade20k": "upernet_convnext-t",
    "vit_upernet_ade20k": "vit-b16_mln_upernet",
}


@pytest.mark.parametrize("experiment", sorted(KEY_FILES))
def test_each_parameter_gets_mmsegmentations_lr_and_weight_decay(experiment: str):
    """Paramwise rules match parameter names, and ours are not always MMSegmentation's: the multipliers each
    parameter gets are compared, the parameters paired by the checkpoint converter."""
    from src.loading.checkpoint import build_segmentor
    from src.recipes.params import mmseg_multipliers, mmseg_names, our_multipliers

    key_file = REF / "keys" / f"{KEY_FILES[experiment]}.json"
    if not (key_file.is_file() and CONFIGS.is_dir()):
        pytest.skip(f"no {key_file} or {CONFIGS}")
    cfg = compose_train([f"experiment={experiment}"])
    model = build_segmentor(cfg.model)
    paramwise = OmegaConf.to_container(cfg.schedule.paramwise, resolve=True)
    keys = json.loads(key_file.read_text())["keys"]
    wrapper = read_mmseg_config(CONFIGS / f"{Path(cfg.mmseg_config).stem}.json")["optim_wrapper"]
    here = our_multipliers(model, paramwise)
    names = mmseg_names(model, keys)
    there = mmseg_multipliers(keys, wrapper.get("paramwise_cfg"), wrapper.get("constructor"))
    assert set(names) == set(here), (
        f"parameters without an MMSegmentation origin: {sorted(set(here) - set(names))[:5]}"
    )
    wrong = [
        (n, names[n], here[n], there[names[n]]) for n in here if here[n] != pytest.approx(there[names[n]])
    ]
    assert not wrong, (
        f"{len(wrong)} parameters differ (ours, MMSegmentation's name, ours, theirs): {wrong[:4]}"
    )
    # not vacuous: the rules do set several multipliers
    assert len(set(here.values())) > 1
