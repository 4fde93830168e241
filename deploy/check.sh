#!/usr/bin/env bash
# Checks deploy/ on a machine with neither a container runtime nor systemd running (CI):
#   the systemd unit: `systemd-analyze verify` (any warning fails), its exposure score, and
#     that its system-call filter allows every call keygate makes (traced with strace while
#     it serves logins, password grants, verifications, logouts into Redis, metrics and
#     reloads);
#   the Dockerfile: hadolint, and its build context alone resolves as a workspace;
#   the compose file: `docker-compose config` (schema and interpolation), and every file it
#     names exists once `keygate init` has written keygate.toml;
#   the Prometheus rules: `promtool check rules` and their unit tests (`promtool test rules`);
#   nginx.conf: `nginx -t`, then the stack itself: nginx.conf in a real nginx in front of
#     two real replicas sharing a real Redis, each on its own loopback address
#     (deploy/stack_test.py; needs root for the DNS port 53 that nginx.conf's resolver uses).
# Usage: deploy/check.sh [path/to/keygate]   (default target/debug/keygate)
set -euo pipefail
cd "$(dirname "$0")/.."
keygate=$(realpath "${1:-target/debug/keygate}")
hadolint=${HADOLINT:-.venv/bin/hadolint}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
server=
redis=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  if [ -n "$redis" ]; then kill "$redis" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- systemd: systemd-analyze verify deploy/keygate.service"
# verify demands that ExecStart= exists: point it at the binary under test.
sed "s#/usr/local/bin/keygate#$keygate#" deploy/keygate.service > "$work/keygate.service"
out=$(systemd-analyze verify --man=no "$work/keygate.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi

echo "-- systemd: exposure (0 = locked down, 10 = none); at most 1.5"
systemd-analyze security --offline=true --threshold=15 "$work/keygate.service" | tail -n 1

echo "-- systemd: SystemCallFilter= allows every system call keygate makes"
expand() { # a syscall group, nested groups expanded
  systemd-analyze syscall-filter "$1" | sed 1d | grep -v '^ *#' | tr -d ' ' | grep -v '^$' |
    while read -r x; do case "$x" in @*) expand "$x" ;; *) echo "$x" ;; esac; done
}
expand @system-service | sort -u > "$work/allowed"
{ expand @privileged; expand @resources; } | sort -u | grep -vx setpriority > "$work/denied"
grep -q '^SystemCallFilter=@system-service$' deploy/keygate.service
grep -q '^SystemCallFilter=~@privileged @resources$' deploy/keygate.service
grep -q '^SystemCallFilter=setpriority$' deploy/keygate.service
mkdir "$work/run"
(cd "$work/run" && "$keygate" init --config keygate.toml | tail -n 1 > key)
echo 'a long passphrase' | "$keygate" user add alice --role admin --config "$work/run/keygate.toml" 2>/dev/null
# With a Redis store, reached by host name, as a replica would: its calls count too.
redis_port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no > /dev/null &
redis=$!
(cd "$work/run" && KEYGATE_SERVER_LISTEN=127.0.0.1:0 KEYGATE_LOG_FORMAT=json \
  KEYGATE_STORE_URL="redis://localhost:$redis_port" \
  exec strace -f -qq -o "$work/trace" "$keygate" serve --config keygate.toml > stdout 2> stderr) &
server=$!
# In JSON mode the address comes as a log line: {"message":"keygate listening","url":…}.
for _ in $(seq 100); do grep -q '"keygate listening"' "$work/run/stderr" 2>/dev/null && break; sleep 0.1; done
base=$(grep '"keygate listening"' "$work/run/stderr" | "$python" -c 'import json,sys; print(json.loads(sys.stdin.readline())["url"])') ||
  { cat "$work/run/stderr"; exit 1; }
