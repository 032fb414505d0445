"""Every model source turned into (segmentor, metadata), above the models and below the engine and serving:
this project's checkpoints (`checkpoint`), MMSegmentation's (`mmseg`, over `src.weights.mmseg`'s tensor
conversion), shared folders and Hub repositories (`pretrained`); `build` makes a segmentor from its config and
holds the one metadata key; exported files (.onnx, .pt2, .torchscript) load through `exported`, and `sources`
holds the one table of formats and `load_model` for every source. Nothing
here needs Lightning."""
