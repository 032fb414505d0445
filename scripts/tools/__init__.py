"""Code the scripts run outside this project's environment: `mmseg_side.py`, MMSegmentation's side of
`scripts/compare_with_mmseg.py`, run by MMSegmentation's own Python. (The scripts' code that runs here and is not
segmentation, timers, reference pipelines, FLOPs counting, log analysis, is the `src.tools` package.)"""
