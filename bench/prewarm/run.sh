#!/usr/bin/env bash
# Keep-alive / pre-warm policies on the Azure Functions 2019 trace sample: replays
# $WISP_DATA_DIR/azure-functions-sample/{100,500,1000}_{inv,run,mem}.csv through fixed, hybrid
# (Shahrad et al., ATC 2020) and wisp's policy with bench/prewarm's simulator (prewarm_sim, built
# with the release preset), writes CSV files and a Pareto plot, and ends with `RESULT {json}`.
# docs/prewarm.md describes the method and docs/benchmarks.md the figures.
#
#   cmake --preset release && cmake --build --preset release --target prewarm_sim
#   bench/prewarm/run.sh
#
# Environment: WISP_DATA_DIR (default ../shared/data beside the repository), OUT (where the CSV
# files and prewarm_pareto.png go; default build/release/bench/prewarm-results), SIZES
# ("100,500,1000": the last one also gets the sweep and the memory caps), SEED (1), THREADS
# (nproc), PREWARM_SIM.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA_DIR=${WISP_DATA_DIR:-$ROOT/../shared/data}
TRACE_DIR="$DATA_DIR/azure-functions-sample"
OUT=${OUT:-$ROOT/build/release/bench/prewarm-results}
SIZES=${SIZES:-100,500,1000}
SEED=${SEED:-1}
THREADS=${THREADS:-$(nproc)}
PREWARM_SIM=${PREWARM_SIM:-$ROOT/build/release/bench/prewarm_sim}

die() {
  printf '[prewarm] error: %s\n' "$*" >&2
  exit 1
}

[[ -d "$TRACE_DIR" ]] || die "no trace sample at $TRACE_DIR: set WISP_DATA_DIR to the directory
  that holds azure-functions-sample/ (see its README.md; the data is not in the repository)"
for n in ${SIZES//,/ }; do
  for kind in inv run mem; do
    [[ -r "$TRACE_DIR/${n}_$kind.csv" ]] || die "missing $TRACE_DIR/${n}_$kind.csv"
  done
done
[[ -x "$PREWARM_SIM" ]] || die "$PREWARM_SIM not found: build it with
    cmake --preset release && cmake --build --preset release --target prewarm_sim"
mkdir -p "$OUT"

printf '[prewarm] machine: %s cores, load average %s; trace %s; sizes %s; seed %s\n' \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$TRACE_DIR" "$SIZES" "$SEED" >&2
start=$(date +%s)
"$PREWARM_SIM" --data "$TRACE_DIR" --out "$OUT" --sizes "$SIZES" --seed "$SEED" \
  --threads "$THREADS" | tee "$OUT/prewarm_report.txt"
printf '[prewarm] simulations took %ss; CSV files in %s\n' "$(($(date +%s) - start))" "$OUT" >&2

# Debian's python3-matplotlib lives in /usr/bin/python3, which another python3 may shadow.
PYTHON=
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import matplotlib' 2>/dev/null; then
    PYTHON=$candidate
    break
  fi
done
if [[ -n "$PYTHON" ]]; then
  "$PYTHON" "$ROOT/bench/prewarm/plot.py" "$OUT" && printf '[prewarm] plot: %s\n' \
    "$OUT/prewarm_pareto.png" >&2
else
  printf '[prewarm] no plot: python3-matplotlib is missing (scripts/setup.sh installs it)\n' >&2
fi
