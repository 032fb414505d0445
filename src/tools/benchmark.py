"""Speed and memory of a model under its training config, on synthetic batches made once in memory (so that
data loading does not enter the figures): `scripts/benchmark.py`, described in docs/measurements.md.

- `measure_overhead`: the training step under a bare PyTorch loop (`bare_train`) and under our LightningModule
  and `lightning.Trainer` (`lightning_train`), alternated in one process: seconds, CPU seconds, peak memory.
- `count_train_flops`: the GFLOP of one step (`torch.utils.flop_counter`, comparable across machines).
- `measure_metric_update`: one `SegMetrics.update`; `detect_train_syncs`: the host-device syncs of a Lightning
  step with their call sites (`SyncDetector`); `measure_inference`: whole and slide `predict`.

Every timed window starts and ends with a device synchronisation (a no-op on a CPU), after `warmup` steps.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from src.engine.callbacks.run_stats import peak_rss_bytes, reset_peak_rss
from src.env import cpu_name
from src.metrics import SegMetrics
from src.serve.segmenter import resolve_device  # noqa: F401  (the library's, also scripts/benchmark.py's)
from src.tools.flops import model_arithmetic

MIB = 1024**2
# the precisions the bare loop reproduces (Lightning's plugins for the others differ in more than autocast)
BARE_PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class BenchSettings:
    """Args:
    batch_size, crop_size: of the training batches (the config's `dataset.batch_size`, `dataset.crop_size`).
    num_classes: labels of the synthetic masks (the model's).
    warmup, steps: training steps left out, then timed, in each run.
    repeats: runs of each loop (alternated in `overhead`).
    precision: Lightning's precision string (`runtime.precision`).
    channels_last: model and inputs in channels_last (`runtime.channels_last`).
    compile: the segmentor compiled as `runtime.compile=true` compiles it.
    infer_size, infer_steps: image size and timed calls of the inference benchmark (one image per call).
    slide_crop, slide_stride: of slide inference (default: the training crop, 2/3 of it).
    """

    batch_size: int = 4
    crop_size: tuple[int, int] = (256, 256)
    num_classes: int = 19
    warmup: int = 3
    steps: int = 10
    repeats: int = 5
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    infer_size: tuple[int, int] = (512, 1024)
    infer_steps: int = 5
    slide_crop: tuple[int, int] | None = None
    slide_stride: tuple[int, int] | None = None
    seed: int = 0
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Any, **fields: Any) -> BenchSettings:
        """The training batch, classes, precision and memory format of a composed config, and `fields`."""
        return cls(
            batch_size=int(cfg.dataset.batch_size),
            crop_size=tuple(int(c) for c in cfg.dataset.crop_size),
            num_classes=int(cfg.model.decode_head.num_classes),
            precision=str(cfg.runtime.precision),
            channels_last=bool(cfg.runtime.get("channels_last", False)),
            **fields,
        )


# ---------------------------------------------------------------------------------------------------- helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast that Lightning's precision plugin puts around `training_step` (none for 32-bit)."""
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if precision in _AUTOCAST:
        return torch.autocast(device.type, dtype=_AUTOCAST[precision])
    raise ValueError(f"runtime.precision={precision}: the benchmark's bare loop supports {BARE_PRECISIONS}")


def make_batches(
    n: int, batch_size: int, crop_size: Sequence[int], num_classes: int, seed: int = 0
) -> list[dict[str, list[torch.Tensor]]]:
    """`n` collated batches as the data module gives them (lists of uint8 `[3, H, W]` images and int64 `[H, W]`
    masks): random pixels, blocky random labels with 5% ignored (255) pixels. Two distinct batches, reused."""
    gen = torch.Generator().manual_seed(seed)
    h, w = (int(s) for s in crop_size)
    distinct = []
    for _ in range(min(n, 2)):
        images = torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8, generator=gen)
        coarse = torch.randint(0, num_classes, (batch_size, 1, -(-h // 16), -(-w // 16)), generator=gen)
        masks = torch.nn.functional.interpolate(coarse.float(), scale_factor=16.0, mode="nearest")
        masks = masks[:, 0, :h, :w].long()
        masks[torch.rand(masks.shape, generator=gen) < 0.05] = 255
        distinct.append({"inputs": list(images.unbind(0)), "masks": list(masks.unbind(0))})
    return [distinct[i % len(distinct)] for i in range(n)]


def batch_loader(batches: list[dict[str, Any]]) -> DataLoader:
    """A DataLoader over ready batches (`batch_size=None`: no collation, no workers), the same for both loops."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: [t.to(device, non_blocking=non_blocking) for t in v] for k, v in batch.items()}


def build_module_for(cfg: Any, device: torch.device | None = None) -> Any:
    """The config's `SegmentationModule`, seeded (0), with a stand-in for the datamodule it normally reads its
    classes, palette and ignore index from (the benchmark has no data); in channels_last where the config says so,
    on `device` if given."""
    from src.train import build_module  # imported here: it pulls in Lightning, which --help does not need

    n = int(cfg.model.decode_head.num_classes)
    stand_in = SimpleNamespace(
        classes=[str(i) for i in range(n)],
        palette=[[0, 0, 0]] * n,
        ignore_index=int(cfg.dataset.get("ignore_index", 255)),
    )
    torch.manual_seed(0)
    module = build_module(cfg, stand_in)
    if cfg.runtime.get("channels_last"):
        module.segmentor.to(memory_format=torch.channels_last)
    return module if device is None else module.to(device)


def time_calls(fn: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls of `fn` after `warmup` untimed ones, synchronised on a GPU."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


class WindowTimer:
    """Wall time of steps `warmup` .. `warmup + steps - 1`, marked at the start of each step (synchronised), and
    the process's CPU time over the same window (all threads: on a shared machine, CPU time / threads is a
    steadier estimate of the quiet wall time than the wall time itself)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = None
        self.cpu_start = self.cpu_end = 0.0
        self.marks: list[float] = []

    @property
    def total_steps(self) -> int:
        """Steps to run: the window's end is the start of the step after it."""
        return self.warmup + self.steps + 1

    def mark(self, step: int) -> None:
        if step in (self.warmup, self.warmup + self.steps):
            synchronize(self.device)
        now = time.perf_counter()
        self.marks.append(now)
        if step == self.warmup:
            self.start, self.cpu_start = now, time.process_time()
        elif step == self.warmup + self.steps:
            self.end, self.cpu_end = now, time.process_time()

    @property
    def seconds_per_step(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError("the timed window did not complete (fewer batches than warmup + steps + 1)")
        return (self.end - self.start) / self.steps

    @property
    def cpu_seconds_per_step(self) -> float:
        return (self.cpu_end - self.cpu_start) / self.steps


# ------------------------------------------------------------------------------------------------ the two loops
def bare_train(module: Any, loader: DataLoader, settings: BenchSettings, device: torch.device) -> WindowTimer:
    """The timed window (seconds per step) of a plain PyTorch loop over `module`'s segmentor: the loss of
    `module.compute_losses` (the same code as `training_step`, without logging), backward, the module's gradient
    clipping (`schedule.clip_grad`), `optimizer.step()`, `zero_grad()` and the per-iteration LR scheduler, with the
    optimiser and scheduler of `module.configure_optimizers()`."""
    module.to(device)
    module.train()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"]
    scheduler = configured.get("lr_scheduler", {}).get("scheduler")
    # disabled outside 16-mixed: then scale, unscale_ and update do nothing and step is optimizer.step()
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "16-mixed")
    timer = WindowTimer(settings.warmup, settings.steps, device)
    for step, batch in enumerate(loader):
        if step == timer.total_steps:
            break
        batch = to_device(batch, device)
        timer.mark(step)
        with precision_context(settings.precision, device):
            loss, _, _ = module.compute_losses(batch)
        scaler.scale(loss).backward()
        if module.clip_grad is not None:
            scaler.unscale_(optimizer)
            module.configure_gradient_clipping(optimizer)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()
    timer.seconds_per_step  # noqa: B018  (raises if the window did not complete)
    return timer


def lightning_train(
    module: Any,
    loader: DataLoader,
    settings: BenchSettings,
    device: torch.device,
    callbacks: Sequence[Any] = (),
    steps: int | None = None,
) -> WindowTimer | None:
    """Training steps under `lightning.Trainer.fit` (the config's Trainer arguments, a CSV logger at its logging
    interval; no checkpoints, progress bar or validation), timed between the starts of steps as the bare loop
    is. Returns the timed window, None when `steps` leaves none."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    timer = WindowTimer(settings.warmup, settings.steps, device)

    class _Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            timer.mark(batch_idx)

    total = steps if steps is not None else timer.total_steps
    with tempfile.TemporaryDirectory(prefix="segkit-bench-") as tmp:
        kwargs = dict(settings.trainer_kwargs)
        kwargs.update(
            accelerator=device.type,
            devices=[device.index or 0] if device.type == "cuda" else 1,
            precision=settings.precision,
            max_steps=total,
            max_epochs=-1,
            limit_train_batches=total,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            val_check_interval=None,
            check_val_every_n_epoch=None,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=CSVLogger(tmp, name="bench"),
            callbacks=[_Timer(), *callbacks],
            default_root_dir=tmp,
        )
        trainer = L.Trainer(**kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*(num_workers|log_every_n_steps|does not have many).*"
            )
            trainer.fit(module, train_dataloaders=loader)
    if total < timer.total_steps:
        return None
    timer.seconds_per_step  # noqa: B018  (raises if the window did not complete)
    return timer


# --------------------------------------------------------------------------------------- host-device syncs
# Tensor methods and torch functions that make the host wait for the device on CUDA: a value read back to Python,
# or an output whose size depends on the data.
_SYNC_FUNCS = set(
    "__bool__ __float__ __int__ __index__ __format__ item tolist numpy nonzero argwhere nonzero_static "
    "unique unique_consecutive bincount masked_select repeat_interleave equal allclose is_nonzero".split()
)


def _is_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class SyncDetector(TorchFunctionMode):
    """Records the torch calls that synchronise the host with a CUDA device (see `_SYNC_FUNCS`), plus boolean-mask
    indexing (`x[mask]`, `x[mask] = v`: a `nonzero`) and copies to the CPU, each with the first call site outside
    torch. Python-level: it sees calls made from Python (ours, Lightning's, torchmetrics'), not syncs inside C++
    kernels; on a CPU it names the places that would synchronise on a GPU. `host_device`: the device whose copies
    to the CPU count (None: every `.cpu()`/`.to("cpu")` counts, the conservative choice on a CPU-only machine)."""

    def __init__(self, host_device: torch.device | None = None) -> None:
        super().__init__()
        self.host_device = host_device
        self.calls: Counter[tuple[str, str]] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        hit = name in _SYNC_FUNCS
        if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
            hit = _is_bool_index(args[1])
        elif name in ("cpu", "to") and args and isinstance(args[0], torch.Tensor):
            hit = self._to_host(name, args, kwargs)
        if hit:
            self.calls[(name, _call_site())] += 1
        return func(*args, **kwargs)

    def _to_host(self, name: str, args: tuple, kwargs: dict) -> bool:
        tensor = args[0]
        if self.host_device is not None and tensor.device.type == "cpu":
            return False
        if name == "cpu":
            return True
        target = kwargs.get("device", args[1] if len(args) > 1 else None)
        if isinstance(target, torch.Tensor):
            target = target.device
        if target is None or isinstance(target, torch.dtype):
            return False
        target = torch.device(target)
        return target.type == "cpu" and target != tensor.device


def _call_site(depth: int = 3) -> str:
    """`file:line (function)` of the `depth` innermost frames outside torch and this module, innermost first."""
    here = os.path.abspath(__file__)
    torch_dir = os.path.dirname(torch.__file__)
    sites = []
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = os.path.abspath(frame.filename)
        if path != here and not path.startswith(torch_dir) and "apply_func" not in path:
            sites.append(f"{_short_path(path)}:{frame.lineno} ({frame.name})")
            if len(sites) == depth:
                break
    return " < ".join(sites) or "?"


def _short_path(path: str) -> str:
    for marker in ("site-packages" + os.sep, os.getcwd() + os.sep):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def detect_train_syncs(
    module: Any, loader: DataLoader, settings: BenchSettings, device: torch.device, steps: int
) -> list[dict[str, Any]]:
    """Per Lightning training step (from the start of one step to the start of the next, so the logging after
    `on_train_batch_end` counts): whether Lightning logged at that step, and the sync calls with their sites."""
    from lightning import Callback

    records: list[dict[str, Any]] = []
    state: dict[str, Any] = {"mode": None, "caught": [], "first_warning": 0}

    def close() -> None:
        mode = state["mode"]
        if mode is None:
            return
        mode.__exit__(None, None, None)
        state["mode"] = None
        rec = records[-1]
        rec["calls"] = {f"{n} @ {site}": c for (n, site), c in sorted(mode.calls.items())}
        rec["count"] = sum(mode.calls.values())
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
            new = state["caught"][state["first_warning"] :]
            rec["cuda_sync_warnings"] = sum("synchroniz" in str(w.message) for w in new)

    class _Detect(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            close()
            records.append({"step": batch_idx, "logged": False})
            if device.type == "cuda":
                state["first_warning"] = len(state["caught"])
                torch.cuda.set_sync_debug_mode(1)  # "warn": the driver reports each synchronising call
            state["mode"] = SyncDetector(host_device=device)
            state["mode"].__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            records[-1]["logged"] = bool(trainer.loggers) and trainer._logger_connector.should_update_logs

        def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state["caught"] = caught
        lightning_train(module, loader, settings, device, callbacks=[_Detect()], steps=steps)
    return records


# -------------------------------------------------------------------------------------------- the measurements
def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """A convolution's backward: each multiply-add of its forward once per gradient asked for (input, weight).

    Ours because torch 2.14's formula forgets `groups` in the weight gradient and counts a depthwise conv's
    `channels` times over (pytorch/pytorch#183405): DeepLabV3+'s separable ASPP and ConvNeXt's 7x7 convolutions.
    """
    transposed, output_mask = args[4], args[7]
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)  # grad_out has the output's shape
    return forward * sum(bool(m) for m in output_mask[:2])


TRAIN_FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flop}


def count_train_flops(
    module: Any, batch: dict[str, Any], settings: BenchSettings, device: torch.device
) -> float:
    """Floating-point operations of one training step's forward and backward (GFLOP; convolutions, matmuls)."""
    module.train()
    batch = to_device(batch, device)
    with (
        FlopCounterMode(display=False, custom_mapping=TRAIN_FLOP_FORMULAS) as counter,
        model_arithmetic(),
    ):
        with precision_context(settings.precision, device):
            loss, _, _ = module.compute_losses(batch)
        loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def measure_overhead(
    module: Any, settings: BenchSettings, device: torch.device, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Bare loop and Lightning alternated `repeats` times on the same module and batches; per pair the ratio
    Lightning / bare. Also the peak memory of the first Lightning run (CUDA: max allocated; CPU: peak RSS)."""
    n = WindowTimer(settings.warmup, settings.steps, device).total_steps
    loader = batch_loader(
        make_batches(n, settings.batch_size, settings.crop_size, settings.num_classes, settings.seed)
    )
    runs: dict[str, list[float]] = {"bare_s": [], "lightning_s": [], "bare_cpu_s": [], "lightning_cpu_s": []}
    memory = None
    for r in range(settings.repeats):
        # alternate the order so that neither loop always runs right after the other's warm state
        for which in ("bare", "lightning") if r % 2 == 0 else ("lightning", "bare"):
            if which == "bare":
                timer = bare_train(module, loader, settings, device)
            elif memory is None:
                _reset_peak_memory(device)
                timer = lightning_train(module, loader, settings, device)
                memory = _peak_memory(device)
            else:
                timer = lightning_train(module, loader, settings, device)
            runs[f"{which}_s"].append(timer.seconds_per_step)
            runs[f"{which}_cpu_s"].append(timer.cpu_seconds_per_step)
        bare, light = runs["bare_s"][-1], runs["lightning_s"][-1]
        log(
            f"  repeat {r + 1}/{settings.repeats}: bare {bare:.3f} s/step, Lightning {light:.3f} s/step, "
            f"ratio {light / bare:.3f}"
        )
    ratios = [lt / bt for lt, bt in zip(runs["lightning_s"], runs["bare_s"])]
    cpu_ratios = [lt / bt for lt, bt in zip(runs["lightning_cpu_s"], runs["bare_cpu_s"])]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else (min(ratios), 0, max(ratios))
    return {
        **runs,
        **{f"{key}_median": statistics.median(values) for key, values in runs.items()},
        "ratios": ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_iqr": q3 - q1,
        "peak_memory": memory,
    }


def measure_metric_update(
    num_classes: int, settings: BenchSettings, device: torch.device, calls: int = 20
) -> dict[str, float]:
    """Seconds of one `SegMetrics.update` on a batch of class-index predictions and labels (the validation step's
    call), median of `calls` synchronised calls."""
    metric = SegMetrics(num_classes).to(device)
    batch = make_batches(1, settings.batch_size, settings.crop_size, num_classes, settings.seed)[0]
    target = torch.stack(batch["masks"]).to(device)
    preds = torch.randint(0, num_classes, target.shape, device=device)
    times = time_calls(lambda: metric.update(preds, target), 1, calls, device)
    return {"update_s": statistics.median(times)}


@torch.no_grad()
def measure_inference(
    segmentor: torch.nn.Module, settings: BenchSettings, device: torch.device, mode: str
) -> dict[str, Any]:
    """`segmentor.predict(images, mode)` on normalised random images of `infer_size`: seconds per call (median
    of `infer_steps` after two warm-up calls, four with `compile`), images/s and GFLOP per call."""
    segmentor.eval()
    h, w = settings.infer_size
    images = torch.randn(1, 3, h, w, device=device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    saved = dict(segmentor.test_cfg)
    crop = tuple(int(c) for c in (settings.slide_crop or settings.crop_size))
    stride = tuple(int(s) for s in settings.slide_stride or (max(1, c * 2 // 3) for c in crop))
    if mode == "slide":
        segmentor.test_cfg.update(mode="slide", crop_size=crop, stride=stride)
    try:
        with precision_context(settings.precision, device):
            with FlopCounterMode(display=False) as counter:  # the first warm-up call
                segmentor.predict(images, mode=mode)
            warmup = 3 if settings.compile else 1
            times = time_calls(
                lambda: segmentor.predict(images, mode=mode), warmup, settings.infer_steps, device
            )
    finally:
        segmentor.test_cfg.clear()
        segmentor.test_cfg.update(saved)
        segmentor.train()
    seconds = statistics.median(times)
    out: dict[str, Any] = {
        "mode": mode,
        "size": [h, w],
        "batch": 1,
        "s": seconds,
        "fps": 1 / seconds,
        "gflop": counter.get_total_flops() / 1e9,
    }
    if mode == "slide":
        out.update(crop=list(crop), stride=list(stride))
    return out


def summarize_syncs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sync calls of the logging steps and of the other steps, each site with its count per step."""
    out: dict[str, Any] = {}
    for kind, logged in (("logging_steps", True), ("other_steps", False)):
        steps = [r for r in records if r["logged"] == logged and "count" in r]
        sites: Counter[str] = Counter()
        for r in steps:
            sites.update(r["calls"])
        out[kind] = {
            "steps": len(steps),
            "syncs_per_step": (sum(r["count"] for r in steps) / len(steps)) if steps else 0.0,
            "sites": {k: v / len(steps) for k, v in sites.most_common()} if steps else {},
        }
        if steps and "cuda_sync_warnings" in steps[0]:
            warned = sum(r["cuda_sync_warnings"] for r in steps)
            out[kind]["cuda_sync_warnings_per_step"] = warned / len(steps)
    return out


# ------------------------------------------------------------------------------------------------ environment
def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(device: torch.device) -> dict[str, Any]:
    import lightning

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"mib": torch.cuda.max_memory_allocated(device) / MIB, "kind": "cuda_max_allocated"}
    return {"mib": peak_rss_bytes() / MIB, "kind": "cpu_peak_rss (whole process)"}


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
