"""The fresh three-server cluster that the bench scripts (bench-acquire.py, bench-sessions.py)
run `lockstep bench` against: started with `lockstep cluster up`, stopped and deleted after."""

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def addresses(ports):
    return ",".join(f"127.0.0.1:{port}" for port in ports)


def wait_ports(ports, timeout_s=30):
    end = time.time() + timeout_s
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.time() > end:
                    raise SystemExit(f"127.0.0.1:{port} never listened")
                time.sleep(0.1)


def with_cluster(binary, base_port, bench_args, prefix):
    """Runs `bench bench_args --json` against a fresh cluster on client ports base_port..+2 and
    metrics ports base_port+100..+102; returns its JSON report (or the error and exit code)."""
    ports = [base_port, base_port + 1, base_port + 2]
    metrics = [port + 100 for port in ports]
    data = tempfile.mkdtemp(prefix=prefix)
    cluster = subprocess.Popen(
        [binary, "cluster", "up", "--servers", "3", "--dir", data,
         "--base-port", str(base_port), "--metrics-base-port", str(metrics[0])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ports(ports + metrics)
        time.sleep(1.5)  # a leader elected
        bench = subprocess.run(
            [binary, "bench", "--servers", addresses(ports), "--metrics", addresses(metrics),
             "--json"] + bench_args,
            capture_output=True, text=True)
        try:
            return json.loads(bench.stdout)
        except json.JSONDecodeError:
            return {"error": (bench.stdout + bench.stderr)[-400:], "exit": bench.returncode}
    finally:
        cluster.send_signal(signal.SIGINT)
        try:
            cluster.wait(15)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()
        shutil.rmtree(data, ignore_errors=True)
