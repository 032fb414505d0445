"""channels_last and bf16 autocast (`runtime.channels_last`, `runtime.precision=bf16-mixed`) at the model level:
the same values as the default layout, no layout mixing inside the heads, and losses, logits and metrics in fp32."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from src.engine.module import SegmentationModule
from src.models.utils import like_memory_format
from tests.helpers import compose_cfg

CL = torch.channels_last


# one intra-op thread: these small models spend their time in OpenMP barriers when the machine is shared
pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name: str, tmp_path: Path, num_classes: int = 5) -> torch.nn.Module:
    overrides = [f"model={name}", f"dataset.num_classes={num_classes}", f"paths.data_dir={tmp_path}"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _batch(n: int = 2, size: int = 48, num_classes: int = 5) -> dict[str, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    masks = torch.randint(0, num_classes, (n, size, size), generator=gen)
    masks[:, :4] = 255
    return {"inputs": list(images), "masks": list(masks)}


def _is_cl(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


def test_like_memory_format_follows_the_reference():
    ref_cl = torch.randn(2, 4, 5, 5).contiguous(memory_format=CL)
    x = torch.randn(2, 3, 5, 5)
    assert _is_cl(like_memory_format(x, ref_cl)) and torch.equal(like_memory_format(x, ref_cl), x)
    assert like_memory_format(x, torch.randn(2, 4, 5, 5)) is x  # contiguous reference: untouched
    assert like_memory_format(x, torch.randn(2, 4, 1, 1).contiguous(memory_format=CL)) is x  # ambiguous 1x1


@pytest.mark.parametrize("name", ["pspnet_r18-d8", "deeplabv3_r18-d8", "fcn_r18-d8"])
def test_channels_last_gives_the_default_layout_values_and_gradients(name, tmp_path):
    """Same losses, gradients (to float rounding) and predictions; the output of the PSP and ASPP heads'
    bottleneck, which concatenates full-size and pooled maps, stays channels_last (a contiguous one costs a
    full-size conversion forward and backward)."""
    model = _build(name, tmp_path)
    module = SegmentationModule(model, optimizer=partial(torch.optim.SGD, lr=0.1))
    module_cl = SegmentationModule(
        copy.deepcopy(model), optimizer=partial(torch.optim.SGD, lr=0.1), channels_last=True
    )
    module_cl.setup("fit")
    assert all(_is_cl(p) for p in module_cl.segmentor.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    seen: list[bool] = []
    head = module_cl.segmentor.decode_head
    if hasattr(head, "bottleneck"):
        head.bottleneck.conv.register_forward_hook(lambda m, args, out: seen.append(_is_cl(out)))
    batch = _batch()
    torch.manual_seed(0)  # the same dropout masks
    loss, terms, _ = module.compute_losses(batch)
    torch.manual_seed(0)
    loss_cl, terms_cl, _ = module_cl.compute_losses(batch)
    loss.backward()
    loss_cl.backward()
    assert terms.keys() == terms_cl.keys()
    torch.testing.assert_close(loss_cl, loss, rtol=1e-4, atol=1e-5)
    grads = dict(module.segmentor.named_parameters())
    for pname, p in module_cl.segmentor.named_parameters():
        torch.testing.assert_close(p.grad, grads[pname].grad, rtol=1e-3, atol=1e-4, msg=pname)
    if hasattr(head, "bottleneck"):
        assert seen == [True]
    module.eval(), module_cl.eval()
    images = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        out, out_cl = (
            module.segmentor.predict(images),
            module_cl.segmentor.predict(images.contiguous(memory_format=CL)),
        )
    assert out_cl.dtype == torch.float32 and out_cl.is_contiguous()  # logits come back NCHW
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_training_step_computes_losses_and_logits_in_fp32(tmp_path):
    """Under CPU bf16 autocast (Lightning's bf16-mixed) the convolutions run in bf16, while the upsampled logits
    reach every loss term in fp32, the losses are fp32, the weights, their gradients and BN statistics stay fp32,
    and predictions (what the metrics take the argmax of) are fp32."""
    model = _build("pspnet_r18-d8", tmp_path)
    model.decode_head.losses.append(
        instantiate({"_target_": "src.models.losses.DiceLoss", "loss_weight": 0.5})
    )
    module = SegmentationModule(model, optimizer=partial(torch.optim.SGD, lr=0.1), channels_last=True)
    module.setup("fit")
    head_out, loss_in = [], []
    model.decode_head.register_forward_hook(lambda m, i, out: head_out.append(out.dtype))
    for term in [*model.decode_head.losses, *model.auxiliary_heads[0].losses]:
        term.register_forward_pre_hook(lambda m, args: loss_in.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms, _ = module.compute_losses(_batch())
    assert head_out == [torch.bfloat16]
    assert loss_in == [torch.float32] * 3
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    bn = model.decode_head.bottleneck.bn
    assert bn.running_mean.dtype == torch.float32 and bn.running_var.dtype == torch.float32
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.predict_images([torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)])
    assert logits[0].dtype == torch.float32
