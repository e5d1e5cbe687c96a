#!/usr/bin/env python3
"""README's session figures (Performance): the keepalive run and the TCP set, sessions off and on.

usage: scripts/bench-sessions.py [keepalive|tcp|all]   (default all)

Environment (all optional):
  BIN=target/release/lockstep   the build to measure (build it with `cargo build --release`)
  BASE_PORT=7651                clients on BASE_PORT..+2, metrics on BASE_PORT+100..+102
  SESSIONS=10000 TTL=30s DURATION=60s CONNECTIONS=16   the keepalive run
  ROUNDS=3 TCP_DURATION=10s TCP_TTL=5s                 the TCP set
  OUT=/tmp/bench-sessions-<time>.jsonl                 raw results, one JSON line per run

Every run gets its own fresh `lockstep cluster up --servers 3` (its data in a temporary
directory, removed after), and `lockstep bench --metrics` reads the servers' CPU time from
their metrics endpoints when the measured period starts and ends, so the CPU figures cover
exactly the renewal phase or the measured load, not start-up or registration.

keepalive: SESSIONS sessions with TTL, renewing every TTL/3 for DURATION; prints keepalives/s,
  p50/p99, refusals, sessions expired, the entries the leader's log gained during the renewal
  phase, and the servers' CPU per keepalive. Then the same with one session, for the idle
  cluster's CPU over DURATION (heartbeats, timers), which the net figure subtracts.
tcp: per round and workload (uncontended: 64 clients, 4 locks each; contended: 16 clients on
  one lock), sessions off then on in odd rounds, on then off in even ones, so that neither
  always goes first. Records pairs/s, preempt p99, and the servers' and the load generator's
  CPU per pair (much less sensitive to a shared machine than pairs/s).

Starts and ends with the date and `uptime` (the machine's load), and ends with a summary.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import bench_cluster

BIN = os.environ.get("BIN", "target/release/lockstep")
BASE = int(os.environ.get("BASE_PORT", "7651"))
OUT = os.environ.get("OUT", f"/tmp/bench-sessions-{time.strftime('%H%M%S')}.jsonl")


def with_cluster(bench_args):
    """Runs `bench bench_args --json` against a fresh cluster; returns its JSON report."""
    return bench_cluster.with_cluster(BIN, BASE, bench_args, "bench-sessions-")


def record(line):
    with open(OUT, "a") as out:
        out.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)


def keepalive_run(sessions=None):
    sessions = sessions or os.environ.get("SESSIONS", "10000")
    ttl = os.environ.get("TTL", "30s")
    report = with_cluster(
        ["--keepalive-sessions", sessions, "--ttl", ttl,
         "--duration", os.environ.get("DURATION", "60s"),
         "--connections", os.environ.get("CONNECTIONS", "16")])
    if "error" in report:
        record({"kind": "keepalive", **report})
        return
    cpu = report["cpu_per_keepalive"]
    record({
        "kind": "keepalive", "sessions": report["sessions"], "ttl_ms": report["ttl_ms"],
        "connections": report["connections"],
        "registration_s": round(report["registration_seconds"], 1),
        "seconds": round(report["seconds"], 1),
        "keepalives_per_second": round(report["keepalives_per_second"]),
        "sent": report["keepalives_sent"], "answered": report["keepalives_answered"],
        "refused": report["refused"], "session_expired": report["session_expired"],
        "p50_ms": report["latency"]["p50_ms"], "p99_ms": report["latency"]["p99_ms"],
        "late_renewals": report["late_renewals"],
        "entries_appended": report["log"]["entries_appended"],
        "leader_before": report["log"]["leader_before"],
        "leader_after": report["log"]["leader_after"],
        "servers_cpu_s": round((cpu["servers"] or {}).get("seconds", 0), 2),
        "servers_us_per_keepalive": round((cpu["servers"] or {}).get("us_per_operation") or 0, 1),
        "bench_us_per_keepalive": round(cpu["bench"]["us_per_operation"] or 0, 1),
    })


def tcp_run(kind, sessions, round_number):
    args = ["--duration", os.environ.get("TCP_DURATION", "10s")]
    args += ["--clients", "64", "--locks", "4"] if kind == "uncontended" else \
        ["--clients", "16", "--contended"]
    if sessions == "on":
        args += ["--ttl", os.environ.get("TCP_TTL", "5s")]
    report = with_cluster(args)
    if "error" in report:
        record({"kind": kind, "sessions": sessions, "round": round_number, **report})
        return
    pair, request = report["cpu_per_pair"], report["cpu_per_request"]
    servers = lambda cpu: round((cpu["servers"] or {}).get("us_per_operation") or 0, 1)
    record({
        "kind": kind, "sessions": sessions, "round": round_number,
        "pairs_per_second": round(report["pairs_per_second"]),
        "refused_per_second": round(report["refused_per_second"]),
        "p99_ms": report["latency"]["preempt_granted"]["p99_ms"],
        "keepalives": report["latency"]["keepalive"]["count"],
        "errors": report["errors"], "not_owner": report["not_owner"],
        "servers_us_per_pair": servers(pair),
        "bench_us_per_pair": round(pair["bench"]["us_per_operation"] or 0, 1),
        "servers_us_per_request": servers(request),
    })


def tcp_set():
    for round_number in range(1, int(os.environ.get("ROUNDS", "3")) + 1):
        for kind in ("uncontended", "contended"):
            order = ("off", "on") if round_number % 2 else ("on", "off")
            for sessions in order:
                tcp_run(kind, sessions, round_number)


def summary():
    rows = [json.loads(line) for line in open(OUT) if line.strip()]
    keepalive = [r for r in rows if r.get("kind") == "keepalive" and "error" not in r]
    idle = [r for r in keepalive if r["sessions"] == 1]
    for row in keepalive:
        net = ""
        if idle and row["sessions"] > 1 and row["answered"]:
            extra = row["servers_cpu_s"] - idle[-1]["servers_cpu_s"] * row["seconds"] / idle[-1]["seconds"]
            net = f" ({extra * 1e6 / row['answered']:.1f} us above the idle cluster's CPU)"
        print(f"keepalive: {row['sessions']} sessions, TTL {row['ttl_ms']} ms: "
              f"{row['keepalives_per_second']}/s, p50 {row['p50_ms']} ms, "
              f"p99 {row['p99_ms']} ms, refused {row['refused']}, "
              f"expired {row['session_expired']}, log +{row['entries_appended']} entries, "
              f"servers {row['servers_cpu_s']} s CPU in {row['seconds']} s, "
              f"{row['servers_us_per_keepalive']} us per keepalive{net}")
    for kind in ("uncontended", "contended"):
        for sessions in ("off", "on"):
            runs = [r for r in rows if r.get("kind") == kind and r.get("sessions") == sessions
                    and "error" not in r]
            if not runs:
                continue
            median = lambda key: statistics.median(r[key] for r in runs)
            rates = [r["pairs_per_second"] for r in runs]
            p99 = [r["p99_ms"] for r in runs]
            print(f"{kind:11} sessions {sessions:3}: {len(runs)} runs, pairs/s {min(rates)} to "
                  f"{max(rates)}, median {median('pairs_per_second'):.0f}; p99 {min(p99):.1f} "
                  f"to {max(p99):.1f} ms; CPU per pair (median): servers "
                  f"{median('servers_us_per_pair'):.1f} us, load generator "
                  f"{median('bench_us_per_pair'):.1f} us; servers per request "
                  f"{median('servers_us_per_request'):.1f} us")
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"{len(failed)} runs failed: see {OUT}")
    print("raw:", OUT)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("keepalive", "tcp", "all"):
        raise SystemExit(__doc__)
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"{BIN}: no such binary (cargo build --release, or set BIN)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"start: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, commit {commit}, "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if what in ("keepalive", "all"):
        keepalive_run()
        keepalive_run(sessions="1")
    if what in ("tcp", "all"):
        tcp_set()
    print(f"end: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    summary()


if __name__ == "__main__":
    main()
