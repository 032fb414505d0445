"""Datasets: one generic folder dataset; each named dataset only declares its metainfo and layout."""

from src.data.datasets.base import BaseSegDataset
from src.data.datasets.shapes import ShapesDataset

__all__ = ["BaseSegDataset", "ShapesDataset"]
