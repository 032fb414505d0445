"""Export a checkpoint (ONNX, torch.export, TorchScript) and check the exported model against PyTorch.

python scripts/export.py ckpt_path=logs/train/runs/<run>/<time>/checkpoints/last.ckpt   # -> last.onnx beside it
python scripts/export.py ckpt_path=... format=torch_export        # -> last.pt2 (torch.export, dynamic H x W)
python scripts/export.py ckpt_path=... format=torchscript         # -> last.torchscript (traced at sample_shape)
python scripts/export.py ckpt_path=... output=model.onnx image=street.png
python -m src.eval ckpt_path=model.pt2        # evaluate the exported model (backend by suffix), same metrics

Every format takes float32 RGB images [N, 3, H, W] with values 0..255 (normalisation is inside) and returns
logits [N, C, H, W]; batch, height and width are dynamic for onnx and torch_export, and the height and width are
the traced ones for torchscript. The file's metadata holds the checkpoint's config, classes and palette (see
src/serve/export.py). The parity check runs PyTorch and the exported model on a real image (the first test image of
the checkpoint's dataset, or `image=`) at a size other than the traced one (TorchScript: the traced one), prints
the largest logit difference and the share of pixels with the same class, writes them to `parity.json` in the
run directory and exits with 1 when they are beyond `atol` / `min_equal`. The file's BatchNorms are folded into
their convolutions (`fold_bn=false`: as trained). `scripts/export_onnx.py` is this script with format=onnx.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.data.io import load_image
from src.data.transforms import build_pipeline
from src.eval import build_datamodule
from src.loading.checkpoint import load_segmentor
from src.loading.exported import info_key, load_exported
from src.serve.export import FORMATS, check_format, export_model, parity_check
from src.serve.segmenter import resolve_device
from src.utils import resolvers  # noqa: F401
from src.utils.config_check import EXPORT_RULES, check_config
from src.utils.errors import report_errors
from src.utils.task import extras


def parity_image(cfg: DictConfig, config: DictConfig) -> tuple[torch.Tensor, str]:
    """A uint8 `[3, h, w]` image after the checkpoint's test pipeline, and where it comes from."""
    if cfg.get("image"):
        pipeline_cfg = config.dataset.get("test_pipeline")
        pipeline = build_pipeline(instantiate(pipeline_cfg)) if pipeline_cfg else None
        image = load_image(cfg.image)
        if pipeline is not None:
            image = pipeline(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), str(cfg.image)
    datamodule = build_datamodule(config.dataset, batch_size=1, num_workers=0)
    dataset = datamodule.build_split(cfg.split, pipeline=datamodule.test_pipeline, test_mode=True)
    sample = dataset[0]
    return sample["inputs"], sample["metas"]["img_path"]


def export(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg, EXPORT_RULES)
    fmt = str(cfg.get("format", "onnx"))
    check_format(fmt, cfg.get("opset"))
    ckpt = Path(cfg.ckpt_path)
    output = Path(cfg.output) if cfg.get("output") else ckpt.with_suffix(FORMATS[fmt])
    if output.suffix.lower() != FORMATS[fmt]:
        raise ValueError(
            f"output={output}: format={fmt} files end in {FORMATS[fmt]} (src.eval and src.infer pick the runner "
            "by the suffix)"
        )
    segmentor, meta = load_segmentor(ckpt, resolve_device(cfg.device))
    config = OmegaConf.create(meta["config"])
    shape = cfg.get("sample_shape") or config.dataset.get("crop_size") or [512, 512]
    start = time.perf_counter()
    payload = export_model(
        segmentor, output, fmt, meta, sample_shape=list(shape), opset=cfg.get("opset"), fold_bn=cfg.fold_bn
    )
    size_mb = output.stat().st_size / 2**20
    folded = payload[info_key(fmt)]["batchnorm_folded"]
    print(
        f"exported {output} ({fmt}, {size_mb:.1f} MiB, {folded} BatchNorms folded) in "
        f"{time.perf_counter() - start:.1f} s; traced at {list(shape)}"
        + (" (the only size it takes)" if fmt == "torchscript" else "")
    )
    report: dict[str, Any] = {
        "ckpt_path": str(ckpt),
        "format": fmt,
        "export_path": str(output),
        "sample_shape": list(shape),
    }
    if fmt == "onnx":
        report["onnx_path"] = str(output)
    if not cfg.parity:
        return report
    image, source = parity_image(cfg, config)
    exported, _ = load_exported(output, device=resolve_device(cfg.device))
    result = parity_check(segmentor, exported, image, avoid_shape=shape)
    ok = True
    for key, r in result.items():
        if "skipped" in r:
            print(f"parity {key:<10} skipped: {r['skipped']}")
            continue
        tol = cfg.atol * max(1.0, r["max_abs_logit"])
        r["passed"] = r["max_abs_diff"] <= tol and r["equal_pixels"] >= cfg.min_equal
        ok &= r["passed"]
        print(
            f"parity {key:<10} {'x'.join(map(str, r['shape']))}: max |logit diff| {r['max_abs_diff']:.3g} "
            f"(max |logit| {r['max_abs_logit']:.3g}, tolerance {tol:.3g}), equal pixels "
            f"{100 * r['equal_pixels']:.3f}% (min {100 * cfg.min_equal:.1f}%) -> {'ok' if r['passed'] else 'FAILED'}"
        )
    report |= {"image": source, "parity": result, "passed": bool(ok)}
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(report, indent=2))
    print(f"parity report: {out / 'parity.json'}")
    if ok:
        print(f"evaluate it: python -m src.eval ckpt_path={output}")
    return report


def run(cfg: DictConfig) -> None:
    """Export, report, and exit 1 when the parity check was asked for and failed (also scripts/export_onnx.py)."""
    extras(cfg)
    report = export(cfg)
    if cfg.parity and not report["passed"]:
        raise SystemExit(1)


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
