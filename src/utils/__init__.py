"""Thin helpers around Hydra, Lightning and rich used by the entry points."""
