"""Trained models shared the way the field shares them: a folder (or a Hugging Face Hub repository) holding

    model.safetensors   the segmentor's tensors (safetensors: no pickle, nothing runs when it is read)
    config.json         the composed model and dataset configs, classes, palette, run name, source
    README.md           a model card: task, dataset, classes, the run's metrics, the training command, the license

    write_pretrained(folder, segmentor, meta, record)     # Segmenter.save_pretrained
    segmentor, meta = load_pretrained(folder_or_repo_id)    # Segmenter.from_pretrained, src.eval/src.infer ckpt_path=
    push_pretrained(folder, "user/model")                   # Segmenter.push_to_hub

Hub ids go through `huggingface_hub`, offline first as the zoo is: a repository already in its cache is used
without network, and where the Hub cannot be reached the error says what to do, in one block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from src.utils.errors import CheckpointError, UserError
from src.utils.files import atomic_write_text

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "segkit-pretrained"
FORMAT_VERSION = 1
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(UserError, RuntimeError):
    """The Hugging Face Hub could not be reached or refused (one short block at the entry points)."""

    kind = "download"


def is_pretrained_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file()


# ------------------------------------------------------------------------------------------------- writing
def write_pretrained(
    folder: str | Path, segmentor: nn.Module, meta: Mapping[str, Any], record: Mapping[str, Any] | None = None
) -> Path:
    """Write the three files into `folder` (created; files written atomically). `meta`: the checkpoint's
    metadata (config with model and dataset, classes, palette); `record`: the run's `results.json`, for the card."""
    from safetensors.torch import save_file

    if not meta.get("config", {}).get("model"):
        raise ValueError(
            "save_pretrained needs the model's config (a Segmenter made from a checkpoint has it)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in segmentor.state_dict().items()}
    tmp = folder / f".{WEIGHTS_NAME}.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / WEIGHTS_NAME)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": {k: meta["config"][k] for k in ("model", "dataset") if k in meta["config"]},
        "classes": list(meta["classes"]),
        "palette": [list(c) for c in meta["palette"]],
        "run_name": meta.get("run_name"),
        "mmseg_config": (meta["config"].get("mmseg_config") or (record or {}).get("mmseg_config")),
        "source": meta.get("source"),
    }
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=1, default=str) + "\n")
    atomic_write_text(folder / CARD_NAME, model_card(config, record))
    return folder


