#!/usr/bin/env bash
# User-space instructions per request under callgrind: keygate against the bare stack
# (../shared/anchors/axum-jwt-baseline), /verify and /login. Deterministic, unlike requests
# per second on a shared machine: what a change removes shows here first.
#
#   bench/instructions.sh            # N=3000 requests of each kind after 300 of warm-up
#
# Needs valgrind (callgrind_control) and oha (`cargo install oha`).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-3000}
ANCHORS=${ANCHORS:-../shared/anchors}
KG_PORT=18595 BASE_PORT=18596
for tool in valgrind callgrind_control oha; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
set -a; . "$ANCHORS/anchor_creds.env"; set +a
cargo build --release -q -p keygate-cli --bin keygate
cargo build --release -q --manifest-path "$ANCHORS/axum-jwt-baseline/Cargo.toml" --target-dir target

. bench/lib.sh

# keygate as a user runs it: `keygate init`'s configuration and generated key, default
# logging (RUST_LOG unset).
target/release/keygate init --config "$work/keygate.toml" >"$work/init.out"
kg_key=$(grep -o 'kg_[A-Za-z0-9_-]*' "$work/init.out" | head -n1)
[ -n "$kg_key" ] || { echo "keygate init printed no key" >&2; exit 1; }
env -u RUST_LOG KEYGATE_SERVER_LISTEN=127.0.0.1:$KG_PORT valgrind --tool=callgrind \
  --callgrind-out-file="$work/kg.%p" target/release/keygate serve --config "$work/keygate.toml" >"$work/kg.log" 2>&1 &
pids+=($!); kg_pid=$!
ANCHOR_BIND=127.0.0.1:$BASE_PORT valgrind --tool=callgrind \
  --callgrind-out-file="$work/base.%p" target/release/axum-jwt-baseline >"$work/base.log" 2>&1 &
pids+=($!); base_pid=$!
for _ in $(seq 200); do
  curl -s -o /dev/null "http://127.0.0.1:$KG_PORT/healthz" && curl -s -o /dev/null "http://127.0.0.1:$BASE_PORT/hello" && break
  sleep 0.3
done
kg_token=$(token_of "http://127.0.0.1:$KG_PORT" "X-API-Key: $kg_key")
base_token=$(token_of "http://127.0.0.1:$BASE_PORT" "access_token: $ANCHOR_API_KEY")

# run PID PREFIX URL [oha args] -> instructions per request
run() {
  local pid=$1 prefix=$2 url=$3; shift 3
  oha --no-tui -n 300 -c 4 "$@" "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  oha --no-tui -n "$N" -c 4 "$@" "$url" >"$work/oha.out"
  grep -q "\[200\] $N responses" "$work/oha.out" || { echo "$url: not every answer was 200" >&2; cat "$work/oha.out" >&2; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 0.5
  local dump; dump=$(ls -t "$work/$prefix".*.* | head -n1)
  awk -v n="$N" '/^(summary|totals):/ { printf "%.0f\n", $2 / n; exit }' "$dump"
}
kv=$(run $kg_pid kg "http://127.0.0.1:$KG_PORT/verify" -H "Authorization: Bearer $kg_token")
bv=$(run $base_pid base "http://127.0.0.1:$BASE_PORT/protected" -H "Authorization: Bearer $base_token")
kl=$(run $kg_pid kg "http://127.0.0.1:$KG_PORT/login" -m POST -H "X-API-Key: $kg_key")
bl=$(run $base_pid base "http://127.0.0.1:$BASE_PORT/login" -m POST -H "access_token: $ANCHOR_API_KEY")
echo "| endpoint | keygate | bare stack | ratio |"
echo "|---|---:|---:|---:|"
awk -v k="$kv" -v b="$bv" 'BEGIN { printf "| GET /verify vs /protected | %d | %d | %.2f× |\n", k, b, k / b }'
awk -v k="$kl" -v b="$bl" 'BEGIN { printf "| POST /login vs /login | %d | %d | %.2f× |\n", k, b, k / b }'
