"""Parameters and FLOPs of a model config at an input shape, as MMSegmentation's tools/analysis_tools/get_flops.py.

python scripts/get_flops.py model=pspnet_r50-d8 shape=[512,1024]
python scripts/get_flops.py experiment=pspnet_cityscapes              # shape: the dataset's crop_size
python scripts/get_flops.py model=smp_unet_r18 shape=512 out_json=flops.json

Any training override composes (conf/get_flops.yaml reuses the model/dataset groups). The model is built with
random weights (no download). FLOPs are PyTorch's (a multiply-add = 2 FLOPs); MMSegmentation's and fvcore's
"FLOPs" are multiply-adds, printed here as MACs. See src/tools/flops.py for what is counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig

from src.loading.checkpoint import build_segmentor
from src.tools.flops import human, segmentor_complexity
from src.utils import resolvers  # noqa: F401
from src.utils.errors import report_errors


def input_shape(cfg: DictConfig) -> list[int]:
    shape = cfg.get("shape")
    if shape is None:
        shape = cfg.dataset.get("crop_size")
        if shape is None:
            raise ValueError("shape=null and the dataset config has no crop_size: give shape=[H,W]")
    if isinstance(shape, int):
        return [shape, shape]
    if not isinstance(shape, ListConfig | list | tuple) or len(shape) != 2:
        raise ValueError(f"shape={shape}: expected [height, width] or one int for a square")
    return [int(s) for s in shape]


def get_flops(cfg: DictConfig) -> dict[str, Any]:
    shape = input_shape(cfg)
    segmentor = build_segmentor(cfg.model)
    report = segmentor_complexity(segmentor, shape, batch_size=cfg.batch_size, device=cfg.device)
    p = report["params"]
    lines = [
        f"model        {report['model']}",
        f"input        {report['input_shape']} (N, C, H, W)",
        f"params       {human(p['total'])} ({p['total']:,}): backbone {human(p['backbone'])}, "
        f"neck {human(p['neck'])}, decode head {human(p['decode_head'])}, "
        f"auxiliary head {human(p['auxiliary_head'])} (training only)",
        f"FLOPs        {human(report['flops'], 'FLOPs')} ({report['flops']:,}; 1 multiply-add = 2 FLOPs, PyTorch's count)",
        f"MACs         {human(report['macs'], 'MACs')} (multiply-adds: what MMSegmentation/mmengine and fvcore print as 'Flops')",
        "per module   "
        + ", ".join(f"{k} {human(v, 'FLOPs')}" for k, v in report["flops_per_module"].items()),
        "(inference network: backbone + neck + decode head on one whole image; convolutions and matrix products "
        "counted, normalisation, activations, pooling and interpolation not)",
    ]
    print("\n".join(lines))
    if cfg.get("out_json"):
        out = Path(cfg.out_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"written: {out}")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="get_flops")
@report_errors
def main(cfg: DictConfig) -> None:
    get_flops(cfg)


if __name__ == "__main__":
    main()
