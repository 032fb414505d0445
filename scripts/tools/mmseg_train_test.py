"""MMSegmentation's side of `scripts/compare_with_mmseg.py`: train one of its configs with its own Runner on a
reduced budget, test once, and write what happened. Runs in MMSegmentation's Python (its own environment, see
`../shared/mmseg/README.md`), never in this project's: it imports nothing from `src`.

    <mmseg python> scripts/tools/mmseg_train_test.py spec.json

`spec.json`: {"config": "configs/unet/...py" (under mmseg's packaged `.mim/`) | a path, "data_root": ...,
"iters": 500, "seed": 0, "work_dir": ..., "threads": 1, "num_workers": 1, "device": "cpu",
"dataset": null | {"type": "StanfordBackgroundDataset", ...} (a folder dataset registered here), "set": {...}}
(`set`: dotted keys of the config to replace, e.g. {"model.decode_head.num_classes": 8}).

The budget replaces the schedule's length: `max_iters` and every scheduler's `end` become `iters` (a warm-up
shorter than that is kept), there is no validation during training, one checkpoint at the end, and `runner.test()`
evaluates once. SyncBN becomes BN (one process). Writes `<work_dir>/result.json` (metrics, seconds per iteration,
versions), `<work_dir>/config.json` (the config as run, `Config.to_dict()`), and MMEngine's own logs
(`<work_dir>/<time>/vis_data/scalars.json` holds the loss curve).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _set(cfg, dotted: str, value) -> None:
    node = cfg
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _no_syncbn(node) -> None:
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _no_syncbn(value)
    elif isinstance(node, list):
        for value in node:
            _no_syncbn(value)


# keys whose values MMSegmentation's transforms want as tuples (JSON gives lists)
TUPLE_KEYS = ("crop_size", "scale", "size", "ratio_range", "img_scale", "contrast_range", "saturation_range")


def _tuples(node):
    if isinstance(node, dict):
        return {
            k: tuple(v) if k in TUPLE_KEYS and isinstance(v, list) else _tuples(v) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tuples(v) for v in node]
    return node


def _datasets(dataset):
    """The leaf datasets of a loader's dataset (through RepeatDataset / ConcatDataset)."""
    if dataset.get("type") == "RepeatDataset":
        return _datasets(dataset["dataset"])
    if dataset.get("type") == "ConcatDataset":
        return [d for inner in dataset["datasets"] for d in _datasets(inner)]
    return [dataset]


def register_folder_dataset(spec: dict) -> None:
    """A dataset class of `spec` (name, classes, palette, suffixes) in MMSegmentation's registry, as its
    "train on a new dataset" tutorial does for Stanford Background."""
    from mmseg.datasets import BaseSegDataset
    from mmseg.registry import DATASETS

    metainfo = {"classes": tuple(spec["classes"]), "palette": [list(c) for c in spec["palette"]]}

    class FolderDataset(BaseSegDataset):
        METAINFO = metainfo

        def __init__(self, **kwargs):
            super().__init__(img_suffix=spec["img_suffix"], seg_map_suffix=spec["seg_map_suffix"], **kwargs)

    FolderDataset.__name__ = spec["type"]
    DATASETS.register_module(name=spec["type"], module=FolderDataset, force=True)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    threads = int(spec.get("threads", 1))
    import torch

    torch.set_num_threads(threads)
    import mmseg
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    register_all_modules()
    config = spec["config"]
    path = Path(config)
    if not path.is_file():
        path = Path(mmseg.__file__).parent / ".mim" / config
    cfg = Config.fromfile(str(path))
    if spec.get("dataset"):
        register_folder_dataset(spec["dataset"])
    iters = int(spec["iters"])
    work_dir = Path(spec["work_dir"])
    cfg.work_dir = str(work_dir)
    cfg.launcher = "none"
    cfg.randomness = {"seed": int(spec["seed"]), "deterministic": False}
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_begin = (
        iters + 1
    )  # no validation (MMEngine validates at the last iteration too): one test
    for scheduler in cfg.param_scheduler:
        if scheduler.get("end", 0) > iters:
            scheduler["end"] = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = int(spec.get("log_interval", 10))
    cfg.default_hooks.visualization = {"type": "SegVisualizationHook", "draw": False}
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].num_workers = int(spec.get("num_workers", 1))
        cfg[loader].persistent_workers = int(spec.get("num_workers", 1)) > 0
        for dataset in _datasets(cfg[loader].dataset):
            dataset["data_root"] = spec["data_root"]
    for dotted, value in (spec.get("set") or {}).items():
        value = _tuples(value)
        if dotted.rsplit(".", 1)[-1] in TUPLE_KEYS and isinstance(value, list):
            value = tuple(value)
        _set(cfg, dotted, value)
    # after `set`: a pipeline given there is the one the loaders read too
    cfg_dict = cfg.to_dict()
    _no_syncbn(cfg_dict)
    cfg = Config(cfg_dict)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "mmseg_config": config}, default=str))
    if spec.get("device", "cpu") == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = runner.test()
    test_s = time.perf_counter() - start
    result = {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "iters": iters,
        "seed": int(spec["seed"]),
        "train_seconds": train_s,
        "test_seconds": test_s,
        "threads": threads,
        "versions": {"mmseg": mmseg.__version__, "torch": torch.__version__},
    }
    (work_dir / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
