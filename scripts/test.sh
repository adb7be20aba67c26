#!/usr/bin/env bash
# Sets up, then runs every check wisp has, failing fast:
#   release build + all tests, ASan/UBSan build + unit tests, fuzz build + a short fuzz run,
#   clang-format check.
# WISP_FUZZ_SECONDS (default 30) is how long fuzz/run.sh fuzzes.
set -euo pipefail
cd "$(dirname "$0")/.."

start_all=$SECONDS
summary_dir=$(mktemp -d)
stage=""
stage_start=$SECONDS
passed=()

begin() {
  stage=$1
  stage_start=$SECONDS
  printf '\n==== %s ====\n' "$stage"
}
end() {
  local took=$((SECONDS - stage_start))
  printf '==== %s: ok (%ds) ====\n' "$stage" "$took"
  passed+=("$stage ${took}s")
  stage=""
}
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    printf '\ntest.sh: FAILED in stage "%s" after %ds (exit %d)\n' "${stage:-?}" \
      $((SECONDS - start_all)) "$rc" >&2
  fi
}
trap on_exit EXIT

begin setup
scripts/setup.sh
end

begin release
cmake --preset release
cmake --build --preset release
# One test per process (a crash names its test), as many at once as there are cores: the
# integration tests pick free ports and private directories, so they run side by side.
ctest --preset release -j "$(nproc)" | tee "$summary_dir/release.log"
end

begin asan
cmake --preset asan
cmake --build --preset asan --target wisp_unit_tests
# The unit tests in one process: an ASan binary of this size takes about a second to start, which
# run once per test (ctest) was most of this stage's time. gtest prints every failure; the
# summary below counts them.
./build/asan/tests/wisp_unit_tests --gtest_brief=1 | tee "$summary_dir/asan.gtest"
end

begin fuzz
cmake --preset fuzz
cmake --build --preset fuzz
if [[ -x fuzz/run.sh ]]; then
  fuzz/run.sh "${WISP_FUZZ_SECONDS:-30}"
else
  echo "fuzz/run.sh not found: built the fuzz targets, skipped the run"
fi
end

begin format
mapfile -d '' sources < <(find include src tests bench fuzz -type f \( -name '*.cc' -o -name '*.h' \) \
  -print0 2>/dev/null | sort -z)
echo "checking ${#sources[@]} files"
clang-format --dry-run --Werror "${sources[@]}"
end

# One plain closing line with the test counts of the ctest run and the ASan gtest run.
total=$(grep -ho 'out of [0-9]*' "$summary_dir"/*.log | awk '{n += $3} END {print n + 0}')
failed=$(grep -ho '[0-9]* tests failed' "$summary_dir"/*.log | awk '{n += $1} END {print n + 0}')
total=$((total + $(grep -ho '^\[==========\] [0-9]* tests\? from' "$summary_dir"/asan.gtest |
  awk '{n += $2} END {print n + 0}')))
rm -rf "$summary_dir"
printf '\ntest.sh: all passed in %ds (%s)\n' $((SECONDS - start_all)) "$(IFS=,; echo "${passed[*]}" | sed 's/,/, /g')"
printf 'tests: %d passed, %d failed\n' $((total - failed)) "$failed"
