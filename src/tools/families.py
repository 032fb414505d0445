"""One speed table for every model family, against MMSegmentation in the same run (`scripts/benchmark.py --families`).

Each family is an experiment of this project and the MMSegmentation config it is named after (a resolved file
of `../shared/mmseg/configs/`), at the dataset's crop and the config's batch per GPU. Its sides: our training
step (`bare_train`) and whole inference (BatchNorm folded, as `src.eval` predicts) in fp32, in what `auto`
resolves to and compiled as `runtime.compile=true` compiles it; inference under ONNX Runtime and with
BatchNorm unfolded; on request fp32 in channels_last, training with PyTorch's own bilinear-resize gradient
(`native_resize`, the A/B of `src.models.utils.resize`), and both with the heads' resized maps concatenated
before their convolution (`direct_concat`, the A/B of `ResizedConcatConv2d`); MMSegmentation's own model in its
own Python (`scripts/tools/mmseg_models.py`). Each repeat times every side once, starting one side later than the
last, so that all see the same machine. The columns and figures: docs/benchmarks.md. ONNX Runtime and MMSegmentation are
timed on the CPU only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from src.models.compile import compile_segmentor, is_compiled
from src.models.resized_concat_conv import direct_resized_concat
from src.models.utils import native_resize_gradient
from src.serve.segmenter import prediction_model
from src.tools import benchmark as bench
from src.tools.flops import model_arithmetic
from src.utils.precision import apply_precision

FP32 = ("runtime.precision=32-true", "runtime.channels_last=false")  # the fp32 side and the profile: NCHW

# runs in MMSegmentation's Python
MMSEG_WORKER = Path(__file__).resolve().parents[2] / "scripts" / "tools" / "mmseg_models.py"


@dataclass(frozen=True)
class Family:
    name: str
    experiment: str
    mmseg_config: str  # file stem in the resolved-configs folder
    slide: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None  # size, crop, stride


FAMILIES = (
    Family("PSPNet-R50-D8", "pspnet_cityscapes", "pspnet_r50-d8_4xb2-40k_cityscapes-512x1024"),
    Family(
        "DeepLabV3+-R50-D8", "deeplabv3plus_cityscapes", "deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024"
    ),
    Family("UPerNet-R50", "upernet_cityscapes", "upernet_r50_4xb2-40k_cityscapes-512x1024"),
    Family(
        "UPerNet-Swin-T",
        "upernet_swin_ade20k",
        "swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512",
    ),
    Family(
        "UPerNet-ConvNeXt-T", "upernet_convnext_ade20k", "convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512"
    ),
    Family("SegFormer-B0", "segformer_ade20k", "segformer_mit-b0_8xb2-160k_ade20k-512x512"),
    Family("ViT-B/16 UPerNet", "vit_upernet_ade20k", "vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512"),
    Family(
        "UNet-S5-D16 slide",
        "unet_drive",
        "unet-s5-d16_fcn_4xb4-40k_drive-64x64",
        ((584, 565), (64, 64), (42, 42)),
    ),
)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of an n x n fp32 matmul on `device`: the ceiling the convolutions are measured against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = min(bench.time_calls(lambda: a @ b, 1, repeats, device))
    return 2 * n**3 / best / 1e9


class MMSegWorker:
    """MMSegmentation's model in its own Python, one JSON request per line (`scripts/tools/mmseg_models.py`)."""

    def __init__(self, python: str, config: Path, threads: int, log: Path | None = None) -> None:
        # its own output (MMEngine's INFO lines, one per parameter for some optimisers) goes to `log`, not the table
        self.log = log
        self.log_file = open(log, "a") if log else None  # open while the worker runs
        self.proc = subprocess.Popen(
            [python, str(MMSEG_WORKER), str(config), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
        )
        self.info = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            if self.log_file is None:
                raise RuntimeError(f"the MMSegmentation worker stopped (exit {code}); its error is above")
            self.log_file.close()
            tail = "\n".join(self.log.read_text().splitlines()[-8:])
            raise RuntimeError(
                f"the MMSegmentation worker stopped (exit {code}); the end of {self.log}:\n{tail}"
            )
        return json.loads(line)

    def __call__(self, **request: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        if self.log_file is not None:
            self.log_file.close()


@dataclass
class Side:
    """One way of running a family (ours in a precision, compiled, ONNX Runtime, or MMSegmentation's); `train`
    and `infer` take the number of warm-up calls and return seconds."""

    name: str
    train: Callable[[int], float] | None
    infer: Callable[[int], float] | None
    module: Any = None
    predictor: Any = None  # what infers: the module's segmentor with its BatchNorm folded
    train_s: list[float] = field(default_factory=list)
    infer_s: list[float] = field(default_factory=list)


def _ours(
    name: str, cfg: DictConfig, args: Any, size: tuple[int, int], mode: str, compiled: bool = False
) -> Side:
    device = args.device
    module = bench.build_module_for(cfg, device)
    # inference as src.eval runs it; training compiles the model itself where that is another object
    predictor = prediction_model(module.segmentor.eval(), fold_bn=True, compile=compiled)
    if compiled and predictor is not module.segmentor:
        compile_segmentor(module.segmentor)
    warm = 2 if compiled else 1
    n = int(cfg.model.decode_head.num_classes)
    batches = bench.WindowTimer(warm, args.steps, device).total_steps
    loader = bench.batch_loader(
        bench.make_batches(batches, int(cfg.dataset.batch_size), cfg.dataset.crop_size, n)
    )
    images = torch.randn(1, 3, *size, device=device)
    if cfg.runtime.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)

    def train(warmup: int) -> float:
        settings = bench.BenchSettings.from_config(
            cfg, warmup=warm if warmup else 0, steps=args.steps, compile=compiled
        )
        return bench.bare_train(module, loader, settings, device).seconds_per_step

    def infer(warmup: int) -> float:
        return _infer(predictor, images, cfg, mode, warm if warmup else 0, args.infer_steps)

    return Side(name, None if mode == "slide" else train, infer, module, predictor)


def _infer(
    segmentor: Any, images: torch.Tensor, cfg: DictConfig, mode: str, warmup: int, steps: int
) -> float:
    segmentor.eval()
    with torch.no_grad(), bench.precision_context(str(cfg.runtime.precision), images.device):
        s = bench.time_calls(lambda: segmentor.predict(images, mode=mode), warmup, steps, images.device)
    return statistics.median(s)


def _within(
    switch: Callable[[], contextlib.AbstractContextManager], run: Callable[[int], float] | None
) -> Callable[[int], float] | None:
    """`run` with `switch()` entered: the fp32 side in another of the model's computing forms (an A/B column)."""
    if run is None:
        return None

    def timed(warmup: int) -> float:
        with switch():
            return run(warmup)

    return timed


def _onnx(
    segmentor: torch.nn.Module, size: tuple[int, int], threads: int, steps: int, tmp: Path
) -> tuple[Side, float]:
    import onnxruntime as ort

    from src.serve.export import export_onnx

    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    export_onnx(copy.deepcopy(segmentor).eval(), tmp / "model.onnx", sample_shape=size)
    export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(tmp / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: (torch.rand(1, 3, *size) * 255).numpy()}
    return Side(
        "ONNX Runtime",
        None,
        lambda w: statistics.median(bench.time_calls(lambda: session.run(None, feed), w, steps, cpu)),
    ), export_s


def measure_family(
    family: Family, compose: Callable[[list[str]], DictConfig], args: Any, peak: float
) -> dict[str, Any]:
    """Every side of one family, alternated `args.repeats` times; best times, ratios to MMSegmentation, GFLOP/s."""
    no_weights = [] if family.slide else ["model.backbone.pretrained=false"]  # UNet has no pretrained weights
    base = [f"experiment={family.experiment}", *no_weights]
    slide = family.slide
    mode = "slide" if slide else "whole"
    test_cfg = {"mode": mode, **({"crop_size": slide[1], "stride": slide[2]} if slide else {})}

    def composed(*overrides: str) -> DictConfig:
        cfg = compose([*base, *overrides])
        with open_dict(cfg):
            cfg.model.test_cfg = test_cfg
        return cfg

    fp32 = composed(*FP32)
    auto = composed()
    choice = apply_precision(auto)
    size = slide[0] if slide else tuple(int(c) for c in fp32.dataset.crop_size)
    sides = [_ours("fp32", fp32, args, size, mode)]
    same = (str(auto.runtime.precision), bool(auto.runtime.channels_last)) == ("32-true", False)
    if "auto" in args.variants and not same:
        sides.append(_ours("auto", auto, args, size, mode))
    if "compile" in args.variants and not slide:
        sides.append(_ours("compiled", fp32, args, size, mode, compiled=True))
    if "channels_last" in args.variants:  # the memory format alone, in fp32
        channels_last = composed("runtime.precision=32-true", "runtime.channels_last=true")
        sides.append(_ours("fp32 channels_last", channels_last, args, size, mode))
    device = args.device
    module = sides[0].module  # the fp32 side's: FLOPs and the ONNX export need no model of their own
    if "unfolded" in args.variants and sides[0].predictor is not module.segmentor:
        images = torch.randn(1, 3, *size, device=device)
        sides.append(
            Side(
                "fp32 BN unfolded",
                None,
                lambda w: _infer(module.segmentor, images, fp32, mode, w, args.infer_steps),
            )
        )
    if "native_resize" in args.variants and not slide:  # the A/B of src.models.utils's resize gradient
        sides.append(Side("fp32 native resize grad", _within(native_resize_gradient, sides[0].train), None))
    if "direct_concat" in args.variants:  # the A/B of src.models.resized_concat_conv
        fp32_side = sides[0]
        sides.append(
            Side(
                "fp32 direct concat",
                _within(direct_resized_concat, fp32_side.train),
                _within(direct_resized_concat, fp32_side.infer),
            )
        )
    result: dict[str, Any] = {
        "family": family.name,
        "experiment": family.experiment,
        "mmseg_config": family.mmseg_config,
        "batch": int(fp32.dataset.batch_size),
        "crop": list(fp32.dataset.crop_size),
        "infer_size": list(size),
        "infer_mode": mode,
        "auto": choice.as_record() | {"timed": not same},
    }
    if not slide:
        n = int(fp32.model.decode_head.num_classes)
        batch = bench.make_batches(1, result["batch"], result["crop"], n)[0]
        result["train_gflop"] = bench.count_train_flops(
            module, batch, bench.BenchSettings.from_config(fp32, warmup=0, steps=1), device
        )
    with torch.no_grad(), FlopCounterMode(display=False) as counter, model_arithmetic():
        module.segmentor.eval().predict(torch.randn(1, 3, *size, device=device), mode=mode)
    result["infer_gflop"] = counter.get_total_flops() / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        # ONNX Runtime on CUDA is scripts/gpu_check.sh's onnx step
        if "onnx" in args.variants and not slide and device.type == "cpu":
            side, result["onnx_export_s"] = _onnx(
                module.segmentor.cpu(), size, args.threads, args.infer_steps, Path(tmp)
            )
            sides.append(side)
        worker = None
        if args.mmseg:
            worker = MMSegWorker(
                args.mmseg,
                Path(args.mmseg_configs) / f"{family.mmseg_config}.json",
                args.threads,
                getattr(args, "mmseg_log", None),
            )
            result["mmseg_versions"] = worker.info
            req = {"crop": result["crop"], "batch": result["batch"], "steps": args.steps}
            infer_req = {"size": list(size), "mode": mode, "steps": args.infer_steps}
            if slide:
                infer_req.update(crop=list(slide[1]), stride=list(slide[2]))
            sides.append(
                Side(
                    "MMSegmentation",
                    None if slide else lambda w: statistics.median(worker(op="train", warmup=w, **req)["s"]),
                    lambda w: statistics.median(worker(op="infer", warmup=w, **infer_req)["s"]),
                )
            )
        try:
            for r in range(args.repeats):
                # each repeat starts one side later, so every side takes every place (an A/B of any two columns)
                for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                    if side.train is not None:
                        side.train_s.append(side.train(int(r == 0)))
                    if side.infer is not None:
                        side.infer_s.append(side.infer(int(r == 0)))
                    done = ", ".join(
                        ([f"train {side.train_s[-1]:.2f} s/step"] if side.train_s else [])
                        + ([f"inference {side.infer_s[-1]:.3f} s"] if side.infer_s else [])
                    )
                    print(f"  {family.name} repeat {r + 1}: {side.name}: {done}", flush=True)
        finally:
            if worker is not None:
                worker.close()
    result["sides"] = {s.name: {"train_s": s.train_s, "infer_s": s.infer_s} for s in sides}
    # a compiler failure runs the model eagerly (one warning): the row must not say compiled
    for side in sides:
        if side.name == "compiled" and not (
            is_compiled(side.module.segmentor) and is_compiled(side.predictor)
        ):
            result["sides"]["compiled"]["fell_back"] = True
    return _with_ratios(result, peak)


def _with_ratios(result: dict[str, Any], peak: float) -> dict[str, Any]:
    """Per side the fastest of the repeats (on a shared machine, the least disturbed: the alternated repeats of
    one side differ by up to 2x there), MMSegmentation's time over each side's (> 1: faster), GFLOP/s."""
    ref = result["sides"].get("MMSegmentation")
    for name, side in result["sides"].items():
        for work in ("train", "infer"):
            if not side[f"{work}_s"]:
                continue
            best = side[f"{work}_best_s"] = min(side[f"{work}_s"])
            gflop = result.get(f"{work}_gflop")
            if gflop and name != "MMSegmentation":
                side[f"{work}_gflops"] = gflop / best
                side[f"{work}_peak_share"] = gflop / best / peak
            if ref and ref.get(f"{work}_s"):
                side[f"{work}_vs_mmseg"] = min(ref[f"{work}_s"]) / best
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """The two tables of docs/benchmarks.md: training step and inference, seconds and ratio to MMSegmentation."""

    def cell(side: dict[str, Any] | None, work: str) -> str:
        if not side or f"{work}_best_s" not in side:
            return "-"
        text = f"{side[f'{work}_best_s']:.2f} s" + (" eager: compile failed" if side.get("fell_back") else "")
        if f"{work}_vs_mmseg" in side:
            text += f" ({side[f'{work}_vs_mmseg']:.2f}x)"
        return text

    out = []
    for work, title in (("train", "training step"), ("infer", "inference")):
        names = ["fp32", "auto", "compiled"] + (
            ["ONNX Runtime", "fp32 BN unfolded"] if work == "infer" else []
        )
        optional = ["fp32 channels_last", "fp32 direct concat"] + (
            ["fp32 native resize grad"] if work == "train" else []
        )
        names += [name for name in optional if any(name in r["sides"] for r in results)]
        head = ["family", "batch x size", "MMSegmentation", *names, "GFLOP", "fp32 GFLOP/s (of peak)"]
        out += [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
        for r in results:
            sides = r["sides"]
            if work == "train" and "train_gflop" not in r:
                continue
            shape = r["crop"] if work == "train" else r["infer_size"]
            batch = r["batch"] if work == "train" else 1
            fp32 = sides["fp32"]
            auto = "= fp32" if not r["auto"]["timed"] else cell(sides.get("auto"), work)
            cells = [
                r["family"]
                + (f" ({r['infer_mode']})" if work == "infer" and r["infer_mode"] != "whole" else ""),
                f"{batch} x {shape[0]}x{shape[1]}",
                cell(sides.get("MMSegmentation"), work),
                cell(fp32, work),
                auto,
                *(cell(sides.get(name), work) for name in names[2:]),
                f"{r[f'{work}_gflop']:.0f}",
                f"{fp32.get(f'{work}_gflops', 0):.0f} ({100 * fp32.get(f'{work}_peak_share', 0):.0f} %)",
            ]
            out.append(f"| {' | '.join(cells)} |")
        out.append(
            f"\n{title}: seconds, the fastest of the repeats (MMSegmentation's time / ours in brackets).\n"
        )
    return "\n".join(out)


# operator name fragments -> kind; the first match wins
KINDS = (
    ("convolution", ("conv", "mkldnn_convolution")),
    ("matmul", ("mm", "matmul", "linear", "addmm", "baddbmm", "scaled_dot_product")),
    ("normalisation", ("batch_norm", "layer_norm", "group_norm", "native_norm")),
    ("resize", ("upsample", "interpolate", "grid_sampler")),
    ("loss", ("nll_loss", "cross_entropy", "log_softmax")),
    ("optimiser", ("_foreach", "sgd", "adam")),
)


def kernel_shares(family: Family, compose: Callable[[list[str]], DictConfig], args: Any) -> dict[str, Any]:
    """Where one fp32 training step of `family` spends its time (torch.profiler, self CPU time per operator
    kind): the share in convolutions and matmuls is what no framework changes on a CPU, both sides running
    the same kernels of the same torch."""
    from torch.profiler import ProfilerActivity, profile

    cfg = compose([f"experiment={family.experiment}", "model.backbone.pretrained=false", *FP32])
    module = bench.build_module_for(cfg, args.device)
    n = int(cfg.model.decode_head.num_classes)
    loader = bench.batch_loader(bench.make_batches(3, int(cfg.dataset.batch_size), cfg.dataset.crop_size, n))
    bench.bare_train(module, loader, bench.BenchSettings.from_config(cfg, warmup=1, steps=1), args.device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bench.bare_train(module, loader, bench.BenchSettings.from_config(cfg, warmup=0, steps=1), args.device)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, parts in KINDS if any(p in name for p in parts)), "other")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {
        "family": family.name,
        "shares": {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    }
