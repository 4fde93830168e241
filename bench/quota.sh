#!/usr/bin/env bash
# What a quota costs /verify: keygate as `keygate init` configures it (default logging, its
# generated key), the token of its client counted against a quota it never reaches
# (`limits.default_rate_limit`, answers carrying the RateLimit fields) or not counted at all,
# with the counters in memory and in one local redis-server ([store] url). One release
# binary; each server on core $SERVER_CPU in turn, wrk and redis-server on core $LOAD_CPU;
# rounds alternate the four set-ups, and each round's counted/uncounted ratio is paired.
#
#   bench/quota.sh                    # prints a table; ROUNDS=9 DURATION=5s by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-9}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=18592 REDIS_PORT=18593
# Never reached in a run: 10^9 requests per 1000 s.
QUOTA="1000000000/1000s"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 2; }
cargo build --release -q -p keygate-cli --bin keygate
BIN=target/release/keygate
. bench/lib.sh

taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" >"$work/redis.out" 2>&1 &
pids+=($!)

"$BIN" init --config "$work/keygate.toml" >"$work/init.out"
key=$(grep -o 'kg_[A-Za-z0-9_-]*' "$work/init.out" | head -n1)

# serve MODE: memory | memory-quota | redis | redis-quota; prints the server's pid
serve() {
  local envs=(-u RUST_LOG KEYGATE_SERVER_LISTEN=127.0.0.1:$PORT)
  case $1 in
    memory-quota) envs+=(KEYGATE_LIMITS_DEFAULT_RATE_LIMIT=$QUOTA) ;;
    redis) envs+=(KEYGATE_STORE_URL=redis://127.0.0.1:$REDIS_PORT) ;;
    redis-quota) envs+=(KEYGATE_STORE_URL=redis://127.0.0.1:$REDIS_PORT KEYGATE_LIMITS_DEFAULT_RATE_LIMIT=$QUOTA) ;;
  esac
  env "${envs[@]}" taskset -c "$SERVER_CPU" "$BIN" serve --config "$work/keygate.toml" >"$work/$1.out" 2>&1 &
  echo $!
}

MODES="memory memory-quota redis redis-quota"
declare -A RPS
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    pid=$(serve "$mode")
    wait_up "http://127.0.0.1:$PORT/readyz"
    token=$(curl -s -X POST -H "X-API-Key: $key" "http://127.0.0.1:$PORT/login" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    headers=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/verify")
    case $mode in
      *-quota) grep -qi '^ratelimit:' <<<"$headers" || { echo "$mode: /verify was not counted" >&2; exit 1; } ;;
      *) ! grep -qi '^ratelimit:' <<<"$headers" || { echo "$mode: /verify was counted" >&2; exit 1; } ;;
    esac
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/verify")
    if grep -q 'Non-2xx' <<<"$out"; then echo "$mode answered non-2xx" >&2; echo "$out" >&2; exit 1; fi
    RPS[$mode]="${RPS[$mode]:-} $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
# The median of the rounds' paired ratios counted/uncounted.
paired() { paste <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) | awk '{print $2/$1}' | tr '\n' ' '; }
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, server on CPU $SERVER_CPU, wrk and redis-server on CPU $LOAD_CPU, $ROUNDS alternating rounds, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| GET /verify | uncounted req/s (median) | counted req/s (median) | paired median ratio |"
echo "|---|---:|---:|---:|"
for store in memory redis; do
  u=$(median "${RPS[$store]}"); c=$(median "${RPS[$store-quota]}")
  r=$(median "$(paired "${RPS[$store]}" "${RPS[$store-quota]}")")
  awk -v s="$store" -v u="$u" -v c="$c" -v r="$r" 'BEGIN { printf "| counters in %s | %d | %d | %.2f× |\n", s, u, c, r }'
done
