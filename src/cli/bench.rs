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
    /// TCP load against a cluster with TLS.
    #[command(flatten)]
    tls: super::client::TlsFlags,
}

pub fn run(args: BenchArgs) -> u8 {
    use lockstep::sim::bench::{explore_suite, linearizability_suite};
    let servers = match &args.servers {
        super::loadgen::BenchServers::Simulated(count) => *count,
        super::loadgen::BenchServers::Tcp(list) => {
            return super::loadgen::run(&super::loadgen::LoadOptions {
                servers: list.0.clone(),
                clients: args.clients,
                duration: args.duration,
                locks: args.locks,
                contended: args.contended,
                json: args.json,
                tls: args.tls.clone(),
            });
        }
    };
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
