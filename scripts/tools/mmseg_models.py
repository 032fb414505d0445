"""MMSegmentation's own model, timed in its own Python: the worker behind `scripts/benchmark.py --families --mmseg`.

MMSegmentation is not a dependency of this project. `--mmseg PYTHON` names the interpreter of an environment that
has it (mmsegmentation 1.2.2, mmcv-lite, mmengine, mmpretrain for ConvNeXt, and the same torch as this project);
the benchmark starts this file there once per family and sends it one JSON request per line on stdin:

    {"op": "train", "batch": B, "crop": [H, W], "warmup": W, "steps": N}
    {"op": "infer", "size": [H, W], "mode": "whole"|"slide", "warmup": W, "steps": N}

each answered with {"s": [seconds of each timed call], "cpu_s": their mean process CPU seconds}.

The model is `MODELS.build(cfg.model)` of a resolved config of `../shared/mmseg/configs/` (SyncBN -> BN, no
pretrained weights), the optimiser `build_optim_wrapper(model, cfg.optim_wrapper)` with its paramwise rules; a
training step is `model.train_step(data, optim_wrapper)` as MMEngine's loop calls it (preprocessor, losses,
backward, step), inference `model.inference(inputs, metas)` (whole or slide, MMSegmentation's own loops).
MMEngine's AmpOptimWrapper runs only on CUDA: on a CPU the step is fp32 (`OptimWrapper`), as MMSegmentation
trains there. It runs in the other Python beside `mmseg_side.py` (whose SyncBN -> BN it uses) and imports nothing
from `src`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from mmseg_side import _no_syncbn  # this file's folder is first on sys.path when it runs


def _no_pretrained(model: dict) -> dict:
    model = dict(model, pretrained=None)
    model["backbone"] = {k: v for k, v in model["backbone"].items() if k not in ("init_cfg", "pretrained")}
    return model


def build(config_path: str, threads: int) -> tuple[Any, Any]:
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    torch.set_num_threads(threads)
    register_all_modules()
    with open(config_path) as f:
        data = json.load(f)
    _no_syncbn(data)  # one process
    cfg = Config(data)
    torch.manual_seed(0)
    model = MODELS.build(_no_pretrained(cfg.model.to_dict()))
    wrapper = dict(cfg.optim_wrapper.to_dict())
    if wrapper.get("type") == "AmpOptimWrapper":  # CUDA only in MMEngine
        wrapper = {k: v for k, v in wrapper.items() if k != "loss_scale"} | {"type": "OptimWrapper"}
    return model, build_optim_wrapper(model, wrapper)


def _batch(batch: int, crop: list[int], num_classes: int) -> dict[str, Any]:
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    h, w = crop
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        mask = torch.randint(0, num_classes, (1, h, w), generator=gen)
        sample = SegDataSample(gt_sem_seg=PixelData(data=mask))
        sample.set_metainfo({"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)})
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def _time(fn: Any, req: dict) -> dict[str, Any]:
    """The reply: `req["steps"]` calls of `fn` timed after `req["warmup"]` untimed ones."""
    times, cpu = [], 0.0
    for step in range(req["warmup"] + req["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if step >= req["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
    return {"s": times, "cpu_s": cpu / max(1, req["steps"])}


def train(model: Any, wrapper: Any, req: dict) -> dict[str, Any]:
    data = _batch(req["batch"], req["crop"], model.decode_head.num_classes)
    model.data_preprocessor.size = tuple(req["crop"])  # pads to the config's crop otherwise
    model.train()
    return _time(lambda: model.train_step(data, wrapper), req)


def infer(model: Any, req: dict) -> dict[str, Any]:
    import torch
    from mmengine.config import ConfigDict

    h, w = req["size"]
    model.eval()
    model.test_cfg = ConfigDict(mode=req["mode"])
    if req["mode"] == "slide":
        model.test_cfg.update(crop_size=tuple(req["crop"]), stride=tuple(req["stride"]))
    images = torch.randn(1, 3, h, w)
    metas = [{"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)}]
    with torch.no_grad():
        return _time(lambda: model.inference(images, metas), req)


def main() -> None:
    replies, sys.stdout = sys.stdout, sys.stderr  # MMSegmentation's own prints must not mix with the replies
    config_path, threads = sys.argv[1], int(sys.argv[2])
    model, wrapper = build(config_path, threads)
    import mmseg
    import torch

    print(
        json.dumps({"ready": True, "mmseg": mmseg.__version__, "torch": torch.__version__}),
        file=replies,
        flush=True,
    )
    for line in sys.stdin:
        req = json.loads(line)
        out = train(model, wrapper, req) if req["op"] == "train" else infer(model, req)
        print(json.dumps(out), file=replies, flush=True)


if __name__ == "__main__":
    main()
