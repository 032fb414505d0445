"""Every model source turned into (segmentor, metadata), above the models and below the engine and serving:
this project's checkpoints (`checkpoint`), MMSegmentation's (`mmseg`, over `src.weights.mmseg`'s tensor
conversion), shared folders and Hub repositories (`pretrained`); `build` makes a segmentor from its config and
holds the one metadata key. Exported files (.onnx, .pt2, .torchscript) load through `src.serve.export`. Nothing
here needs Lightning."""
