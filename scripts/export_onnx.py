"""`scripts/export.py` with format=onnx, under its former name: the same options and report.

python scripts/export_onnx.py ckpt_path=logs/train/runs/<run>/<time>/checkpoints/last.ckpt   # -> last.onnx beside it
python scripts/export_onnx.py ckpt_path=... output=model.onnx image=street.png
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from export import run  # scripts/export.py: this file's folder is sys.path[0] when it runs
from src.utils.errors import report_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_onnx")
@report_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
