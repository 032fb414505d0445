"""Tools, not the segmentation library: measuring (FLOPs, speed) and reading logs, for `scripts/`.

Nothing under `src/` outside this package imports from it; it imports the library like any user would."""
