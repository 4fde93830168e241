#!/usr/bin/env bash
# What traces cost /verify: keygate as `keygate init` configures it (default logging) with
# [telemetry] off, on with sample_ratio 0 (every span made, none recorded: the cost of being
# ready to join a caller's trace), and on with sample_ratio 1 (every request a span, exported
# over OTLP/HTTP to a local receiver that accepts and discards). One binary, servers on core
# $SERVER_CPU one at a time, wrk on core $LOAD_CPU, rounds alternating.
#
#   bench/telemetry.sh                # prints a table; ROUNDS=5 DURATION=10s to tune
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=18590 SINK_PORT=18591
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p keygate-cli --bin keygate
BIN=target/release/keygate
. bench/lib.sh

# The receiver: answers every OTLP/HTTP export 200 with an empty protobuf body.
python3 - "$SINK_PORT" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
pids+=($!)

"$BIN" init --config "$work/keygate.toml" >"$work/init.out"
key=$(grep -o 'kg_[A-Za-z0-9_-]*' "$work/init.out" | head -n1)

# serve MODE: off | ratio0 | ratio1; prints the server's pid
serve() {
  local cfg="$work/$1.toml"
  cp "$work/keygate.toml" "$cfg"
  case $1 in
    ratio0) printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 0.0\n' "$SINK_PORT" >>"$cfg" ;;
    ratio1) printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 1.0\n' "$SINK_PORT" >>"$cfg" ;;
  esac
  env -u RUST_LOG KEYGATE_SERVER_LISTEN=127.0.0.1:$PORT \
    taskset -c "$SERVER_CPU" "$BIN" serve --config "$cfg" >"$work/$1.out" 2>&1 &
  echo $!
}

declare -A RPS
for round in $(seq "$ROUNDS"); do
  for mode in off ratio0 ratio1; do
    pid=$(serve "$mode")
    wait_up "http://127.0.0.1:$PORT/healthz"
    token=$(curl -s -X POST -H "X-API-Key: $key" "http://127.0.0.1:$PORT/login" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/verify")
    if grep -q 'Non-2xx' <<<"$out"; then echo "$mode answered non-2xx" >&2; echo "$out" >&2; exit 1; fi
    RPS[$mode]="${RPS[$mode]:-} $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
off=$(median "${RPS[off]}"); r0=$(median "${RPS[ratio0]}"); r1=$(median "${RPS[ratio1]}")
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU, median of $ROUNDS alternating rounds, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| GET /verify | req/s | against off |"
echo "|---|---:|---:|"
awk -v o="$off" 'BEGIN { printf "| [telemetry] off | %d | 1.00× |\n", o }'
awk -v o="$off" -v r="$r0" 'BEGIN { printf "| on, sample_ratio = 0 | %d | %.2f× |\n", r, r/o }'
awk -v o="$off" -v r="$r1" 'BEGIN { printf "| on, sample_ratio = 1 (every request exported) | %d | %.2f× |\n", r, r/o }'
