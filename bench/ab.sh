#!/usr/bin/env bash
# A/B HTTP load, in one run, same pinning: keygate as `keygate init` configures it (its
# generated key, default logging) against the bare stack it is built on
# (../shared/anchors/axum-jwt-baseline: axum + jsonwebtoken, HS256 + exp + role, nothing
# else) and the seed's FastAPI stack (../shared/anchors/fastapi-seed). Each server runs
# alone on core $SERVER_CPU, wrk on core $LOAD_CPU (a 2-core machine: the generator must
# not share the server's core). CPU per request is read from /proc/PID/stat.
#
#   bench/ab.sh                      # writes the table to stdout and into docs/benchmarks.md
#   DURATION=20s ROUNDS=3 bench/ab.sh
#
# Needs wrk (apt-get install wrk) and python3-venv for the FastAPI stack; every run is
# bounded by DURATION per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ANCHORS=${ANCHORS:-../shared/anchors}
KG_PORT=18580 BASE_PORT=18581 SEED_PORT=18582
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
[ -d "$ANCHORS/axum-jwt-baseline" ] || { echo "no anchors at $ANCHORS (set ANCHORS=)" >&2; exit 2; }
set -a; . "$ANCHORS/anchor_creds.env"; set +a

cargo build --release -q -p keygate-cli --bin keygate
cargo build --release -q --manifest-path "$ANCHORS/axum-jwt-baseline/Cargo.toml" --target-dir target
BIN=target/release/keygate
BASELINE=target/release/axum-jwt-baseline
if [ ! -x target/seed-venv/bin/uvicorn ]; then
  python3 -m venv target/seed-venv
  target/seed-venv/bin/pip install -q -r "$ANCHORS/fastapi-seed/requirements.txt"
fi

. bench/lib.sh


# keygate as a user runs it: the configuration `keygate init` writes, its generated `kg_`
# key in the default header, default logging (RUST_LOG unset: info), every check on
# (revocation list, iss/aud/typ/crit, metrics, attempt limits, request ids).
"$BIN" init --config "$work/keygate.toml" >"$work/init.out"
kg_key=$(grep -o 'kg_[A-Za-z0-9_-]*' "$work/init.out" | head -n1)
[ -n "$kg_key" ] || { echo "keygate init printed no key" >&2; exit 1; }
env -u RUST_LOG KEYGATE_SERVER_LISTEN=127.0.0.1:$KG_PORT \
  taskset -c "$SERVER_CPU" "$BIN" serve --config "$work/keygate.toml" >"$work/kg.out" 2>&1 &
pids+=($!); kg_pid=$!
ANCHOR_BIND=127.0.0.1:$BASE_PORT taskset -c "$SERVER_CPU" "$BASELINE" >"$work/base.out" 2>&1 &
pids+=($!); base_pid=$!
taskset -c "$SERVER_CPU" target/seed-venv/bin/uvicorn --app-dir "$ANCHORS/fastapi-seed" app:app \
  --port "$SEED_PORT" --loop uvloop --http httptools --log-level warning >"$work/seed.out" 2>&1 &
pids+=($!); seed_pid=$!
wait_up "http://127.0.0.1:$KG_PORT/healthz"; wait_up "http://127.0.0.1:$BASE_PORT/hello"; wait_up "http://127.0.0.1:$SEED_PORT/hello"

