//! `lockstep chaos`: flags, progress and the summary tables around `lockstep::chaos::run`,
//! which does the work (servers, proxies, clients, nemesis, checks). This file only parses
//! flags, prints, and picks the exit code.

use clap::Args;
use lockstep::chaos::schedule::{self, NemesisKind};
use lockstep::chaos::{ChaosConfig, ChaosError, ChaosReport, FaultEvent, Observer, Progress};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The run was clean: every check passed.
pub const EXIT_CLEAN: u8 = 0;
/// An anomaly: a check failed (the summary says which and why).
pub const EXIT_ANOMALY: u8 = 1;
/// Bad flags, or an output directory that cannot be used. Nothing was started.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The cluster did not start (ports, processes, election, registration).
pub const EXIT_CLUSTER_FAILED: u8 = 3;
/// Ctrl-C or SIGTERM ended the run early: no verdict.
pub const EXIT_INTERRUPTED: u8 = 4;

#[derive(Args)]
#[command(after_help = "\
What happens, in order:
  1. N `lockstep server` processes start on 127.0.0.1 with a cluster secret; every server
     reaches every other through a TCP proxy run by chaos, so that the network between them
     can fail. Clients talk to the servers directly.
  2. The clients run random preempts, releases and checks (local and linearizable) through
     the client library for --duration, recording every operation on one clock.
  3. Meanwhile the nemesis applies the seeded schedule, one fault at a time: apply, hold,
     heal, then measure how long each server the fault touched takes to rejoin (its first
     answer to a linearizable check after the heal), then a quiet gap.
  4. At the end every server is restarted from disk and every lock is read through every
     server; then the history is checked (linearizability and monotonic reads, as `lockstep
     check` does), fencing tokens must rise per lock, no server log may hold a panic, no
     server may die on its own, and every healed server must have rejoined.

Nemesis kinds (--nemesis, comma-separated; groups: all, kills, pauses, network; none):
  kill            SIGKILL a random server, restart it from disk at the heal
  kill-leader     SIGKILL the leader, restart it at the heal
  kill-majority   SIGKILL a random majority, restart them at the heal
  kill-all        SIGKILL every server, restart them all at the heal
  pause           SIGSTOP a random server, SIGCONT at the heal
  pause-leader    SIGSTOP the leader, SIGCONT at the heal
  partition       split the servers into two random groups
  isolate-leader  cut the leader off from every other server
  cut             one way: nothing a random server sends reaches some others
  delay           slow every peer link of a random server by 10-150 ms
  drop            lose 2-20% of the byte chunks on every peer link of a random server
A connection that loses bytes to a cut or a drop stays dead, as if TCP's retransmission
back-off never ended: only a server that notices the silence and redials gets through.

