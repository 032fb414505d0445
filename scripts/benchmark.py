"""Training and inference speed of a model config, and the framework overhead of Lightning over a bare loop.

python scripts/benchmark.py [model=pspnet_r50-d8] [dataset.batch_size=2] [dataset.crop_size=[256,256]]
    [dataset=cityscapes] [runtime.precision=bf16-mixed] [runtime.channels_last=true] [key=value ...]
    [--steps 10] [--warmup 3] [--repeats 5] [--only overhead metric sync infer] [--threads N]
    [--device auto|cpu|cuda] [--compile] [--infer-size 512 1024] [--infer-modes whole slide]
    [--slide-crop H W] [--slide-stride H W] [--out FILE.json]
python scripts/benchmark.py --families [NAME ...] [--mmseg PYTHON]
    [--variants auto compile onnx unfolded channels_last native_resize direct_concat]

`key=value` arguments are Hydra overrides of conf/train.yaml, as for training (model, schedule, runtime,
`dataset.batch_size`, `dataset.crop_size`; `dataset=cityscapes` for 19 classes; `auto` precision and
channels_last resolve as in training). The batches are synthetic and in memory: data loading is not measured.
`--only` picks the parts (docs/measurements.md says what each measures):

- overhead: the training step under our LightningModule + Trainer and under a bare PyTorch loop, alternated
  `--repeats` times: s/step, images/s, GFLOP/s, peak memory, and the Lightning / bare ratio (median, range, IQR);
- metric: `SegMetrics.update` on a batch, as a share of the training step;
- sync: host-device synchronisation points per training step (logging steps apart);
- infer: `predict` in whole and slide mode on an `--infer-size` image.

`--families` times the model families of docs/benchmarks.md instead (src/tools/families.py), and with
`--mmseg PYTHON` (an interpreter with MMSegmentation 1.x; `$MMSEG_PYTHON`) MMSegmentation's own model
alternated with ours; `--mmseg-configs` is the folder of its resolved configs. Defaults there: `--steps 1
--repeats 2 --infer-steps 2`. `--families --profile` prints instead where each family's fp32 training step
spends its time, by operator kind.

It prints a table and writes everything as JSON (`--out`, default logs/benchmark/<model>_<settings>.json).
Timings are medians; on a shared machine compare ratios measured in one run rather than absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.models.compile import compile_segmentor
from src.tools import benchmark as bench
from src.utils import resolvers  # noqa: F401
from src.utils.files import atomic_write_text
from src.utils.precision import apply_precision

ROOT = Path(__file__).resolve().parents[1]  # conf/ and the default logs/ folder

PARTS = ("overhead", "metric", "sync", "infer")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's flags, and the Hydra overrides (`key=value`, `+key=value`, `~key`) among the arguments."""
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    rest = [a for a in argv if a not in overrides]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps left out at the start of a run")
    parser.add_argument("--repeats", type=int, default=None, help="alternated bare / Lightning runs (5)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--compile", action="store_true", help="compile the segmentor as runtime.compile=true does"
    )
    parser.add_argument("--infer-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--infer-steps", type=int, default=None, help="timed calls per inference mode (5)")
    parser.add_argument("--infer-modes", nargs="+", choices=("whole", "slide"), default=["whole", "slide"])
    parser.add_argument("--slide-crop", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--slide-stride", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument(
        "--sync-steps", type=int, default=None, help="steps of the sync check (default: 2 log intervals)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: logs/benchmark/<name>.json)"
    )
    parser.add_argument("--families", nargs="*", default=None, help="the family table (all, or these names)")
    parser.add_argument("--mmseg", default=os.environ.get("MMSEG_PYTHON"), help="MMSegmentation's python")
    parser.add_argument(
        "--profile", action="store_true", help="with --families: each family's fp32 step by operator kind"
    )
    parser.add_argument("--mmseg-configs", type=Path, default=ROOT.parent / "shared" / "mmseg" / "configs")
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=("auto", "compile", "onnx", "unfolded", "channels_last", "native_resize", "direct_concat"),
        default=["auto", "compile", "onnx", "unfolded"],
    )
    args = parser.parse_args(rest)
    table = args.families is not None
    for key, single, family in (("steps", 10, 1), ("repeats", 5, 2), ("infer_steps", 5, 2)):
        if getattr(args, key) is None:
            setattr(args, key, family if table else single)
    return args, overrides


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """conf/train.yaml with the overrides, composed as `src.train` composes it (`${hydra:...}` resolvable)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(Path.cwd())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The config's Trainer arguments that shape a training step (the benchmark sets the rest)."""
    kwargs = OmegaConf.to_container(cfg.runtime.trainer, resolve=True)
    keep = ("deterministic", "benchmark", "gradient_clip_val", "gradient_clip_algorithm", "log_every_n_steps")
    out = {k: kwargs[k] for k in keep if k in kwargs}
    if int(kwargs.get("accumulate_grad_batches") or 1) != 1:
        print("note: accumulate_grad_batches is set to 1 (one batch per step) for the benchmark")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    command = "python scripts/benchmark.py " + " ".join(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.families is not None:
        return family_table(args, overrides, command)
    device = bench.resolve_device(args.device)
    cfg = compose_config(overrides, ROOT / "logs" / "benchmark" / "run")
    choice = apply_precision(cfg)

    module = bench.build_module_for(cfg, device)
    settings = bench.BenchSettings.from_config(
        cfg,
        warmup=args.warmup + (2 if args.compile else 0),
        steps=args.steps,
        repeats=args.repeats,
        compile=args.compile,
        infer_size=tuple(args.infer_size),
        infer_steps=args.infer_steps,
        slide_crop=tuple(args.slide_crop) if args.slide_crop else None,
        slide_stride=tuple(args.slide_stride) if args.slide_stride else None,
        trainer_kwargs=trainer_kwargs(cfg),
    )
    num_classes = settings.num_classes
    if settings.compile:
        compile_segmentor(module.segmentor)
    name = cfg.model.get("name") or "model"
    tag = f"{name}_{settings.precision}{'_cl' if settings.channels_last else ''}{'_compile' if args.compile else ''}"
    tag += f"_{device.type}_b{settings.batch_size}_{settings.crop_size[0]}x{settings.crop_size[1]}"
    out_path = args.out or ROOT / "logs" / "benchmark" / f"{tag}.json"
    report: dict[str, Any] = {
        "model": name,
        "command": command,
        "settings": {k: v for k, v in asdict(settings).items() if k != "trainer_kwargs"},
        "trainer": settings.trainer_kwargs,
        "environment": bench.environment(device),
        "precision_choice": choice.as_record(),
    }
    print(
        f"benchmark {tag}: {settings.batch_size} x {settings.crop_size}, {num_classes} classes, on {device}"
    )

    batch = bench.make_batches(1, settings.batch_size, settings.crop_size, num_classes)[0]
    report["train_gflop"] = bench.count_train_flops(module, batch, settings, device)
    if "overhead" in args.only:
        print(f"training: bare loop and Lightning alternated, {settings.repeats} x {settings.steps} steps")
        report["train"] = bench.measure_overhead(module, settings, device)
    if "metric" in args.only:
        report["metric"] = bench.measure_metric_update(num_classes, settings, device)
    if "sync" in args.only:
        interval = int(settings.trainer_kwargs.get("log_every_n_steps") or 50)
        steps = args.sync_steps or 2 * interval
        loader = bench.batch_loader(
            bench.make_batches(steps, settings.batch_size, settings.crop_size, num_classes)
        )
        print(f"host-device syncs: {steps} Lightning steps (logging every {interval})")
        records = bench.detect_train_syncs(module, loader, settings, device, steps=steps)
        report["sync"] = bench.summarize_syncs(records)
    if "infer" in args.only:
        report["infer"] = []
        for mode in args.infer_modes:
            print(f"inference: {mode}, 1 x {list(settings.infer_size)}")
            report["infer"].append(bench.measure_inference(module.segmentor, settings, device, mode))
    report["environment"]["load_average_end"] = bench.load_average()
    print_table(report, settings)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2))
    print(f"written: {out_path}")
    return report


