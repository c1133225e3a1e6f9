"""Export: a student checkpoint to ONNX (`python -m export.onnx`) and to TensorRT engines (`export.trt`).

Export wraps the model (export/onnx_graph.py) and never modifies it; the artefacts and their metadata
are described in the README ("Export and calibration", "TensorRT") and in export/onnx_graph.py and
export/trt.py."""
