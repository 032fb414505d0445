"""MMSegmentation's side of `scripts/compare_with_mmseg.py`. Runs in MMSegmentation's Python (its own environment,
see `../shared/mmseg/README.md`), never in this project's: it imports nothing from `src`.

    <mmseg python> scripts/tools/mmseg_side.py train spec.json
    <mmseg python> scripts/tools/mmseg_side.py predict spec.json

`train`: one of its configs trained with its own Runner on a reduced budget, tested once. `spec.json`:
{"config": "configs/unet/...py" (under mmseg's packaged `.mim/`) | a path, "data_root": ..., "iters": 500,
"seed": 0, "work_dir": ..., "threads": 1, "num_workers": 1, "device": "cpu", "dataset": null | {"type":
"StanfordBackgroundDataset", ...} (a folder dataset registered here), "set": {...}} (`set`: dotted keys of the
config to replace, e.g. {"model.decode_head.num_classes": 8}). The budget replaces the schedule's length:
`max_iters` and every scheduler's `end` become `iters` (a warm-up shorter than that is kept), there is no
validation during training, one checkpoint at the end, and `runner.test()` evaluates once. SyncBN becomes BN (one
process). Writes `<work_dir>/result.json` (metrics, seconds, versions), `<work_dir>/config.json` (the config as
run, `Config.to_dict()`), and MMEngine's own logs (`<work_dir>/<time>/vis_data/scalars.json`: the loss curve).

`predict`: {"config", "image", "out", "seed"}. The model is built by MMSegmentation from the config (SyncBN as BN)
with its own initialisation; its BatchNorm statistics and affine parameters and ConvNeXt's layer scales are then
drawn at random (seeded), so that every block shapes the output. It is saved as MMEngine's Runner saves a
checkpoint (`{"meta": {"cfg": <the config text>, ...}, "state_dict": ...}`) to `<out>/mmseg.pth`, loaded back by
`init_model`, and `inference_model(model, image)` (the config's test pipeline and test mode) gives
`<out>/pred.npy` (class indices) and `<out>/logits.npy`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _set(cfg, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        cfg = cfg[int(key)] if isinstance(cfg, list) else cfg[key]
    cfg[int(last) if isinstance(cfg, list) else last] = value


def _without_syncbn(cfg):
    """The config with every SyncBN as BN (one process trains and tests here)."""
    from mmengine.config import Config

    data = cfg.to_dict()
    _no_syncbn(data)
    return Config(data)


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


def train(spec: dict) -> int:
    threads = int(spec.get("threads", 1))
    import torch

    torch.set_num_threads(threads)
    import mmseg
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = config_of(spec)
    if spec.get("dataset"):
        register_folder_dataset(spec["dataset"])
    iters = int(spec["iters"])
    work_dir = Path(spec["work_dir"])
    cfg.work_dir = str(work_dir)
    cfg.launcher = "none"
    cfg.randomness = {"seed": int(spec["seed"]), "deterministic": False}
    cfg.train_cfg.max_iters = iters
    # no validation while training (MMEngine would validate at the last iteration): one test, after
    cfg.train_cfg.val_begin = iters + 1
    for scheduler in cfg.param_scheduler:
        if scheduler.get("end", 0) > iters:
            scheduler["end"] = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = int(spec.get("log_interval", 10))
    # the logged iteration's loss, as ours
    cfg.log_processor = {**cfg.get("log_processor", {}), "window_size": 1}
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
    cfg = _without_syncbn(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(
        json.dumps({**cfg.to_dict(), "mmseg_config": spec["config"]}, default=str)
    )
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


def predict(spec: dict) -> int:
    import mmseg
    import numpy as np
    import torch
    from mmseg.apis import inference_model, init_model

    cfg = _without_syncbn(config_of(spec))
    torch.manual_seed(int(spec.get("seed", 0)))
    model = init_model(cfg, None, device="cpu")
    model.init_weights()
    gen = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
                module.weight.copy_(1 + torch.randn(module.weight.shape, generator=gen) * 0.1)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        for name, param in model.named_parameters():
            if name.endswith(".gamma"):  # ConvNeXt's layer scale (1e-6 at init: blocks would be identities)
                param.copy_(torch.rand(param.shape, generator=gen) * 0.5)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "meta": {
            "cfg": cfg.pretty_text,
            "mmseg_version": mmseg.__version__,
            "seed": int(spec.get("seed", 0)),
        },
        "state_dict": model.state_dict(),
    }
    torch.save(ckpt, out / "mmseg.pth")
    model = init_model(cfg, str(out / "mmseg.pth"), device="cpu")
    result = inference_model(model, spec["image"])
    np.save(out / "pred.npy", result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8))
    np.save(out / "logits.npy", result.seg_logits.data.cpu().numpy())
    print(json.dumps({"test_cfg": dict(cfg.model.test_cfg), "pred": str(out / "pred.npy")}))
    return 0


def config_of(spec: dict):
    """The config of `spec["config"]` (a path, or a path under MMSegmentation's packaged configs)."""
    import mmseg
    from mmengine.config import Config

    path = Path(spec["config"])
    if not path.is_file():
        path = Path(mmseg.__file__).parent / ".mim" / spec["config"]
    return Config.fromfile(str(path))


if __name__ == "__main__":
    command, spec_path = sys.argv[1], sys.argv[2]
    raise SystemExit({"train": train, "predict": predict}[command](json.loads(Path(spec_path).read_text())))
