"""The benchmark tools (`src/tools/benchmark.py`, `scripts/benchmark.py`) on tiny sizes: what they report, not how fast
(no timed assertions), and the host-device syncs of the training step that they look for."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from src.engine.callbacks.progress import LossProgressBar
from src.models.losses import CrossEntropyLoss, DiceLoss, FocalLoss
from src.models.samplers import OHEMPixelSampler
from src.tools import benchmark as bench

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model=fcn_r18-d8", "dataset.batch_size=2", "dataset.crop_size=[32,32]", "runtime.log_interval=2"]


def _calls(fn) -> dict:
    with bench.SyncDetector() as detector:
        fn()
    return {name: n for (name, _), n in detector.calls.items()}


def test_sync_detector_names_the_calls_that_wait_for_the_device():
    x = torch.randn(6)
    assert _calls(lambda: x[0].item()) == {"item": 1}
    assert _calls(lambda: bool(x.sum() > 0)) == {"__bool__": 1}
    assert _calls(lambda: float(x[0])) == {"__float__": 1}
    assert _calls(lambda: x[x > 0]) == {"__getitem__": 1}  # boolean mask: a nonzero
    assert _calls(lambda: x.clone().__setitem__(x > 0, 0.0)) == {"__setitem__": 1}
    assert _calls(lambda: torch.unique(x)) == {"unique": 1}
    assert _calls(lambda: x.tolist()) == {"tolist": 1}
    # the rest of a step: no sync
    assert _calls(lambda: (x * 2).softmax(0)[1:3].sum().clamp_min(0) + x[torch.tensor([0, 2])].mean()) == {}
    with bench.SyncDetector() as detector:
        x[1].item()
    ((name, site),) = detector.calls
    assert name == "item" and "test_benchmark.py" in site


def test_losses_and_ohem_sampler_do_not_sync():
    """CE, Dice (also with an ignored class index inside the classes), Focal and the OHEM sampler in both modes:
    tensor ops only. (Lovasz, smp's, is data-dependent and syncs; it is documented in the README.)"""
    logits = torch.randn(2, 5, 12, 12, requires_grad=True)
    target = torch.randint(0, 5, (2, 12, 12))
    target[:, :3] = 255
    for loss in (CrossEntropyLoss(), CrossEntropyLoss(avg_non_ignore=True), DiceLoss(), FocalLoss()):
        assert _calls(lambda loss=loss: loss(logits, target).backward()) == {}, type(loss).__name__
    dice = DiceLoss(ignore_index=3)
    assert _calls(lambda: dice(logits, target.clamp_max(4)).backward()) == {}
    for sampler in (OHEMPixelSampler(thresh=0.7, min_kept=20), OHEMPixelSampler(thresh=None, min_kept=20)):
        assert _calls(lambda sampler=sampler: sampler.sample(logits, target)) == {}


def test_window_timer_times_the_steps_after_warmup():
    timer = bench.WindowTimer(warmup=2, steps=3, device=torch.device("cpu"))
    assert timer.total_steps == 6
    with pytest.raises(RuntimeError, match="did not complete"):
        timer.seconds_per_step  # noqa: B018
    for step in range(timer.total_steps):
        timer.mark(step)
        sum(i * i for i in range(200_000))  # CPU work inside every step, counted by process time
    assert timer.seconds_per_step == pytest.approx((timer.marks[5] - timer.marks[2]) / 3)
    assert 0 < timer.cpu_seconds_per_step < 10 * timer.seconds_per_step


def test_make_batches_are_collated_like_the_datamodule():
    batches = bench.make_batches(3, batch_size=2, crop_size=(20, 24), num_classes=4)
    assert len(batches) == 3 and batches[2] is batches[0]
    image, mask = batches[0]["inputs"][0], batches[0]["masks"][0]
    assert image.shape == (3, 20, 24) and image.dtype == torch.uint8
    assert mask.shape == (20, 24) and mask.dtype == torch.long
    values = set(torch.cat([m.flatten() for m in batches[0]["masks"]]).tolist())
    assert values <= {0, 1, 2, 3, 255} and 255 in values


def test_precision_context():
    cpu = torch.device("cpu")
    with bench.precision_context("bf16-mixed", cpu):
        assert torch.is_autocast_enabled("cpu")
    with bench.precision_context("32-true", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="bare loop supports"):
        bench.precision_context("bf16-true", cpu)


def test_loss_progress_bar_reads_the_loss_only_when_it_refreshes():
    """The loss is logged without prog_bar (Lightning would convert it after every step); the bar reads it."""
    bar = LossProgressBar(refresh_rate=10)
    trainer = SimpleNamespace(
        callback_metrics={"train/loss": torch.tensor(0.25)}, loggers=[], progress_bar_metrics={}
    )
    assert bar.get_metrics(trainer, None) == {"train/loss": 0.25}
    assert bar.refresh_rate == 10


def test_benchmark_script_reports_overhead_metric_syncs_and_inference(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import benchmark as script
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "bench.json"
    args = [*TINY, "--steps", "1", "--warmup", "1", "--repeats", "2", "--sync-steps", "4", "--threads", "1"]
    args += ["--infer-size", "40", "48", "--infer-steps", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        report = script.main(args)
    finally:
        torch.set_num_threads(threads)
    assert report["environment"]["threads"] == 1
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    train = report["train"]
    assert len(train["ratios"]) == 2 and train["ratio_min"] <= train["ratio_median"] <= train["ratio_max"]
    assert all(s > 0 for s in train["bare_s"] + train["lightning_s"])
    assert train["peak_memory"]["mib"] > 0 and report["train_gflop"] > 0
    assert report["metric"]["update_s"] > 0
    # no sync in the training step, except Lightning's logging at the interval (every 2 steps here)
    assert report["sync"]["other_steps"] == {"steps": 2, "syncs_per_step": 0.0, "sites": {}}
    logging = report["sync"]["logging_steps"]
    assert logging["steps"] == 2 and logging["syncs_per_step"] > 0
    assert all("log_metrics" in site for site in logging["sites"])
    modes = {r["mode"]: r for r in report["infer"]}
    assert set(modes) == {"whole", "slide"} and modes["slide"]["crop"] == [32, 32]
    assert modes["slide"]["gflop"] > modes["whole"]["gflop"] > 0


def test_bare_loop_uses_the_configured_optimiser_and_schedule():
    """The bare loop steps the optimiser and LR scheduler of `configure_optimizers` once per batch."""
    from src.engine.module import SegmentationModule
    from src.engine.schedulers import PolyLR
    from src.models import EncoderDecoder
    from src.models.heads import FCNHead
    from tests.helpers import AsList

    head = FCNHead(in_channels=3, channels=4, num_classes=3, num_convs=1, concat_input=False, in_index=0)
    module = SegmentationModule(
        EncoderDecoder(AsList(), head),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        scheduler=partial(PolyLR, total_iters=10, eta_min=0.0),
    )
    settings = bench.BenchSettings(batch_size=2, crop_size=(8, 8), num_classes=3, warmup=1, steps=2)
    seen = []
    real = module.configure_optimizers

    def spy():
        out = real()
        seen.append(out)
        return out

    module.configure_optimizers = spy
    loader = bench.batch_loader(bench.make_batches(5, 2, (8, 8), 3))
    timer = bench.bare_train(module, loader, settings, torch.device("cpu"))
    assert timer.seconds_per_step > 0
    scheduler = seen[0]["lr_scheduler"]["scheduler"]
    assert scheduler.last_epoch == 4  # warm-up 1 + 2 timed + 1 that closes the window
