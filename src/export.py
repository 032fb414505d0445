"""ONNX export of a segmentor, and ONNX Runtime inference through the same prediction code as PyTorch.

What is exported (`InferenceNet`): float32 RGB images `[N, 3, H, W]` with values 0..255 (no normalisation done by
the caller) -> logits `[N, num_classes, H, W]`. The graph holds the data preprocessor's work for one padded batch
(padding to `size_divisor` with `pad_val`, BGR flip when configured, mean/std normalisation), the whole-image
network (`EncoderDecoder.encode_decode`) and the crop back to the input size. Batch, height and width are
dynamic (`torch.onnx.export(dynamo=True)` with `Dim.DYNAMIC` shapes); the export fails if the exporter fixed any
of them to the sample's size. A symbolic size in the file does not prove that every op follows it, though: that
is what the parity check at another size (`parity_check`, `scripts/export_onnx.py`, `tests/test_onnx.py`) shows.

Sliding-window inference and test-time augmentation are not in the graph (their number of windows depends on the
image size): `OnnxSegmentor` runs them around the ONNX network with `EncoderDecoder`'s own methods (`predict`,
`slide_inference`, `predict_images`, `postprocess`; TTA through `tta_probabilities`), so `src.eval`,
`src.infer` and `Segmenter` evaluate an `.onnx` file exactly as they evaluate a checkpoint.

Adaptive average pooling to sizes other than 1 (PSP heads, smp's PSPNet and UPerNet) is traced by the exporter
into index tables computed at the sample's size, which give wrong results or index errors at any other size;
during export it is replaced by an equivalent formulation (`adaptive_avg_pool2d_exportable`, cumulative sums
gathered at bin edges computed from the symbolic size), see `exportable_pooling`.

The `.onnx` file is self-describing like a checkpoint: its metadata (`segkit`) holds the training config, classes,
palette, test_cfg and the input convention.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.models.data_preprocessor import SegDataPreProcessor
from src.models.segmentor import EncoderDecoder
from src.models.tta import TTAConfig

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
META_KEY = "segkit"
INPUT_LAYOUT = "float32 [N, 3, H, W], RGB, values 0..255 (normalisation is inside the model)"


# --------------------------------------------------------------------------------------------- pooling
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
    """`F.adaptive_avg_pool2d`, written with ops that export with a dynamic input size (same bins as PyTorch).

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
    """Within the block, `F.adaptive_avg_pool2d` (used by `nn.AdaptiveAvgPool2d` and `F.interpolate(mode="area")`)
    is `adaptive_avg_pool2d_exportable`; restored afterwards."""
    F.adaptive_avg_pool2d = adaptive_avg_pool2d_exportable
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = _adaptive_avg_pool2d


