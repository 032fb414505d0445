"""Types and ranges of the config keys a user sets most, checked before anything is built.

Not Hydra structured configs: the groups hold free `_target_` nodes whose keys differ per class, and a schema
each would duplicate their signatures. These rules cover the keys whose bad values would surface late, deep in
torch (`batch_size=0`, `lr=-0.01`) or under another key's name (`schedule.max_steps=abc` in the run folder's
name). Every violation is reported at once, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.utils.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    key: str
    kind: str  # "int", "number", "workers" or "flag"
    ok: Callable[[float], bool]
    allowed: str  # what `ok` accepts, in words
    nullable: bool = False


def _int(key: str, low: int = 1, nullable: bool = False) -> Rule:
    return Rule(key, "int", lambda v: v >= low, f"an integer >= {low}", nullable)


def _workers(key: str) -> Rule:
    return Rule(key, "workers", lambda v: v == "auto" or v >= 0, "an integer >= 0 or 'auto'")


def _flag(key: str) -> Rule:
    """A switch: `fold_bn=maybe` would otherwise read as on (a non-empty string)."""
    return Rule(key, "flag", lambda v: True, "true or false")


def _positive(key: str) -> Rule:
    return Rule(key, "number", lambda v: v > 0, "a number > 0")


def _fraction(key: str, low_open: bool = False, high_open: bool = False) -> Rule:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")

    def ok(v: float) -> bool:
        return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    return Rule(key, "number", ok, f"a number in {lo}0, 1{hi}")


TRAIN_RULES = (
    _int("schedule.max_steps"),
    _int("schedule.val_interval", nullable=True),
    _int("schedule.ckpt_interval", nullable=True),
    _positive("schedule.lr"),
    _int("schedule.warmup_iters", low=0),
    _fraction("schedule.warmup_ratio", low_open=True),
    _int("schedule.accumulate_grad_batches", nullable=True),
    _positive("schedule.clip_grad.max_norm"),
    _positive("schedule.optimizer.lr"),
    Rule("schedule.optimizer.weight_decay", "number", lambda v: v >= 0, "a number >= 0"),
    _fraction("schedule.optimizer.momentum", high_open=True),
    _int("dataset.batch_size"),
    _int("dataset.val_batch_size"),
    _int("dataset.num_classes", nullable=True),
    Rule("dataset.ignore_index", "int", lambda v: 0 <= v <= 65535, "an integer in 0..65535"),
    _workers("runtime.num_workers"),
    _int("runtime.log_interval"),
    _flag("runtime.compile"),
)
EVAL_RULES = (
    _int("batch_size"),
    _workers("num_workers"),
    _fraction("opacity"),
    _flag("compile"),
    _flag("fold_bn"),
)
INFER_RULES = (_int("batch_size"), _fraction("opacity"), _flag("compile"), _flag("fold_bn"))
EXPORT_RULES = (_flag("fold_bn"), _flag("parity"))


def _type_ok(value: Any, kind: str) -> bool:
    if isinstance(value, bool) or kind == "flag":
        return isinstance(value, bool) and kind == "flag"
    if kind == "workers":
        return value == "auto" or isinstance(value, int)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _points_to_checked_key(node: DictConfig, leaf: str, rules: tuple[Rule, ...]) -> bool:
    if not OmegaConf.is_interpolation(node, leaf):
        return False
    raw = str(node._get_node(leaf)._value()).strip()
    return any(raw == f"${{{rule.key}}}" for rule in rules)


def problems(cfg: DictConfig, rules: tuple[Rule, ...]) -> list[str]:
    """One line per rule that `cfg` breaks ("key=value: expected ..."); keys absent from `cfg` are skipped."""
    found = []
    for rule in rules:
        parent, _, leaf = rule.key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            continue
        if _points_to_checked_key(node, leaf, rules):
            continue  # e.g. schedule.optimizer.lr: ${schedule.lr}, reported once under schedule.lr
        try:
            value = node[leaf]
        except OmegaConfBaseException as err:
            found.append(f"{rule.key}: cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0]})")
            continue
        if value is None and rule.nullable:
            continue
        if value is None or not _type_ok(value, rule.kind) or not rule.ok(value):
            shown = repr(value) if isinstance(value, str) else value
            found.append(f"{rule.key}={shown}: expected {rule.allowed}{' or null' if rule.nullable else ''}")
    return found


def check_config(cfg: DictConfig, rules: tuple[Rule, ...] = TRAIN_RULES) -> None:
    """Raise a ConfigError listing every broken rule."""
    found = problems(cfg, rules)
    if found:
        head = "invalid config value" + ("s" if len(found) > 1 else "")
        raise ConfigError(
            f"{head}:\n" + "\n".join(f"- {line}" for line in found),
            hint=f"set it on the command line ({found[0].split('=')[0].split(':')[0]}=...) or in its YAML "
            "file under conf/; `--cfg job` prints the composed config.",
        )
