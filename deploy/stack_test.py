"""The compose stack, run without containers: deploy/nginx.conf in a real nginx, two real
`keygate serve` replicas with the compose file's settings sharing a real redis-server, and
an echo server in the place of the demo API (traefik/whoami in compose.yaml).

What containers would provide is provided on loopback addresses: each service gets its own
127.0.0.x, and a small DNS responder on 127.0.0.11:53 (where Docker's embedded DNS answers,
as nginx.conf's `resolver` expects) answers `keygate` with both replicas, as Docker's does
for a scaled service. nginx.conf is used as written, except that it listens on its own
loopback address instead of every address and keeps its pid file in a temporary folder.

Usage: python deploy/stack_test.py path/to/keygate   (as root: port 53; run by check.sh)
"""

import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import requests
import yaml

KEYGATE = os.path.abspath(sys.argv[1])
DEPLOY = os.path.dirname(os.path.abspath(__file__))
REPLICAS = ["127.0.0.21", "127.0.0.22"]
ORDERS = "127.0.0.23"
NGINX = "127.0.0.24"
REDIS = "127.0.0.25"
DNS = "127.0.0.11"
NAMES = {b"keygate": REPLICAS, b"orders": [ORDERS], b"redis": [REDIS]}

processes = []


def dns_responder(sock):
    """Answers A queries for NAMES; anything else is NXDOMAIN (or empty for AAAA)."""
    while True:
        try:
            query, peer = sock.recvfrom(512)
        except OSError:
            return
        ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
        labels, i = [], 12
        while query[i]:
            labels.append(query[i + 1 : i + 1 + query[i]])
            i += 1 + query[i]
        qtype, _qclass = struct.unpack("!HH", query[i + 1 : i + 5])
        question = query[12 : i + 5]
        name = b".".join(labels).lower()
        addresses = NAMES.get(name)
        rcode = 0 if addresses is not None else 3
        answers = addresses if (addresses and qtype == 1) else []
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, qdcount, len(answers), 0, 0)
        body = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, 10, 4) + socket.inet_aton(a) for a in answers
        )
        sock.sendto(header + question + body, peer)


class Echo(http.server.BaseHTTPRequestHandler):
    """The API behind nginx: answers with the headers it received, as whoami does."""

    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_for(what, check, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.1)
    sys.exit(f"{what}: not within {seconds} s")


def expect(what, actual, expected):
    if actual != expected:
        sys.exit(f"{what}: expected {expected!r}, got {actual!r}")
    print(f"ok  {what}")