# ----------------------------------------------------------------------------------------------- export
class InferenceNet(nn.Module):
    """The exported network: raw RGB pixels (float, 0..255) -> logits at the input size, whole image.

    Equal to `segmentor.data_preprocessor` + `segmentor.encode_decode` + the crop of `postprocess` for a batch
    of images of one size.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pre = self.segmentor.data_preprocessor
        h, w = images.shape[-2:]
        x = images
        d = int(pre.size_divisor or 1)
        if d > 1:  # always padded (by 0 when divisible): a branch on the size would fix it in the graph
            x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d), value=float(pre.pad_val))
        if pre.bgr_to_rgb:
            x = x.flip(1)
        x = (x - pre.mean) / pre.std
        return self.segmentor.encode_decode(x)[..., :h, :w]


def export_onnx(
    segmentor: nn.Module,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    sample_shape: Sequence[int] = (64, 64),
    opset: int | None = None,
) -> dict[str, Any]:
    """Export `InferenceNet(segmentor)` to `path` with dynamic batch, height and width; returns the metadata.

    `meta`: the checkpoint's metadata (config, classes, palette), stored in the file. `sample_shape`: the
    `[H, W]` of the example input the exporter traces (any size the model accepts).
    """
    path = Path(path)
    segmentor = segmentor.eval()
    net = InferenceNet(segmentor).eval()
    h, w = (int(s) for s in sample_shape)
    sample = torch.rand(2, 3, h, w, device=next(segmentor.parameters()).device) * 255
    dyn = torch.export.Dim.DYNAMIC
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines (every optimisation pass) drown the output
        logging.getLogger(name).setLevel(logging.WARNING)
    with exportable_pooling(), torch.no_grad():
        program = torch.onnx.export(
            net,
            (sample,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: dyn, 2: dyn, 3: dyn}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    _check_dynamic(program.model_proto, path)
    pre = segmentor.data_preprocessor
    info = {
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
        "opset": int(
            next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
        ),
        "torch": torch.__version__,
    }
    payload = dict(meta or {})
    payload["onnx"] = info
    program.model.metadata_props[META_KEY] = json.dumps(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = sum(p.numel() * p.element_size() for p in segmentor.parameters())
    program.save(path, external_data=n_bytes > 1_800_000_000)  # protobuf's 2 GB limit
    return payload


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


# ------------------------------------------------------------------------------------ onnxruntime backend
def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: no such ONNX file '{path}'")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ValueError(
            f"'{path}' has no '{META_KEY}' metadata: it was not written by scripts/export_onnx.py, so its "
            "input convention, classes and test mode are unknown"
        )
    return json.loads(props[META_KEY])


class OnnxSegmentor:
    """An exported model run by ONNX Runtime, with the prediction interface of `EncoderDecoder`.

    `data_preprocessor` only pads (its mean is 0 and std 1: the graph normalises), `encode_decode` runs the
    session, and `predict` / `slide_inference` / `predict_images` / `postprocess` are `EncoderDecoder`'s own
    functions, so whole and slide modes, the crop and resize to the original size and TTA are the same code.
    """

    predict = EncoderDecoder.predict
    slide_inference = EncoderDecoder.slide_inference
    predict_images = EncoderDecoder.predict_images
    resolve_tta = EncoderDecoder.resolve_tta
    postprocess = EncoderDecoder.postprocess

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", providers: Sequence[str] | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_onnx_meta(self.path)
        info = self.meta["onnx"]
        self.device = torch.device(device)
        if providers is None:
            available = ort.get_available_providers()
            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda" and "CUDAExecutionProvider" in available:
                providers = ["CUDAExecutionProvider", *providers]
        self.session = ort.InferenceSession(str(self.path), providers=list(providers))
        self.num_classes = int(info["num_classes"])
        self.align_corners = bool(info["align_corners"])
        self.test_cfg = dict(info["test_cfg"])
        self.tta_cfg = TTAConfig.from_cfg(info["tta"]) if info.get("tta") else None
        self.data_preprocessor = SegDataPreProcessor(
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            size_divisor=info["size_divisor"] or None,
            pad_val=info["pad_val"],
        ).to(self.device)

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw-pixel images `[N, 3, H, W]` (padded) -> logits `[N, C, H, W]`, by ONNX Runtime."""
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits).to(self.device)

    __call__ = encode_decode

    def to(self, device: str | torch.device) -> OnnxSegmentor:
        """Where the outputs go (the session keeps its providers)."""
        self.device = torch.device(device)
        self.data_preprocessor.to(self.device)
        return self

    def eval(self) -> OnnxSegmentor:
        return self


def load_onnx_segmentor(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OnnxSegmentor, dict[str, Any]]:
    """The `load_segmentor` of an `.onnx` file: the runner and the metadata (config, classes, palette, onnx)."""
    seg = OnnxSegmentor(path, device)
    for key in ("config", "classes", "palette"):
        if key not in seg.meta:
            raise ValueError(
                f"'{path}' holds no '{key}' in its metadata: export it from a checkpoint "
                "(scripts/export_onnx.py ckpt_path=...) to evaluate or predict with it"
            )
    return seg, seg.meta


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
    onnx_segmentor: OnnxSegmentor,
    image: torch.Tensor,
    size_multiple: int = 32,
    avoid_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """PyTorch vs ONNX Runtime on one uint8 image `[3, h, w]` (after the test pipeline).

    `network`: the exported network on the image padded (bottom and right, with the preprocessor's pad value)
    to a multiple of `size_multiple` (so that every family takes it), rescaled by 1.25 first when that size is
    `avoid_shape` (the export's sample size: the check is at a size the exporter never saw).
    `prediction`: the whole prediction path (`predict_images` in the model's test mode, logits at the image's
    size) of both backends.
    """
    device = next(segmentor.parameters()).device
    x = image.to(device)
    if avoid_shape is not None and _padded(x.shape[-2:], size_multiple) == tuple(int(s) for s in avoid_shape):
        x = F.interpolate(x[None].float(), scale_factor=1.25, mode="bilinear")[0].round().clamp(0, 255)
    h, w = _padded(x.shape[-2:], size_multiple)
    pad_val = float(segmentor.data_preprocessor.pad_val)
    batch = F.pad(x[None].float(), (0, w - x.shape[-1], 0, h - x.shape[-2]), value=pad_val)
    ref = InferenceNet(segmentor).eval()(batch)
    net = compare_logits(ref, onnx_segmentor.encode_decode(batch))
    net["shape"] = [h, w]
    ref_pred = segmentor.predict_images([image.to(device)])[0]
    onnx_pred = onnx_segmentor.predict_images([image.to(device)])[0]
    pred = compare_logits(ref_pred, onnx_pred)
    pred["shape"] = list(image.shape[-2:])
    pred["mode"] = segmentor.test_cfg.get("mode", "whole")
    return {"network": net, "prediction": pred}


def _padded(shape: Sequence[int], multiple: int) -> tuple[int, int]:
    return tuple(-(-int(s) // multiple) * multiple for s in shape)  # type: ignore[return-value]
