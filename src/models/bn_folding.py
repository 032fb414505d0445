"""BatchNorm folded into the convolution before it, for inference (`fold_bn` in `src.eval`, `src.infer`,
`Segmenter`; on by default): one pass over the feature map less per pair, the same logits up to float rounding.

Torch fuses a given pair (`fuse_conv_bn_eval`), but timm's and our blocks call their modules from Python (no FX
graph), so hooks on one forward pass of a small random image find the pairs: a BatchNorm whose input is the very
output of a convolution, each called once. The folded copy is checked against the model on that image; the model
itself (what is saved and exported) is left as it is.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from src.models.resized_concat_conv import ResizedConcatConv2d
from src.utils.logging import get_logger

log = get_logger(__name__)


def _after_norm(bn: nn.Module) -> nn.Module:
    """What stays of timm's BatchNorm + activation layer (`ConvNormAct`'s norm) once its BatchNorm is folded."""
    return nn.Sequential(bn.drop, bn.act)


# exact types, each with what replaces it: a subclass may do more in its forward than its base class
BATCHNORMS = {
    nn.BatchNorm2d: lambda bn: nn.Identity(),
    nn.SyncBatchNorm: lambda bn: nn.Identity(),
    BatchNormAct2d: _after_norm,
    SyncBatchNormAct: _after_norm,
}
# exact types too: a subclass's forward may not be the convolution that fuse_conv_bn_eval folds into
CONVOLUTIONS = (nn.Conv2d, ResizedConcatConv2d)  # the latter: a convolution of several maps, folded alike
TRACE_SIZE = (64, 64)
TOLERANCE = 1e-3  # of the largest logit: float rounding is ~1e-6 of it, a wrong fold changes logits by ~1


def conv_bn_pairs(segmentor: nn.Module, image: torch.Tensor) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(convolution name, BatchNorm name) pairs that can be folded, found by running `encode_decode(image)`, and
    the logits of that run."""
    names: dict[nn.Module, list[str]] = {}
    for name, module in segmentor.named_modules(remove_duplicate=False):
        names.setdefault(module, []).append(name)
    calls: Counter[nn.Module] = Counter()
    # a conv output's id -> the conv and the output (kept, so that its id stays unique)
    produced_by: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    found: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls[conv] += 1
        produced_by[id(out)] = (conv, out)

    def before_bn(bn: nn.Module, args: tuple) -> None:
        calls[bn] += 1
        source = produced_by.get(id(args[0]))
        if source is not None and source[1] is args[0]:
            found.append((source[0], bn))

    handles = [m.register_forward_hook(after_conv) for m in names if type(m) in CONVOLUTIONS]
    handles += [
        m.register_forward_pre_hook(before_bn)
        for m in names
        if type(m) in BATCHNORMS and m.running_mean is not None and m.running_var is not None
    ]
    try:
        with torch.no_grad():
            logits = segmentor.encode_decode(image)
    finally:
        for handle in handles:
            handle.remove()
    convs = Counter(conv for conv, _ in found)
    # shared modules, modules called twice, or a conv feeding two BNs: left as they are
    pairs = [
        (names[conv][0], names[bn][0])
        for conv, bn in found
        if calls[conv] == calls[bn] == convs[conv] == 1
        and len(names[conv]) == len(names[bn]) == 1
        and conv.out_channels == bn.num_features
    ]
    return pairs, logits


def fold_batchnorm(segmentor: nn.Module) -> tuple[nn.Module, int]:
    """A copy of the eval-mode `segmentor` with its conv -> BatchNorm pairs folded, and how many; the segmentor
    itself where there is nothing to fold (an exported model's runner, LayerNorm models) or the check fails."""
    if (
        not isinstance(segmentor, nn.Module)
        or segmentor.training
        or not any(type(m) in BATCHNORMS for m in segmentor.modules())
    ):
        return segmentor, 0
    param = next(segmentor.parameters())
    image = torch.randn(1, 3, *TRACE_SIZE, generator=torch.Generator().manual_seed(0)).to(
        param.device, param.dtype
    )
    try:
        pairs, reference = conv_bn_pairs(segmentor, image)
    except Exception as err:  # noqa: BLE001 - a model that does not run at the trace size is served unfolded
        log.warning(f"fold_bn: not folded, the {TRACE_SIZE} trace failed ({type(err).__name__}: {err})")
        return segmentor, 0
    if not pairs:
        return segmentor, 0
    folded = copy.deepcopy(segmentor)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        folded.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        folded.set_submodule(bn_name, BATCHNORMS[type(bn)](bn))
    with torch.no_grad():
        error = (folded.encode_decode(image) - reference).abs().max().item()
    scale = reference.abs().max().item()
    if not error <= TOLERANCE * max(scale, 1e-6):
        log.warning(
            f"fold_bn: not folded, the folded model's logits differ by {error:.3g} (largest {scale:.3g})"
        )
        return segmentor, 0
    return folded, len(pairs)
