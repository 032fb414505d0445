"""Export of a segmentor to ONNX, torch.export `.pt2` or TorchScript (`export_model`), and the parity check of an
exported file against PyTorch (docs/export_onnx.md, docs/deployment.md).

The exported network (`InferenceNet`) takes float32 RGB images `[N, 3, H, W]` with values 0..255 and returns the
logits at the input size: the data preprocessor's padding and normalisation, the whole-image network and the crop.
ONNX and `.pt2` files have dynamic batch, height and width (the export fails if the exporter fixed one; the parity
check at another size shows that every op follows them). A TorchScript trace turns sizes into Python ints, so its
file takes only the traced height and width (`fixed_shape`). Sliding windows and TTA run around the network
(`src.loading.exported`); every file carries the checkpoint's metadata (`segkit`), as a checkpoint does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.loading.build import CHECKPOINT_META_KEY  # one key for a checkpoint and an export
from src.loading.exported import EXTRA_FILE, INPUT_NAME, OUTPUT_NAME, ExportedSegmentor, info_key
from src.loading.sources import EXPORT_SUFFIXES
from src.models.bn_folding import fold_batchnorm
from src.utils.logging import get_logger

log = get_logger(__name__)

INPUT_LAYOUT = "float32 [N, 3, H, W], RGB, values 0..255 (normalisation is inside the model)"
FORMATS = EXPORT_SUFFIXES  # format -> file suffix, from the one table of formats (src.loading.sources)


def _adaptive_avg_pool_dim(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Adaptive average pooling along one dimension: bin i averages [floor(i L / s), ceil((i + 1) L / s))."""
    length = x.shape[dim]
    idx = torch.arange(size, device=x.device)
    start = torch.div(idx * length, size, rounding_mode="floor")
    end = torch.div((idx + 1) * length + size - 1, size, rounding_mode="floor")
    csum = x.double().cumsum(dim)  # float64: differences of large running sums keep float32 precision
    csum = torch.cat([torch.zeros_like(csum.narrow(dim, 0, 1)), csum], dim)
    total = csum.index_select(dim, end) - csum.index_select(dim, start)
    shape = [1] * x.dim()
    shape[dim] = size
    return (total / (end - start).to(total.dtype).view(shape)).to(x.dtype)


_adaptive_avg_pool2d = F.adaptive_avg_pool2d


def adaptive_avg_pool2d_exportable(x: torch.Tensor, output_size: Any) -> torch.Tensor:
    """`F.adaptive_avg_pool2d` with ops that export with a dynamic input size (same bins as PyTorch): the exporter
    turns PyTorch's op into index tables computed at the traced size, wrong or failing at any other size.

    Adaptive pooling is separable: a bin's mean over rows and columns is the mean over rows of the column means.
    Global pooling (output 1x1) keeps PyTorch's own op, which the exporter maps to a size-independent mean.
    """
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    oh = x.shape[-2] if oh is None else int(oh)
    ow = x.shape[-1] if ow is None else int(ow)
    if oh == 1 and ow == 1:
        return _adaptive_avg_pool2d(x, 1)
    return _adaptive_avg_pool_dim(_adaptive_avg_pool_dim(x, oh, x.dim() - 2), ow, x.dim() - 1)


@contextlib.contextmanager
def exportable_pooling() -> Iterator[None]:
    """Within the block, `F.adaptive_avg_pool2d` is `adaptive_avg_pool2d_exportable`, restored afterwards (also on
    error). A swap of the function, not of modules, because `F.interpolate(mode="area")` (smp's PSPNet) looks it
    up in `torch.nn.functional` itself. Not thread-safe: do not predict in another thread during an export."""
    saved = F.adaptive_avg_pool2d
    F.adaptive_avg_pool2d = adaptive_avg_pool2d_exportable
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = saved


# ----------------------------------------------------------------------------------------------- export
class InferenceNet(nn.Module):
    """The exported network: raw RGB pixels (float, 0..255) -> logits at the input size, whole image; equal to
    `data_preprocessor` + `encode_decode` + the crop of `postprocess` for a batch of images of one size."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = self.segmentor.data_preprocessor.normalize(images)
        return self.segmentor.encode_decode(x)[..., :h, :w]


def dynamic_sample_shape(segmentor: nn.Module, sample_shape: Sequence[int]) -> tuple[int, int]:
    """`sample_shape` raised to the backbone's `min_dynamic_trace_size` where it has one (Swin: at smaller sizes a
    stage has a single window and the exporter specialises on it); a dynamic export holds for any size, so only
    the traced one changes, and the log says so."""
    h, w = (int(s) for s in sample_shape)
    least = int(getattr(getattr(segmentor, "backbone", None), "min_dynamic_trace_size", 0))
    if least > min(h, w):
        log.info(
            "tracing at %dx%d instead of %dx%d: the backbone needs sides of %d or more",
            max(h, least),
            max(w, least),
            h,
            w,
            least,
        )
    return max(h, least), max(w, least)


def check_format(fmt: str, opset: int | None = None) -> None:
    """A known format, and an ONNX opset only with format=onnx: `export_model`'s arguments, which
    scripts/export.py checks before it reads the checkpoint."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: expected one of {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise ValueError(
            f"opset={opset}: an ONNX opset, for format=onnx only (format={fmt}); leave opset out"
        )


