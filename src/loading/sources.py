"""Any model source as (segmentor, metadata), through one table of formats: the loader of `Segmenter`,
`src.eval`, `src.infer` and the scripts.

    segmentor, meta = load_model("logs/.../last.ckpt")                 # this project's checkpoint
    segmentor, meta = load_model("pspnet.pth", model_cfg=..., dataset_cfg=...)   # MMSegmentation's
    segmentor, meta = load_model("zoo:pspnet_r50-d8_4xb2-40k_cityscapes-512x1024")   # the model zoo
    segmentor, meta = load_model("model.onnx")                          # an export; also .pt2, .torchscript
    segmentor, meta = load_model("my_model/")                           # save_pretrained's folder, or user/repo

`meta` is what a checkpoint of this project carries under `CHECKPOINT_META_KEY`: the resolved `config` (model,
dataset), `classes`, `palette`, and `source`. Resume and `load_from` read checkpoints through
`src.loading.checkpoint`, this table's `checkpoint` row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: file suffix -> (format, the backend that runs it); a folder or a `user/name` id is a pretrained folder, a
#: `zoo:<name>` a zoo entry, any other file a checkpoint (ours, or MMSegmentation's with model and dataset)
FORMATS = {
    ".onnx": ("onnx", "onnxruntime"),
    ".pt2": ("torch_export", "torch_export"),
    ".torchscript": ("torchscript", "torchscript"),
}
BACKENDS = ("auto", "torch", "onnxruntime", "torch_export", "torchscript")
#: what `scripts/export.py format=<name>` writes: the format's file suffix (from the table above)
EXPORT_SUFFIXES = {fmt: suffix for suffix, (fmt, _) in FORMATS.items()}


def resolve_backend(path: str | Path, backend: str = "auto") -> str:
    """`torch` (a checkpoint), or the runner of an exported file by its suffix (`auto`); a given backend is
    checked against the file's suffix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend='{backend}': expected one of {BACKENDS}")
    by_suffix = FORMATS.get(Path(str(path)).suffix.lower(), (None, "torch"))[1]
    if backend == "auto":
        return by_suffix
    if backend != by_suffix:
        fmt = next((f for f, b in FORMATS.values() if b == backend), None)
        if fmt is not None:
            raise ValueError(
                f"backend={backend} runs {EXPORT_SUFFIXES[fmt]} files, got ckpt_path='{path}': export one with "
                f"`python scripts/export.py ckpt_path=<checkpoint> format={fmt}`"
            )
        raise ValueError(f"ckpt_path='{path}' is an exported file: evaluate it with backend={by_suffix}")
    return backend


def is_pretrained_source(path: str | Path) -> bool:
    """A folder written by `Segmenter.save_pretrained`, or a Hub id (`user/name`, no file suffix, no such path)."""
    from src.loading.pretrained import REPO_ID, is_pretrained_folder

    path_ = Path(str(path))
    if is_pretrained_folder(path_):
        return True
    return not path_.exists() and not path_.suffix and bool(REPO_ID.match(str(path)))


def load_model(
    source: str | Path,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    model_cfg: Any = None,
    dataset_cfg: Any = None,
    test_cfg_from: str = "checkpoint",
) -> tuple[Any, dict[str, Any]]:
    """The model of `source` and its metadata (see the module doc for the sources).

    `model_cfg`/`dataset_cfg`: an MMSegmentation checkpoint's model and dataset (required for it), or
    replacements for a checkpoint's own; `test_cfg_from`: an MMSegmentation checkpoint's test mode from its own
    config ("checkpoint") or from `model_cfg` ("config", when the user set it)."""
    text = str(source)
    if text.startswith("zoo:"):
        return _load_zoo(text, device, test_cfg_from)
    if is_pretrained_source(source):
        from src.loading.pretrained import load_pretrained

        return load_pretrained(source, device)
    backend = resolve_backend(source, backend)
    if backend != "torch":  # an exported file whose suffix resolve_backend checked against the backend
        from src.loading.exported import load_exported

        return load_exported(source, device)
    from src.loading.checkpoint import load_segmentor

    return load_segmentor(source, device, model_cfg, dataset_cfg, test_cfg_from)


def _load_zoo(name: str, device: str | torch.device, test_cfg_from: str) -> tuple[Any, dict[str, Any]]:
    """A zoo entry: its verified file (downloaded once), built with the entry's model and dataset configs."""
    from src.loading.checkpoint import load_segmentor
    from src.loading.mmseg import compose_model_dataset
    from src.weights.zoo import fetch, zoo_entry

    entry = zoo_entry(name)
    composed = compose_model_dataset(entry.model, entry.dataset, entry.eval_overrides()[2:])
    return load_segmentor(fetch(entry), device, composed.model, composed.dataset, test_cfg_from)
