"""segkit: MMSegmentation's models and recipes on PyTorch Lightning + Hydra + timm + smp + Albumentations.

The version is defined here once; `pyproject.toml` reads it (`[tool.setuptools.dynamic]`) and `python -m src.env`
prints it."""

__version__ = "0.2.0"
