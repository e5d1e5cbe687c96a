//! The `lockstep` command line.

use clap::{Args, Parser, Subcommand};
use lockstep::sim::bench::{self, BenchOptions};
use lockstep::sim::report::RunReport;
use lockstep::sim::runner::{self, RunOptions};
use lockstep::sim::scenario::{self, Scenario};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
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
scenario files through a deterministic simulator with faults and checks safety at every step.\n\n\
Exit codes: 0 all passed, 1 an invariant or expectation failed, 2 unusable input."
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
    Run(RunArgs),
    /// Measure simulator speed on the standard workload (5 servers, 50 clients, 100 locks,
    /// 1% drop, 60 s simulated, checkers on).
    Bench(BenchArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Scenario files, or directories whose *.yaml, *.yml and *.json files are run in name order.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Override every scenario's seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Write every simulation event as JSON Lines to FILE (one header line per scenario).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Simulated seconds per run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    servers: u32,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => run(args),
        Command::Bench(args) => run_bench(args),
    };
    ExitCode::from(code)
}

fn run(args: RunArgs) -> u8 {
    let mut scenarios: Vec<(PathBuf, Scenario)> = Vec::new();
    let mut bad_input = false;
    for path in &args.paths {
        match scenario::scenario_files(path) {
            Ok(files) if files.is_empty() => {
                eprintln!(
                    "error: {}: no scenario files (*.yaml, *.yml, *.json) there",
                    path.display()
                );
                bad_input = true;
            }
            Ok(files) => {
                for file in files {
                    match scenario::load_file(&file) {
                        Ok(loaded) => scenarios.push((file, loaded)),
                        Err(error) => {
                            eprintln!("error: {error}");
                            bad_input = true;
                        }
                    }
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                bad_input = true;
            }
        }
    }
    if bad_input {
        return EXIT_BAD_INPUT;
    }
    let mut trace_file = match &args.trace {
        Some(path) => match File::create(path) {
            Ok(file) => Some((path.clone(), file)),
            Err(error) => {
                eprintln!(
                    "error: {}: cannot create the trace file: {error}",
                    path.display()
                );
                return EXIT_BAD_INPUT;
            }
        },
        None => None,
    };
    let mut reports: Vec<RunReport> = Vec::new();
    for (path, loaded) in scenarios {
        let loaded = match args.seed {
            Some(seed) => loaded.with_seed(seed),
            None => loaded,
        };
        let mut options = RunOptions::default();
        if let Some((trace_path, file)) = &mut trace_file {
            let header = serde_json::json!({
                "t": 0, "kind": "run", "scenario": loaded.name, "file": path.display().to_string(),
                "seed": loaded.seed,
            });
            let cloned = writeln!(file, "{header}").and_then(|()| file.try_clone());
            match cloned {
                Ok(handle) => options.trace = Some(Box::new(BufWriter::new(handle))),
                Err(error) => {
                    eprintln!(
                        "error: {}: cannot write the trace: {error}",
                        trace_path.display()
                    );
                    return EXIT_BAD_INPUT;
                }
            }
        }
        let report = match runner::run(&loaded, options) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return EXIT_BAD_INPUT;
            }
        };
        if !args.json {
            println!("{}", report.render());
            println!("{}  [{}]\n", report.verdict_line(), path.display());
        }
        reports.push(report);
    }
    let all_passed = reports.iter().all(|r| r.passed);
    if args.json {
        let summary = serde_json::json!({ "passed": all_passed, "scenarios": reports });
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("reports serialise")
        );
    } else if reports.len() > 1 {
        let passed = reports.iter().filter(|r| r.passed).count();
        println!("{passed} of {} scenarios passed", reports.len());
    }
    if all_passed { EXIT_PASS } else { EXIT_FAIL }
}

fn run_bench(args: BenchArgs) -> u8 {
    let options = BenchOptions {
        simulated_seconds: args.seconds,
        servers: args.servers,
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
    let result = bench::run(&options, |line| eprintln!("{line}"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("bench results serialise")
        );
    } else {
        println!("{}", result.render());
    }
    if result.all_passed {
        EXIT_PASS
    } else {
        EXIT_FAIL
    }
}
