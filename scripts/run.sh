#!/usr/bin/env bash
# Builds wisp (release) and runs a node in the foreground with the examples deployed.
# Extra arguments go to `wisp up`, e.g. ./scripts/run.sh --listen 0.0.0.0:8080 --shards 2
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
# Only the binaries: the tests and benchmarks are scripts/test.sh's business.
cmake --build --preset release --target wisp wispd

cat <<'BANNER'

wisp node starting with examples/hello, examples/counter and examples/pump-alert.
Try, from another terminal (adjust the address if you passed --listen):

  curl -s -X POST http://127.0.0.1:8080/v1/functions/hello/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/counter/invoke
  curl -s -X POST http://127.0.0.1:8080/v1/functions/pump-alert/invoke \
       -H 'Content-Type: application/json' -d '{"pump":"p1","vibration":9.2}'
  build/release/wisp ls
  build/release/wisp invoke pump-alert --data '{"pump":"p1","vibration":9.2}'
  build/release/wisp logs pump-alert
  curl -s http://127.0.0.1:8080/metrics | grep wisp_function_invocations_total

Ctrl-C drains in-flight calls and stops the node.

BANNER
exec build/release/wisp up --deploy examples/hello --deploy examples/counter \
  --deploy examples/pump-alert "$@"
