"""Decode heads: one concept per file over a shared `BaseDecodeHead` (smp's architectures as one, `SMPHead`)."""

from src.models.heads.aspp import ASPPHead
from src.models.heads.base import BaseDecodeHead
from src.models.heads.fcn import FCNHead
from src.models.heads.psp import PSPHead
from src.models.heads.segformer import SegformerHead
from src.models.heads.sep_aspp import DepthwiseSeparableASPPHead
from src.models.heads.smp import SMPHead
from src.models.heads.uper import UPerHead

__all__ = [
    "ASPPHead",
    "BaseDecodeHead",
    "DepthwiseSeparableASPPHead",
    "FCNHead",
    "PSPHead",
    "SMPHead",
    "SegformerHead",
    "UPerHead",
]
