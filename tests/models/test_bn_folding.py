"""`fold_bn` (`src.models.bn_folding`): BatchNorm folded into the convolution before it gives the model's logits,
leaves the model itself (what is saved) as it is, and folds nothing where the fold would change the output."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate
from timm.layers import BatchNormAct2d
from torch import nn

from src.models.bn_folding import BATCHNORMS, fold_batchnorm
from tests.helpers import tiny_model_cfg


def _with_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters away from the identity, so that a wrong fold shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_folded_copy_gives_the_logits_and_leaves_the_model_as_it_is():
    model = _with_statistics(instantiate(tiny_model_cfg(num_classes=3)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 40, 48)
    folded, count = fold_batchnorm(model)
    # the backbone's BatchNorm2d and the head's timm BatchNormAct2d (its ReLU kept)
    assert count == 2 and folded is not model
    assert not any(type(m) in BATCHNORMS for m in folded.modules())
    assert sum(type(m) is BatchNormAct2d for m in model.modules()) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded.predict(x), model.predict(x), rtol=1e-5, atol=1e-5)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


class _ConvUsedTwice(nn.Module):
    """A convolution whose output feeds its BatchNorm and a residual sum: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.conv(x)
        return [self.bn(y) + y]


def test_a_fold_that_would_change_the_output_is_not_made(caplog):
    cfg = tiny_model_cfg(num_classes=3)
    cfg["backbone"] = {"_target_": "tests.models.test_bn_folding._ConvUsedTwice"}
    cfg["decode_head"]["in_channels"] = 3
    model = _with_statistics(instantiate(cfg))
    model.decode_head = nn.Identity()  # only the backbone's pair
    model.decode_head.predict_by_feat = lambda feats, size: feats[0]
    with caplog.at_level(logging.WARNING):
        folded, count = fold_batchnorm(model)
    assert folded is model and count == 0
    said = [r.getMessage() for r in caplog.records if "fold_bn" in r.getMessage()]
    assert len(said) == 1 and "differ" in said[0]


def test_nothing_is_folded_in_training_mode():
    model = _with_statistics(instantiate(tiny_model_cfg(num_classes=3))).train()
    assert fold_batchnorm(model) == (model, 0)


@pytest.mark.parametrize("name", ["pspnet_r18-d8", "segformer_mit-b0"])
def test_a_real_model_folds_all_but_its_auxiliary_head(name: str):
    """Every BatchNorm that inference runs is folded: ResNet's and the heads' ConvModules (PSPNet), SegFormer's
    fusion ConvModule; the auxiliary head (training only) is not run, so not traced."""
    from src.loading.build import build_segmentor
    from src.loading.mmseg import compose_model_dataset

    model = _with_statistics(build_segmentor(compose_model_dataset(name, "shapes").model))
    in_aux = sum(type(m) in BATCHNORMS for h in model.auxiliary_heads for m in h.modules())
    total = sum(type(m) in BATCHNORMS for m in model.modules())
    folded, count = fold_batchnorm(model)
    assert count == total - in_aux > 0
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model.predict(x)
        torch.testing.assert_close(folded.predict(x), reference, rtol=1e-4, atol=1e-4 * reference.abs().max())
