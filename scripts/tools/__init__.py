"""Code the scripts run outside this project's environment, in MMSegmentation's own Python: `mmseg_side.py`, its
side of `scripts/compare_with_mmseg.py`, and `mmseg_models.py`, its side of `scripts/benchmark.py --families
--mmseg`. (The scripts' code that runs here and is not segmentation, timers, FLOPs counting, log analysis, is the
`src.tools` package.)"""
