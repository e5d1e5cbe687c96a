//! `lockstep bench`: measure the simulator, the linearizability checker and the explorer, or,
//! with `--servers HOST:PORT,...`, load a real cluster over TCP (`super::loadgen`).
//!
//! This file only reads flags, picks the suites and prints their figures; the measurements are
//! `lockstep::sim::bench` and `lockstep::loadgen`. It must never change what a suite measures.

use crate::{EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS};
use clap::Args;
use lockstep::sim::bench::{self, BenchOptions};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSuite {
    /// Simulated message deliveries per second on the standard workload.
    Simulator,
    /// The linearizability checker on its two target histories.
    Linearizability,
    /// Explorer seeds per second (10 s simulated, 5 servers).
    Explore,
    /// All three.
    All,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Which measurement to run.
    #[arg(long, value_enum, default_value_t = BenchSuite::All)]
    suite: BenchSuite,
    /// Seeds for the explore suite.
    #[arg(long, default_value_t = 400)]
    explore_seeds: u64,
    /// Simulated seconds per run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Simulated servers (a number), or a real cluster's addresses (HOST:PORT,...) to load
    /// over TCP.
    #[arg(long, default_value = "5", value_parser = super::loadgen::parse_bench_servers)]
    servers: super::loadgen::BenchServers,
    #[arg(long, default_value_t = 50)]
    clients: u32,
    #[arg(long, default_value_t = 100)]
    locks: u32,
    /// Message drop probability.
    #[arg(long, default_value_t = 0.01)]
    drop: f64,
    /// Runs, each with the next seed; the best and median are reported.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// TCP load: how long to measure.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = crate::parse_duration_flag)]
    duration: std::time::Duration,
    /// TCP load: every client on one lock.
    #[arg(long)]
    contended: bool,
    /// TCP load: take the lock with blocking acquires (each client waits in the lock's fair
    /// line, and a release hands the lock to the next waiter in the same log entry) instead
    /// of preempts that are refused while the lock is held. With --contended, reports the
    /// hand-offs per second, the most hand-offs any acquire waited through (fair: at most
    /// --clients - 1), and with --metrics the servers' CPU per hand-off.
    #[arg(long)]
    acquire: bool,
    /// TCP: sessions on. Every load client registers with this session TTL and sends a
    /// keepalive every TTL/3 between its operations, as the client library does; with
    /// --keepalive-sessions, every session's TTL. Within 1s..=60m (the servers' default
    /// --session-ttl-min/max) [default: sessions that never expire, no keepalives].
    #[arg(long, value_name = "D", value_parser = crate::parse_duration_flag)]
    ttl: Option<std::time::Duration>,
    /// TCP: instead of the lock load, register N sessions (with --ttl) and renew each every
    /// TTL/3, spread evenly, for --duration. Reports keepalives/s, latency, refusals, the
    /// entries the leader's log gained meanwhile (keepalives should add none), and with
    /// --metrics the servers' CPU per keepalive. --clients and --locks do not apply.
    #[arg(long, value_name = "N")]
    keepalive_sessions: Option<u32>,
    /// --keepalive-sessions: the connections the sessions share, each with one request in
    /// flight [default: 16].
    #[arg(long, value_name = "N")]
    connections: Option<u32>,
    /// TCP: the servers' metrics addresses (HOST:PORT,..., as `server --metrics` or `cluster
    /// up --metrics-base-port` serve them). Their CPU time is read when the measured period
    /// starts and ends, and reported per operation answered.
    #[arg(long, value_name = "HOST:PORT,...", value_parser = super::client::parse_server_list)]
    metrics: Option<super::client::ServerList>,
    /// TCP load against a cluster with TLS.
    #[command(flatten)]
    tls: super::client::TlsFlags,
}

/// The flags that only a real cluster's bench reads, with their names, for the refusal.
fn tcp_only_flags(args: &BenchArgs) -> Vec<&'static str> {
    [
        ("--ttl", args.ttl.is_some()),
        ("--keepalive-sessions", args.keepalive_sessions.is_some()),
        ("--connections", args.connections.is_some()),
        ("--metrics", args.metrics.is_some()),
        ("--acquire", args.acquire),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect()
}

