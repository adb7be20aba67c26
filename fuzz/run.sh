#!/usr/bin/env bash
# Runs every built fuzz target for a while; fails if any target crashes.
#
#   fuzz/run.sh [SECONDS] [BUILD_DIR]
#
# SECONDS: per target (default 30). BUILD_DIR: the fuzz build (default build/fuzz, what
# `cmake --preset fuzz` makes; WISP_FUZZ_BUILD_DIR overrides it too). Targets are the
# executables BUILD_DIR/fuzz/*_fuzz; each starts from a copy of fuzz/corpus/<what>/ in a temp
# dir, so the repository is never modified. On a crash the temp dir is kept and its path
# printed: the crash-* file there reproduces it (`BUILD_DIR/fuzz/<target> crash-...`).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
build="${2:-${WISP_FUZZ_BUILD_DIR:-$repo/build/fuzz}}"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [SECONDS] [BUILD_DIR]  (SECONDS must be a positive whole number)" >&2
  exit 2
fi

shopt -s nullglob
targets=()
for t in "$build"/fuzz/*_fuzz; do
  [ -f "$t" ] && [ -x "$t" ] && targets+=("$t")
done
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets in $build/fuzz; build them first:" \
    "cmake --preset fuzz && cmake --build --preset fuzz" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/wisp-fuzz.XXXXXX")"
# UB is a finding too, not just a log line.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# Targets run side by side, one per core (WISP_FUZZ_JOBS overrides): each is single-threaded,
# so on CI's 2 cores this halves the stage's wall time at the same fuzzing per target.
jobs="${WISP_FUZZ_JOBS:-$(nproc)}"

run_target() {
  local t="$1" name what dir
  name="$(basename "$t")"
  what="${name%_fuzz}"
  dir="$work/$name"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ -d "$repo/fuzz/corpus/$what" ]; then
    cp -R "$repo/fuzz/corpus/$what/." "$dir/corpus/"
  fi
  echo "== $name: ${seconds}s, corpus $(ls "$dir/corpus" | wc -l) seeds"
  # The outer timeout is a backstop: after an out-of-memory report, ASan's heap profile can
  # take many minutes on a large heap, and CI must not hang on it. -malloc_limit_mb below the
  # RSS limit reports a single huge allocation at once, with its stack and input.
  if timeout -s KILL "$((seconds + 120))" "$t" -max_total_time="$seconds" -timeout=25 \
      -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
      -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1; then
    echo "== $name done: $(grep -E '^stat::number_of_executed_units' "$dir/log" | awk '{print $2}') runs"
  else
    {
      echo "!! $name FAILED; log and crash input in $dir:"
      tail -n 40 "$dir/log"
      ls "$dir/artifacts" || true
    } >&2
    touch "$dir/failed"
  fi
}

running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${targets[@]}"; do
  [ -e "$work/$(basename "$t")/failed" ] && failed+=("$(basename "$t")")
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (kept $work)" >&2
  exit 1
fi
rm -rf "$work"
echo "fuzz: all ${#targets[@]} target(s) ran ${seconds}s without a crash"
