"""`torch.compile` of a segmentor (`runtime.compile`, `compile=true` in `src.eval` / `src.infer`, `Segmenter`).

The parts (backbone, neck, heads) are compiled in place (`nn.Module.compile`), so parameter names and checkpoints
stay as they are. Compilation is lazy: where the compiler fails on the first call, `CompiledCall` undoes it, says
so in one warning line, and runs that call (and every later one) eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from src.utils.logging import get_logger

log = get_logger(__name__)


def segmentor_parts(segmentor: nn.Module) -> list[nn.Module]:
    parts = [getattr(segmentor, "backbone", None), getattr(segmentor, "neck", None)]
    parts += [getattr(segmentor, "decode_head", None), *getattr(segmentor, "auxiliary_heads", [])]
    return [p for p in parts if isinstance(p, nn.Module)]


def compile_segmentor(segmentor: nn.Module, **options: Any) -> nn.Module:
    """Compile the segmentor's parts in place (`torch.compile` options, e.g. `mode="max-autotune"`), and wrap its
    entry points (`loss`, `encode_decode`) so that a compiler failure falls back to eager mode. Returns it.

    A model without such parts (an exported file's runner, compiled by its exporter already) is returned as it is.
    """
    parts = segmentor_parts(segmentor)
    if not parts:
        return segmentor
    for part in parts:
        part.compile(**options)
    for name in ("loss", "encode_decode"):
        method = getattr(segmentor, name, None)
        if method is not None and not isinstance(method, CompiledCall):
            setattr(segmentor, name, CompiledCall(segmentor, method))
    return segmentor


def is_compiled(segmentor: nn.Module) -> bool:
    return any(getattr(p, "_compiled_call_impl", None) is not None for p in segmentor_parts(segmentor))


class CompiledCall:
    """A segmentor method whose first failing call under the compiler switches the segmentor back to eager mode
    (one warning) and is run again eagerly. Errors that are the model's own (eager mode fails too) propagate."""

    def __init__(self, segmentor: nn.Module, method: Callable[..., Any]) -> None:
        self.segmentor, self.method = segmentor, method
        functools.update_wrapper(self, method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not is_compiled(self.segmentor):
            return self.method(*args, **kwargs)
        try:
            return self.method(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - whatever the compiler raises (its exception types vary)
            for part in segmentor_parts(self.segmentor):  # back to eager: drop what `nn.Module.compile` set
                part._compiled_call_impl = None
            name = getattr(self.segmentor, "name", None) or type(self.segmentor).__name__
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            log.warning(
                f"compile: torch.compile failed on {name} ({type(err).__name__}: {reason}); running it eagerly"
            )
            return self.method(*args, **kwargs)
