#!/usr/bin/env bash
# Check the TensorRT code against tensorrt-stubs (no TensorRT or GPU needed):
# regenerate ./stubs from the installed tensorrt-stubs, then mypy the TensorRT modules.
#   scripts/lint_trt.sh            (uses .venv/bin/python if present, else python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
"$PY" scripts/make_trt_stubs.py
exec "$PY" -m mypy --config-file mypy.ini \
  export/trt.py export/trt_choices.py export/trt_build.py export/trt_calibrator.py \
  runtime/backends/tensorrt_backend.py runtime/backends/tensorrt_cuda.py runtime/trt_version.py