def family_table(args: argparse.Namespace, overrides: list[str], command: str) -> dict[str, Any]:
    """`--families`: every family's sides alternated, printed as docs/benchmarks.md's tables and written as JSON."""
    from src.tools import families

    chosen = [f for f in families.FAMILIES if not args.families or f.name in args.families]
    unknown = set(args.families or ()) - {f.name for f in families.FAMILIES}
    if unknown:
        raise SystemExit(
            f"--families {sorted(unknown)}: expected names of {[f.name for f in families.FAMILIES]}"
        )
    if args.mmseg and not args.mmseg_configs.is_dir():
        raise SystemExit(
            f"--mmseg-configs {args.mmseg_configs}: no such folder of resolved MMSegmentation configs"
        )
    args.device = bench.resolve_device(args.device)
    if args.mmseg and args.device.type != "cpu":
        raise SystemExit(
            "--mmseg: MMSegmentation's side runs on the CPU only; leave --mmseg out with --device cuda"
        )
    args.threads = args.threads or torch.get_num_threads()  # main set it when given
    peak = families.matmul_peak(args.device)
    env = bench.environment(args.device)
    print(
        f"family table: {len(chosen)} families, {args.threads} threads, fp32 matmul peak {peak:.0f} GFLOP/s"
    )
    out_dir = ROOT / "logs" / "benchmark" / "run"
    out = args.out or ROOT / "logs" / "benchmark" / "families.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.mmseg:
        args.mmseg_log = out.with_suffix(".mmseg.log")
        args.mmseg_log.write_text("")  # this run's: each family's worker appends to it
        print(f"MMSegmentation's own output: {args.mmseg_log}")
    report: dict[str, Any] = {
        "command": command,
        "environment": env,
        "matmul_peak_gflops": peak,
        "families": [],
    }

    def compose(family_overrides: list[str]) -> DictConfig:
        return compose_config([*family_overrides, *overrides], out_dir)

    if args.profile:  # the share of each operator kind in one fp32 training step, family by family
        rows = []
        for family in (f for f in chosen if not f.slide):
            rows.append(families.kernel_shares(family, compose, args))
            shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in rows[-1]["shares"].items())
            print(f"  {family.name}: {shares}", flush=True)
        out = out.with_name(out.stem + "_profile.json")
        atomic_write_text(out, json.dumps(rows, indent=2))
        print(f"written: {out}")
        return {"profile": rows}
    # the JSON is rewritten after each family: a long run that stops keeps what it measured
    for family in chosen:
        report["families"].append(families.measure_family(family, compose, args, peak))
        atomic_write_text(out, json.dumps(report, indent=2))
    env["load_average_end"] = bench.load_average()
    report["markdown"] = families.markdown(report["families"])
    print(f"\n{env['cpu']}, {args.threads} threads, torch {env['torch']}, peak {peak:.0f} GFLOP/s\n")
    print(report["markdown"])
    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"written: {out}")
    return report


