#!/usr/bin/env bash
# The fuzzing step of CI (.ci/run): every target replays its committed corpus
# (fuzz/corpus/<target>/), then fuzzes on for a few seconds. A crash, panic, timeout or
# out-of-memory fails the step. The whole step — installing cargo-fuzz when missing,
# building, running — is held to FUZZ_BUDGET seconds (default 360): the seconds each
# target fuzzes are what is left after the build, shared out, between FUZZ_MIN_SECONDS
# (default 5) and FUZZ_MAX_SECONDS (default 60).
#
# Builds go to KEYGATE_FUZZ_TARGET_DIR (default /var/tmp/keygate-fuzz-target), outside
# the clone, so a later run on the same machine rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)
budget=${FUZZ_BUDGET:-360}
min_seconds=${FUZZ_MIN_SECONDS:-5}
max_seconds=${FUZZ_MAX_SECONDS:-60}
target_dir=${KEYGATE_FUZZ_TARGET_DIR:-/var/tmp/keygate-fuzz-target}
targets=(token api_key config credentials)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
cargo fuzz --version

# -s none: keygate forbids unsafe code, and AddressSanitizer would double both the build
# and the run time; debug assertions (overflow checks) stay on.
flags=(-s none --codegen-units 16 --target-dir "$target_dir")
cargo +nightly fuzz build "${flags[@]}"
built=$(date +%s)
echo "fuzz: cargo-fuzz and build took $((built - start)) s"

left=$((budget - (built - start) - 30))
seconds=$((left / ${#targets[@]}))
((seconds > max_seconds)) && seconds=$max_seconds
((seconds < min_seconds)) && seconds=$min_seconds

for t in "${targets[@]}"; do
  extra=()
  [[ -f $t.dict ]] && extra+=("-dict=$t.dict")
  work=$(mktemp -d)
  log=$(mktemp)
  t0=$(date +%s)
  # New inputs go to $work; the committed corpus is read, never written.
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    "${extra[@]}" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ (reproduce: cargo +nightly fuzz run $t <file>)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz: $t ok: $(ls "corpus/$t" | wc -l) corpus files replayed, $runs runs in $(($(date +%s) - t0)) s"
  rm -rf "$work" "$log"
done
echo "fuzz: step took $(($(date +%s) - start)) s (budget $budget s, $seconds s per target)"