def model_card(config: Mapping[str, Any], record: Mapping[str, Any] | None) -> str:
    """The README.md of a shared model: Hub metadata (YAML front matter) and what a user needs to use it."""
    record = record or {}
    model = config["config"]["model"]
    dataset = config["config"].get("dataset") or {}
    name = model.get("name") or model.get("_target_", "model").rsplit(".", 1)[-1]
    metrics = {
        k.split("/", 1)[1]: v for k, v in (record.get("metrics") or {}).items() if k.startswith("test/")
    }
    means = {k: v for k, v in metrics.items() if "/" not in k}
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: segkit",
        "pipeline_tag: image-segmentation",
        "tags: [semantic-segmentation, segkit, pytorch-lightning]",
        "---",
        "",
        f"# {config.get('run_name') or name}",
        "",
        f"Semantic segmentation: `{name}` trained on `{dataset.get('name', '?')}` "
        f"({len(config['classes'])} classes) with [segkit](https://github.com/) (PyTorch Lightning + Hydra).",
    ]
    if config.get("mmseg_config"):
        lines.append(f"The recipe is MMSegmentation's `{config['mmseg_config']}`.")
    lines += ["", "## Use", "", "```python", "from src.serve.segmenter import Segmenter", ""]
    lines += [
        'seg = Segmenter.from_pretrained("<this folder or user/repo>")',
        'masks = seg("image.jpg").masks',
    ]
    lines += [
        "```",
        "",
        "or `python -m src.eval ckpt_path=<this folder>`, `python -m src.infer ckpt_path=<this folder> input=...`.",
    ]
    if means:
        lines += ["", "## Test metrics (%)", "", "| " + " | ".join(means) + " |", "|" + "---|" * len(means)]
        lines.append("| " + " | ".join(f"{100 * float(v):.2f}" for v in means.values()) + " |")
    per_class = [k.split("/", 1)[1] for k in metrics if k.startswith("IoU/")]
    if per_class:
        lines += ["", "| class | IoU | Dice |", "|---|---|---|"]
        for c in per_class:
            dice = metrics.get(f"Dice/{c}")
            lines.append(
                f"| {c} | {100 * metrics[f'IoU/{c}']:.2f} | {'-' if dice is None else f'{100 * dice:.2f}'} |"
            )
    if record.get("overrides") is not None:
        command = " ".join(["python -m src.train", *record["overrides"]])
        lines += ["", "## Training", "", "```bash", command, "```"]
        facts = [
            f"{record.get('iters')} iterations",
            f"batch {record.get('batch_size')} x {record.get('devices')} device(s)",
        ]
        lines.append(", ".join(facts) + f", seed {record.get('seed')}, precision {record.get('precision')}.")
    lines += ["", "## Classes", "", ", ".join(f"`{c}`" for c in config["classes"])]
    lines += [
        "",
        "## License",
        "",
        "The code is Apache-2.0; check the license of the dataset the weights learned from.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- reading
def load_pretrained(
    source: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The segmentor (eval mode, on `device`) and metadata of a pretrained folder or a Hub repository id."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from src.loading.checkpoint import build_segmentor

    folder = resolve_pretrained(source)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    try:
        config = json.loads(config_path.read_text())
        model_cfg = config["config"]["model"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"'{config_path}' is not a config.json of a segkit model ({type(err).__name__}: {err})"
        ) from err
    if not weights_path.is_file():
        raise CheckpointError(f"'{folder}' has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"'{weights_path}' cannot be read as safetensors ({err})",
            hint="a file downloaded or copied incompletely must be fetched again",
        ) from err
    segmentor = build_segmentor(OmegaConf.create(model_cfg))
    own = segmentor.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} of the model's tensors missing (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(unexpected)} not in the model (e.g. {unexpected[:3]})"] if unexpected else []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of another shape (e.g. {k}: {list(state[k].shape)} in the file, "
                f"{list(own[k].shape)} in the model)"
            )
        raise CheckpointError(
            f"'{weights_path}' does not match '{config_path}' (model '{model_cfg.get('name')}'): "
            + "; ".join(parts),
            hint="the two files come from different models: save them together with Segmenter.save_pretrained",
        )
    segmentor.load_state_dict(state, strict=True)
    meta = {
        "config": dict(config["config"]),
        "classes": config["classes"],
        "palette": config["palette"],
        "run_name": config.get("run_name"),
        "source": {"pretrained": str(source)},
    }
    return segmentor.to(device).eval(), meta


def resolve_pretrained(source: str | Path) -> Path:
    """A local folder as it is; a Hub id (`user/name`) as its cached snapshot, downloaded once (offline first)."""
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"'{path}' is a folder without {CONFIG_NAME}: not a pretrained model folder"
            )
        return path
    if not REPO_ID.match(str(source)):
        raise CheckpointError(
            f"'{source}' is neither a folder nor a Hugging Face Hub id (user/name)",
            hint="give a folder written by Segmenter.save_pretrained, or a Hub repository id",
        )
    from huggingface_hub import snapshot_download

    files = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
    try:
        return Path(snapshot_download(str(source), allow_patterns=files, local_files_only=True))
    except Exception:
        pass  # not in the cache: download
    try:
        return Path(snapshot_download(str(source), allow_patterns=files))
    except Exception as err:
        raise HubError(
            f"Cannot download '{source}' from the Hugging Face Hub ({type(err).__name__}: {str(err)[:160]}).\n"
            f"Where there is network: huggingface-cli download {source} --local-dir <folder>\n"
            "then give that folder (ckpt_path=<folder>, Segmenter.from_pretrained(<folder>))."
        ) from err


def push_pretrained(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a pretrained folder to the Hub repository `repo_id` (created if needed); returns its URL."""
    if not REPO_ID.match(repo_id):
        raise ValueError(f"repo_id='{repo_id}': expected a Hugging Face Hub id, user/name")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
        )
    except Exception as err:
        raise HubError(
            f"Cannot upload to '{repo_id}' on the Hugging Face Hub ({type(err).__name__}: {str(err)[:160]}).\n"
            f"The model is saved in {folder}: upload it where there is network and a token (`huggingface-cli login`):\n"
            f"huggingface-cli upload {repo_id} {folder}"
        ) from err
    return str(url)
