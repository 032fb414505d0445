"""Recipes as data: what a training run would do, read from a composed config of this project and from an
MMSegmentation config, in the same flat fields, so that the two can be compared field by field.

- `fields.py`: the fields (test mode, losses, optimiser, schedule, batch, pipelines, labels, metric), each a
  key such as `decode_head.loss.0.type` with a plain value;
- `mmseg.py`: MMSegmentation's side, from its resolved config (the JSON of `Config.to_dict()`, or the config
  text an MMSegmentation checkpoint carries in its `meta`, parsed without running it);
- `ours.py`: this project's side, from a composed Hydra config;
- `compare.py`: the differences, and the table of allowed ones (`docs/reproduction.md`) they are checked against.

`scripts/compare_recipe.py` prints the comparison for any experiment or zoo entry; tests/recipes/ runs it for
all of them. The recipes themselves (which MMSegmentation config each experiment and zoo entry is) are in
`conf/experiment/*.yaml` (`mmseg_config`) and `conf/zoo.yaml`.
"""
