"""Necks: between the backbone and the decode head (one concept per file)."""

from src.models.necks.multilevel_neck import MultiLevelNeck

__all__ = ["MultiLevelNeck"]