key=$(tr -d ' ' < "$work/run/key")
token=$(curl -sf -X POST -H "X-API-Key: $key" "$base/login" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sf -X POST "$base/token" -d grant_type=password -d username=alice -d 'password=a long passphrase' > /dev/null
curl -sf -H "Authorization: Bearer $token" "$base/verify" > /dev/null
curl -sf -X POST -H "Authorization: Bearer $token" "$base/logout" > /dev/null
curl -sf "$base/metrics" > /dev/null
echo '# touched' >> "$work/run/keygate.toml"
sleep 1.5
pid=$(pgrep -P "$server" -x keygate || echo "$server")
kill -HUP "$pid"; sleep 0.5; kill -TERM "$pid"
wait "$server" || true
server=
kill "$redis"; wait "$redis" || true
redis=
grep -q '"configuration reloaded"' "$work/run/stderr"
grep -q '"stopped"' "$work/run/stderr"
awk '$2 ~ /^[a-z_0-9]+\(/ { sub(/\(.*/, "", $2); print $2 }' "$work/trace" | sort -u > "$work/used"
missing=$(comm -23 "$work/used" "$work/allowed"; comm -12 "$work/used" "$work/denied")
if [ -n "$missing" ]; then echo "keygate calls what the unit forbids: $missing"; exit 1; fi
echo "$(wc -l < "$work/used") distinct system calls, all allowed"

echo "-- Dockerfile: hadolint deploy/Dockerfile"
"$hadolint" deploy/Dockerfile

echo "-- Dockerfile: its build context (Cargo.toml, Cargo.lock, crates/, xtask/) is a whole workspace"
grep -qx '!Cargo.toml' deploy/Dockerfile.dockerignore
grep -qx '!Cargo.lock' deploy/Dockerfile.dockerignore
grep -qx '!crates/' deploy/Dockerfile.dockerignore
grep -qx '!xtask/' deploy/Dockerfile.dockerignore
mkdir "$work/context"
cp Cargo.toml Cargo.lock "$work/context/"
tar -C . --exclude='crates/*/target' -cf - crates xtask | tar -C "$work/context" -xf -
# --locked: the committed lock file resolves as it is, as `cargo build --locked` will;
# the platform filter: offline, only the crates this (and the image's) platform uses exist.
(cd "$work/context" && cargo metadata --locked --offline --format-version 1 \
  --filter-platform x86_64-unknown-linux-gnu > /dev/null)

echo "-- compose: docker-compose config, and every file it names"
cp -r deploy "$work/deploy"
"$keygate" init --config "$work/deploy/keygate.toml" > /dev/null
(cd "$work/deploy" && docker-compose -f compose.yaml config -q)
"$python" - "$work/deploy" <<'PY'
import os, sys, yaml
deploy = sys.argv[1]
repo = os.getcwd()
compose = yaml.safe_load(open(os.path.join(deploy, "compose.yaml")))
def here(p):  # relative to the compose file, as compose reads it; ".." is the repository
    path = os.path.normpath(os.path.join(deploy, p))
    return path.replace(os.path.normpath(os.path.join(deploy, "..")), repo, 1) if p.startswith("..") else path
named = []
for name, s in compose["services"].items():
    if "build" in s:
        context = here(s["build"]["context"])
        named += [context, os.path.join(context, s["build"]["dockerfile"])]
        named.append(os.path.join(context, s["build"]["dockerfile"] + ".dockerignore"))
    for v in s.get("volumes", []):
        named.append(here(v.split(":")[0]))
for name, s in compose.get("secrets", {}).items():
    named.append(here(s["file"]))
missing = [p for p in named if not os.path.exists(p)]
if missing:
    sys.exit(f"compose.yaml names missing files: {missing}")
print(f"{len(named)} files named, all present")
PY

echo "-- prometheus: promtool check rules, promtool test rules"
promtool check rules deploy/prometheus/keygate.rules.yml
(cd deploy/prometheus && promtool test rules keygate.rules.test.yml)

echo "-- nginx: nginx -t -c deploy/nginx.conf"
mkdir "$work/nginx"
nginx -t -q -p "$work/nginx" -c "$PWD/deploy/nginx.conf"

echo "-- the compose stack without containers: nginx.conf, two replicas, redis (deploy/stack_test.py)"
"$python" deploy/stack_test.py "$keygate"
echo "deploy checks passed"
