#!/usr/bin/env bash
# The directory's costs with N principals (default 1 000 000) in SQLite: CLI edits,
# start-up, RSS, admin API latency, and /login against a key of the file, in one run
# (bench/directory.py says what each figure is). Needs wrk (apt-get install wrk) and python3.
#   bench/directory.sh
#   N=100000 DURATION=5s bench/directory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p keygate-cli --bin keygate
exec python3 bench/directory.py "${CARGO_TARGET_DIR:-target}/release/keygate" "${N:-1000000}"
