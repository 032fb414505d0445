"""`scripts/export.py` with format=onnx, under its former name: the same options and report.

python scripts/export_onnx.py ckpt_path=logs/train/runs/<run>/<time>/checkpoints/last.ckpt   # -> last.onnx beside it
python scripts/export_onnx.py ckpt_path=... output=model.onnx image=street.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from scripts.export import export, parity_image, run  # noqa: E402,F401  (re-exported: tests and callers use them)
from src.utils.errors import report_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_onnx")
@report_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
