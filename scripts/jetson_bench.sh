#!/usr/bin/env bash
# Benchmark TensorRT engines on a Jetson: latency, FPS, power, energy per frame, temperature.
#   scripts/jetson_bench.sh runs/demo/export/student.int8.engine runs/demo/export/student.fp16.engine
# Environment: DURATION (s, default 20), INTERVAL_MS (tegrastats, default 100), OUT (default
# runs/jetson_bench), MODE (nvpmodel mode to set first, e.g. 0 = MAXN; needs sudo), CLOCKS=1 to run
# `sudo jetson_clocks` first. Extra options after `--` go to python -m runtime.jetson_bench.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 model.engine [more.engine ...] [-- extra runtime.jetson_bench options]" >&2
    exit 2
fi
models=()
while [[ $# -gt 0 && "$1" != "--" ]]; do models+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift

if ! command -v tegrastats >/dev/null; then
    echo "error: tegrastats not found: run this on a Jetson (JetPack), or use python -m runtime.bench" >&2
    exit 2
fi
if [[ -n "${MODE:-}" ]]; then
    sudo nvpmodel -m "$MODE"
fi
if [[ "${CLOCKS:-0}" == "1" ]]; then
    sudo jetson_clocks
fi

PYTHON="${PYTHON:-python3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # model paths stay relative to where you are
exec "$PYTHON" -m runtime.jetson_bench --models "${models[@]}" \
    --duration "${DURATION:-20}" --interval-ms "${INTERVAL_MS:-100}" --out "${OUT:-runs/jetson_bench}" "$@"