def print_table(report: dict[str, Any], settings: bench.BenchSettings) -> None:
    env = report["environment"]
    f = bench.fmt
    lines = [
        "",
        f"{report['model']}: batch {settings.batch_size}, crop {settings.crop_size[0]}x{settings.crop_size[1]}, "
        f"{settings.num_classes} classes, precision {settings.precision}, channels_last "
        f"{str(settings.channels_last).lower()}, compile {str(settings.compile).lower()}",
        f"{env['device']} ({env.get('gpu') or env['cpu']}), {env['threads']} threads, torch {env['torch']}, "
        f"lightning {env.get('lightning')}, load average {env.get('load_average')} -> "
        f"{env.get('load_average_end')}",
        "",
        f"{'measure':<34} {'value':>12}  notes",
        f"{'-' * 34} {'-' * 12}  {'-' * 50}",
    ]

    def row(name: str, value: str, note: str = "") -> None:
        lines.append(f"{name:<34} {value:>12}  {note}")

    gflop = report.get("train_gflop")
    train = report.get("train")
    if train:
        light, bare = train["lightning_s_median"], train["bare_s_median"]
        row(
            "train step, Lightning (s)",
            f(light),
            f"{settings.batch_size / light:.2f} img/s" + (f", {gflop / light:.0f} GFLOP/s" if gflop else ""),
        )
        row("train step, bare loop (s)", f(bare), f"{settings.batch_size / bare:.2f} img/s")
        threads = env["threads"]
        row(
            "train step, Lightning (CPU s)",
            f(train["lightning_cpu_s_median"]),
            f"process CPU time, all threads; / {threads} threads = {f(train['lightning_cpu_s_median'] / threads)} s",
        )
        row(
            "framework overhead (ratio)",
            f(train["ratio_median"]),
            f"median of {len(train['ratios'])}; min {f(train['ratio_min'])}, max {f(train['ratio_max'])}, "
            f"IQR {f(train['ratio_iqr'])}; CPU-time ratio {f(train['cpu_ratio_median'])}",
        )
        mem = train.get("peak_memory")
        if mem:
            row("peak memory, training (MiB)", f"{mem['mib']:.0f}", mem["kind"])
    if gflop:
        row("train step work (GFLOP)", f"{gflop:.0f}", "forward + backward, torch.utils.flop_counter")
    metric = report.get("metric")
    if metric:
        note = (
            f"{100 * metric['update_s'] / train['lightning_s_median']:.2f}% of a training step"
            if train
            else ""
        )
        row("metric update (ms)", f"{1000 * metric['update_s']:.2f}", note)
    sync = report.get("sync")
    if sync:
        for kind in ("other_steps", "logging_steps"):
            part = sync[kind]
            sites = "; ".join(f"{k} x{v:g}" for k, v in list(part["sites"].items())[:3])
            row(
                f"host syncs / step, {kind.replace('_', ' ')}", f"{part['syncs_per_step']:g}", sites or "none"
            )
    for res in report.get("infer", []):
        extra = f", crop {res['crop']} stride {res['stride']}" if res["mode"] == "slide" else ""
        row(
            f"inference {res['mode']} {res['size'][0]}x{res['size'][1]} (s)",
            f(res["s"]),
            f"{res['fps']:.3f} img/s, {res['gflop']:.0f} GFLOP{extra}",
        )
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    from src.utils.errors import run_script  # one short block for a user error

    raise SystemExit(run_script(main))