def export_model(
    segmentor: nn.Module,
    path: str | Path,
    fmt: str = "onnx",
    meta: dict[str, Any] | None = None,
    sample_shape: Sequence[int] = (64, 64),
    opset: int | None = None,
    fold_bn: bool = True,
) -> dict[str, Any]:
    """Export `InferenceNet(segmentor)` in `fmt` (`FORMATS`) to `path`, traced on random images of `sample_shape`
    `[H, W]`; returns the metadata stored in the file: `meta` (the checkpoint's config, classes, palette) and
    `export_info` (under `info_key(fmt)`). `fold_bn`: the network's BatchNorms folded into their convolutions
    (`src.models.bn_folding`; `segmentor` itself is left as it is), as `src.eval` predicts: PyTorch runs a `.pt2`
    or TorchScript file as written (ONNX Runtime would fold them itself)."""
    check_format(fmt, opset)
    path = Path(path)
    folded = 0
    if fold_bn:
        segmentor, folded = fold_batchnorm(segmentor.eval())
    net = InferenceNet(segmentor.eval()).eval()
    fixed = fmt == "torchscript"
    h, w = (int(s) for s in sample_shape) if fixed else dynamic_sample_shape(segmentor, sample_shape)
    sample = torch.rand(1 if fixed else 2, 3, h, w, device=next(segmentor.parameters()).device) * 255
    dyn = torch.export.Dim.DYNAMIC
    shapes = {"images": {0: dyn, 2: dyn, 3: dyn}}
    with exportable_pooling(), torch.no_grad(), warnings.catch_warnings():
        # TorchScript's "converting a tensor to a Python integer": the sizes frozen at the traced ones (fixed_shape)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fixed:
            program = torch.jit.trace(net, (sample,), check_trace=False)
        elif fmt == "torch_export":
            program = torch.export.export(net, (sample,), dynamic_shapes=shapes)
        else:
            # their INFO lines (every optimisation pass) drown the output
            for name in ("onnxscript", "onnx_ir"):
                logging.getLogger(name).setLevel(logging.WARNING)
            program = torch.onnx.export(
                net,
                (sample,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    info = export_info(segmentor, fmt, (h, w)) | {"batchnorm_folded": folded}
    if fmt == "onnx":
        _check_dynamic(program.model_proto, path)
        opsets = program.model_proto.opset_import
        info["opset"] = int(next(o.version for o in opsets if o.domain in ("", "ai.onnx")))
    payload = dict(meta or {}) | {info_key(fmt): info}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        program.model.metadata_props[CHECKPOINT_META_KEY] = json.dumps(payload)
        n_bytes = sum(p.numel() * p.element_size() for p in segmentor.parameters())
        program.save(path, external_data=n_bytes > 1_800_000_000)  # protobuf's 2 GB limit
    elif fmt == "torch_export":
        torch.export.save(program, path, extra_files={EXTRA_FILE: json.dumps(payload)})
    else:
        torch.jit.save(program, str(path), _extra_files={EXTRA_FILE: json.dumps(payload)})
    return payload


export_onnx = functools.partial(export_model, fmt="onnx")
export_torch_program = functools.partial(export_model, fmt="torch_export")
export_torchscript = functools.partial(export_model, fmt="torchscript")


def export_info(segmentor: nn.Module, fmt: str, sample_shape: Sequence[int]) -> dict[str, Any]:
    """What a runner of the exported network needs besides the network: its convention, the test mode, the
    preprocessor's padding; `fixed_shape` is the only `[H, W]` the file takes (TorchScript) or None."""
    pre = segmentor.data_preprocessor
    h, w = (int(s) for s in sample_shape)
    return {
        "format": fmt,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "input_layout": INPUT_LAYOUT,
        "num_classes": int(segmentor.num_classes),
        "align_corners": bool(segmentor.align_corners),
        "size_divisor": int(pre.size_divisor or 0),
        "pad_val": float(pre.pad_val),
        "test_cfg": _plain(segmentor.test_cfg),
        "tta": None
        if segmentor.tta_cfg is None
        else {"scales": list(segmentor.tta_cfg.scales), "flip": segmentor.tta_cfg.flip},
        "sample_shape": [h, w],
        "fixed_shape": [h, w] if fmt == "torchscript" else None,
        "torch": torch.__version__,
    }


def _plain(value: Any) -> Any:
    """Config containers (a model built by Hydra holds OmegaConf ones) -> JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _check_dynamic(model_proto: Any, path: Path) -> None:
    """The input's batch, height and width are symbolic, and the output's are the same symbols (logits at the
    input size): otherwise some code of the model turned a size into a constant at the traced value (e.g. an
    output height of `Min(32, s14)`) and the file would only work at that size."""
    dims_in = model_proto.graph.input[0].type.tensor_type.shape.dim
    dims_out = model_proto.graph.output[0].type.tensor_type.shape.dim
    axes = ((0, "batch"), (2, "height"), (3, "width"))
    fixed = [name for i, name in axes if not dims_in[i].dim_param]
    if fixed:
        raise RuntimeError(
            f"ONNX export to '{path}': the exporter fixed the input's {', '.join(fixed)} to the sample's size "
            "(some code of the model turns the size into a constant); the file would only take that size"
        )
    differ = [
        f"{name} {dims_out[i].dim_param or dims_out[i].dim_value} (input: {dims_in[i].dim_param})"
        for i, name in axes
        if dims_out[i].dim_param != dims_in[i].dim_param
    ]
    if differ:
        raise RuntimeError(
            f"ONNX export to '{path}': the output's {', '.join(differ)} does not follow the input's size: some "
            "code of the model turned a size into a constant at the traced value (e.g. int() of a tensor size)"
        )


# ------------------------------------------------------------------------------------------------ parity
@torch.no_grad()
def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Max absolute logit difference, the largest |logit| of the reference, and the share of pixels whose
    argmax (predicted class) is the same. Both `[..., C, H, W]`."""
    reference, other = reference.float().cpu(), other.float().cpu()
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    return {
        "max_abs_diff": float((reference - other).abs().max()),
        "max_abs_logit": float(reference.abs().max()),
        "equal_pixels": float((reference.argmax(-3) == other.argmax(-3)).float().mean()),
    }


@torch.no_grad()
def parity_check(
    segmentor: nn.Module,
    onnx_segmentor: ExportedSegmentor,
    image: torch.Tensor,
    size_multiple: int = 32,
    avoid_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """PyTorch vs the exported model (any `ExportedSegmentor`) on one uint8 image `[3, h, w]` (after the test
    pipeline). `network`: the exported network alone, on the image padded (with the pad value) to a multiple of
    `size_multiple` so that every family takes it, rescaled by 1.25 first when that is `avoid_shape` (the traced
    size); a fixed-size file (TorchScript) at its size, the image resized to it. `prediction`: the whole path
    (`predict_images`) of both; `{"skipped": why}` when a fixed-size file cannot take the image's size."""
    device = next(segmentor.parameters()).device
    x = image.to(device)
    fixed = getattr(onnx_segmentor, "fixed_shape", None)
    if fixed is not None:
        x = F.interpolate(x[None].float(), size=tuple(fixed), mode="bilinear")[0].round().clamp(0, 255)
    elif avoid_shape is not None and _padded(x.shape[-2:], size_multiple) == tuple(
        int(s) for s in avoid_shape
    ):
        x = F.interpolate(x[None].float(), scale_factor=1.25, mode="bilinear")[0].round().clamp(0, 255)
    h, w = tuple(fixed) if fixed is not None else _padded(x.shape[-2:], size_multiple)
    pad_val = float(segmentor.data_preprocessor.pad_val)
    batch = F.pad(x[None].float(), (0, w - x.shape[-1], 0, h - x.shape[-2]), value=pad_val)
    ref = InferenceNet(segmentor).eval()(batch)
    net = compare_logits(ref, onnx_segmentor.encode_decode(batch))
    net["shape"] = [h, w]
    ref_pred = segmentor.predict_images([image.to(device)])[0]
    try:
        onnx_pred = onnx_segmentor.predict_images([image.to(device)])[0]
    except ValueError as err:  # a fixed-size file and an image (or window) of another size
        if fixed is None:
            raise
        return {"network": net, "prediction": {"skipped": str(err)}}
    pred = compare_logits(ref_pred, onnx_pred)
    pred["shape"] = list(image.shape[-2:])
    pred["mode"] = segmentor.test_cfg.get("mode", "whole")
    return {"network": net, "prediction": pred}


def _padded(shape: Sequence[int], multiple: int) -> tuple[int, int]:
    return tuple(-(-int(s) // multiple) * multiple for s in shape)  # type: ignore[return-value]
