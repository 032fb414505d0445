"""Key maps from MMSegmentation 1.x state dicts to this project's modules, one per module family.

A key map is a function `convert(mm, module) -> ours`: `mm` holds the MMSegmentation tensors of one top-level
module (`backbone`, `neck`, `decode_head`, `auxiliary_head`) with that prefix removed; the function pops every
key it maps from `mm` and returns the tensors under `module`'s own state-dict names (relative to `module`).
Whatever is left in `mm` did not map, and the caller refuses the checkpoint naming those keys.

Maps register themselves by the class name of the module they fill (`@register("TimmBackbone")`); every module
of this package is imported here, so a new family is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import torch
from torch import nn

KeyMap = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
KEYMAPS: dict[str, KeyMap] = {}


def register(*class_names: str) -> Callable[[KeyMap], KeyMap]:
    """Register a key map for the modules whose class is named one of `class_names`."""

    def wrap(fn: KeyMap) -> KeyMap:
        for name in class_names:
            if name in KEYMAPS:
                raise ValueError(f"a key map for {name} is already registered ({KEYMAPS[name].__module__})")
            KEYMAPS[name] = fn
        return fn

    return wrap


def keymap_for(module: nn.Module) -> KeyMap:
    """The key map of `module`'s class; KeyError naming the class when there is none."""
    name = type(module).__name__
    if name not in KEYMAPS:
        raise KeyError(
            f"no MMSegmentation key map for {name} (known: {', '.join(sorted(KEYMAPS)) or 'none'})"
        )
    return KEYMAPS[name]


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
