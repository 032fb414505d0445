"""Pretrained backbone weights, offline first: use the local cache, fail in seconds with the way out otherwise.

timm and smp fetch ImageNet weights from the Hugging Face hub (or, for older timm configs, a URL kept in
torch.hub's cache); on a machine without hub access they retry for about a minute and then fail with an error
that names neither the weights nor the configuration keys that avoid them. `timm_pretrained(model_name)` and
`smp_pretrained(encoder_name, encoder_weights)` guard the model's construction: cached weights are used with the
hub client kept offline when the hub is out of reach; missing weights with `HF_HUB_OFFLINE=1` or an unreachable
hub (a 3-second probe) raise `PretrainedWeightsError`, which names the weights, the cache and the ways out;
otherwise the library downloads them as usual.

    with timm_pretrained("resnet50c", config_key="model.backbone"):
        model = timm.create_model("resnet50c", pretrained=True, features_only=True)
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from src.utils.errors import UserError

HUB_PROBE_TIMEOUT_S = 3.0
DOCS = "docs/pretrained_weights.md"


class PretrainedWeightsError(UserError, RuntimeError):
    """Pretrained weights that are neither in the local cache nor downloadable now (shown as one short block by
    the entry points, `src/utils/errors.py`)."""

    kind = "weights"


@dataclass(frozen=True)
class WeightsSource:
    """Where a library would fetch a model's pretrained weights from.

    `hub_id` and `filenames`: a Hugging Face hub repository and the files the library reads from it (any one
    of them suffices unless `all_files`); `url`: a plain URL (kept in torch.hub's cache) when there is no hub id.
    """

    model: str
    hub_id: str | None = None
    revision: str | None = None
    filenames: tuple[str, ...] = ()
    all_files: bool = False
    url: str | None = None

    @property
    def label(self) -> str:
        return self.hub_id or self.url or self.model

    @property
    def address(self) -> str:
        """The web page (hub repository) or file URL of the weights."""
        if self.hub_id:
            from huggingface_hub import constants

            return f"{constants.ENDPOINT}/{self.hub_id}"
        return self.url or ""


# -------------------------------------------------------------------------------------- where weights are
def timm_weights_source(model_name: str) -> WeightsSource | None:
    """The weights `timm.create_model(model_name, pretrained=True)` loads, as timm resolves them (its pretrained
    config: `hf_hub_id`, `hf_hub_filename`, `url`); None when timm knows no pretrained weights for the name
    (timm then raises its own error)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # an unknown name: timm.create_model says so itself
        return None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        # timm tries model.safetensors before pytorch_model.bin (timm.models._hub.load_state_dict_from_hf)
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        return WeightsSource(model_name, hub_id=repo, revision=revision or None, filenames=files, url=cfg.url)
    if cfg.url:
        return WeightsSource(model_name, url=cfg.url)
    return None


def smp_weights_source(encoder_name: str, encoder_weights: str | bool | None) -> WeightsSource | None:
    """The weights `smp.create_model(..., encoder_name, encoder_weights)` loads: timm's for `tu-` encoders,
    smp's own hub repository (`smp-hub/<encoder>.<weights>`: config.json and model.safetensors) otherwise."""
    if encoder_weights is None or encoder_weights is False:
        return None
    from segmentation_models_pytorch import encoders

    name = encoder_name
    if name.startswith("timm-") and encoders.is_equivalent_to_timm_universal(name):  # as smp converts them
        name = name.replace("timm-", "tu-")
    if name.startswith("tu-"):
        return timm_weights_source(name[3:])
    settings = encoders.encoders.get(name, {}).get("pretrained_settings", {}).get(encoder_weights)
    if not settings or "repo_id" not in settings:  # a name or weights smp rejects with its own message
        return None
    return WeightsSource(
        encoder_name,
        hub_id=settings["repo_id"],
        revision=settings.get("revision"),
        filenames=("config.json", "model.safetensors"),
        all_files=True,
    )


def local_weights(source: WeightsSource) -> Path | None:
    """The cached weights file of `source` (Hugging Face hub cache, or torch.hub's for a URL), or None."""
    if source.hub_id:
        from huggingface_hub import try_to_load_from_cache

        found = []
        for filename in source.filenames:
            hit = try_to_load_from_cache(source.hub_id, filename, revision=source.revision)
            found.append(Path(hit) if isinstance(hit, str) else None)
        if source.all_files:
            return found[-1] if all(found) else None
        return next((p for p in found if p is not None), None)
    if source.url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(source.url).path).name
        return path if path.is_file() else None
    return None


