#!/usr/bin/env bash
# Cold start: time to the first reply from zero instances and warm call latency, for a Lua
# function (examples/hello/handler.lua), a Python process function (bench/cold_start/handler.py,
# a constant reply) and a model function (runtime: model; by default the medium 1D-CNN
# tests/data/models/cnn1d_medium.onnx, 94 kB, 3 conv layers, input x [1x8x128], argmax reply),
# through a real wispd, against the bare cost of the same program outside wisp (LuaJIT
# newstate+load+first call; fork+exec of `python3 sdk/python/wisp_handler.py handler.py handle`
# up to its first reply; read the .onnx + OpenCV readNetFromONNX + setInput + first forward).
# The driver is bench/cold_start/cold_start.cc; this script builds it and wispd (release
# preset), writes the model function's directory in a temporary dir (wisp.yaml with scale.min 0,
# model.yaml, model.onnx copied from tests/data/models), starts wispd with one shard on a free
# port and a temporary data dir, runs the driver, stops wispd.
# Run by hand, not in CI:
#
#   bench/cold_start/run.sh
#   NICE=10 COLD=30 WARM=2000 bench/cold_start/run.sh
#
# Environment: COLD (30 cold repetitions per function), WARM (2000 warm calls), TARGETS
# ("lua python model"), MODEL (cnn1d_medium: a model of tests/data/models with a NAME.onnx and a
# NAME.expected.json whose first case is the call's input), SETTLE_MS (100: pause after each deploy, before timing), IDLE_CHECK_S (5: after
# the warm run, wait and record the instances left), NICE (niceness for everything the bench
# runs; the machine may be shared), BUILD (1: build the targets first; 0: use what is built),
# WISPD / COLD_START (default build/release/...).
#
# wisp's cold figure is one HTTP call on an open connection to a function just redeployed with
# scale.min 0 (the redeploy drops its instances; min 0 starts none), so it includes HTTP
# parsing, routing and the runtime's instance set-up (for process functions: a private copy of
# the code, rlimits, Landlock, seccomp, fork+exec). The bare figures have none of that. No data
# set is needed (WISP_DATA_DIR is not used).
#
# Output: a table, the wisp/bare ratios, and a last line `RESULT {...json...}`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
COLD=${COLD:-30}
WARM=${WARM:-2000}
TARGETS=${TARGETS:-"lua python model"}
MODEL=${MODEL:-cnn1d_medium}
SETTLE_MS=${SETTLE_MS:-100}
IDLE_CHECK_S=${IDLE_CHECK_S:-5}
NICE=${NICE:-0}
BUILD=${BUILD:-1}
WISPD=${WISPD:-$ROOT/build/release/wispd}
COLD_START=${COLD_START:-$ROOT/build/release/bench/cold_start}

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  printf '[bench] error: %s\n' "$*" >&2
  exit 1
}
run_nice() { nice -n "$NICE" "$@"; }

command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

if [[ "$BUILD" == 1 ]]; then
  if [[ ! -f "$ROOT/build/release/build.ninja" ]]; then
    log "configuring the release preset"
    (cd "$ROOT" && cmake --preset release >&2)
  fi
  log "building wispd and cold_start"
  (cd "$ROOT" && run_nice cmake --build --preset release -j2 --target wispd cold_start >&2)
fi
[[ -x "$WISPD" ]] || die "$WISPD not found (BUILD=1 builds it, or set WISPD=...)"
[[ -x "$COLD_START" ]] || die "$COLD_START not found (BUILD=1 builds it, or set COLD_START=...)"

TMP=$(mktemp -d -t wisp-cold.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The model function, deployed from a directory as `wisp deploy DIR` would send it.
model_args=()
if [[ "$TARGETS" == *model* ]]; then
  models="$ROOT/tests/data/models"
  [[ -f "$models/$MODEL.onnx" && -f "$models/$MODEL.expected.json" ]] ||
    die "$models/$MODEL.onnx or $MODEL.expected.json is missing (tools/models/make_models.py)"
  input_name=$(python3 -c 'import json, sys; print(next(iter(json.load(open(sys.argv[1]))["cases"][0]["inputs"])))' \
    "$models/$MODEL.expected.json")
  fn="$TMP/model-fn"
  mkdir -p "$fn"
  cp "$models/$MODEL.onnx" "$fn/model.onnx"
  cat >"$fn/wisp.yaml" <<EOF
version: 1
functions:
  cold-model:
    runtime: model
    handler: ./model.yaml
    scale: { min: 0, max: 1 }
    auth: public
EOF
  cat >"$fn/model.yaml" <<EOF
file: ./model.onnx
input: { field: $input_name }
output: { kind: argmax }
EOF
  model_args=(--model-dir "$fn" --model-expected "$models/$MODEL.expected.json" --model-label "$MODEL")
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
mkdir -p "$TMP/data"
log "wispd --listen 127.0.0.1:$port --shards 1 --data $TMP/data"
# nice directly, not run_nice: a backgrounded shell function is a subshell, and $! would be its
# pid rather than wispd's, so the cleanup would leave wispd running.
nice -n "$NICE" "$WISPD" --listen "127.0.0.1:$port" --data "$TMP/data" --shards 1 \
  >"$TMP/wispd.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
  kill -0 "$server_pid" 2>/dev/null || die "wispd exited during start-up: $(tail -5 "$TMP/wispd.log")"
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$port/healthz" || die "wispd did not answer within 10 s"

log "cold_start --cold $COLD --warm $WARM --targets '$TARGETS' (nice $NICE, $(nproc) cores)"
run_nice "$COLD_START" --url "http://127.0.0.1:$port" --token "$(cat "$TMP/data/token")" \
  --root "$ROOT" --cold "$COLD" --warm "$WARM" --targets "$TARGETS" --settle-ms "$SETTLE_MS" \
  --idle-check-s "$IDLE_CHECK_S" "${model_args[@]}" || {
  tail -20 "$TMP/wispd.log" >&2
  die "the driver failed (the last lines of the wispd log are above)"
}
