"""OmegaConf resolvers used by the configs; imported by every entry point before Hydra composes.

- `${project_root:}`: the repository root (or `$SEGKIT_ROOT`), so that `data/` and `logs/` do not depend on
  the directory a command is started from.
- `${iters:40000}` -> "40k": iteration counts as MMSegmentation writes them in run names.
- `${metric_name:val/mDice}` -> "mDice": a metric key's last part, for file names (`best_mDice_iter_...`).
- `${coalesce:${a},${b}}`: the first argument that is not null (or empty), e.g. the experiment's name or else
  the dataset's for the wandb group.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> str:
    return os.environ.get("SEGKIT_ROOT", str(PROJECT_ROOT))


def iters(n: int) -> str:
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_name(key: str) -> str:
    return str(key).rsplit("/", 1)[-1]


def coalesce(*values: object) -> object:
    return next((v for v in values if v is not None and v != ""), None)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("iters", iters, replace=True)
    OmegaConf.register_new_resolver("metric_name", metric_name, replace=True)
    OmegaConf.register_new_resolver("coalesce", coalesce, replace=True)


register_resolvers()
