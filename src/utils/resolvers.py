"""OmegaConf resolvers used by the configs; imported by every entry point before Hydra composes.

- `${project_root:}`: the repository root (or `$SEGKIT_ROOT`), so that `data/` and `logs/` do not depend on
  the directory a command is started from.
- `${iters:40000}` -> "40k": iteration counts as MMSegmentation writes them in run names.
- `${metric_name:val/mDice}` -> "mDice": a metric key's last part, for file names (`best_mDice_iter_...`).
- `${composed_name:${model.name}}` -> "upernet_r18+swin_tiny" for `model/backbone=swin_tiny` on the command line:
  the run name says which parts were swapped.
- `${coalesce:${a},${b}}`: the first argument that is not null (or empty), e.g. the experiment's name or else
  the dataset's for the wandb group.
- `${unique_dir:<path>}`: `<path>`, or `<path>_1`, `<path>_2`, ... whichever this process creates first
  (`mkdir(exist_ok=False)`, atomic): two launches in the same second never share a run folder (Hydra's
  `${now:}` has one-second resolution). Cached, so every read of `hydra.run.dir` in a process gives one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> str:
    return os.environ.get("SEGKIT_ROOT", str(PROJECT_ROOT))


def iters(n: int) -> str:
    # not int(n): `schedule.max_steps=abc` would fail here, inside the run folder's name (`hydra.run.dir`), and
    # be blamed on it; the config check of the entry point names schedule.max_steps instead
    try:
        n = int(n)
    except (TypeError, ValueError):
        return str(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def composed_name(name: str) -> str:
    """`name` plus the `model/...` groups the command line swapped (so does `resume_dir`); outside a Hydra run
    (compose API) the name as it is."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return str(name)
    swapped = [
        o.split("=", 1)[1]
        for o in HydraConfig.get().overrides.task
        if "=" in o and o.lstrip("+~").split("=", 1)[0].startswith("model/") and o.split("=", 1)[1]
    ]
    return "+".join([str(name), *swapped])


def metric_name(key: str) -> str:
    return str(key).rsplit("/", 1)[-1]


def coalesce(*values: object) -> object:
    return next((v for v in values if v is not None and v != ""), None)


def unique_dir(path: str) -> str:
    base = Path(str(path))
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        return str(candidate)
    raise FileExistsError(f"run folder '{base}' and its 999 numbered variants exist already")


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("iters", iters, replace=True)
    OmegaConf.register_new_resolver("metric_name", metric_name, replace=True)
    OmegaConf.register_new_resolver("composed_name", composed_name, replace=True)
    OmegaConf.register_new_resolver("coalesce", coalesce, replace=True)
    OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True, use_cache=True)


register_resolvers()
