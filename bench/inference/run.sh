#!/usr/bin/env bash
# Inference cost: a direct OpenCV DNN forward in a tight loop vs the same model through wisp's
# backend session and through a model function's Instance (in-process, no HTTP), for a tiny MLP
# (4 -> 8 -> 3) and a medium 1D-CNN (3 conv layers, 8x128 input). Run by hand, not in CI:
#
#   cmake --preset release && cmake --build --preset release --target inference_bench
#   bench/inference/run.sh
#
# Environment: SECONDS_PER (2; seconds per measurement), MODELS (the models the project
# generates and checks in, tests/data/models: this benchmark needs no WISP_DATA_DIR data),
# BENCH (build/release/bench/inference_bench).
#
# Output: a table, the function/direct ratio per model, and a last line `RESULT {...json...}`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_PER=${SECONDS_PER:-2}
MODELS=${MODELS:-$ROOT/tests/data/models}
BENCH=${BENCH:-$ROOT/build/release/bench/inference_bench}

[ -x "$BENCH" ] || {
  echo "[bench] error: $BENCH not built (cmake --build --preset release --target inference_bench)" >&2
  exit 1
}
for m in mlp.onnx cnn1d_medium.onnx; do
  [ -f "$MODELS/$m" ] || {
    echo "[bench] error: $MODELS/$m is missing (run tools/models/make_models.py)" >&2
    exit 1
  }
done
echo "[bench] $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); OpenCV $(dpkg-query -W -f='${Version}' libopencv-dnn406 2>/dev/null || echo '?')" >&2
exec "$BENCH" --models "$MODELS" --seconds "$SECONDS_PER"
