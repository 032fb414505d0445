"""Segmentors: the full model as MMSegmentation's `EncoderDecoder`.

data preprocessor -> backbone -> [neck] -> decode head (+ auxiliary heads, only for the loss). The segmentor is a
plain `nn.Module`: `loss()` for training, `predict()` for inference (whole image or sliding window), `forward()`
for export (normalised images -> logits at input size), and `predict_images()`, the one prediction path of
validation, `src.eval` and the inference API (optionally with test-time augmentation, see `src.models.tta`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from src.models.data_preprocessor import SegDataPreProcessor
from src.models.tta import TTAConfig, tta_probabilities
from src.models.utils import resize

TEST_MODES = ("whole", "slide")
# Pixels of the windows that slide inference runs in one forward, by device: on a CPU, 16 windows of 64x64 (1.6x
# faster than one by one on UNet-S5-D16/DRIVE; larger batches fall out of the caches); on a GPU, 4 of 512x512.
SLIDE_BATCH_PIXELS = {"cpu": 1 << 16, "cuda": 1 << 20}

# A head or neck is given built, or as a partial (Hydra `_partial_: true`) that the segmentor completes with the
# channels of the features it reads: a config then names only which levels it uses, never their widths.
PartOrFactory = nn.Module | Callable[..., nn.Module]


def feature_channels(module: nn.Module, role: str) -> list[int]:
    """The channels of each feature level `module` (a backbone or neck) returns, from its `out_channels`."""
    channels = getattr(module, "out_channels", None)
    if channels is None:
        raise ValueError(
            f"model.{role}: {type(module).__name__} does not say the channels of its outputs (`out_channels`), "
            f"so the next part cannot take its in_channels from it; give in_channels explicitly"
        )
    return [int(c) for c in ([channels] if isinstance(channels, int) else channels)]


def build_part(part: PartOrFactory | None, channels: Sequence[int], key: str) -> nn.Module | None:
    """A built module as it is; a partial completed with the channel arguments it does not set itself.

    Heads say which channel arguments they need through `channels_from_features` (BaseDecodeHead: the
    `in_channels` of the selected `in_index`); anything else (a neck) gets the whole list as `in_channels`.
    """
    if part is None or isinstance(part, nn.Module):
        return part
    if not callable(part):
        raise TypeError(f"model.{key}: expected a module or a partial (`_partial_: true`), got {type(part)}")
    given = dict(part.keywords) if isinstance(part, functools.partial) else {}
    cls = part.func if isinstance(part, functools.partial) else part
    fill = getattr(cls, "channels_from_features", None)
    try:
        needed = fill(channels, **given) if fill else {"in_channels": list(channels)}
    except IndexError as err:
        raise ValueError(
            f"model.{key}: in_index {given.get('in_index', -1)} is out of range for the {len(channels)} feature "
            f"levels (channels {list(channels)}) of the part before it"
        ) from err
    return part(**{k: v for k, v in needed.items() if k not in given})


class EncoderDecoder(nn.Module):
    """Args:
    backbone: returns a list of feature maps and says their channels in `out_channels`.
    decode_head: a `BaseDecodeHead`, or a partial of one (Hydra `_partial_: true`) that the segmentor completes
        with the channels of the backbone's (or neck's) levels it selects.
    data_preprocessor: normalisation and padding (default: ImageNet mean/std).
    neck: optional, features -> features (built, or a partial completed with the backbone's `in_channels`).
    auxiliary_head: optional head or list of heads (or partials), trained alongside (their loss weight is in
        their losses).
    test_cfg: `{"mode": "whole"}` or `{"mode": "slide", "crop_size": [h, w], "stride": [h, w]}`, plus an optional
        `"tta": {"scales": [0.5, ..., 1.75], "flip": true}` used only when a caller asks for TTA (`src.eval` and
        `src.infer` with `tta=true`, `Segmenter.from_checkpoint(..., tta=True)`); it is kept apart, in `tta_cfg`.
    name: the model's config name (`fcn_r50-d8`), used in run names.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: PartOrFactory,
        data_preprocessor: SegDataPreProcessor | None = None,
        neck: PartOrFactory | None = None,
        auxiliary_head: PartOrFactory | Sequence[PartOrFactory] | None = None,
        test_cfg: Mapping | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.data_preprocessor = data_preprocessor or SegDataPreProcessor()
        self.backbone = backbone
        lazy = any(
            p is not None and not isinstance(p, nn.Module)
            for p in [neck, decode_head, *_as_list(auxiliary_head)]
        )
        channels = feature_channels(backbone, "backbone") if lazy else []
        self.neck = build_part(neck, channels, "neck")
        if self.neck is not None and lazy:
            channels = feature_channels(self.neck, "neck")
        self.decode_head = build_part(decode_head, channels, "decode_head")
        self.auxiliary_heads = nn.ModuleList(
            build_part(head, channels, "auxiliary_head") for head in _as_list(auxiliary_head)
        )
        self.test_cfg = dict(test_cfg or {"mode": "whole"})
        if self.test_cfg.get("mode", "whole") not in TEST_MODES:
            raise ValueError(
                f"model.test_cfg.mode='{self.test_cfg.get('mode')}': expected one of {TEST_MODES}"
            )
        tta = self.test_cfg.pop("tta", None)
        # checked now (config load), used when asked for; None: MMSegmentation's ratios with flip
        self.tta_cfg = TTAConfig.from_cfg(tta) if tta is not None else None
        self.name = name
        self.align_corners = getattr(self.decode_head, "align_corners", False)

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def extract_feat(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
        return feats

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images `[N, 3, H, W]` -> logits `[N, C, H, W]`."""
        logits = self.decode_head(self.extract_feat(images))
        return self.decode_head.predict_by_feat(logits, images.shape[-2:])

    forward = encode_decode

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """All loss terms: decode head terms as `loss_ce`, auxiliary ones as `aux_loss_ce` (`aux1_...` for more)."""
        feats = self.extract_feat(images)
        losses = dict(self.decode_head.loss_by_feat(self.decode_head(feats), masks))
        for i, head in enumerate(self.auxiliary_heads):
            prefix = "aux_" if len(self.auxiliary_heads) == 1 else f"aux{i}_"
            for name, value in head.loss_by_feat(head(feats), masks).items():
                losses[prefix + name] = value
        return losses

    @torch.no_grad()
    def predict(self, images: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Logits at the (padded) input size, in the configured test mode."""
        mode = mode or self.test_cfg.get("mode", "whole")
        if mode == "whole":
            return self.encode_decode(images)
        if mode == "slide":
            return self.slide_inference(images)
        raise ValueError(f"test mode '{mode}': expected one of {TEST_MODES}")

    def slide_inference(self, images: torch.Tensor) -> torch.Tensor:
        """Overlapping crops, logits averaged over a count map, as MMSegmentation's `slide_inference`. The windows
        go through the network in batches of up to SLIDE_BATCH_PIXELS pixels (MMSegmentation runs them one by one:
        small windows leave the cores idle), which changes no window's logits."""
        if "crop_size" not in self.test_cfg or "stride" not in self.test_cfg:
            raise ValueError(
                "model.test_cfg: mode 'slide' needs crop_size and stride, e.g. [512, 512] and [341, 341]"
            )
        h_crop, w_crop = self.test_cfg["crop_size"]
        h_stride, w_stride = self.test_cfg["stride"]
        n, _, h_img, w_img = images.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        boxes = []
        for hi in range(h_grids):
            for wi in range(w_grids):
                y2, x2 = min(hi * h_stride + h_crop, h_img), min(wi * w_stride + w_crop, w_img)
                boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
        logits = images.new_zeros((n, self.num_classes, h_img, w_img))
        count = images.new_zeros((1, 1, h_img, w_img))
        budget = SLIDE_BATCH_PIXELS.get(images.device.type, SLIDE_BATCH_PIXELS["cuda"])
        per_batch = max(1, budget // (n * min(h_crop, h_img) * min(w_crop, w_img)))
        for start in range(0, len(boxes), per_batch):
            chunk = boxes[start : start + per_batch]
            crops = torch.cat([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            for (y1, y2, x1, x2), out in zip(chunk, self.encode_decode(crops).split(n), strict=True):
                logits[:, :, y1:y2, x1:x2] += out
                count[:, :, y1:y2, x1:x2] += 1
        return logits / count

    @torch.no_grad()
    def predict_images(
        self,
        images: Sequence[torch.Tensor],
        img_shapes: Sequence[Sequence[int]] | None = None,
        ori_shapes: Sequence[Sequence[int]] | None = None,
        tta: bool | Mapping | TTAConfig | None = None,
    ) -> list[torch.Tensor]:
        """uint8 images `[3, h, w]` (after the test pipeline) -> `[C, H, W]` logits at each original size.

        The one prediction path shared by validation, `src.eval` and the inference API: preprocess (normalise,
        pad), predict in the configured mode, crop the padding, resize to the original size.

        `tta`: falsy (validation, the default) predicts once; True uses `test_cfg.tta`; a mapping or `TTAConfig`
        gives the scales and flip. With TTA the result is the log of the averaged softmax probabilities:
        `softmax` of it gives them back and `argmax` is the merged prediction, so callers need not know.
        """
        img_shapes = img_shapes or [tuple(im.shape[-2:]) for im in images]
        if tta:
            views = [im[..., : int(s[0]), : int(s[1])] for im, s in zip(images, img_shapes)]
            probs = tta_probabilities(self, views, ori_shapes or img_shapes, self.resolve_tta(tta))
            return [p.clamp_min(torch.finfo(p.dtype).tiny).log() for p in probs]
        batch, _ = self.data_preprocessor(images)
        return self.postprocess(self.predict(batch), img_shapes, ori_shapes)

    def resolve_tta(self, tta: bool | Mapping | TTAConfig) -> TTAConfig:
        """`True`: the model's `test_cfg.tta` (MMSegmentation's ratios with flip if it has none)."""
        if isinstance(tta, TTAConfig):
            return tta
        if isinstance(tta, bool):
            return self.tta_cfg or TTAConfig()
        return TTAConfig.from_cfg(tta, key="tta")

    def postprocess(
        self,
        logits: torch.Tensor,
        img_shapes: Sequence[Sequence[int]],
        ori_shapes: Sequence[Sequence[int]] | None = None,
    ) -> list[torch.Tensor]:
        """Per image: crop the padding off, resize to the original image size. Returns `[C, H, W]` logits."""
        out = []
        for i, shape in enumerate(img_shapes):
            h, w = int(shape[0]), int(shape[1])
            one = logits[i : i + 1, :, :h, :w]
            if ori_shapes is not None:
                one = resize(one, ori_shapes[i], align_corners=self.align_corners)
            out.append(one[0])
        return out


def _as_list(heads: PartOrFactory | Sequence[PartOrFactory] | None) -> list[PartOrFactory]:
    if heads is None:
        return []
    if callable(heads):  # a module or a partial (a module is callable)
        return [heads]
    return list(heads)


def no_head(**ignored: object) -> None:
    """What `model/auxiliary_head=none` builds: no head. A named model's own auxiliary-head keys (the channels of
    its FCN head, merged after the group option) are ignored rather than left as a head without a target."""
    return None
