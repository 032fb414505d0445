"""Convert an MMSegmentation 1.x checkpoint into a self-describing checkpoint of this project.

python scripts/convert_mmseg_checkpoint.py pspnet_r18-d8.pth pspnet_r18-d8.ckpt model=pspnet_r18-d8 dataset=cityscapes
python -m src.eval ckpt_path=pspnet_r18-d8.ckpt                  # then nothing else is needed

`model=` and `dataset=` name configs of `conf/model` and `conf/dataset` (the model's class count comes from the
dataset); further `key=value` overrides compose as they do for `src.eval` (`model.test_cfg.mode=slide`). A
checkpoint whose `meta` carries its MMSegmentation config keeps that config's test mode (whole or slide, crop,
stride), said in one line where the named model differs, unless `model.test_cfg...` is given here. Every
tensor of the file must find its place in the model, with its shape (`src.weights.mmseg`, `src.loading.mmseg`); the output holds the
weights under the LightningModule's `segmentor.` prefix and the `segkit` metadata (resolved model and dataset
configs, classes, palette, the source file), written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.engine.callbacks.checkpoint_io import AtomicCheckpointIO
from src.loading.checkpoint import load_segmentor
from src.loading.mmseg import compose_model_dataset, load_mmseg_segmentor, segkit_checkpoint

USAGE = "usage: convert_mmseg_checkpoint.py <in.pth> <out.ckpt> model=<name> dataset=<name> [key=value ...]"


def convert(src: str | Path, dst: str | Path, overrides: list[str]) -> dict:
    """Write `dst` from the MMSegmentation checkpoint `src` and the configs the overrides compose; returns a
    summary (tensors, classes, model name, output path)."""
    given = {o.split("=", 1)[0] for o in overrides}
    if not {"model", "dataset"} <= given:
        raise ValueError(
            f"{src}: give the model and dataset the checkpoint was trained with, e.g. model=pspnet_r18-d8 "
            "dataset=cityscapes (names in conf/model and conf/dataset)"
        )
    cfg = compose_model_dataset(None, None, overrides)
    # the checkpoint's own test mode (the config in its meta), unless the command line sets model.test_cfg
    user_test_cfg = any(o.split("=", 1)[0].lstrip("+~").startswith("model.test_cfg") for o in overrides)
    segmentor, meta = load_mmseg_segmentor(
        src, cfg.model, cfg.dataset, test_cfg_from="config" if user_test_cfg else "checkpoint"
    )
    AtomicCheckpointIO().save_checkpoint(segkit_checkpoint(segmentor, meta), dst)
    reloaded, _ = load_segmentor(dst)  # the written file rebuilds the model with nothing else
    return {
        "output": str(dst),
        "model": meta["config"]["model"].get("name"),
        "tensors": len(reloaded.state_dict()),
        "classes": len(meta["classes"]),
    }


def main(argv: list[str]) -> int:
    paths = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    if len(paths) != 2 or "-h" in argv or "--help" in argv:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        summary = convert(paths[0], paths[1], overrides)
    except (ValueError, FileNotFoundError) as err:  # a readable message naming the file; no traceback
        hint = getattr(err, "hint", None)
        print(f"Error: {err}" + (f"\n  What to do: {hint}" if hint else ""), file=sys.stderr)
        return 1
    print(
        f"Wrote {summary['output']}: model {summary['model']}, {summary['tensors']} tensors, "
        f"{summary['classes']} classes\nEvaluate it with: python -m src.eval ckpt_path={summary['output']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
