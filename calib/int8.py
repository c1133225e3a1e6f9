"""INT8 Q/DQ models: one for ONNX Runtime on CPUs, one as TensorRT requires.

- CPU (`quantize_cpu`): ONNX Runtime `quantize_static` in QDQ format, int8 per-channel weights and uint8
  activations (u8s8, ORT's fast path with VNNI), `reduce_range` (7-bit weights) on x86 CPUs without VNNI
  where u8s8 multiply-adds can saturate. Measured: 3.3x over ORT FP32 for ResNet-18 OS8 on a CPU with
  AVX-512 VNNI; on an AVX2-only CPU (no VNNI) the int8 kernels were slower than FP32 (0.8x for
  deeplabv3_resnet18 at 128x256): INT8 pays off on CPUs with VNNI (or ARM dot-product) instructions.
- TensorRT (`quantize_trt`): symmetric Q/DQ (zero points 0), int8 activations and weights, per-channel
  weights on the output-channel axis, biases left in float. Through nvidia-modelopt's ONNX PTQ when it
  is installed (its Q/DQ placement is TensorRT's), else ONNX Runtime with symmetric settings.

Both take a preprocessed model (`prepare`: ORT `quant_pre_process`, i.e. shape inference and basic graph
optimisation) so that node names match between sensitivity analysis and quantization, and a JSON
calibration-range cache so that re-quantizing with other excluded nodes skips calibration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from calib.dataset import ArrayDataReader
from runtime.errors import UserError
from runtime.lazy import has_module, lazy_import
from runtime.machine import cpu_has_vnni, is_x86

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
MODELOPT_METHODS = {"minmax": "max", "entropy": "entropy"}  # modelopt has no percentile calibration


def prepare(src: str | Path, dst: str | Path) -> Path:
    """ORT's quantization pre-processing (symbolic shape inference + basic optimisation) into `dst`."""
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    return Path(dst)


def _calibrate(model: Path, out: Path, images: np.ndarray, method: str, exclude: Sequence[str],
               cache: Path | None, activation_type: QuantType, reduce_range: bool,
               extra: Mapping[str, object]) -> Path:
    """quantize_static in QDQ format with int8 per-channel weights (shared by both targets)."""
    if method not in METHODS:
        raise UserError(f"--method {method}: choose one of {', '.join(METHODS)}")
    reader = ArrayDataReader(images, _input_name(model))
    quantize_static(str(model), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=activation_type, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude), calibrate_method=METHODS[method], extra_options=dict(extra),
                    calibration_cache_path=str(cache) if cache else None)
    return out


def _input_name(model: Path) -> str:
    import onnx

    return onnx.load(str(model), load_external_data=False).graph.input[0].name


def quantize_cpu(model: str | Path, out: str | Path, images: np.ndarray, method: str = "minmax",
                 exclude: Sequence[str] = (), cache: str | Path | None = None,
                 reduce_range: bool | None = None) -> Path:
    """QDQ u8s8 per-channel for ONNX Runtime CPUs; `reduce_range=None` picks it on x86 CPUs without VNNI
    (elsewhere 7-bit weights are moot)."""
    rr = (is_x86() and not cpu_has_vnni()) if reduce_range is None else reduce_range
    return _calibrate(Path(model), Path(out), images, method, exclude, Path(cache) if cache else None,
                      QuantType.QUInt8, rr, {})


def quantize_trt_ort(model: str | Path, out: str | Path, images: np.ndarray, method: str = "entropy",
                     exclude: Sequence[str] = (), cache: str | Path | None = None) -> Path:
    """Symmetric s8s8 Q/DQ with float biases through ONNX Runtime (TensorRT's explicit-quantization rules)."""
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "DedicatedQDQPair": True}
    return _calibrate(Path(model), Path(out), images, method, exclude, Path(cache) if cache else None,
                      QuantType.QInt8, False, extra)


def quantize_trt_modelopt(model: str | Path, out: str | Path, images: np.ndarray, method: str = "entropy",
                          exclude: Sequence[str] = (), fp16: bool = False) -> Path:
    """nvidia-modelopt ONNX PTQ (`modelopt.onnx.quantization.quantize`, int8, calibrated on the CPU).

    Not exercised by the tests here (modelopt is not installed in the CPU environment). Non-quantized
    layers stay float32, or float16 with `fp16` (float32 graph I/O either way)."""
    if method not in MODELOPT_METHODS:
        raise UserError(f"--method {method} is not supported by modelopt; use {' or '.join(MODELOPT_METHODS)}")
    mq = lazy_import("modelopt.onnx.quantization", "TensorRT INT8 quantization")
    mq.quantize(onnx_path=str(model), quantize_mode="int8",
                calibration_data={_input_name(Path(model)): images.astype(np.float32)},
                calibration_method=MODELOPT_METHODS[method], calibration_eps=["cpu"],
                nodes_to_exclude=[f"^{re.escape(n)}$" for n in exclude] or None,  # modelopt reads regexes
                output_path=str(out),
                high_precision_dtype="fp16" if fp16 else "fp32", use_zero_point=False)
    return Path(out)


def has_modelopt() -> bool:
    return has_module("modelopt")
