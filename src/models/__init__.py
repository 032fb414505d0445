"""Plain `nn.Module` building blocks of segmentors: no Lightning here, so they export and run anywhere."""

from src.models.backbones import (
    ConvNeXtBackbone,
    MiTBackbone,
    SwinBackbone,
    TimmBackbone,
    ViTBackbone,
)
from src.models.data_preprocessor import SegDataPreProcessor
from src.models.segmentor import EncoderDecoder

__all__ = [
    "ConvNeXtBackbone",
    "EncoderDecoder",
    "MiTBackbone",
    "SegDataPreProcessor",
    "SwinBackbone",
    "TimmBackbone",
    "ViTBackbone",
]
