"""Calibration and reduced precision: `python -m calib.quantize` (INT8 Q/DQ for ONNX Runtime CPUs or for
TensorRT, FP16), `python -m calib.qdq_check` (TensorRT's Q/DQ rules). Inputs are ONNX files written by
export.onnx; the calibration images come from runtime's dataset readers and pre-processing."""
