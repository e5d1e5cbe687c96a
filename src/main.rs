//! The `lockstep` command line.

mod cli;

use clap::{Args, Parser, Subcommand};
use lockstep::sim::bench::{self, BenchOptions};
use std::process::ExitCode;

/// Exit codes, the same for every subcommand.
const EXIT_PASS: u8 = 0;
const EXIT_FAIL: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "A distributed lock service, proven in a seeded deterministic simulator",
    long_about = "lockstep is a Raft-replicated lock service (preempt, release, check, fencing \
tokens, exactly-once retries) whose protocol is pure state machines. `lockstep run` plays \
scenario files through a deterministic simulator with faults and checks safety at every step; \
`lockstep explore` hunts many seeds; `lockstep check` judges any history for linearizability; \
`lockstep server`, `cluster up`, `client` and `lock` run \
the same state machines as a real cluster over TCP.\n\n\
Exit codes: 0 success, 1 a failure the command reports (an invariant or expectation failed, a \
refused lock operation), 2 unusable input. `lock` exits with its command's code, and `check` \
with 3 when it cannot decide in time; each \
subcommand's --help lists its own."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play scenario files (YAML or JSON) through the simulator and report what happened.
    ///
    /// Each scenario prints a summary table and a PASS or FAIL line with its seed. A failure
    /// shows the violated invariant, the simulated time and the last events before it; rerun
    /// with the same --seed and --trace to see every event.
    Run(cli::run::RunArgs),
    /// Swarm-test many random seeds in parallel, minimize every failure, and write each as a
    /// scenario file that `lockstep run` replays.
    ///
    /// Each seed derives its own configuration (cluster size, network, which fault kinds are on
    /// and how often, workload mix), runs a safety phase under faults, then a liveness phase on
    /// a healed, restarted cluster in which every client's probe must be answered and every
    /// replica converge. Ctrl-C stops cleanly and still prints the summary.
    ///
    /// Exit codes: 0 no seed failed, 1 some seed failed, 2 bad arguments.
    Explore(cli::explore::ExploreArgs),
    /// Measure simulator speed on the standard workload (5 servers, 50 clients, 100 locks,
    /// 1% drop, 60 s simulated, checkers on), or, with `--servers HOST:PORT,...`, load a real
    /// cluster over TCP.
    ///
    /// TCP load: `--clients` closed-loop clients (each with its own connection and client id,
    /// spread across the servers, all driven from one thread so that the load generator takes
    /// little of the machine) preempt and, when granted, release for `--duration`.
    /// Uncontended, each uses its own `--locks` locks in turn; `--contended` puts every client
    /// on one lock.
    /// Example: lockstep bench --servers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    /// --clients 64 --duration 10s
    Bench(BenchArgs),
    /// Run one server of a real cluster: Raft over TCP, durable storage, clients on the same
    /// port.
    Server(cli::server::ServerArgs),
    /// Manage a local cluster of server processes.
    Cluster {
        #[command(subcommand)]
        command: cli::cluster::ClusterCommand,
    },
    /// Preempt, release or check one lock on a real cluster.
    Client(cli::client::ClientArgs),
    /// Run a command while holding a lock (like flock), then release it.
    Lock(cli::lock::LockArgs),
    /// Check a history (JSON Lines, from `run --history` or any other tool) for
    /// linearizability and monotonic reads.
    ///
    /// Exit codes: 0 linearizable, 1 not (the lock and the smallest failing window are printed),
    /// 2 bad input (the line and field are named), 3 unknown (--timeout or the search bound).
    Check(cli::check::CheckArgs),
}

fn parse_duration_flag(text: &str) -> Result<std::time::Duration, String> {
    match lockstep::sim::scenario::parse_duration(text) {
        Some(duration) if duration >= std::time::Duration::from_secs(1) => Ok(duration),
        Some(_) => Err(format!("{text:?} is too short: at least 1s")),
        None => Err(format!(
            "{text:?} is not a duration (use a number with ms, s or m)"
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSuite {
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
struct BenchArgs {
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
    #[arg(long, default_value = "5", value_parser = cli::loadgen::parse_bench_servers)]
    servers: cli::loadgen::BenchServers,
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
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration_flag)]
    duration: std::time::Duration,
    /// TCP load: every client on one lock.
    #[arg(long)]
    contended: bool,
    /// TCP load against a cluster with TLS.
    #[command(flatten)]
    tls: cli::client::TlsFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Explore(args) => cli::explore::run(args),
        Command::Bench(args) => run_bench(args),
        Command::Server(args) => cli::server::run(args),
        Command::Cluster { command } => cli::cluster::run(command),
        Command::Client(args) => cli::client::run(args),
        Command::Lock(args) => cli::lock::run(args),
        Command::Check(args) => cli::check::run(args),
    };
    ExitCode::from(code)
}

fn run_bench(args: BenchArgs) -> u8 {
    use lockstep::sim::bench::{explore_suite, linearizability_suite};
    let servers = match &args.servers {
        cli::loadgen::BenchServers::Simulated(count) => *count,
        cli::loadgen::BenchServers::Tcp(list) => {
            return cli::loadgen::run(&cli::loadgen::LoadOptions {
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
