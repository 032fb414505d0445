"""Serving a trained model: the inference API (`segmenter.Segmenter`), export to ONNX / `.pt2` / TorchScript
(`export`), the files predictions are written to (`writers`), colour overlays (`visualization`) and
connected-component statistics (`connected_components`); shared by `src.eval`, `src.infer`, the notebook and the
scripts."""
