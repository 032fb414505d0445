"""MMSegmentation 1.x checkpoints -> this project's segmentors.

    state = load_mmseg_state_dict("pspnet_r18-d8.pth")            # MMEngine's {'meta', 'state_dict'} or bare
    ours = convert_mmseg_state_dict(state, segmentor, source=path)  # strict: every tensor placed, shapes checked
    segmentor.load_state_dict(ours)

A checkpoint is split by its top-level module (`backbone.`, `neck.`, `decode_head.`, `auxiliary_head.[N.]`), and
each part goes through the key map registered for the class of our module there (`src.weights.keymaps`). Files
are read with `weights_only=True`; objects MMEngine pickles beside the weights (its message hub, numpy scalars)
are read as inert placeholders, so no code from the file is imported or run. Only `state_dict` is used.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.utils.errors import CheckpointError
from src.utils.logging import get_logger
from src.weights.keymaps import keymap_for

log = get_logger(__name__)

SHOWN = 5  # names shown per kind of mismatch in an error
MAX_PLACEHOLDERS = 64
MMSEG_PARTS = ("backbone", "neck", "decode_head", "auxiliary_head")


class MMSegCheckpointError(CheckpointError):
    """An MMSegmentation checkpoint that cannot be read or does not fit the model (a `ValueError`, shown by the
    entry points as one short block)."""


# ----------------------------------------------------------------------------------------------- reading
class _Inert:
    """Stands in for a class the weights-only unpickler does not allow (MMEngine's HistoryBuffer, numpy's
    scalar): accepts any construction and state and does nothing with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def load_weights_file(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` of `path` on the CPU; objects of classes outside PyTorch's allow-list
    (metadata such as MMEngine's message hub) come back as inert placeholders (see the module docstring).
    FileNotFoundError / MMSegCheckpointError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # not only tensors and containers: name the classes, read again with placeholders for them
    except Exception as err:
        raise MMSegCheckpointError(f"cannot read '{path}' as a PyTorch file: {err}") from err
    try:  # the zip format lists its globals without unpickling; the legacy one (torch < 1.6) does not
        names = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        names = set()
    for _ in range(MAX_PLACEHOLDERS):
        try:
            with torch.serialization.safe_globals([_placeholder(n) for n in sorted(names)]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # the refusal names the next global it does not allow; a blocked module (os, ...) ends the search
            more = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(err))
            if more is None or more.group(1) in names:
                raise _refused(path, err) from err
            names.add(more.group(1))
        except Exception as err:
            raise _refused(path, err) from err
    raise MMSegCheckpointError(
        f"'{path}' holds objects of more than {MAX_PLACEHOLDERS} classes besides its tensors"
    )


def _placeholder(name: str) -> tuple[type, str]:
    """An inert class standing in for the global `name` (`module.Class` or `module.function`)."""
    module, _, qualname = name.rpartition(".")
    return type(qualname, (_Inert,), {"__module__": module}), name


def _refused(path: Path, err: Exception) -> MMSegCheckpointError:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "GLOBAL" in ln), lines[-1] if lines else type(err).__name__)
    return MMSegCheckpointError(
        f"'{path}' was refused by PyTorch's weights-only loader ({reason[:200]}); only tensors and plain "
        "containers are read, never code from the file"
    )


def state_dict_of(ckpt: Any, path: str | Path = "<state dict>") -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: its `state_dict` entry (MMEngine's format) or the object itself (a
    bare state dict); a DDP `module.` prefix on every key is removed."""
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise MMSegCheckpointError(
            f"'{path}' holds no state dict (expected {{'meta', 'state_dict'}} or tensors)"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        other = [k for k in state if k not in tensors][:SHOWN]
        raise MMSegCheckpointError(f"'{path}': its state dict has entries that are not tensors, e.g. {other}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_mmseg_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an MMSegmentation checkpoint file (`{'meta', 'state_dict'}` or a bare state dict)."""
    return state_dict_of(load_weights_file(path), path)


def is_mmseg_state_dict(state: Mapping[str, Any]) -> bool:
    """True when the names are MMSegmentation's segmentor names, not this project's: a singular
    `auxiliary_head.`, a ResNet `backbone.stem.`/`backbone.layerN.`/`backbone.conv1.`, or MMSegmentation's
    top-level parts without this project's `backbone.body.` / `auxiliary_heads.` / `segmentor.`."""
    keys = list(state)
    if any(k.startswith(("segmentor.", "auxiliary_heads.", "backbone.body.")) for k in keys):
        return False
    if any(re.match(r"(auxiliary_head\.|backbone\.(stem|layer\d|conv1)\.)", k) for k in keys):
        return True
    return bool(keys) and all(k.split(".", 1)[0] in MMSEG_PARTS for k in keys)


def is_mmseg_checkpoint(ckpt: Any) -> bool:
    """True for a loaded file whose tensors carry MMSegmentation's segmentor names (`is_mmseg_state_dict`)."""
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    return isinstance(state, Mapping) and is_mmseg_state_dict(state)


# -------------------------------------------------------------------------------------------- converting
def _parts(segmentor: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(MMSegmentation prefix, our prefix, our module) for each part the segmentor has."""
    parts = [("backbone.", "backbone.", segmentor.backbone)]
    if getattr(segmentor, "neck", None) is not None:
        parts.append(("neck.", "neck.", segmentor.neck))
    parts.append(("decode_head.", "decode_head.", segmentor.decode_head))
    return parts


def _aux_prefixes(mm_state: Mapping[str, torch.Tensor], count: int) -> list[str]:
    """MMSegmentation's prefix of each auxiliary head: `auxiliary_head.` for one head (a dict in its config),
    `auxiliary_head.N.` when the checkpoint has a list of them."""
    listed = any(re.match(r"auxiliary_head\.\d+\.", k) for k in mm_state)
    if count == 1 and not listed:
        return ["auxiliary_head."]
    return [f"auxiliary_head.{i}." for i in range(count)]


def convert_mmseg_state_dict(
    mm_state: Mapping[str, torch.Tensor],
    segmentor: nn.Module,
    source: str | Path = "<state dict>",
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """MMSegmentation tensor names -> `segmentor`'s state-dict names (an `EncoderDecoder`).

    Always refused (MMSegCheckpointError naming `source` and the first names): MMSegmentation tensors that no
    key map places, and converted names the model does not have. With `strict` (evaluation, inference,
    conversion) also the model's tensors that the checkpoint lacks and tensors whose shape differs; without it
    (`load_from` fine-tuning) those are left to the caller, who keeps the model's own initialisation for them.
    """
    remaining = dict(mm_state)
    ours: dict[str, torch.Tensor] = {}
    origin: dict[str, str | None] = {}  # our name -> the MMSegmentation name it came from
    aux_heads = list(getattr(segmentor, "auxiliary_heads", []))
    parts = _parts(segmentor) + [
        (prefix, f"auxiliary_heads.{i}.", head)
        for i, (prefix, head) in enumerate(zip(_aux_prefixes(mm_state, len(aux_heads)), aux_heads))
    ]
    for mm_prefix, our_prefix, module in parts:
        sub = {k[len(mm_prefix) :]: v for k, v in remaining.items() if k.startswith(mm_prefix)}
        if not sub:
            continue  # reported below as the model's missing tensors
        try:
            keymap = keymap_for(module)
        except KeyError as err:
            raise MMSegCheckpointError(
                f"'{source}': cannot place its {mm_prefix.rstrip('.')} tensors: {err.args[0]}"
            ) from None
        source_of = {id(v): k for k, v in sub.items()}
        taken = set(sub)
        for name, value in keymap(sub, module).items():
            ours[our_prefix + name] = value
            origin[our_prefix + name] = mm_prefix + source_of[id(value)] if id(value) in source_of else None
        for name in taken - set(sub):  # what the key map popped
            del remaining[mm_prefix + name]
    own = segmentor.state_dict()
    unexpected = []
    for name in [k for k in ours if k not in own]:
        # a name the map made that the model lacks (a 5th ResNet stage, say): report the file's own name
        if origin.get(name) is not None:
            remaining[origin[name]] = ours.pop(name)
        else:
            unexpected.append(name)
    problems = []
    if remaining:
        problems.append(
            f"{len(remaining)} of its tensors have no place in the model, e.g. {_first(remaining)}"
        )
    if unexpected:
        problems.append(f"{len(unexpected)} converted names are not in the model, e.g. {_first(unexpected)}")
    if strict:
        missing = [k for k in own if k not in ours]
        if missing:
            problems.append(f"{len(missing)} tensors of the model are not in it, e.g. {_first(missing)}")
        problems += _shape_problems(ours, own, origin)
    if problems:
        model = getattr(segmentor, "name", None) or type(segmentor).__name__
        raise MMSegCheckpointError(
            f"MMSegmentation checkpoint '{source}' does not fit model '{model}': " + "; ".join(problems),
            hint="give the model the checkpoint was trained with (model=<name>) and its dataset (dataset=<name>)",
        )
    return ours


def _shape_problems(
    ours: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], origin: Mapping[str, str | None]
) -> list[str]:
    """The tensors whose shapes differ as one problem: another class count, or the first names and shapes."""
    bad = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in ours.items()
        if k in own and v.shape != own[k].shape
    ]
    if not bad:
        return []
    classes = [(c[0], m[0]) for k, c, m in bad if k.endswith("conv_seg.weight")]
    if classes and all(k.rsplit(".", 2)[-2] == "conv_seg" for k, _, _ in bad):
        return [
            f"it predicts {classes[0][0]} classes and the model {classes[0][1]} (dataset=<name> sets the "
            "class count; load_from=<file> fine-tunes it on another one)"
        ]
    shown = ", ".join(
        f"{origin.get(k) or k}: checkpoint {list(c)}, model {list(m)} ({k})" for k, c, m in bad[:SHOWN]
    )
    return [f"{len(bad)} tensors differ in shape, e.g. {shown}"]


def _first(names: Sequence[str] | Mapping[str, Any]) -> list[str]:
    return list(names)[:SHOWN]


def mmseg_meta(ckpt: Any) -> dict[str, Any]:
    """The plain (str/number) entries of an MMEngine checkpoint's `meta` (e.g. `mmseg_version`), for records."""
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    if not isinstance(meta, Mapping):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str | int | float) and k != "config"}
