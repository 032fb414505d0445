"""MMSegmentation's side of `scripts/compare_with_mmseg.py predict`: a checkpoint of one of its configs, and its
`inference_model` prediction of an image. Runs in MMSegmentation's Python, never in this project's.

    <mmseg python> scripts/tools/mmseg_predict.py spec.json      # {"config", "image", "out", "seed"}

The model is built by MMSegmentation from the config (SyncBN as BN, one process) with its own initialisation;
its BatchNorm statistics and affine parameters and ConvNeXt's layer scales are then drawn at random (seeded), so
that every block shapes the output. It is saved as MMEngine's Runner saves a checkpoint (`{"meta": {"cfg": <the
config text>, ...}, "state_dict": ...}`) to `<out>/mmseg.pth`, loaded back by `init_model`, and
`inference_model(model, image)` (the config's test pipeline and test mode) gives `<out>/pred.npy` (class
indices) and `<out>/logits.npy`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _no_syncbn(node) -> None:
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _no_syncbn(value)
    elif isinstance(node, list):
        for value in node:
            _no_syncbn(value)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import mmseg
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model

    path = Path(spec["config"])
    if not path.is_file():
        path = Path(mmseg.__file__).parent / ".mim" / spec["config"]
    cfg = Config.fromfile(str(path))
    data = cfg.to_dict()
    _no_syncbn(data)
    cfg = Config(data)
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
