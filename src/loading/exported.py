"""Exported models run behind `EncoderDecoder`'s prediction interface: a `.onnx` file by ONNX Runtime, a `.pt2`
(torch.export) or `.torchscript` file by PyTorch alone, each with the metadata `src.serve.export` wrote into it
(config, classes, palette, the input convention, the test mode), so that `src.eval`, `src.infer` and the
`Segmenter` run them in the same loop as a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.loading.build import CHECKPOINT_META_KEY
from src.models.data_preprocessor import SegDataPreProcessor
from src.models.segmentor import EncoderDecoder
from src.models.tta import TTAConfig

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXTRA_FILE = "segkit.json"  # the metadata inside a .pt2 / TorchScript file


def info_key(fmt: str) -> str:
    """Where an exported file's metadata keeps its export info: `onnx` in an ONNX file, `export` in the others."""
    return "onnx" if fmt == "onnx" else "export"


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: no such ONNX file '{path}'")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if CHECKPOINT_META_KEY not in props:
        raise ValueError(
            f"'{path}' has no '{CHECKPOINT_META_KEY}' metadata: it was not written by scripts/export_onnx.py, so its "
            "input convention, classes and test mode are unknown"
        )
    return json.loads(props[CHECKPOINT_META_KEY])


class ExportedSegmentor:
    """An exported network with the prediction interface of `EncoderDecoder`, whatever runs it (`_run`).

    `data_preprocessor` only pads (mean 0, std 1: the network normalises), `encode_decode` runs the network, and
    the prediction methods are `EncoderDecoder`'s own, so whole and slide modes, the crop, resize and TTA are the
    same code."""

    predict = EncoderDecoder.predict
    slide_inference = EncoderDecoder.slide_inference
    predict_images = EncoderDecoder.predict_images
    resolve_tta = EncoderDecoder.resolve_tta
    postprocess = EncoderDecoder.postprocess

    def __init__(self, path: str | Path, meta: dict[str, Any], info: dict[str, Any], device: Any) -> None:
        self.path = Path(path)
        self.meta = meta
        self.device = torch.device(device)
        self.num_classes = int(info["num_classes"])
        self.align_corners = bool(info["align_corners"])
        self.test_cfg = dict(info["test_cfg"])
        self.tta_cfg = TTAConfig.from_cfg(info["tta"]) if info.get("tta") else None
        self.fixed_shape = tuple(info["fixed_shape"]) if info.get("fixed_shape") else None
        self.data_preprocessor = SegDataPreProcessor(
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            size_divisor=info["size_divisor"] or None,
            pad_val=info["pad_val"],
        ).to(self.device)

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw-pixel images `[N, 3, H, W]` (padded) -> logits `[N, C, H, W]`, by the exported network."""
        if self.fixed_shape is not None and tuple(images.shape[-2:]) != self.fixed_shape:
            h, w = self.fixed_shape
            raise ValueError(
                f"'{self.path}' was traced at {h}x{w} (TorchScript: sizes are fixed in the trace) and takes only "
                f"that size, got {images.shape[-2]}x{images.shape[-1]}: predict on {h}x{w} images or windows "
                "(test_cfg mode slide with that crop_size), or export with format=torch_export or onnx"
            )
        return self._run(images)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_decode(images)

    def _run(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device: str | torch.device) -> ExportedSegmentor:
        """Where the outputs go."""
        self.device = torch.device(device)
        self.data_preprocessor.to(self.device)
        return self

    def eval(self) -> ExportedSegmentor:
        return self


class OnnxSegmentor(ExportedSegmentor):
    """An exported `.onnx` model run by ONNX Runtime (CUDA provider on a CUDA device when installed)."""

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", providers: Sequence[str] | None = None
    ) -> None:
        import onnxruntime as ort

        meta = read_onnx_meta(path)
        super().__init__(path, meta, meta[info_key("onnx")], device)
        if providers is None:
            available = ort.get_available_providers()
            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda" and "CUDAExecutionProvider" in available:
                providers = ["CUDAExecutionProvider", *providers]
        self.session = ort.InferenceSession(str(self.path), providers=list(providers))

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits).to(self.device)


class TorchExportedSegmentor(ExportedSegmentor):
    """A `.pt2` (torch.export) or `.torchscript` (TorchScript) file run by PyTorch, without the project's model
    code: the network is the file's graph."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path: no such exported model file '{path}'")
        extra = {EXTRA_FILE: ""}
        device = torch.device(device)
        if path.suffix.lower() == ".torchscript":
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        else:
            # no input guards: tracing records some from branches that give the same values either way (whether
            # the crop of a padded batch is a no-op), which would refuse every other size; ONNX drops them too,
            # and the parity check at another size shows that the graph holds there
            self.module = torch.export.load(path, extra_files=extra).module(check_guards=False).to(device)
        if not extra[EXTRA_FILE]:
            raise ValueError(
                f"'{path}' has no '{EXTRA_FILE}' metadata: it was not written by scripts/export.py, so its input "
                "convention, classes and test mode are unknown"
            )
        meta = json.loads(extra[EXTRA_FILE])
        super().__init__(path, meta, meta[info_key("torch_export")], device)

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.float().to(self.device))

    def to(self, device: str | torch.device) -> TorchExportedSegmentor:
        super().to(device)
        self.module = self.module.to(self.device)
        return self


def load_exported(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ExportedSegmentor, dict[str, Any]]:
    """The `load_segmentor` of an exported file (`.onnx`, `.pt2`, `.torchscript`): the runner and the metadata
    (config, classes, palette, export info)."""
    suffix = Path(path).suffix.lower()
    seg = OnnxSegmentor(path, device) if suffix == ".onnx" else TorchExportedSegmentor(path, device)
    for key in ("config", "classes", "palette"):
        if key not in seg.meta:
            raise ValueError(
                f"'{path}' holds no '{key}' in its metadata: export it from a checkpoint "
                "(scripts/export.py ckpt_path=...) to evaluate or predict with it"
            )
    return seg, seg.meta
