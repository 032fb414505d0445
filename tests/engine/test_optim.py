"""Parameter groups (MMSegmentation's paramwise_cfg), LR schedules with warm-up, and gradient clipping."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from src.engine.module import SegmentationModule
from src.engine.optim import build_param_groups
from src.engine.schedulers import PolyLR, build_lr_scheduler
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[2]


class Tiny(nn.Module):
    """Names that exercise the rules: a backbone conv with bias, a norm, a head whose key is longer."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.decode_head = nn.Module()
        self.decode_head.conv_seg = nn.Conv2d(4, 2, 1)
        self.decode_head.norm = nn.GroupNorm(2, 4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


class StagedBackbone(nn.Sequential):
    """A backbone that numbers its parameters as MMSegmentation's stage-wise ConvNeXt rule: the stem is layer 0,
    stage i is layer i + 1 (here: the Sequential's index), anything else the heads' layer."""

    num_layers = 6

    def layer_id(self, name: str, decay_type: str = "stage_wise") -> int:
        index = int(name.split(".")[0])
        return 0 if index == 0 else index if index < 4 else self.num_layers + 1


class TinyStaged(Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = StagedBackbone(*(nn.Conv2d(3, 3, 1) for _ in range(4)), nn.LayerNorm(3))


def test_layer_decay_scales_lr_per_stage_and_drops_decay_of_1d_params():
    """MMSegmentation's LearningRateDecayOptimizerConstructor (stage_wise, num_layers 6, rate 0.9): the LR of
    layer i is lr * 0.9 ** (7 - i), heads keep lr; biases and 1-D parameters get no weight decay."""
    paramwise = {"layer_decay": {"decay_rate": 0.9, "decay_type": "stage_wise", "num_layers": 6}}
    where = _by_name(build_param_groups(TinyStaged(), lr=1e-4, weight_decay=0.05, paramwise=paramwise))
    expected = {
        "backbone.0.weight": (1e-4 * 0.9**7, 0.05),
        "backbone.0.bias": (1e-4 * 0.9**7, 0.0),
        "backbone.2.weight": (1e-4 * 0.9**5, 0.05),
        "backbone.3.weight": (1e-4 * 0.9**4, 0.05),
        "backbone.4.weight": (1e-4, 0.0),  # LayerNorm: 1-D, the heads' layer
        "decode_head.conv_seg.weight": (1e-4, 0.05),
        "decode_head.norm.weight": (1e-4, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert where[name]["lr"] == pytest.approx(lr) and where[name]["weight_decay"] == wd, name
    assert "frozen.weight" not in where


def test_layer_decay_needs_a_backbone_that_numbers_its_layers():
    paramwise = {"layer_decay": {"decay_rate": 0.9, "num_layers": 6}}
    with pytest.raises(ValueError, match="layer_id"):
        build_param_groups(Tiny(), lr=1e-4, paramwise=paramwise)
    with pytest.raises(ValueError, match="decay_type"):
        build_param_groups(TinyStaged(), lr=1e-4, paramwise={"layer_decay": {"decay_rate": 0.9}})
    with pytest.raises(ValueError, match="num_layers: 6"):
        build_param_groups(
            TinyStaged(), lr=1e-4, paramwise={"layer_decay": {"decay_rate": 0.9, "num_layers": 12}}
        )


def _by_name(groups):
    """parameter name -> the group holding it (asserting it is held once)."""
    where = {}
    for group in groups:
        for name in group["param_names"]:
            assert name not in where, f"{name} is in two groups"
            where[name] = group
    return where


def test_every_parameter_lands_in_one_group_by_the_longest_key():
    model = Tiny()
    paramwise = {
        "custom_keys": {
            "head": {"lr_mult": 10.0},
            "decode_head.conv_seg": {"lr_mult": 5.0, "decay_mult": 0.5},
        },
        "norm_decay_mult": 0.0,
        "bias_decay_mult": 0.1,
    }
    where = _by_name(build_param_groups(model, lr=0.01, weight_decay=1e-4, paramwise=paramwise))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(where) == trainable  # frozen parameters are left out
    expected = {
        "backbone.0.weight": (0.01, 1e-4),  # no rule
        "backbone.0.bias": (0.01, 1e-5),  # bias_decay_mult
        "backbone.1.weight": (0.01, 0.0),  # norm_decay_mult
        "backbone.1.bias": (0.01, 0.0),  # a norm's bias is a norm parameter, not a bias
        "decode_head.conv_seg.weight": (0.05, 5e-5),  # the longer key wins over "head"
        "decode_head.conv_seg.bias": (0.05, 5e-5),  # a custom key takes precedence over bias_decay_mult
        "decode_head.norm.weight": (0.1, 1e-4),  # ... and over norm_decay_mult
        "decode_head.norm.bias": (0.1, 1e-4),
    }
    for name, (lr, wd) in expected.items():
        assert where[name]["lr"] == pytest.approx(lr), name
        assert where[name]["weight_decay"] == pytest.approx(wd), name


def test_no_rules_give_one_group_with_the_base_values():
    groups = build_param_groups(Tiny(), lr=0.02, weight_decay=5e-4, paramwise=None)
    assert len(groups) == 1 and groups[0]["lr"] == 0.02 and groups[0]["weight_decay"] == 5e-4


@pytest.mark.parametrize(
    ("paramwise", "match"),
    [
        ({"custom_key": {}}, r"schedule.paramwise: unknown keys \['custom_key'\]"),
        ({"custom_keys": {"head": {"lr": 10}}}, r"custom_keys.head: unknown keys \['lr'\]"),
        ({"custom_keys": {"head": 10}}, "custom_keys.head=10: expected a mapping"),
    ],
)
def test_paramwise_typos_are_clear_errors(paramwise, match):
    with pytest.raises(ValueError, match=match):
        build_param_groups(Tiny(), lr=0.01, paramwise=paramwise)


def test_segmentation_module_groups_the_segmentor_and_the_schedule_scales_each_group(tmp_path):
    cfg = compose_cfg(
        "train",
        [
            "schedule=adamw_poly_40k",
            # the rules by module type (norm layers) and by name (head), not SegFormer's name-only keys
            "~schedule.paramwise",
            "+schedule.paramwise={custom_keys: {head: {lr_mult: 10.0}}, norm_decay_mult: 0.0}",
            "schedule.max_steps=100",
            "schedule.warmup_iters=10",
            f"paths.data_dir={tmp_path}",
        ],
        tmp_path,
    )
    module = SegmentationModule(
        instantiate(cfg.model),
        optimizer=instantiate(cfg.schedule.optimizer),
        scheduler=instantiate(cfg.schedule.scheduler),
        paramwise=dict(cfg.schedule.paramwise),
        warmup_iters=cfg.schedule.warmup_iters,
        warmup_ratio=cfg.schedule.warmup_ratio,
    )
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    where = _by_name(optimizer.param_groups)
    assert set(where) == {n for n, _ in module.segmentor.named_parameters()}
    base_lr, base_wd = 6e-5, 0.01
    norms = {
        f"{m_name}.{p_name}"
        for m_name, m in module.segmentor.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for p_name, _ in m.named_parameters(recurse=False)
    }
    assert norms  # the FCN has BatchNorms in its backbone and heads
    for name, group in where.items():
        is_head = "head" in name
        is_norm = name in norms
        assert group["initial_lr"] == pytest.approx(base_lr * (10 if is_head else 1)), name
        assert group["weight_decay"] == pytest.approx(0.0 if is_norm and not is_head else base_wd), name
    # warm-up then PolyLR (power 1, eta_min 0 over the 90 remaining steps): every group at its own base LR
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(40):
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
    for step, values in enumerate(lrs):
        if step < 10:
            factor = 1e-6 + (1 - 1e-6) * step / 10
        else:
            factor = 1 - (step - 10) / 90
        for group, lr in zip(optimizer.param_groups, values):
            assert lr == pytest.approx(group["initial_lr"] * factor, rel=1e-6, abs=1e-15), step


def test_warmup_keeps_the_main_schedule_ending_at_max_steps():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = build_lr_scheduler(
        optimizer, partial(PolyLR, total_iters=20, power=0.9, eta_min=1e-4), warmup_iters=5, warmup_ratio=0.1
    )
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(0.001)  # warmup_ratio x lr
    assert seen[5] == pytest.approx(0.01)  # the end of the warm-up: the base LR
    assert seen[20] == pytest.approx(1e-4)  # PolyLR reaches eta_min at the configured length


def test_cosine_schedule_with_warmup_follows_mmengine_formula():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cosine = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=14, eta_min=0.0)
    scheduler = build_lr_scheduler(optimizer, cosine, warmup_iters=4, warmup_ratio=0.5)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(14):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    for t in range(4):
        assert seen[t] == pytest.approx(0.1 * (0.5 + 0.5 * t / 4))
    for t in range(4, 15):
        assert seen[t] == pytest.approx(0.1 * (1 + math.cos(math.pi * (t - 4) / 10)) / 2, abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_iters": 20}, "warmup_iters=20 is not shorter than schedule.scheduler.total_iters=20"),
        ({"warmup_iters": 5, "warmup_ratio": 0.0}, r"warmup_ratio=0.0: expected a start factor in \(0, 1\]"),
    ],
)
def test_warmup_errors_name_the_keys(kwargs, match):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ValueError, match=match):
        build_lr_scheduler(optimizer, partial(PolyLR, total_iters=20), **kwargs)


def test_clipping_by_another_norm_type_uses_that_norm(tmp_path):
    cfg = compose_cfg("train", [f"paths.data_dir={tmp_path}"], tmp_path)
    module = SegmentationModule(
        instantiate(cfg.model),
        optimizer=instantiate(cfg.schedule.optimizer),
        clip_grad={"max_norm": 1.0, "norm_type": math.inf},
    )
    optimizer = module.configure_optimizers()["optimizer"]
    for i, p in enumerate(module.parameters()):
        p.grad = torch.full_like(p, 3.0 if i == 0 else 0.5)
    module.configure_gradient_clipping(
        optimizer
    )  # what Lightning calls after each backward (and AMP unscale)
    # the inf-norm (largest |g|) is clipped to 1: every gradient scaled by 1/3
    grads = [p.grad for p in module.parameters()]
    assert grads[0].abs().max().item() == pytest.approx(1.0, rel=1e-5)
    assert grads[1].abs().max().item() == pytest.approx(0.5 / 3, rel=1e-5)


SCHEDULES = sorted(p.stem for p in (ROOT / "conf" / "schedule").glob("*.yaml"))


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_builds_its_optimizer_groups_and_lr_curve(name, tmp_path):
    cfg = compose_cfg("train", [f"schedule={name}", f"paths.data_dir={tmp_path}"], tmp_path).schedule
    keywords = instantiate(cfg.optimizer).keywords
    model = TinyStaged() if (cfg.paramwise or {}).get("layer_decay") else Tiny()
    groups = build_param_groups(model, keywords["lr"], keywords.get("weight_decay", 0.0), cfg.paramwise)
    optimizer = instantiate(cfg.optimizer)(params=groups)
    scheduler = build_lr_scheduler(optimizer, instantiate(cfg.scheduler), cfg.warmup_iters, cfg.warmup_ratio)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [g["initial_lr"] * (cfg.warmup_ratio if cfg.warmup_iters else 1.0) for g in optimizer.param_groups]
    )
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert all(0.0 < g["lr"] <= g["initial_lr"] for g in optimizer.param_groups)
    if name.startswith("sgd_"):  # MMSegmentation's SGD schedules
        assert type(optimizer).__name__ == "SGD" and keywords["momentum"] == 0.9
        assert keywords["weight_decay"] == 0.0005 and keywords["lr"] == 0.01
