"""LFD-Edge runtime: what an edge device runs (numpy, OpenCV, ONNX Runtime; never torch at import)."""

__version__ = "0.1.0"