def main():
    work = tempfile.mkdtemp()
    try:
        run(work)
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def run(work):
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((DNS, 53))
    threading.Thread(target=dns_responder, args=(dns,), daemon=True).start()
    echo = http.server.ThreadingHTTPServer((ORDERS, 80), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()

    processes.append(
        subprocess.Popen(
            ["redis-server", "--bind", REDIS, "--port", "6379", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
    )
    wait_for("redis", lambda: socket.create_connection((REDIS, 6379), timeout=1).close() or True)

    # The configuration both replicas read, as compose.yaml's secret; a second client whose
    # role nginx.conf's /verify?role=service refuses.
    config = os.path.join(work, "keygate.toml")
    out = subprocess.run([KEYGATE, "init", "--config", config], capture_output=True, text=True, check=True)
    key = out.stdout.strip().splitlines()[-1]
    batch = subprocess.run(
        [KEYGATE, "key", "add", "batch", "--role", "batch", "--config", config],
        capture_output=True, text=True, check=True,
    ).stdout.strip()

    compose = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    env = dict(os.environ)
    env.update({k: str(v) for k, v in compose["services"]["keygate"]["environment"].items()})
    env.update({
        "KEYGATE_CONFIG": config,
        # Names and addresses compose would give; keygate resolves hosts through the
        # system, which does not ask the responder above.
        "KEYGATE_STORE_URL": f"redis://{REDIS}:6379",
        # nginx reaches the replicas from 127.0.0.1 here (its compose address is fixed).
        "KEYGATE_SERVER_TRUSTED_PROXIES": '["127.0.0.1"]',
        "KEYGATE_LOG_FORMAT": "json",
        "RUST_LOG": "debug",
    })
    logs = []
    for address in REPLICAS:
        log = open(os.path.join(work, f"keygate-{address}.log"), "w+")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [KEYGATE, "serve"],
                env={**env, "KEYGATE_SERVER_LISTEN": f"{address}:8080"},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
        wait_for(f"keygate on {address}", lambda a=address: requests.get(f"http://{a}:8080/readyz", timeout=1).status_code == 200)

    conf = open(os.path.join(DEPLOY, "nginx.conf")).read()
    for line in ("listen 8080;", "pid /tmp/nginx.pid;"):
        if conf.count(line) != 1:
            sys.exit(f"nginx.conf: expected one `{line}`")
    os.makedirs(os.path.join(work, "nginx"))
    conf_path = os.path.join(work, "nginx", "nginx.conf")
    conf = conf.replace("listen 8080;", f"listen {NGINX}:8080;")
    conf = conf.replace("pid /tmp/nginx.pid;", f"pid {work}/nginx/nginx.pid;")
    open(conf_path, "w").write(conf)
    processes.append(
        subprocess.Popen(
            ["nginx", "-p", os.path.join(work, "nginx"), "-c", conf_path, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    base = f"http://{NGINX}:8080"
    wait_for("nginx", lambda: requests.get(f"{base}/healthz", timeout=1).status_code == 200)

    r = requests.post(f"{base}/login", headers={"X-API-Key": key, "X-Request-Id": "stack-login-1"})
    expect("login through nginx", r.status_code, 200)
    expect("the caller's request id comes back", r.headers.get("X-Request-Id"), "stack-login-1")
    token = r.json()["access_token"]
    claims = json.loads(subprocess.run([KEYGATE, "token", "decode", token], capture_output=True, text=True, check=True).stdout)["claims"]
    expect("issuer is the public URL from compose.yaml", claims["iss"], env["KEYGATE_SERVER_PUBLIC_URL"])

    r = requests.get(f"{base}/orders/list")
    expect("no token: 401 from keygate, passed on by nginx", r.status_code, 401)

    r = requests.get(
        f"{base}/orders/list",
        headers={"Authorization": f"Bearer {token}", "X-Auth-Subject": "admin", "X-Request-Id": "stack-orders-1"},
    )
    expect("a service token reaches the API", r.status_code, 200)
    seen = r.json()
    expect("the API sees keygate's subject, not the client's", seen["headers"].get("X-Auth-Subject"), "my-service")
    expect("the API sees the role", seen["headers"].get("X-Auth-Role"), "service")
    expect("the API sees the request id", seen["headers"].get("X-Request-Id"), "stack-orders-1")
    expect("the path is passed on", seen["path"], "/orders/list")

    batch_token = requests.post(f"{base}/login", headers={"X-API-Key": batch}).json()["access_token"]
    r = requests.get(f"{base}/orders/list", headers={"Authorization": f"Bearer {batch_token}"})
    expect("a role nginx.conf does not admit: 403", r.status_code, 403)

    # nginx made its own id where the client sent none; keygate logged it.
    r = requests.get(f"{base}/orders/list", headers={"Authorization": f"Bearer {token}"})
    made = r.json()["headers"].get("X-Request-Id", "")
    expect("nginx's own request id is 32 hex digits", (len(made), all(c in "0123456789abcdef" for c in made)), (32, True))

    for _ in range(20):
        requests.get(f"{base}/orders/list", headers={"Authorization": f"Bearer {token}"})
    served, ids = [], set()
    for log in logs:
        log.seek(0)
        lines = [json.loads(line) for line in log if line.strip()]
        served.append(sum(1 for l in lines if l.get("message") == "request finished" and l.get("route") == "/verify"))
        ids |= {l.get("span", {}).get("request_id") for l in lines}
    expect("keygate logged nginx's request id", made in ids, True)
    expect("both replicas answered /verify", all(n > 0 for n in served), True)

    r = requests.post(f"{base}/logout", headers={"Authorization": f"Bearer {token}"})
    expect("logout through nginx", r.status_code, 204)
    refused = [
        requests.get(f"{base}/orders/list", headers={"Authorization": f"Bearer {token}"}).status_code
        for _ in range(10)
    ]
    expect("a logout on one replica holds on both (Redis)", set(refused), {401})
    print(f"stack test passed: /verify answered {served[0]} and {served[1]} times by the two replicas")


if __name__ == "__main__":
    main()