Written to --out: history.jsonl (the history format of README \"Histories\"; `lockstep check`
reads it), faults.jsonl (every fault, heal and rejoin, times on the history's clock),
summary.json (the summary as JSON), timeline.html (the run as a self-contained HTML
timeline: lanes, operations, faults as spans, the verdict), logs/sN.log (each server's log
across all its lives),
data/sN (each server's data directory) and cluster-secret.

Exit codes: 0 clean; 1 an anomaly (the failing checks are printed); 2 bad flags or an
unusable --out; 3 the cluster did not start; 4 interrupted (Ctrl-C), no verdict.

Examples:
  lockstep chaos                                   # 3 servers, 12 clients, 4 locks, 60s
  lockstep chaos --servers 5 --duration 10m --seed 7 --out chaos-5
  lockstep chaos --nemesis partition,cut --duration 30s
  lockstep chaos --seed 7 --print-schedule         # what seed 7 does, without running it")]
pub struct ChaosArgs {
    /// Servers in the cluster (1 to 9).
    #[arg(long, default_value_t = 3, value_name = "N")]
    servers: usize,
    /// Concurrent clients, each a thread with its own client id.
    #[arg(long, default_value_t = 12, value_name = "N")]
    clients: u32,
    /// Locks the clients contend for, named w1, w2, ...
    #[arg(long, default_value_t = 4, value_name = "N")]
    locks: u32,
    /// How long the clients and the nemesis run (5s to 24h), before the final restart and
    /// reads.
    #[arg(long, default_value = "60s", value_name = "D", value_parser = parse_chaos_duration)]
    duration: Duration,
    /// Seed of the fault schedule and of the clients' choices [default: random, printed].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Fault kinds to apply, comma-separated (see below).
    #[arg(long, default_value = "all", value_name = "LIST", value_parser = parse_nemesis)]
    nemesis: NemesisList,
    /// A new (or empty) directory for everything the run writes [default: a new directory
    /// under the system temp dir].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Passed to every server: snapshots every N applied entries, so that runs also exercise
    /// snapshots and their transfer to a server that fell behind.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    snapshot_entries: u64,
    /// Print the fault schedule the seed gives and exit, without starting anything. Faults
    /// aimed at the leader are resolved only when they happen.
    #[arg(long)]
    print_schedule: bool,
    /// Print the summary as JSON (what summary.json holds) instead of tables.
    #[arg(long)]
    json: bool,
}

/// The kinds `--nemesis` named.
#[derive(Clone, Debug)]
struct NemesisList(Vec<NemesisKind>);

fn parse_nemesis(text: &str) -> Result<NemesisList, String> {
    schedule::parse_nemesis_list(text).map(NemesisList)
}

fn parse_chaos_duration(text: &str) -> Result<Duration, String> {
    match lockstep::sim::scenario::parse_duration(text) {
        Some(duration) if duration < Duration::from_secs(5) => {
            Err(format!("{text:?} is too short: at least 5s"))
        }
        Some(duration) if duration > Duration::from_secs(24 * 3600) => {
            Err(format!("{text:?} is too long: at most 24h"))
        }
        Some(duration) => Ok(duration),
        None => Err(format!(
            "{text:?} is not a duration (use a number with ms, s or m)"
        )),
    }
}

pub fn run(args: ChaosArgs) -> u8 {
    let nemesis = args.nemesis.0.clone();
    let seed = args.seed.unwrap_or_else(rand::random);
    if args.print_schedule {
        return print_schedule(&args, seed, &nemesis);
    }
    let executable = match std::env::current_exe() {
        Ok(executable) => executable,
        Err(error) => {
            eprintln!("error: cannot find this executable to start servers with: {error}");
            return EXIT_CLUSTER_FAILED;
        }
    };
    let out_dir = args.out.clone().unwrap_or_else(|| default_out_dir(seed));
    let config = ChaosConfig {
        servers: args.servers,
        clients: args.clients,
        locks: args.locks,
        duration: args.duration,
        seed,
        nemesis,
        out_dir,
        executable,
        snapshot_entries: args.snapshot_entries,
    };
    if let Err(problem) = config.check() {
        eprintln!("error: {problem}");
        return EXIT_BAD_INPUT;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(error) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("warning: Ctrl-C will not stop the run cleanly: {error}");
    }
    eprintln!("{}", describe(&config));
    let mut observer = Console::new(config.duration, args.json);
    let result = lockstep::chaos::run(&config, &mut observer, &stop);
    observer.finish();
    match result {
        Err(ChaosError::Setup(problem)) => {
            eprintln!("error: {problem}");
            EXIT_BAD_INPUT
        }
        Err(error @ ChaosError::ClusterStart(_)) => {
            eprintln!("error: {error}");
            EXIT_CLUSTER_FAILED
        }
        Err(error @ ChaosError::Interrupted) => {
            eprintln!("{error}");
            EXIT_INTERRUPTED
        }
        Ok(report) => {
            if args.json {
                let json = serde_json::to_string_pretty(&report).expect("a report serialises");
                println!("{json}");
            } else {
                print_report(&report);
            }
            exit_code(&report)
        }
    }
}

fn exit_code(report: &ChaosReport) -> u8 {
    if report.interrupted {
        EXIT_INTERRUPTED
    } else if report.clean() {
        EXIT_CLEAN
    } else {
        EXIT_ANOMALY
    }
}

fn default_out_dir(seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::env::temp_dir().join(format!(
        "lockstep-chaos-{seed}-{stamp}-{}",
        std::process::id()
    ))
}

fn describe(config: &ChaosConfig) -> String {
    let nemesis: Vec<&str> = config.nemesis.iter().map(|kind| kind.name()).collect();
    format!(
        "chaos: {} servers, {} clients, {} locks, {:?}, seed {}, nemesis {}\n       out: {}\n       \
         replay the schedule: lockstep chaos --seed {} --servers {} --duration {}s --nemesis {}",
        config.servers,
        config.clients,
        config.locks,
        config.duration,
        config.seed,
        if nemesis.is_empty() {
            "none".to_string()
        } else {
            nemesis.join(",")
        },
        config.out_dir.display(),
        config.seed,
        config.servers,
        config.duration.as_secs(),
        if nemesis.is_empty() {
            "none".to_string()
        } else {
            nemesis.join(",")
        },
    )
}

fn print_schedule(args: &ChaosArgs, seed: u64, nemesis: &[NemesisKind]) -> u8 {
    if !(1..=9).contains(&args.servers) {
        eprintln!("error: --servers {}: must be 1 to 9", args.servers);
        return EXIT_BAD_INPUT;
    }
    let plan = schedule::plan(seed, args.servers, args.duration, nemesis);
    println!(
        "seed {seed}, {} servers, {:?}: {} faults",
        args.servers,
        args.duration,
        plan.len()
    );
    for fault in &plan {
        println!(
            "{:>4}  {:>8.3}s  hold {:>5.3}s  {:<15} {}",
            fault.number,
            fault.at.as_secs_f64(),
            fault.hold.as_secs_f64(),
            fault.kind.name(),
            fault.action
        );
    }
    println!("(a run waits for every healed server to rejoin, which shifts later faults)");
    EXIT_CLEAN
}

/// Progress on stderr: a bar when stderr is a terminal, else one line per fault event.
struct Console {
    bar: Option<indicatif::ProgressBar>,
    json: bool,
}

impl Console {
    fn new(duration: Duration, json: bool) -> Console {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Console { bar, json }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Console {
    fn phase(&mut self, phase: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(phase.to_string());
        } else if !self.json {
            eprintln!("chaos: {phase}");
        }
    }

    fn event(&mut self, event: &FaultEvent) {
        let fault = event
            .fault
            .map_or(String::new(), |number| format!(" #{number}"));
        let kind = event.kind.unwrap_or("");
        self.say(format!(
            "{:>9.3}s  {:<15} {kind}{fault}: {}",
            event.time as f64 / 1e9,
            event.event,
            event.detail
        ));
    }

    fn progress(&mut self, progress: &Progress) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(progress.elapsed.as_secs().min(progress.duration.as_secs()));
        bar.set_message(format!(
            "{} ops ({} unknown), {} faults{}",
            progress.operations,
            progress.unknown,
            progress.faults,
            progress
                .active
                .as_ref()
                .map_or(String::new(), |active| format!(", now: {active}"))
        ));
    }
}

fn print_report(report: &ChaosReport) {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let mut builder = Builder::default();
    for (name, value) in summary_rows(report) {
        builder.push_record([name.to_string(), value]);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    println!("{table}");
    if !report.rejoins.is_empty() {
        let mut rejoins = Builder::default();
        rejoins.push_record(["fault", "kind", "server", "rejoined after heal"]);
        for rejoin in &report.rejoins {
            rejoins.push_record([
                format!("#{}", rejoin.fault),
                rejoin.kind.to_string(),
                rejoin.server.clone(),
                rejoin
                    .after_ms
                    .map_or("never (within 15s)".to_string(), |ms| {
                        format!("{:.3}s", ms / 1000.0)
                    }),
            ]);
        }
        let mut rejoins = rejoins.build();
        rejoins.with(Style::rounded());
        println!("{rejoins}");
    }
    for check in report.checks.iter().filter(|check| !check.passed) {
        println!("FAILED {}:", check.name);
        for line in &check.detail {
            println!("    {}", line.replace('\n', "\n    "));
        }
    }
    println!("files: {}", report.out_dir.display());
    println!(
        "{} chaos, seed {}: {}",
        match report.verdict {
            "clean" => "PASS",
            "interrupted" => "INTERRUPTED",
            _ => "FAIL",
        },
        report.seed,
        report.verdict
    );
}

fn summary_rows(report: &ChaosReport) -> Vec<(&'static str, String)> {
    let by_result: Vec<String> = report
        .operations_by_result
        .iter()
        .map(|(result, count)| format!("{result} {count}"))
        .collect();
    let faults: Vec<String> = report
        .faults_by_kind
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let availability = |a: &lockstep::chaos::run::Availability| match a.percent() {
        Some(percent) => format!(
            "{percent:.2}% of {} ops answered (slowest answer {:.3}s)",
            a.total,
            a.longest_answer_ms as f64 / 1000.0
        ),
        None => "no ops".to_string(),
    };
    let checks: Vec<String> = report
        .checks
        .iter()
        .map(|check| {
            let state = if check.passed { "ok" } else { "FAILED" };
            let first = check.detail.first().map_or("", String::as_str);
            format!(
                "{} {state}: {}",
                check.name,
                first.lines().next().unwrap_or("")
            )
        })
        .collect();
    vec![
        (
            "run",
            format!(
                "{} servers, {} clients, {} locks, {}s, seed {} ({:.1}s wall)",
                report.servers,
                report.clients,
                report.locks,
                report.duration_ms / 1000,
                report.seed,
                report.wall_seconds
            ),
        ),
        ("operations", format!("{} in all", report.operations)),
        ("by result", by_result.join("\n")),
        ("unknown", report.unknown.to_string()),
        (
            "faults",
            format!(
                "{} in all{}{}",
                report.faults_by_kind.values().sum::<u64>(),
                if faults.is_empty() { "" } else { ": " },
                faults.join(", ")
            ),
        ),
        (
            "availability",
            format!(
                "during faults {}\nwithout faults {}",
                availability(&report.availability_with_faults),
                availability(&report.availability_without_faults)
            ),
        ),
        ("rejoin after heal", rejoin_summary(report)),
        (
            "peer proxies",
            format!(
                "{} connections, {} directions broken by cuts and losses",
                report.proxy_connections, report.proxy_broken_directions
            ),
        ),
        ("final reads", format!("{} answered", report.final_reads)),
        ("checks", checks.join("\n")),
        ("verdict", report.verdict.to_uppercase()),
    ]
}

fn rejoin_summary(report: &ChaosReport) -> String {
    let mut measured: Vec<f64> = report.rejoins.iter().filter_map(|r| r.after_ms).collect();
    let missing = report.rejoins.len() - measured.len();
    if measured.is_empty() {
        return if missing == 0 {
            "no heals".to_string()
        } else {
            format!("{missing} never rejoined")
        };
    }
    measured.sort_by(f64::total_cmp);
    let median = measured[measured.len() / 2];
    let max = measured[measured.len() - 1];
    format!(
        "{} measured: median {:.3}s, max {:.3}s{}",
        measured.len(),
        median / 1000.0,
        max / 1000.0,
        if missing > 0 {
            format!("; {missing} never rejoined")
        } else {
            String::new()
        }
    )
}
