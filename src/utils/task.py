"""What every entry point does around its task: config printing and saving, closing loggers on any exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.utils.logging import get_logger
from src.utils.rich_utils import print_config_tree

log = get_logger(__name__)


def extras(cfg: DictConfig) -> None:
    """Print the resolved config as a tree and save it (tree and YAML) in the run directory."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("print_config", True):
        print_config_tree(cfg, save_to=out / "config_tree.log")
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Run a task so that loggers (wandb) are always closed, even when it fails, and failures are logged."""

    @functools.wraps(task)
    def wrap(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception:
            log.exception(f"Task failed; output dir: {cfg.paths.output_dir}")
            raise
        finally:
            if "wandb" in sys.modules:
                import wandb

                if wandb.run is not None:
                    run_dir = wandb.run.dir
                    # WandbLogger(offline=True) starts wandb in "dryrun", wandb's older name for "offline"
                    offline = getattr(getattr(wandb.run, "settings", None), "mode", None) in (
                        "offline",
                        "dryrun",
                    )
                    wandb.finish()
                    if offline:
                        log.info(f"wandb ran offline; upload with: wandb sync {Path(run_dir).parent}")

    return wrap
