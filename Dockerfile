# LFD-Edge on an x86_64 machine with an NVIDIA GPU: training, export, ONNX Runtime and TensorRT.
#
# Base: NVIDIA's TensorRT container (TensorRT + its Python bindings, CUDA, cuDNN, Ubuntu, Python 3).
# 24.12 = TensorRT 10.7, CUDA 12.6; pick another monthly tag (e.g. 25.xx) to match your driver:
# the container release notes list the driver each tag needs.
#   docker build -t lfd-edge .
#   docker run --rm -it --gpus all -v "$PWD/runs:/workspace/lfd-edge/runs" lfd-edge make demo
# More (camera, display, Jetson): docs/containers.md
ARG BASE=nvcr.io/nvidia/tensorrt:24.12-py3
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1

# ffmpeg: network-stream tests; libgl/glib: OpenCV's shared-library needs; v4l-utils: list cameras.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ffmpeg libgl1 libglib2.0-0 v4l-utils make git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/lfd-edge
# Dependencies first (cached while only the sources change). tensorrt is already in the base image,
# so pip keeps it; modelopt brings onnxruntime-gpu (CUDA and TensorRT execution providers).
COPY pyproject.toml README.md ./
COPY runtime/__init__.py runtime/__init__.py
RUN python3 -m pip install --upgrade pip \
    && python3 -m pip install ".[train,export,trt]" \
    && python3 -m pip uninstall -y lfd-edge

COPY . .
RUN python3 -m pip install --no-deps -e . \
    && python3 -c "import runtime, tensorrt, onnxruntime; print('tensorrt', tensorrt.__version__, onnxruntime.get_available_providers())"

CMD ["bash"]