# ------------------------------------------------------------------------------------------ network state
def hub_offline() -> bool:
    """`HF_HUB_OFFLINE=1` (huggingface_hub's own reading of it)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@functools.lru_cache(maxsize=8)
def probe(url: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the server of `url` answers within `timeout` seconds (any HTTP status), else the reason.

    One short request instead of the hub client's retries (a minute on a closed network); honours the proxy
    environment variables as urllib does. Cached per process: a run builds several models at most."""
    parts = urllib.parse.urlparse(url)
    root = f"{parts.scheme}://{parts.netloc}/"
    try:
        urllib.request.urlopen(urllib.request.Request(root, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{root} cannot be reached ({reason})"
    return None


def _probe_url(source: WeightsSource) -> str:
    if source.hub_id:
        from huggingface_hub import constants

        return constants.ENDPOINT
    return source.url or ""


# ------------------------------------------------------------------------------------------ the guard
@contextmanager
def _hub_kept_offline() -> Iterator[None]:
    """The hub client offline for the duration: it then serves cached files without any request.

    huggingface_hub reads `constants.HF_HUB_OFFLINE` (set from the environment at import) on every call, so this
    is `HF_HUB_OFFLINE=1` for the block, restored after."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def check_pretrained(source: WeightsSource, switch_off: str, path_key: str) -> ContextManager[None]:
    """Raise PretrainedWeightsError when `source` can neither be read from the cache nor downloaded now;
    otherwise return the context to build the model in (hub kept offline when the weights come from the cache
    and the hub is out of reach). `switch_off` and `path_key` are the configuration keys shown as ways out."""
    cached = local_weights(source)
    offline = hub_offline()
    if cached is not None:
        if source.hub_id and (offline or probe(_probe_url(source))):
            return _hub_kept_offline()
        return nullcontext()  # online: the library checks its cache against the hub and uses it
    reason = (
        "HF_HUB_OFFLINE=1 forbids downloading it" if offline and source.hub_id else probe(_probe_url(source))
    )
    if reason is None:
        return nullcontext()  # reachable: the library downloads it
    raise PretrainedWeightsError(_message(source, reason, switch_off, path_key))


def _message(source: WeightsSource, reason: str, switch_off: str, path_key: str) -> str:
    """Plain lines (the entry points wrap and indent them, `src/utils/errors.py`)."""
    from huggingface_hub import constants

    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})" if source.hub_id else "torch.hub's cache"
    fetch = (
        f"python -c \"import timm; timm.create_model('{source.model}', pretrained=True)\""
        if not source.all_files
        else f"python -c \"from huggingface_hub import snapshot_download; snapshot_download('{source.hub_id}')\""
    )
    return (
        f"Pretrained weights for '{source.model}' are not available: {source.label} ({source.address}) is not "
        f"in {where}, and {reason}.\n"
        f"Either train without them: {switch_off}\n"
        f"or load a local weights file: {path_key}=<file>\n"
        f"or download them once where the hub is reachable ({fetch}) and copy the cache over ({DOCS})."
    )


def timm_pretrained(model_name: str, config_key: str = "model.backbone") -> ContextManager[None]:
    """The guard for `timm.create_model(model_name, pretrained=True)` (see the module docstring)."""
    source = timm_weights_source(model_name)
    if source is None:
        return nullcontext()
    return check_pretrained(source, f"{config_key}.pretrained=false", f"{config_key}.pretrained_path")


def smp_pretrained(
    encoder_name: str, encoder_weights: str | bool | None, config_key: str = "model.decode_head"
) -> ContextManager[None]:
    """The guard for `smp.create_model(..., encoder_name=..., encoder_weights=...)`."""
    source = smp_weights_source(encoder_name, encoder_weights)
    if source is None:
        return nullcontext()
    return check_pretrained(source, f"{config_key}.encoder_weights=null", f"{config_key}.pretrained_path")
