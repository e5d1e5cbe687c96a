#!/usr/bin/env python3
"""Interleaved TCP bench of two or more lockstep builds, on all three workloads of README's
"A real cluster over TCP": uncontended (64 clients, 4 locks each), contended polling (16
clients on one lock) and contended blocking acquire (`--contended --acquire`).

usage: scripts/bench-compare.py BIN_A BIN_B [BIN_C ...]

Environment (all optional):
  BASE_PORT=7801        clients on BASE_PORT..+2, metrics on BASE_PORT+METRICS_OFFSET..+2
  METRICS_OFFSET=100    (a smaller one keeps a run inside a port range of 100)
  ROUNDS=3 DURATION=10  (seconds)
  KINDS=uncontended,polling,acquire
  OUT=/tmp/bench-compare-<time>.jsonl   raw results, one JSON line per run
  TLS=1                 `cluster up --tls`, and the bench and status with `--tls-ca`

Every run gets its own fresh `cluster up --servers 3 --metrics-base-port` of the build under
test, and that build's own `bench`. Per round and workload the builds run in the given order in
odd rounds and reversed in even ones. Besides the rates, each run records what a shared machine
moves far less than rates, per pair (uncontended) or per hand-off (contended):
  - the servers' CPU (all three, from /proc), the leader's alone, and the three log threads';
  - the load generator's CPU;
  - the user-space share of both (servers_user_us, bench_user_us), where the codec shows;
  - fsyncs on each server and log entries committed (from the servers' metrics);
  - context switches of each server's network thread and log thread (from /proc).
It starts with the load average and a lone 200-byte fdatasync probe, and ends with medians.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench_cluster

HZ = os.sysconf("SC_CLK_TCK")
BASE = int(os.environ.get("BASE_PORT", "7801"))
METRICS_OFFSET = int(os.environ.get("METRICS_OFFSET", "100"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
KINDS = os.environ.get("KINDS", "uncontended,polling,acquire").split(",")
TLS = os.environ.get("TLS") == "1"
OUT = os.environ.get("OUT", f"/tmp/bench-compare-{time.strftime('%H%M%S')}.jsonl")
LOAD = {
    "uncontended": ["--clients", "64", "--locks", "4"],
    "polling": ["--clients", "16", "--contended"],
    "acquire": ["--clients", "16", "--contended", "--acquire"],
}


def threads(pid):
    """CPU seconds and context switches per thread name of process `pid`."""
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{task}/status") as f:
                switches = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:
            continue
        name = "log" if "lockstep-log" in stat else "net"
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / HZ
        before = out.get(name, (0.0, 0))
        out[name] = (before[0] + cpu, before[1] + switches)
    return out


def user_system(pid):
    """CPU seconds of process `pid` in user space and in the kernel (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return (0.0, 0.0)
    return (int(fields[11]) / HZ, int(fields[12]) / HZ)


def scrape(port):
    wanted = ("lockstep_fsync_duration_seconds_count", "lockstep_commit_index")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return {}
    values = {}
    for line in text.decode().splitlines():
        if line.startswith(wanted):
            key, value = line.rsplit(" ", 1)
            values[key.split("{")[0]] = float(value)
    return values


def leader_port(binary, ports, client_flags=()):
    status = subprocess.run([binary, "status", "--servers", bench_cluster.addresses(ports),
                             "--json", *client_flags], capture_output=True, text=True)
    for row in json.loads(status.stdout).get("servers", []):
        if row.get("role") == "leader":
            return int(str(row["address"]).rsplit(":", 1)[1])
    return None


def server_pids(cluster_pid):
    """Each server's pid by its client port."""
    children = subprocess.run(["pgrep", "-P", str(cluster_pid)], capture_output=True,
                              text=True).stdout.split()
    pids = {}
    for child in children:
        with open(f"/proc/{child}/cmdline") as f:
            argv = f.read().split("\0")
        if "--listen" in argv:
            pids[int(argv[argv.index("--listen") + 1].rsplit(":", 1)[1])] = int(child)
    return pids


def measure(binary, ports, pids, kind, client_flags=()):
    """Runs the bench once; returns its report and what the servers did meanwhile."""
    metrics = {port: port + METRICS_OFFSET for port in ports}
    before = {port: (threads(pid), scrape(metrics[port])) for port, pid in pids.items()}
    bench = subprocess.Popen(
        [binary, "bench", "--servers", bench_cluster.addresses(ports), "--duration",
         f"{DURATION}s", "--json", *client_flags] + LOAD[kind],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, _, usage = os.wait4(bench.pid, 0)
    measure.bench_user_s = usage.ru_utime
    after = {port: (threads(pid), scrape(metrics[port])) for port, pid in pids.items()}
    output = bench.stdout.read()
    try:
        report = json.loads(output)
    except json.JSONDecodeError:
        report = {"error": (output + bench.stderr.read())[-400:]}
    return report, before, after, usage.ru_utime + usage.ru_stime


def run(binary, label, kind, round_number):
    ports = [BASE, BASE + 1, BASE + 2]
    data = tempfile.mkdtemp(prefix="bench-compare-")
    cluster = subprocess.Popen(
        [binary, "cluster", "up", "--servers", "3", "--dir", data, "--base-port", str(BASE),
         "--metrics-base-port", str(BASE + METRICS_OFFSET)] + (["--tls"] if TLS else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client_flags = ["--tls-ca", os.path.join(data, "tls", "ca.pem")] if TLS else []
    try:
        bench_cluster.wait_ports(ports + [port + METRICS_OFFSET for port in ports])
        time.sleep(1.5)  # a leader elected
        pids = server_pids(cluster.pid)
        leader = leader_port(binary, ports, client_flags)
        split_before = {port: user_system(pid) for port, pid in pids.items()}
        report, before, after, bench_cpu_s = measure(binary, ports, pids, kind, client_flags)
        split_after = {port: user_system(pid) for port, pid in pids.items()}
    finally:
        cluster.send_signal(signal.SIGINT)
        try:
            cluster.wait(15)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()
        shutil.rmtree(data, ignore_errors=True)
    rate = report.get("pairs_per_second") if kind == "uncontended" else report.get(
        "grants_per_second")
    line = {"round": round_number, "label": label, "kind": kind,
            "load": open("/proc/loadavg").read().split()[0], "rate": round(rate or 0),
            "error": report.get("error")}
    done = (rate or 0) * DURATION
    if done:
        def per_unit(value):
            return round(value / done * 1e6, 1)

        def role(port):
            return "leader" if port == leader else f"s{port - BASE + 1}"

        def cpu(port, name):
            return after[port][0].get(name, (0, 0))[0] - before[port][0].get(name, (0, 0))[0]

        def switches(port, name):
            return after[port][0].get(name, (0, 0))[1] - before[port][0].get(name, (0, 0))[1]

        def metric(port, key):
            return after[port][1].get(key, 0) - before[port][1].get(key, 0)

        line.update({
            "p99_ms": (report.get("latency", {}).get("preempt_granted") or {}).get("p99_ms"),
            "waited_max": (report.get("handoffs_waited") or {}).get("max"),
            "waited_p99": (report.get("handoffs_waited") or {}).get("p99"),
            "refused_per_second": round(report.get("refused_per_second") or 0),
            "servers_us": per_unit(sum(cpu(p, n) for p in pids for n in ("net", "log"))),
            "leader_us": per_unit(cpu(leader, "net") + cpu(leader, "log")) if leader else None,
            "log_threads_us": per_unit(sum(cpu(p, "log") for p in pids)),
            "bench_us": per_unit(bench_cpu_s),
            # User space alone: where codec and bookkeeping costs show, undiluted by TCP.
            "servers_user_us": per_unit(sum(split_after[p][0] - split_before[p][0]
                                            for p in pids)),
            "bench_user_us": per_unit(measure.bench_user_s),
            "entries": round(metric(leader, "lockstep_commit_index") / done, 2) if leader else None,
            "fsyncs": {role(p): round(metric(p, "lockstep_fsync_duration_seconds_count") / done, 2)
                       for p in pids},
            "switches": {f"{role(p)}.{n}": round(switches(p, n) / done, 2)
                         for p in pids for n in ("net", "log")},
        })
    with open(OUT, "a") as out:
        out.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)
    return line


def fsync_probe_us():
    path = tempfile.mktemp(prefix="bench-compare-fsync-")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(200):
            start = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return round(statistics.median(times) * 1e6)


def summary(lines, labels):
    for kind in KINDS:
        for label in labels:
            mine = [line for line in lines if line["kind"] == kind and line["label"] == label
                    and line["rate"]]
            if not mine:
                print(f"{kind:11} {label}: no runs")
                continue

            def median(key):
                values = [line[key] for line in mine if line.get(key) is not None]
                return statistics.median(values) if values else float("nan")

            rates = sorted(line["rate"] for line in mine)
            print(f"{kind:11} {label}: {len(mine)} runs, {rates[0]} to {rates[-1]}/s, median "
                  f"{median('rate'):.0f}; CPU per unit (medians): servers "
                  f"{median('servers_us'):.1f} us (leader {median('leader_us'):.1f}, log threads "
                  f"{median('log_threads_us'):.1f}), load generator {median('bench_us'):.1f} us; "
                  f"user space alone: servers {median('servers_user_us'):.1f} us, load "
                  f"generator {median('bench_user_us'):.1f} us")


def main():
    binaries = sys.argv[1:]
    if len(binaries) < 2:
        sys.exit(__doc__)
    labels = [chr(ord("A") + i) for i in range(len(binaries))]
    for label, binary in zip(labels, binaries):
        print(f"{label} = {binary}")
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load",
          open("/proc/loadavg").read().split()[0], "lone 200-byte fdatasync p50",
          fsync_probe_us(), "us", flush=True)
    lines = []
    for round_number in range(1, ROUNDS + 1):
        for kind in KINDS:
            order = list(zip(labels, binaries))
            if round_number % 2 == 0:
                order.reverse()
            for label, binary in order:
                lines.append(run(binary, label, kind, round_number))
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load",
          open("/proc/loadavg").read().split()[0], "lone 200-byte fdatasync p50",
          fsync_probe_us(), "us")
    summary(lines, labels)
    print("raw:", OUT)


if __name__ == "__main__":
    main()
