"""The recipes that claim to be MMSegmentation's: every experiment with an `mmseg_config`, and every zoo entry
(`recipe=<name>`), each with the overrides that compose it and the MMSegmentation config it names.

    for target in recipe_targets():
        cfg = compose_train(target.overrides)
        ours = our_recipe(cfg)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class RecipeTarget:
    name: str  # the experiment's name, or the zoo entry's (MMSegmentation's model name)
    kind: str  # "experiment" | "zoo"
    mmseg_config: str  # e.g. configs/unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py
    overrides: tuple[str, ...]  # what composes it: experiment=<name>, or the zoo entry's train overrides

    @property
    def config_name(self) -> str:
        """MMSegmentation's config name, the stem of its path (the name of its resolved JSON)."""
        return Path(self.mmseg_config).stem


def experiment_targets(conf_dir: Path = CONF_DIR) -> list[RecipeTarget]:
    """The experiments that name an MMSegmentation config (`mmseg_config:` in conf/experiment/<name>.yaml)."""
    out = []
    for path in sorted((conf_dir / "experiment").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        if spec.get("mmseg_config"):
            out.append(
                RecipeTarget(path.stem, "experiment", spec["mmseg_config"], (f"experiment={path.stem}",))
            )
    return out


def zoo_targets() -> list[RecipeTarget]:
    """Every zoo entry, composed as `src.train recipe=<name>` composes it."""
    from src.weights.zoo import load_zoo

    return [
        RecipeTarget(e.name, "zoo", e.mmseg_config, tuple(e.train_overrides())) for e in load_zoo().values()
    ]


def recipe_targets() -> list[RecipeTarget]:
    return [*experiment_targets(), *zoo_targets()]


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The training config `python -m src.train <overrides>` composes (not resolved; `${hydra:...}` values,
    such as the run folder, stay unreadable outside a run and are not needed by `our_recipe`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.utils import resolvers  # noqa: F401  (${project_root:}, ${iters:})

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
