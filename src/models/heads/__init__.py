"""Decode heads: one concept per file over a shared `BaseDecodeHead`."""

from src.models.heads.base import BaseDecodeHead
from src.models.heads.fcn import FCNHead

__all__ = ["BaseDecodeHead", "FCNHead"]
