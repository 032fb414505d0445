"""smp architectures as a decode head over a pass-through backbone, trained through the same `EncoderDecoder`."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.loading.checkpoint import build_segmentor
from src.models import EncoderDecoder
from src.models.backbones import ImageAsFeatures
from src.models.heads import SMPHead
from tests.export_helpers import SMP_CONFIGS
from tests.helpers import compose_cfg

# SMPHead's own arguments; the rest of decode_head goes to smp.create_model unchanged.
HEAD_KEYS = {"_target_", "arch", "encoder_name", "encoder_weights", "pretrained_path", "num_classes"}
HEAD_KEYS |= {"in_channels", "in_index", "align_corners", "losses", "ignore_index"}


# tiny tensors on shared cores: intra-op threads only wait on each other (10x slower here with 2)
pytestmark = pytest.mark.usefixtures("one_thread")


def _bare_smp(head_cfg) -> torch.nn.Module:
    kwargs = {k: v for k, v in OmegaConf.to_container(head_cfg, resolve=True).items() if k not in HEAD_KEYS}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return smp.create_model(
        head_cfg.arch,
        encoder_name=head_cfg.encoder_name,
        encoder_weights=None,
        in_channels=3,
        classes=head_cfg.num_classes,
        **kwargs,
    )


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", SMP_CONFIGS)
def test_smp_config_trains_predicts_and_round_trips(name, tmp_path):
    cfg = compose_cfg("train", [f"model={name}", f"paths.data_dir={tmp_path}"], tmp_path / "run")
    GlobalHydra.instance().clear()
    assert cfg.model.name == name and cfg.model.decode_head.encoder_weights is None
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model, EncoderDecoder) and model.name == name and model.num_classes == 6
    assert isinstance(model.backbone, ImageAsFeatures) and isinstance(model.decode_head, SMPHead)
    assert not model.auxiliary_heads and model.test_cfg == {"mode": "whole"}

    # exactly the bare smp model's parameters: nothing from the base head's classifier is left over
    bare = _bare_smp(cfg.model.decode_head)
    assert _n_params(model) == _n_params(bare) == _n_params(model.decode_head.model)

    # one training step: a loss term per configured loss, a gradient for every parameter, parameters move
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randint(0, 6, (2, 64, 64))
    masks[:, :8] = 255
    model.train()
    losses = model.loss(images, masks)
    assert set(losses) == {"loss_ce"} and torch.isfinite(losses["loss_ce"])
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient (DDP would fail): {no_grad[:5]}"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())

    model.eval()
    assert model.predict(images).shape == (2, 6, 64, 64)
    small = torch.randn(1, 3, 32, 32)  # the equality checks below on a smaller input, to keep the test fast
    logits = model.predict(small)
    # the head is the smp model, nothing more: the bare model with the same weights gives the same logits
    bare.load_state_dict(model.decode_head.model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(bare.eval()(small), logits)
    # sizes smp refuses (not a multiple of the output stride) are padded and cropped back
    assert model.predict(small[..., :24, :20]).shape == (1, 6, 24, 20)

    # checkpoint-style rebuild: the same config built again takes the state dict strictly, same outputs
    rebuilt = build_segmentor(cfg.model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt.eval().predict(small), logits)


def _tiny_head(**kwargs) -> SMPHead:
    return SMPHead(arch="PSPNet", encoder_name="tu-resnet18", num_classes=3, encoder_depth=3, **kwargs)


def test_pretrained_path_loads_smp_or_timm_encoder_keys(tmp_path):
    torch.manual_seed(0)
    source = _tiny_head().model.encoder.state_dict()
    smp_keys, timm_keys = tmp_path / "smp.pth", tmp_path / "timm.pth"
    torch.save(source, smp_keys)
    # a timm classification checkpoint: no `model.` prefix, plus a classifier the encoder lacks
    timm_state = {k.removeprefix("model."): v for k, v in source.items()}
    torch.save({"state_dict": {**timm_state, "fc.weight": torch.zeros(1000, 512)}}, timm_keys)
    for path in (smp_keys, timm_keys):
        torch.manual_seed(1)
        loaded = _tiny_head(pretrained_path=str(path)).model.encoder.state_dict()
        assert loaded.keys() == source.keys()
        assert all(torch.equal(loaded[k], v) for k, v in source.items())


def test_pretrained_path_errors_name_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="decode_head.pretrained_path.*missing.pth"):
        _tiny_head(pretrained_path=str(tmp_path / "missing.pth"))
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of its 1 tensors match"):
        _tiny_head(pretrained_path=str(tmp_path / "other.pth"))


def test_options_that_change_the_output_are_refused():
    with pytest.raises(ValueError, match="aux_params"):
        _tiny_head(aux_params={"classes": 3})
    with pytest.raises(ValueError, match="activation"):
        _tiny_head(activation="softmax")
