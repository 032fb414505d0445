"""Predict with a checkpoint: `python -m src.infer ckpt_path=<file> input=<image|folder> [output=<dir>]`.

Writes `<output>/pred/<name>.png` (class indices) and `<output>/vis/<name>.png` (colour overlay).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.eval import resolve_device
from src.inference import Segmenter
from src.utils import resolvers  # noqa: F401
from src.utils.logging import get_logger
from src.utils.task import extras

log = get_logger(__name__)


def infer(cfg: DictConfig) -> list[dict[str, str]]:
    seg = Segmenter.from_checkpoint(
        cfg.ckpt_path, device=resolve_device(cfg.device), batch_size=cfg.batch_size
    )
    result = seg(cfg.input, out_dir=cfg.output, opacity=cfg.opacity, progress=True)
    log.info(
        f"{len(result.masks)} prediction(s) written to {cfg.output}/pred (masks) and {cfg.output}/vis (overlays)"
    )
    return result.paths


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    extras(cfg)
    infer(cfg)


if __name__ == "__main__":
    main()
