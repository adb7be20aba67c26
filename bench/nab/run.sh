#!/usr/bin/env bash
# Anomaly detection on the Numenta Anomaly Benchmark (NAB v1.1): runs every wisp detector over
# the 58 files of $WISP_DATA_DIR/nab/data, writes per-file result CSVs, scores them with wisp's
# reimplementation of NAB's scorer (src/detect/nab_score.*; docs/anomaly-detection.md) and ends
# with `RESULT {json}` (the best detector's three scores and its points/s on one core).
#
#   cmake --preset release && cmake --build --preset release --target nab_bench
#   bench/nab/run.sh [--detector NAME[:k=v,...]]...
#
# Environment: WISP_DATA_DIR (default ../shared/data beside the repository), OUT (per-file
# CSVs; default build/release/bench/nab-results), NAB_BENCH (the binary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA_DIR=${WISP_DATA_DIR:-$ROOT/../shared/data}
NAB_DIR="$DATA_DIR/nab"
OUT=${OUT:-$ROOT/build/release/bench/nab-results}
NAB_BENCH=${NAB_BENCH:-$ROOT/build/release/bench/nab_bench}

die() {
  printf '[nab] error: %s\n' "$*" >&2
  exit 1
}

[[ -r "$NAB_DIR/labels/combined_windows.json" && -d "$NAB_DIR/data" ]] || die "no NAB corpus at
  $NAB_DIR: set WISP_DATA_DIR to the directory that holds nab/ (data/, labels/; see its
  README.md; the data is not in the repository)"
[[ -x "$NAB_BENCH" ]] || die "$NAB_BENCH not found: build it with
    cmake --preset release && cmake --build --preset release --target nab_bench"
mkdir -p "$OUT"

printf '[nab] machine: %s cores, load average %s; corpus %s; results in %s\n' "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$NAB_DIR" "$OUT" >&2
# One process, one thread: points/s is per core.
"$NAB_BENCH" --nab "$NAB_DIR" --out "$OUT" "$@" | tee "$OUT/nab_report.txt"
