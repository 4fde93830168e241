#!/usr/bin/env python3
"""Start-up time and memory of `keygate serve` on a configuration (bench/many-clients.py
makes one), and with RELOAD_SECONDS the latency of /verify while the file is reloaded.

    bench/startup-memory.py BIN CONFIG.toml KEYS.txt [RELOAD_SECONDS]

KEYS.txt is what many-clients.py printed (a `kg_` key, then a hand-made one). Prints the
time from exec to the first 200 from /healthz, VmRSS and VmHWM (/proc/PID/status) then,
one login with each key, and, with a reload: /verify latency on one keep-alive connection
for a second before SIGHUP and for RELOAD_SECONDS after it, and the memory afterwards.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

binary, config, keys = sys.argv[1:4]
reload_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else None


def memory(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return f"VmRSS {fields['VmRSS']:.1f} MiB, VmHWM {fields['VmHWM']:.1f} MiB"


def percentiles(name, seconds):
    s = sorted(seconds)
    at = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000
    print(f"{name}: {len(s)} requests, p50 {at(.5):.2f} ms, p99 {at(.99):.2f} ms, max {s[-1] * 1000:.1f} ms")


started = time.monotonic()
server = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
try:
    host = next(line for line in server.stdout if "listening on" in line).split("//")[1].strip()
    while True:
        try:
            c = http.client.HTTPConnection(host)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.01)
    print(f"start-up to /healthz: {time.monotonic() - started:.2f} s; {memory(server.pid)}")
    token = None
    for key in open(keys).read().split():
        c = http.client.HTTPConnection(host)
        c.request("POST", "/login", headers={"X-API-Key": key})
        r = c.getresponse()
        print(f"/login with {key[:3]}…: {r.status}")
        token = json.loads(r.read())["access_token"]
    if reload_seconds:
        latencies, stop = [], threading.Event()

        def ask():
            c = http.client.HTTPConnection(host)
            while not stop.is_set():
                sent = time.monotonic()
                c.request("GET", "/verify", headers={"Authorization": f"Bearer {token}"})
                r = c.getresponse()
                r.read()
                latencies.append(time.monotonic() - sent)
                assert r.status == 200, r.status

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(1)
        before = len(latencies)
        os.kill(server.pid, signal.SIGHUP)
        time.sleep(reload_seconds)
        stop.set()
        asker.join()
        percentiles("/verify before the reload", latencies[:before])
        percentiles("/verify during the reload", latencies[before:])
        print(f"after the reload: {memory(server.pid)}")
finally:
    server.send_signal(signal.SIGTERM)
    server.wait()
