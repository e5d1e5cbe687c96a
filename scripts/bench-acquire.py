#!/usr/bin/env python3
"""README's contended figures (Performance): 16 clients on one lock, polling preempts against
blocking acquires (`lockstep bench --contended --acquire`).

usage: scripts/bench-acquire.py

Environment (all optional):
  BIN=target/release/lockstep   the build to measure (build it with `cargo build --release`)
  BASE_PORT=7751                clients on BASE_PORT..+2, metrics on BASE_PORT+100..+102
  ROUNDS=3 DURATION=10s CLIENTS=16
  OUT=/tmp/bench-acquire-<time>.jsonl   raw results, one JSON line per run

Every run gets its own fresh `lockstep cluster up --servers 3` (data in a temporary directory,
removed after), and `lockstep bench --metrics` reads the servers' CPU time when the measured
period starts and ends. Per round: polling preempts then blocking acquires in odd rounds, the
other way round in even ones, so that neither always goes first. Records hand-offs/s, the most
hand-offs an acquire waited through, and the servers' CPU per hand-off; prints the load average
with every run and a summary (medians) at the end.
"""

import json
import os
import statistics
import time

import bench_cluster

BIN = os.environ.get("BIN", "target/release/lockstep")
BASE = int(os.environ.get("BASE_PORT", "7751"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "10s")
CLIENTS = os.environ.get("CLIENTS", "16")
OUT = os.environ.get("OUT", f"/tmp/bench-acquire-{time.strftime('%H%M%S')}.jsonl")


def with_cluster(bench_args):
    """Runs `bench bench_args --json` against a fresh cluster; returns its JSON report."""
    return bench_cluster.with_cluster(BIN, BASE, bench_args, "bench-acquire-")


def load_average():
    with open("/proc/loadavg") as loadavg:
        return loadavg.read().split()[0]


def run(kind, round_number):
    args = ["--contended", "--clients", CLIENTS, "--duration", DURATION]
    if kind == "acquire":
        args.append("--acquire")
    report = with_cluster(args)
    cpu = ((report.get("cpu_per_handoff") or {}).get("servers") or {})
    line = {
        "round": round_number, "kind": kind, "load": load_average(),
        "handoffs_per_second": report.get("grants_per_second"),
        "refused_per_second": report.get("refused_per_second"),
        "waited_max": (report.get("handoffs_waited") or {}).get("max"),
        "waited_p99": (report.get("handoffs_waited") or {}).get("p99"),
        "servers_us_per_handoff": cpu.get("us_per_operation"),
        "errors": report.get("errors"), "error": report.get("error"),
    }
    with open(OUT, "a") as out:
        out.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)
    return line


def main():
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load", load_average())
    lines = []
    for round_number in range(1, ROUNDS + 1):
        kinds = ("polling", "acquire") if round_number % 2 else ("acquire", "polling")
        for kind in kinds:
            lines.append(run(kind, round_number))
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load", load_average())
    for kind in ("polling", "acquire"):
        mine = [line for line in lines if line["kind"] == kind and line["handoffs_per_second"]]
        if not mine:
            print(kind, "no runs")
            continue
        rates = sorted(line["handoffs_per_second"] for line in mine)
        cpus = [line["servers_us_per_handoff"] for line in mine if line["servers_us_per_handoff"]]
        waited = [line["waited_max"] for line in mine if line["waited_max"] is not None]
        print(f"{kind}: hand-offs/s {rates[0]:.0f} to {rates[-1]:.0f}, median "
              f"{statistics.median(rates):.0f} ({len(rates)} runs); servers' CPU per hand-off "
              f"median {statistics.median(cpus) if cpus else float('nan'):.0f} us; most "
              f"hand-offs waited through {max(waited) if waited else '-'}")


if __name__ == "__main__":
    main()
