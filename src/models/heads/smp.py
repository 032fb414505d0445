"""segmentation_models_pytorch architectures as one decode head, so that they train through the same segmentor.

An smp model owns its encoder, so the whole model is the decode head and the backbone is `ImageAsFeatures`, which
hands the normalised image on as the one "feature map"; losses, inference modes and checkpoints are as for any
head. Parameter names are `decode_head.model.<smp names>`:

    EncoderDecoder(backbone=ImageAsFeatures(), decode_head=SMPHead(arch="Unet", encoder_name="tu-resnet18"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from src.models.backbones import load_pretrained_weights
from src.models.heads.base import BaseDecodeHead
from src.weights.offline import smp_pretrained


class SMPHead(BaseDecodeHead):
    """A whole smp model as a decode head: `inputs[0]` (the normalised image) -> logits at the input size.

    Args:
        arch: an smp architecture name as `smp.create_model` takes it ("Unet", "FPN", "DeepLabV3Plus", ...).
        encoder_name: an smp encoder; `tu-<timm name>` for any timm model (`tu-resnet18`, `tu-convnext_tiny`).
        num_classes: logit channels (`classes` in smp).
        encoder_weights: smp's pretrained weights name ("imagenet" downloads them); keep None offline and use
            `pretrained_path` for local weights.
        pretrained_path: a local state dict (`weights_only=True`) for the encoder, either with the smp encoder's
            keys (`model.conv1.weight` for `tu-` encoders) or a timm classification checkpoint
            (`conv1.weight`, the classifier is ignored). Optionally wrapped in `{"state_dict": ...}`.
        **smp_kwargs: passed on to the smp architecture (`encoder_depth`, `decoder_channels`, ...).

    The smp model has its own segmentation head, so the base's dropout and `conv_seg` are `nn.Identity` here:
    no parameter goes unused (DDP would fail on one) and the parameter count is exactly the bare smp model's.

    Inputs whose size is not a multiple of the encoder's output stride (smp refuses them) are zero-padded at the
    bottom and right (zero = the mean colour after normalisation) and the logits cropped back, so whole-image
    inference works at any size.
    """

    def __init__(
        self,
        arch: str,
        encoder_name: str,
        num_classes: int,
        encoder_weights: str | None = None,
        pretrained_path: str | None = None,
        in_channels: int = 3,
        in_index: int = 0,
        align_corners: bool = False,
        losses: Sequence[nn.Module] | None = None,
        ignore_index: int | None = None,
        **smp_kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            channels=num_classes,
            num_classes=num_classes,
            in_index=in_index,
            dropout_ratio=0.0,
            align_corners=align_corners,
            losses=losses,
            ignore_index=ignore_index,
        )
        self.conv_seg = nn.Identity()
        for key in ("aux_params", "activation", "classes", "in_channels"):
            if smp_kwargs.get(key) is not None:
                raise ValueError(
                    f"model.decode_head.{key}={smp_kwargs[key]!r}: not supported by SMPHead (the head returns raw "
                    "logits; use num_classes, in_channels and the segmentor's auxiliary_head instead)"
                )
            smp_kwargs.pop(key, None)
        self.arch = arch
        self.encoder_name = encoder_name
        with smp_pretrained(encoder_name, encoder_weights):  # local cache first, fail fast offline
            self.model = smp.create_model(
                arch,
                encoder_name=encoder_name,
                encoder_weights=encoder_weights,
                in_channels=in_channels,
                classes=num_classes,
                **{k: _plain(v) for k, v in smp_kwargs.items()},
            )
        if pretrained_path:
            # smp encoders wrap the timm model as `.model`: accept its own keys or a bare timm checkpoint's
            load_pretrained_weights(
                self.model.encoder, pretrained_path, "model.decode_head.pretrained_path", ("", "model.")
            )

    @property
    def size_divisor(self) -> int:
        """The multiple of which smp needs the input size (1 where the architecture takes any size)."""
        if not getattr(self.model, "requires_divisible_input_shape", True):
            return 1
        return int(getattr(self.model.encoder, "output_stride", 1))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        h, w = x.shape[-2:]
        d = self.size_divisor
        if d > 1:  # padded by 0 when divisible: a branch on the size would fix it in an ONNX export's graph
            x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d))
        return self.model(x)[..., :h, :w]


def _plain(value: Any) -> Any:
    """OmegaConf containers (Hydra passes them through) -> tuples and dicts, which smp expects."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_plain(v) for v in value)
    return value