/// `bench --servers HOST:PORT,...`: the keepalive workload, or the lock load.
fn run_tcp(args: &BenchArgs, servers: &[String]) -> u8 {
    let metrics = args
        .metrics
        .as_ref()
        .map_or(Vec::new(), |list| list.0.clone());
    let Some(sessions) = args.keepalive_sessions else {
        if args.connections.is_some() {
            eprintln!("error: --connections applies only with --keepalive-sessions");
            return EXIT_BAD_INPUT;
        }
        return super::loadgen::run(&super::loadgen::LoadOptions {
            servers: servers.to_vec(),
            clients: args.clients,
            duration: args.duration,
            locks: args.locks,
            contended: args.contended,
            json: args.json,
            tls: args.tls.clone(),
            ttl: args.ttl,
            metrics,
            acquire: args.acquire,
        });
    };
    let Some(ttl) = args.ttl else {
        eprintln!("error: --keepalive-sessions needs --ttl: a session without one never expires");
        return EXIT_BAD_INPUT;
    };
    if args.contended || args.acquire {
        eprintln!(
            "error: --contended and --acquire are shapes of the lock load, not of \
             --keepalive-sessions"
        );
        return EXIT_BAD_INPUT;
    }
    use super::loadgen::keepalive::{CONNECTIONS_DEFAULT, KeepaliveOptions};
    super::loadgen::keepalive::run(&KeepaliveOptions {
        servers: servers.to_vec(),
        sessions,
        connections: args.connections.unwrap_or(CONNECTIONS_DEFAULT),
        ttl,
        duration: args.duration,
        json: args.json,
        tls: args.tls.clone(),
        metrics,
    })
}

pub fn run(args: BenchArgs) -> u8 {
    use lockstep::sim::bench::{explore_suite, linearizability_suite};
    let servers = match &args.servers {
        super::loadgen::BenchServers::Simulated(count) => *count,
        super::loadgen::BenchServers::Tcp(list) => return run_tcp(&args, &list.0),
    };
    if let Some(flag) = tcp_only_flags(&args).first() {
        eprintln!("error: {flag} applies only to a real cluster (--servers HOST:PORT,...)");
        return EXIT_BAD_INPUT;
    }
    let options = BenchOptions {
        simulated_seconds: args.seconds,
        servers,
        clients: args.clients,
        locks: args.locks,
        drop: args.drop,
        repeat: args.repeat,
        seed: args.seed,
    };
    if let Err(problem) = options.validate() {
        eprintln!("error: {problem}");
        return EXIT_BAD_INPUT;
    }
    if args.explore_seeds == 0 {
        eprintln!("error: --explore-seeds must be at least 1");
        return EXIT_BAD_INPUT;
    }
    let wants = |suite| args.suite == suite || args.suite == BenchSuite::All;
    let mut all_ok = true;
    let mut json = serde_json::Map::new();
    if wants(BenchSuite::Simulator) {
        let result = bench::run(&options, |line| eprintln!("{line}"));
        all_ok &= result.all_passed;
        if !args.json {
            println!("{}", result.render());
        }
        json.insert(
            "simulator".into(),
            serde_json::to_value(&result).expect("serialises"),
        );
    }
    if wants(BenchSuite::Linearizability) {
        let results = linearizability_suite(args.seed);
        for result in &results {
            all_ok &= result.verdict_ok;
            if !args.json {
                println!(
                    "linearizability checker: {}: {:.3}s (target under {}s){}",
                    result.case,
                    result.seconds,
                    result.target_seconds,
                    if result.verdict_ok {
                        ""
                    } else {
                        "  WRONG VERDICT"
                    }
                );
            }
        }
        json.insert(
            "linearizability".into(),
            serde_json::to_value(&results).expect("serialises"),
        );
    }
    if wants(BenchSuite::Explore) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut results = vec![explore_suite(args.explore_seeds, 1)];
        if cores > 1 {
            results.push(explore_suite(args.explore_seeds, cores));
        }
        for result in &results {
            all_ok &= result.failures == 0;
            if !args.json {
                println!(
                    "explore (10s simulated, 5 servers): {:.1} seeds/s on {} thread(s), \
                     {:.0}x real time, {} seeds in {:.1}s{}",
                    result.seeds_per_second,
                    result.jobs,
                    result.simulated_seconds_per_wall_second,
                    result.seeds,
                    result.wall_seconds,
                    if result.failures == 0 {
                        String::new()
                    } else {
                        format!(", {} FAILED", result.failures)
                    }
                );
            }
        }
        json.insert(
            "explore".into(),
            serde_json::to_value(&results).expect("serialises"),
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("serialises")
        );
    }
    if all_ok { EXIT_PASS } else { EXIT_FAIL }
}
