"""Hydra multirun with Lightning's DDP: one run folder per job (not per rank), and one sweep (not one per rank).

Lightning's DDP launcher starts ranks 1..N-1 by running the command line again with `hydra.run.dir=<run dir>`.
In a multirun that command line is the whole sweep, so every rank would start a sweep of its own, in other
folders (Lightning-AI/pytorch-lightning#15689; lightning-hydra-template sidesteps it with `ddp_spawn`).
`hydra_subprocess_cmd` starts each rank as a single run of this job instead: the job's own overrides (its sweep
values, the Optuna trial's parameters), `hydra.mode=RUN` and `hydra.run.dir=<the job's folder>`.

The launcher also leaves `LOCAL_RANK`, `WORLD_SIZE`, ... set and the process group open after a job, which the
next job of a sequential sweep would take for an external launcher's; `ddp_job_scope` cleans both up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from src.utils.errors import in_multirun
from src.utils.logging import get_logger

log = get_logger(__name__)

#: what Lightning's launcher sets for its ranks (and leaves set in the launching process)
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: sweep-level Hydra overrides that must not reach a rank's single run
_SWEEP_ONLY = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
               "hydra.run", "hydra.output_subdir", "hydra.job.name")  # fmt: skip

_lightning_cmd = None  # Lightning's own command builder, kept by install()


def _script_command() -> list[str]:
    import __main__

    if getattr(__main__, "__spec__", None) is None:
        from hydra.utils import to_absolute_path

        return [sys.executable, to_absolute_path(sys.argv[0])]
    return [sys.executable, "-m", __main__.__spec__.name]


def rank_overrides(task: Sequence[str], hydra: Sequence[str], output_dir: str, local_rank: int) -> list[str]:
    """The overrides that make a rank a single run of the job: its task overrides, the job-level Hydra ones,
    then RUN mode in the job's folder."""
    keep = [o for o in hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
    return [
        *task,
        *keep,
        "hydra.mode=RUN",
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",
        f"hydra.job.name=train_ddp_process_{local_rank}",
    ]


def hydra_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    """Command and working directory of DDP rank `local_rank` (Lightning's `_hydra_subprocess_cmd` signature)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        if _lightning_cmd is None:
            raise RuntimeError("hydra_subprocess_cmd: install() was not called")
        command, cwd = _lightning_cmd(local_rank=local_rank)
        return list(command), cwd
    overrides = rank_overrides(hc.overrides.task, hc.overrides.hydra, hc.runtime.output_dir, local_rank)
    return [*_script_command(), *overrides], hc.runtime.cwd


def install() -> bool:
    """Make Lightning's DDP launcher start ranks with `hydra_subprocess_cmd`; False (and a warning) if this
    Lightning version has no such hook (then a multirun with `runtime=ddp` is not safe).

    This replaces a private function of Lightning (`lightning.pytorch.strategies.launchers.subprocess_script.
    _hydra_subprocess_cmd`), for want of a public hook: upstream issue Lightning-AI/pytorch-lightning#15689
    (multirun + DDP starts a sweep per rank), fix proposed in Lightning-AI/pytorch-lightning#18175, not merged as
    of Lightning 2.6. `tests/test_sweeps.py::test_lightning_private_launcher_hook_is_where_install_expects_it`
    pins what this relies on (the name, its one `local_rank` argument, the launcher calling it by that name);
    remove this module when Lightning takes multirun jobs into account."""
    global _lightning_cmd
    try:
        from lightning.pytorch.strategies.launchers import subprocess_script as launcher
    except ImportError:  # pragma: no cover
        launcher = None
    current = getattr(launcher, "_hydra_subprocess_cmd", None)
    if current is None:
        log.warning("Lightning's DDP launcher has no _hydra_subprocess_cmd: multirun + DDP is not supported")
        return False
    if current is not hydra_subprocess_cmd:
        _lightning_cmd = current
        launcher._hydra_subprocess_cmd = hydra_subprocess_cmd
    return True


@contextmanager
def ddp_job_scope() -> Iterator[None]:
    """Around one job: afterwards, the launcher's environment variables are as before and, when this process
    launched the ranks (no `LOCAL_RANK` before the job), the process group is closed.

    A job of a multirun that launched ranks and failed ends the sweep (`SystemExit(1)`) instead of letting
    Hydra go on to the next job: Lightning's launcher ends the main process anyway as soon as it sees a rank
    exit with an error, which would leave the next job's ranks waiting for a main process that is gone."""
    saved = {k: os.environ.get(k) for k in LAUNCHER_ENV}
    try:
        yield
    except Exception as e:
        if saved["LOCAL_RANK"] is None and os.environ.get("LOCAL_RANK") is not None and in_multirun():
            log.error(f"A DDP job of this sweep failed ({type(e).__name__}: {e}); the sweep stops here.")
            raise SystemExit(1) from e
        raise
    finally:
        launched_here = saved["LOCAL_RANK"] is None
        if launched_here and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
