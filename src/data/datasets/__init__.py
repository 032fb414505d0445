"""Datasets: one generic folder dataset; each named dataset only declares its metainfo and layout."""

from src.data.datasets.ade import ADE20KDataset
from src.data.datasets.base import BaseSegDataset
from src.data.datasets.camvid import CamVid32Dataset, CamVidDataset
from src.data.datasets.cityscapes import CityscapesDataset
from src.data.datasets.retinal import ChaseDB1Dataset, DRIVEDataset, HRFDataset, STAREDataset
from src.data.datasets.shapes import ShapesDataset
from src.data.datasets.stanford_background import StanfordBackgroundDataset
from src.data.datasets.voc import PascalVOCDataset

__all__ = [
    "ADE20KDataset",
    "BaseSegDataset",
    "CamVid32Dataset",
    "CamVidDataset",
    "ChaseDB1Dataset",
    "CityscapesDataset",
    "DRIVEDataset",
    "HRFDataset",
    "PascalVOCDataset",
    "STAREDataset",
    "ShapesDataset",
    "StanfordBackgroundDataset",
]