kg_token=$(token_of "http://127.0.0.1:$KG_PORT" "X-API-Key: $kg_key")
base_token=$(token_of "http://127.0.0.1:$BASE_PORT" "access_token: $ANCHOR_API_KEY")
seed_token=$(token_of "http://127.0.0.1:$SEED_PORT" "access_token: $ANCHOR_API_KEY")
cat >"$work/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["access_token"] = "$ANCHOR_API_KEY"
LUA
cat >"$work/kg_login.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-API-Key"] = "$kg_key"
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure PID URL [wrk args] -> "req/s cpu_us_per_request p99" (all the server's threads)
measure() {
  local pid=$1 url=$2; shift 2
  local before after out rps requests p99
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  # A refused request is not a served one: every answer of a measured run must be 2xx.
  if grep -q 'Non-2xx' <<<"$out"; then echo "$url answered non-2xx:" >&2; echo "$out" >&2; return 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local hz; hz=$(getconf CLK_TCK)
  awk -v r="$rps" -v n="$requests" -v t=$((after - before)) -v hz="$hz" -v p="$p99" \
    'BEGIN { printf "%.0f %.1f %s\n", r, (t / hz) * 1e6 / n, p }'
}

declare -A RPS CPU P99
add() { # key "rps cpu p99"; empty when measure refused the run
  [ -n "$2" ] || exit 1
  read -r r c p <<<"$2"
  RPS[$1]="${RPS[$1]:-} $r"; CPU[$1]="${CPU[$1]:-} $c"; P99[$1]="$p"
}
for round in $(seq "$ROUNDS"); do
  add kg_verify   "$(measure $kg_pid   "http://127.0.0.1:$KG_PORT/verify"      -H "Authorization: Bearer $kg_token")"
  add base_verify "$(measure $base_pid "http://127.0.0.1:$BASE_PORT/protected" -H "Authorization: Bearer $base_token")"
  add seed_verify "$(measure $seed_pid "http://127.0.0.1:$SEED_PORT/protected" -H "Authorization: Bearer $seed_token")"
  add kg_login    "$(measure $kg_pid   "http://127.0.0.1:$KG_PORT/login"       -s "$work/kg_login.lua")"
  add base_login  "$(measure $base_pid "http://127.0.0.1:$BASE_PORT/login"     -s "$work/login.lua")"
  add seed_login  "$(measure $seed_pid "http://127.0.0.1:$SEED_PORT/login"     -s "$work/login.lua")"
done
# /verify while 64 connections flood /token with wrong passwords (argon2id on the bounded
# hashing pool, which shares the server's core): verification must keep most of its rate.
echo 'bench-password-1' | "$BIN" user add bench --role user --config "$work/keygate.toml" >/dev/null 2>&1
sleep 1.5 # picked up by the running server
cat >"$work/password.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=bench&password=wrong-password"
LUA
taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" -s "$work/password.lua" "http://127.0.0.1:$KG_PORT/token" >"$work/flood.out" 2>&1 &
flood=$!
sleep 1
read -r flood_rps _ _ <<<"$(measure $kg_pid "http://127.0.0.1:$KG_PORT/verify" -H "Authorization: Bearer $kg_token")"
[ -n "$flood_rps" ] || exit 1
wait "$flood"

# Open loop: /verify at a fixed rate, half of keygate's peak, with oha (`cargo install oha`)
# when it is installed; latency corrected for coordinated omission.
open_loop=""
if command -v oha >/dev/null; then
  peak=$(tr ' ' '\n' <<<"${RPS[kg_verify]}" | grep . | sort -n | tail -n1)
  rate=$((peak / 2))
  open_loop=$(taskset -c "$LOAD_CPU" oha --no-tui --output-format json -z "$DURATION" -q "$rate" -c "$CONNECTIONS" \
      --latency-correction -H "Authorization: Bearer $kg_token" "http://127.0.0.1:$KG_PORT/verify" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.2f %.2f %.2f" % (p["p50"]*1e3, p["p99"]*1e3, p["p99.9"]*1e3))')
fi

# Both cores: the same server with two workers (taskset on both cores). wrk must share a
# core with it on this 2-core machine, so requests per second cannot show the scaling;
# the server's CPU per request can: were it unchanged with two workers, two cores would
# serve twice the requests. Scaling = 2 × (CPU per request on one core) / (on two).
env -u RUST_LOG KEYGATE_SERVER_LISTEN=127.0.0.1:$((KG_PORT + 10)) \
  taskset -c "$SERVER_CPU,$LOAD_CPU" "$BIN" serve --config "$work/keygate.toml" >"$work/kg2.out" 2>&1 &
pids+=($!); kg2_pid=$!
wait_up "http://127.0.0.1:$((KG_PORT + 10))/healthz"
read -r two_rps two_cpu _ <<<"$(measure $kg2_pid "http://127.0.0.1:$((KG_PORT + 10))/verify" -H "Authorization: Bearer $kg_token")"
[ -n "$two_cpu" ] || exit 1


table() {
  echo "wrk -t1 -c$CONNECTIONS -d$DURATION, server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU, median of $ROUNDS rounds, $(nproc) cores, $(date -u +%Y-%m-%d)"
  echo
  echo "| endpoint | keygate req/s | baseline req/s | ratio | keygate CPU µs/req | baseline CPU µs/req | CPU ratio | FastAPI seed req/s | keygate p99 |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for e in verify login; do
    local k b s kc bc
    k=$(median "${RPS[kg_$e]}"); b=$(median "${RPS[base_$e]}"); s=$(median "${RPS[seed_$e]}")
    kc=$(median "${CPU[kg_$e]}"); bc=$(median "${CPU[base_$e]}")
    local label; [ "$e" = verify ] && label="GET /verify vs /protected" || label="POST /login vs /login"
    awk -v l="$label" -v k="$k" -v b="$b" -v s="$s" -v kc="$kc" -v bc="$bc" -v p="${P99[kg_$e]}" \
      'BEGIN { printf "| %s | %d | %d | %.2f× | %.1f | %.1f | %.2f× | %d | %s |\n", l, k, b, k/b, kc, bc, kc/bc, s, p }'
  done
  echo
  if [ -n "$open_loop" ]; then
    read -r p50 p99 p999 <<<"$open_loop"
    echo "keygate GET /verify open loop at $rate req/s (half its peak, oha, latency-corrected): p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms"
    echo
  fi
  awk -v one="$(median "${CPU[kg_verify]}")" -v two="$two_cpu" -v r="$two_rps" \
    'BEGIN { printf "keygate GET /verify on both cores (two workers, wrk sharing a core): %.1f CPU µs/req against %.1f on one core: scaling %.2f× (%d req/s)\n\n", two, one, 2*one/two, r }'
  awk -v f="$flood_rps" -v i="$(median "${RPS[kg_verify]}")" \
    'BEGIN { printf "keygate GET /verify during a wrong-password flood on /token (64 connections): %d req/s, %.0f%% of its idle rate\n", f, 100*f/i }'
}
result=$(table)
echo "$result"
if [ "${WRITE_DOCS:-1}" = 1 ]; then
  python3 - "$result" <<'PY'
import re, sys
path = "docs/benchmarks.md"
text = open(path).read()
block = "<!-- ab:start -->\n" + sys.argv[1] + "\n<!-- ab:end -->"
if "<!-- ab:start -->" in text:
    text = re.sub(r"<!-- ab:start -->.*?<!-- ab:end -->", lambda _: block, text, flags=re.S)
else:
    text += "\n## A/B against the bare stack and the seed (bench/ab.sh)\n\n" + block + "\n"
open(path, "w").write(text)
PY
fi
