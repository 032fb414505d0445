"""Predict with a checkpoint: `python -m src.infer ckpt_path=<file> input=<image|folder|video> [output=...]`.

Images and folders: `<output>/pred/<name>.png` (class indices) and `<output>/vis/<name>.png` (colour overlay).
A video (.mp4 .avi .mov .mkv) comes out as a video with every frame overlaid, at the source's fps and size:
`output=<file.mp4>`, or `<output>/<name>.mp4` when output is a folder. Both show a progress bar.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.serve.segmenter import VIDEO_SUFFIXES, Segmenter, is_video, resolve_device, test_cfg_source
from src.utils import resolvers  # noqa: F401
from src.utils.config_check import INFER_RULES, check_config
from src.utils.errors import report_errors
from src.utils.logging import get_logger
from src.utils.task import extras
from src.weights.zoo import apply_zoo_weights, zoo_command_line

log = get_logger(__name__)


def infer(cfg: DictConfig) -> Any:
    """Predicted paths per image (list of dicts), or for a video its path, frames, fps and size (a dict)."""
    apply_zoo_weights(cfg)  # weights=<zoo name>: ckpt_path = its verified file in $SEGKIT_CACHE/zoo
    seg = Segmenter.from_checkpoint(
        cfg.ckpt_path,
        device=resolve_device(cfg.device),
        batch_size=cfg.batch_size,
        tta=cfg.get("tta", False),
        model=cfg.get("model"),  # model=<name> dataset=<name>: an MMSegmentation checkpoint's
        dataset=cfg.get("dataset"),
        test_cfg_from=test_cfg_source(),  # an MMSegmentation checkpoint: its own test mode, unless set here
        backend=cfg.get("backend", "auto"),  # the runner of an exported file; auto: by its suffix
        compile=cfg.get("compile", False),
        fold_bn=cfg.get("fold_bn", True),
    )
    source, output = Path(str(cfg.input)), Path(str(cfg.output))
    if is_video(source):
        target = output if output.suffix.lower() in VIDEO_SUFFIXES else output / f"{source.stem}.mp4"
        info = seg.predict_video(source, target, opacity=cfg.opacity, progress=True)
        log.info(
            f"{info['frames']} frames at {info['fps']:g} fps ({info['size'][0]}x{info['size'][1]}) -> {target}"
        )
        return info
    if output.suffix.lower() in VIDEO_SUFFIXES:
        raise ValueError(f"output='{output}' is a video file but input='{source}' is not a video")
    result = seg(
        str(source),
        out_dir=output,
        opacity=cfg.opacity,
        progress=True,
        legend=cfg.get("legend", False),
        panel=cfg.get("panels", False),
    )
    log.info(
        f"{len(result.masks)} prediction(s) written to {output}/pred (masks) and {output}/vis (overlays)"
    )
    return result.paths


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
@report_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, INFER_RULES)
    extras(cfg)
    infer(cfg)


if __name__ == "__main__":
    sys.argv = zoo_command_line(sys.argv)  # weights=<zoo name> selects the entry's model and dataset configs
    main()
