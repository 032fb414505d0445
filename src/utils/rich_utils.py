"""Printing with rich: the composed config as a tree, metric tables per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from src.utils.formatting import percent

CONFIG_ORDER = ("model", "dataset", "schedule", "runtime", "logger", "paths")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None, resolve: bool = True) -> None:
    """Print the config as a tree, main groups first, and optionally save the same text to a file."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in CONFIG_ORDER if k in cfg] + [k for k in cfg if k not in CONFIG_ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as f:
            rich.print(tree, file=f)


def print_metrics_table(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, float], title: str) -> None:
    """Per-class metrics in percent, MMSegmentation's layout, with the means as last row."""
    keys = [k for k in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall") if k in rows[0]]
    table = Table(title=f"{title} (%)")
    table.add_column("Class", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(str(row["class"]), *[percent(row[k]) for k in keys])
    table.add_section()
    table.add_row("mean", *[percent(summary.get(f"m{k}", float("nan"))) for k in keys], style="bold")
    table.caption = f"aAcc {percent(summary.get('aAcc', float('nan')))} %"
    rich.print(table)
