"""What every entry point does around its task: config printing and saving, closing loggers on any exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.utils.logging import get_logger
from src.utils.noise import quiet_third_party
from src.utils.rich_utils import print_config_tree

log = get_logger(__name__)


def extras(cfg: DictConfig) -> None:
    """Filter the known third-party console noise (`src.utils.noise`); on rank zero (the other DDP ranks compose
    the same config into the same folder), print the resolved config as a tree and save it in the run folder."""
    quiet_third_party()
    if rank_zero_only.rank != 0:
        return
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("print_config", True):
        print_config_tree(cfg, save_to=out / "config_tree.log")
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Run a task so that loggers (wandb) are always closed, even when it fails, with its exit code."""

    @functools.wraps(task)
    def wrap(cfg: DictConfig) -> Any:
        exit_code = 0
        try:
            return task(cfg)
        except SystemExit as e:  # the preemption exit (143) and the like: recorded as the run's exit code
            exit_code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            raise
        except BaseException:  # an error, or Ctrl-C
            # not logged here: `src.utils.errors.report_errors` around the entry point writes the traceback to
            # the run log and prints it (or a user error's short block) once
            exit_code = 1
            raise
        finally:
            finish_wandb(exit_code)

    return wrap


def finish_wandb(exit_code: int = 0) -> None:
    """Close the wandb run of this process, if any, with the task's exit code (non-zero marks it failed), and
    print the command that uploads an offline run. Never raises: it runs while another error may be raised."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    try:
        run_dir = wandb.run.dir
        # WandbLogger(offline=True) starts wandb in "dryrun", wandb's older name for "offline"
        offline = getattr(getattr(wandb.run, "settings", None), "mode", None) in ("offline", "dryrun")
        wandb.finish(exit_code=exit_code)
    except Exception:
        log.exception("wandb.finish failed")
        return
    if offline:
        log.info(f"wandb ran offline; upload with: wandb sync {Path(run_dir).parent}")
