#!/usr/bin/env python3
"""The directory's costs with N principals in SQLite (docs/directory.md), keygate as
`keygate init --directory sqlite` writes it, default logging:

- filling N clients straight into the database (the bench's set-up, not a keygate cost);
- CLI `key add` and `key revoke` on the full directory, process start included;
- `keygate serve` start-up until /readyz answers 200, and its RSS then and after load;
- admin API calls (create, get, patch, list a page, revoke), one at a time, p50/p99;
- /login rate with a key of the directory against a key of the file, wrk, alternating.

    bench/directory.py BIN [N]      # bench/directory.sh builds BIN and runs this
"""
import hashlib
import http.client
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
PORT = int(os.environ.get("PORT", "18580"))
DURATION = os.environ.get("DURATION", "10s")
CONNECTIONS = os.environ.get("CONNECTIONS", "32")


def key_of(cid: str, i: int) -> str:
    """A generated-style key (kg_<id>_<64 hex><crc32>) without the RNG: reproducible."""
    body = f"kg_{cid}_" + hashlib.sha256(f"secret-{i}".encode()).hexdigest()
    return body + f"{zlib.crc32(body.encode()) & 0xffffffff:08x}"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(s):
    return f"{s * 1000:.1f} ms"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cli(config, *args):
    started = time.perf_counter()
    out = subprocess.run([BIN, *args, "--config", config], capture_output=True, text=True)
    took = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"keygate {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return took, out.stdout


def fill(db, n):
    now_ms = int(time.time() * 1000)
    con = sqlite3.connect(db)
    rows = (
        (f"client-{i}", "client", "service", "orders:read",
         "sha256:" + hashlib.sha256(key_of(f"client-{i}", i).encode()).hexdigest(), now_ms)
        for i in range(n)
    )
    with con:
        con.executemany(
            "INSERT INTO keygate_principals (id, kind, role, scopes, hash, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    con.close()


class Api:
    def __init__(self, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", PORT)
        self.token = token

    def call(self, method, path, body=None, expect=200):
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        took = time.perf_counter() - started
        if r.status != expect:
            sys.exit(f"{method} {path}: {r.status} {payload[:200]!r}")
        return took, payload


def wrk_login(key):
    script = os.path.join(work, "login.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.headers["X-API-Key"] = "{key}"\n')
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}", "-s", script,
         f"http://127.0.0.1:{PORT}/login"],
        capture_output=True, text=True, check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        sys.exit(f"/login answered {non2xx.group(1)} non-2xx during the run:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


work = tempfile.mkdtemp(prefix="kg-directory-bench-")
config = os.path.join(work, "keygate.toml")
out = subprocess.run([BIN, "init", "--directory", "sqlite", "--config", config],
                     capture_output=True, text=True, check=True).stdout
file_key = out.strip().splitlines()[-1]
results = []

started = time.perf_counter()
fill(os.path.join(work, "keygate.db"), N)
results.append(("set-up: " + f"{N:,} clients written to SQLite", ms(time.perf_counter() - started)))
dir_key = key_of(f"client-{N - 1}", N - 1)

adds = [cli(config, "key", "add", f"bench-{i}", "--role", "service")[0] for i in range(20)]
revokes = [cli(config, "key", "revoke", f"client-{i}")[0] for i in range(20)]
results.append(("CLI `key add` (20 runs): median / max", f"{ms(statistics.median(adds))} / {ms(max(adds))}"))
results.append(("CLI `key revoke` (20 runs): median / max", f"{ms(statistics.median(revokes))} / {ms(max(revokes))}"))
_, ops_out = cli(config, "key", "add", "ops", "--role", "operator", "--scope", "keygate:admin")
ops_key = ops_out.strip()

env = dict(os.environ, KEYGATE_SERVER_LISTEN=f"127.0.0.1:{PORT}",
           KEYGATE_LIMITS_FAILED_ATTEMPTS="1000000")
env.pop("RUST_LOG", None)
started = time.perf_counter()
server = subprocess.Popen([BIN, "serve", "--config", config], env=env,
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.err"), "w"))
try:
    while True:
        if server.poll() is not None:
            sys.exit(f"keygate serve exited {server.returncode}: {open(os.path.join(work, 'serve.err')).read()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.02)
    startup = time.perf_counter() - started
    rss, _ = rss_kib(server.pid)
    results.append((f"start-up until /readyz 200 ({N:,} + 41 principals)", ms(startup)))
    results.append(("RSS after start-up", f"{rss / 1024:.0f} MiB"))

    c = http.client.HTTPConnection("127.0.0.1", PORT)
    c.request("POST", "/login", headers={"X-API-Key": ops_key})
    r = c.getresponse()
    token = json.loads(r.read())["access_token"]
    api = Api(token)
    calls = {"create": [], "get": [], "patch": [], "list (100)": [], "revoke": []}
    for i in range(200):
        calls["create"].append(api.call("POST", "/admin/v1/clients",
                                        {"id": f"api-{i}", "role": "service"}, expect=201)[0])
        calls["get"].append(api.call("GET", f"/admin/v1/clients/client-{1000 + i * 997}")[0])
        calls["patch"].append(api.call("PATCH", f"/admin/v1/clients/client-{2000 + i * 991}",
                                       {"metadata": {"plan": "pro"}})[0])
        calls["list (100)"].append(api.call("GET", f"/admin/v1/clients?limit=100&after=client-{i * 4999}")[0])
        calls["revoke"].append(api.call("POST", f"/admin/v1/clients/client-{3000 + i * 983}/revoke")[0])
    every = [t for ts in calls.values() for t in ts]
    for name, ts in calls.items():
        results.append((f"admin API {name} (200 calls): p50 / p99", f"{ms(pct(ts, 50))} / {ms(pct(ts, 99))}"))
    results.append(("admin API, all 1 000 calls: p50 / p99 / max", f"{ms(pct(every, 50))} / {ms(pct(every, 99))} / {ms(max(every))}"))

    file_rates, dir_rates = [], []
    for _ in range(2):
        file_rates.append(wrk_login(file_key))
        dir_rates.append(wrk_login(dir_key))
    best_file, best_dir = max(file_rates), max(dir_rates)
    results.append(("/login req/s, a key of the file (best of 2)", f"{best_file:,.0f}"))
    results.append(("/login req/s, a key of the directory (best of 2)", f"{best_dir:,.0f}"))
    results.append(("directory / file", f"{best_dir / best_file:.3f}"))
    rss, hwm = rss_kib(server.pid)
    results.append(("RSS after the load (peak)", f"{rss / 1024:.0f} MiB ({hwm / 1024:.0f} MiB)"))
finally:
    server.terminate()
    server.wait()

print(f"\n| {N:,} principals in SQLite | |\n|---|---|")
for name, value in results:
    print(f"| {name} | {value} |")
subprocess.run(["rm", "-rf", work])
