#!/usr/bin/env bash
# HTTP load: keygate's endpoints against a bare axum baseline, in one run, on loopback.
# Needs wrk (Debian: apt-get install wrk). Every run is bounded: DURATION per endpoint.
#   bench/http-load.sh            # 10 s per endpoint, 32 connections, 2 wrk threads
#   DURATION=30s CONNECTIONS=64 bench/http-load.sh
#   ALG=ES256 bench/http-load.sh  # keygate signing with ES256, EdDSA or RS256 instead of HS256
#   STORE_URL=redis://127.0.0.1:6379 bench/http-load.sh  # revocations, counters and quotas in Redis
# A second keygate with a quota no run reaches (limits.default_rate_limit) measures what
# counting /verify against a quota costs: compare "keygate GET /verify" with its "(quota)" row.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
KG_PORT=${KG_PORT:-18480}
KGQ_PORT=${KGQ_PORT:-18481}
STORE_URL=${STORE_URL:-}
BASE_PORT=${BASE_PORT:-18490}
ALG=${ALG:-HS256}

command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p keygate-cli -p keygate-server --bin keygate --example baseline
BIN=target/release/keygate

work=$(mktemp -d)
cleanup() { kill "${kg_pid:-}" "${kgq_pid:-}" "${base_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

key=$("$BIN" init --config "$work/keygate.toml" | tail -n 1)
if [ "$ALG" != HS256 ]; then
  "$BIN" keygen --alg "$ALG" --config "$work/keygate.toml" >/dev/null 2>&1
  sed -i "s/^algorithm = \"HS256\"/algorithm = \"$ALG\"/" "$work/keygate.toml"
fi
echo 'bench-password-1' | "$BIN" user add bench --role user --config "$work/keygate.toml" 2>/dev/null
# Generous limits: the load below is all valid credentials from one address.
if [ -n "$STORE_URL" ]; then export KEYGATE_STORE_URL=$STORE_URL; fi
KEYGATE_SERVER_LISTEN=127.0.0.1:$KG_PORT KEYGATE_LIMITS_FAILED_ATTEMPTS=1000000 RUST_LOG=warn \
  "$BIN" serve --config "$work/keygate.toml" >"$work/kg.out" 2>"$work/kg.err" &
kg_pid=$!
KEYGATE_SERVER_LISTEN=127.0.0.1:$KGQ_PORT KEYGATE_LIMITS_FAILED_ATTEMPTS=1000000 RUST_LOG=warn \
  KEYGATE_LIMITS_DEFAULT_RATE_LIMIT=3000000000/1h \
  "$BIN" serve --config "$work/keygate.toml" >"$work/kgq.out" 2>"$work/kgq.err" &
kgq_pid=$!
target/release/examples/baseline 127.0.0.1:$BASE_PORT >"$work/base.out" &
base_pid=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$KG_PORT/healthz" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$KGQ_PORT/healthz" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$BASE_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(curl -sf -X POST -H "X-API-Key: $key" "http://127.0.0.1:$KG_PORT/login" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

cat >"$work/password.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=bench&password=wrong-password"
LUA

cat >"$work/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-API-Key"] = "$key"
LUA

run() { # name url [wrk args...]
  local name=$1 url=$2; shift 2
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '| %-28s | %10s | %8s | %8s | %6s |\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION on $(nproc) cores, keygate signing with $ALG, store ${STORE_URL:-in memory}, $(date -u +%Y-%m-%d)"
echo "| endpoint                     |      req/s |      p50 |      p99 | non-2xx |"
echo "|------------------------------|-----------:|---------:|---------:|-------:|"
run "baseline GET /verify"       "http://127.0.0.1:$BASE_PORT/verify" -H "Authorization: Bearer $token"
run "keygate GET /verify"        "http://127.0.0.1:$KG_PORT/verify"   -H "Authorization: Bearer $token"
run "keygate GET /verify (quota)" "http://127.0.0.1:$KGQ_PORT/verify"  -H "Authorization: Bearer $token"
run "keygate GET /verify?role="  "http://127.0.0.1:$KG_PORT/verify?role=service" -H "Authorization: Bearer $token"
run "baseline POST /login"       "http://127.0.0.1:$BASE_PORT/login"  -s "$work/login.lua"
run "keygate POST /login"        "http://127.0.0.1:$KG_PORT/login"    -s "$work/login.lua"
run "keygate GET /healthz"       "http://127.0.0.1:$KG_PORT/healthz"
# A password-guessing flood (argon2id on the bounded pool) in the background, and /verify
# measured while it runs: the hashing must not starve token verification.
wrk -t1 -c64 -d"$DURATION" -s "$work/password.lua" "http://127.0.0.1:$KG_PORT/token" >"$work/flood.out" &
flood_pid=$!
sleep 1
run "keygate GET /verify (flood)" "http://127.0.0.1:$KG_PORT/verify" -H "Authorization: Bearer $token"
wait "$flood_pid"
printf 'password flood alongside: %s req/s answered (400 invalid_grant, 503 when the hashing queue is full)\n' \
  "$(awk '/Requests\/sec/ {print $2}' "$work/flood.out")"
