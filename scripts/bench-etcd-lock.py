#!/usr/bin/env python3
"""etcd's own blocking lock under the load of `lockstep bench --contended --acquire`, for
README's comparison (issue 12 §5): 16 clients take one lock in turn, each holding it only long
enough to release it, then asking again.

usage: scripts/bench-etcd-lock.py

Needs `etcd` on PATH (Debian: `apt-get install etcd-server`); it is not a dependency of
lockstep, only of this comparison. Environment (all optional):
  ETCD=etcd  BASE_PORT=7951 (clients on BASE_PORT..+2, peers on BASE_PORT+10..+12)
  ROUNDS=3 DURATION=10 CLIENTS=16
  OUT=/tmp/bench-etcd-<time>.jsonl   raw results, one JSON line per run

Every run starts its own three-member etcd cluster on loopback (data in a temporary directory,
fsync on, as etcd ships), and removes it after. Each client holds a lease and one keep-alive
HTTP connection to one member (spread over the three, as lockstep's bench spreads its clients),
and loops on etcd's lock service through its JSON gateway: `POST /v3/lock/lock` (which blocks
until the lock is the client's: etcd's election-ordered mutex, the one `etcdctl lock` and the Go
client's `concurrency.Mutex` use) then `POST /v3/lock/unlock`. Records hand-offs/s, the most
hand-offs any lock call waited through (grants seen between sending it and its grant, counted
as lockstep's bench counts them), and the three members' CPU per hand-off (from /proc).
"""

import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time

ETCD = os.environ.get("ETCD", "etcd")
BASE = int(os.environ.get("BASE_PORT", "7951"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = float(os.environ.get("DURATION", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
OUT = os.environ.get("OUT", f"/tmp/bench-etcd-{time.strftime('%H%M%S')}.jsonl")
HZ = os.sysconf("SC_CLK_TCK")
LOCK = base64.b64encode(b"bench").decode()


def cpu_seconds(pid):
    """User plus system CPU of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def start_cluster(directory):
    """Three etcd members on loopback; returns their processes once all answer /health."""
    members = [(f"m{i}", BASE + i, BASE + 10 + i) for i in range(3)]
    initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    processes = []
    for name, client, peer in members:
        command = [
            ETCD, "--name", name, "--data-dir", os.path.join(directory, name),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "lockstep-bench", "--log-level", "error",
        ]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    deadline = time.time() + 30
    for _, client, _ in members:
        while True:
            try:
                if json.loads(post(http.client.HTTPConnection("127.0.0.1", client, timeout=2),
                                   "/v3/kv/range", {"key": LOCK})) is not None:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("etcd did not start within 30 s")
            time.sleep(0.2)
    return processes, [client for _, client, _ in members]


def post(connection, path, body):
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read()
    if response.status != 200:
        raise OSError(f"{path}: HTTP {response.status}: {text[:200]!r}")
    return text


class Shared:
    """What the clients count together: grants in order, and each call's wait."""

    def __init__(self):
        self.lock = threading.Lock()
        self.grants = 0
        self.waited = []
        self.errors = 0
        self.measuring = False
        self.stop = False


def client_loop(port, shared):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lease = json.loads(post(connection, "/v3/lease/grant", {"TTL": 60}))["ID"]
    while not shared.stop:
        with shared.lock:
            grants_before = shared.grants
        try:
            key = json.loads(post(connection, "/v3/lock/lock", {"name": LOCK, "lease": lease}))["key"]
            with shared.lock:
                if shared.measuring:
                    shared.waited.append(shared.grants - grants_before)
                shared.grants += 1
            post(connection, "/v3/lock/unlock", {"key": key})
        except (OSError, KeyError, ValueError, http.client.HTTPException):
            with shared.lock:
                shared.errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def one_run(round_number):
    directory = tempfile.mkdtemp(prefix="bench-etcd-")
    processes, ports = start_cluster(directory)
    try:
        shared = Shared()
        threads = [threading.Thread(target=client_loop, args=(ports[i % 3], shared), daemon=True)
                   for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # warm-up: leases granted, the line formed
        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        with shared.lock:
            start_grants, shared.measuring = shared.grants, True
        started = time.time()
        time.sleep(DURATION)
        with shared.lock:
            end_grants, shared.measuring = shared.grants, False
        elapsed = time.time() - started
        cpu_after = sum(cpu_seconds(p.pid) for p in processes)
        shared.stop = True
        handoffs = end_grants - start_grants
        waited = sorted(shared.waited)
        return {
            "round": round_number,
            "load": open("/proc/loadavg").read().split()[0],
            "handoffs_per_second": handoffs / elapsed,
            "waited_max": waited[-1] if waited else None,
            "waited_p99": waited[int(len(waited) * 0.99)] if waited else None,
            "waited_p50": waited[len(waited) // 2] if waited else None,
            "servers_us_per_handoff": (cpu_after - cpu_before) / handoffs * 1e6 if handoffs else None,
            "errors": shared.errors,
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main():
    version = subprocess.run([ETCD, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} {version}, load "
          f"{open('/proc/loadavg').read().split()[0]}, {CLIENTS} clients, {DURATION:g} s runs")
    results = []
    with open(OUT, "w") as out:
        for round_number in range(1, ROUNDS + 1):
            result = one_run(round_number)
            results.append(result)
            out.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
    rates = [r["handoffs_per_second"] for r in results]
    cpu = [r["servers_us_per_handoff"] for r in results if r["servers_us_per_handoff"]]
    print(f"etcd lock: hand-offs/s {min(rates):.0f} to {max(rates):.0f}, median "
          f"{statistics.median(rates):.0f} ({len(rates)} runs); servers' CPU per hand-off median "
          f"{statistics.median(cpu):.0f} us; most hand-offs waited through "
          f"{max(r['waited_max'] or 0 for r in results)}; raw: {OUT}")


if __name__ == "__main__":
    main()
