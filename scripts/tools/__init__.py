"""Code of the scripts that is not segmentation: timers, reference loops, machine probes (DESIGN.md, layer 7)."""
