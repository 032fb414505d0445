"""`runtime.compile` / `compile=true` (`src.models.compile`): the compiled segmentor gives the eager outputs, keeps
its parameter names, and a model the compiler fails on runs eagerly after one warning line.

The default suite compiles with TorchDynamo's `aot_eager` backend (the graph capture and autograd, no code
generation: seconds); the slow test compiles one model per family with the default backend (inductor)."""

from __future__ import annotations

import logging

import pytest
import torch

from src.loading.mmseg import compose_model_dataset
from src.models.compile import compile_segmentor, is_compiled
from tests.helpers import tiny_model_cfg


def test_compiled_outputs_and_names_equal_the_eager_ones():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 3, (2, 32, 32))
    with torch.no_grad():
        eager, eager_loss = model.predict(x), model.loss(x, masks)
    names = list(model.state_dict())
    compile_segmentor(model, backend="aot_eager")
    assert is_compiled(model) and list(model.state_dict()) == names  # checkpoints are unchanged
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), eager)
        torch.testing.assert_close(model.loss(x, masks), eager_loss)


def test_a_compiler_failure_falls_back_to_eager_with_one_warning(caplog):
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        eager = model.predict(x)
    compile_segmentor(model, backend=_failing_backend)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        first, second = model.predict(x), model.predict(x)
    torch.testing.assert_close(first, eager)
    torch.testing.assert_close(second, eager)
    said = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(said) == 1 and "tiny" in said[0] and "running it eagerly" in said[0]
    assert not is_compiled(model)


def _tiny() -> torch.nn.Module:
    from hydra.utils import instantiate

    return instantiate(tiny_model_cfg(num_classes=3))


def _failing_backend(graph, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


FAMILIES = [
    "pspnet_r18-d8",
    "deeplabv3plus_r18-d8",
    "upernet_r18",
    "upernet_swin-t",
    "upernet_convnext-t",
    "segformer_mit-b0",
    "vit_vit-b16_mln_upernet",
    "unet-s5-d16_fcn",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_one_model_per_family_compiles_to_the_eager_outputs(name: str):
    from src.loading.build import build_segmentor

    torch.manual_seed(0)
    cfg = compose_model_dataset(name, "shapes")
    model = build_segmentor(cfg.model).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model.encode_decode(x)
        compile_segmentor(model)
        compiled = model.encode_decode(x)
    assert is_compiled(model), f"{name}: fell back to eager"
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)
