//! The `lockstep` command line: it parses the arguments and dispatches to the subcommand's
//! module in `cli`, and nothing else. The exit codes and the duration flag parser below are
//! shared by those modules.

mod cli;

use clap::{Parser, Subcommand};
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
the same state machines as a real cluster over TCP, `lockstep status` shows how its servers \
are doing, and `lockstep chaos` runs a cluster under a nemesis and checks what its clients saw.\n\n\
Exit codes: 0 success, 1 a failure the command reports (an invariant or expectation failed, a \
refused lock operation, a server that did not answer, an anomaly), 2 unusable input. `lock` exits \
with its command's code, `check` with 3 when it cannot decide in time, `status` with 3 when no \
server leads, `server` with 3 and 4 when its data directory or metrics address is refused, and \
`chaos` with 3 when the cluster did not start and 4 when interrupted; each subcommand's --help \
lists its own."
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
    /// with the same --seed and --trace to see every event, or --html to see the run as a
    /// timeline (one self-contained page, opening on the failing step).
    Run(cli::run::RunArgs),
    /// Swarm-test many random seeds in parallel, minimize every failure, and write each as a
    /// scenario file that `lockstep run` replays.
    ///
    /// Each seed derives its own configuration (cluster size, network, which fault kinds are on
    /// and how often, crashes inside a step and faulty disks for a share of seeds, workload
    /// mix), runs a safety phase under faults, then a liveness phase on a healed, restarted
    /// cluster in which every client's probe must be answered and every replica converge.
    /// Ctrl-C stops cleanly and still prints the summary. Progress is a bar on a terminal;
    /// elsewhere (a batch job, a pipe) a line on stderr every 30 s.
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
    /// on one lock. `--ttl` turns sessions on; `--keepalive-sessions N --ttl D` instead
    /// measures N sessions renewing; `--metrics` adds the servers' CPU per operation.
    /// Example: lockstep bench --servers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    /// --clients 64 --duration 10s
    Bench(cli::bench::BenchArgs),
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
    /// Print every change of a lock (or of the locks under a prefix) as it is committed: who
    /// was granted it with which token, released it, lost it to an expiry, how many wait.
    /// Resumes on another server across a failover without a gap. Example: lockstep watch
    /// printer --servers 127.0.0.1:7001,127.0.0.1:7002
    Watch(cli::watch::WatchArgs),
    /// Show each server of a real cluster in a table: role, term, leader, commit and applied
    /// index, log entries, lag behind the leader, uptime (--json for JSON).
    Status(cli::status::StatusArgs),
    /// Check a history (JSON Lines, from `run --history` or any other tool) for
    /// linearizability and monotonic reads.
    ///
    /// Exit codes: 0 linearizable, 1 not (the lock and the smallest failing window are printed),
    /// 2 bad input (the line and field are named), 3 unknown (--timeout or the search bound).
    /// --html FILE also draws the history as a timeline.
    Check(cli::check::CheckArgs),
    /// Jepsen for lockstep: run a real local cluster under a seeded nemesis (SIGKILL, SIGSTOP,
    /// partitions and one-way cuts through proxies on the peer links, delays, losses) with
    /// concurrent clients, then check their history, the fencing tokens and the server logs.
    ///
    /// Prints a summary (operations by result, faults by kind, availability with and without
    /// faults, how long each healed server took to rejoin) and writes the history, the fault
    /// log and the server logs to --out.
    ///
    /// Exit codes: 0 clean, 1 an anomaly, 2 bad flags, 3 the cluster did not start,
    /// 4 interrupted.
    #[cfg(unix)]
    Chaos(cli::chaos::ChaosArgs),
}

/// A `--duration` flag (`bench`, `explore`): a number with ms, s or m, at least 1 s.
fn parse_duration_flag(text: &str) -> Result<std::time::Duration, String> {
    match lockstep::sim::scenario::parse_duration(text) {
        Some(duration) if duration >= std::time::Duration::from_secs(1) => Ok(duration),
        Some(_) => Err(format!("{text:?} is too short: at least 1s")),
        None => Err(format!(
            "{text:?} is not a duration (use a number with ms, s or m)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Run(_) | Command::Explore(_) | Command::Check(_)
    ) {
        end_quietly_on_a_closed_pipe();
    }
    let code = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Explore(args) => cli::explore::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Server(args) => cli::server::run(args),
        Command::Cluster { command } => cli::cluster::run(command),
        Command::Client(args) => cli::client::run(args),
        Command::Lock(args) => cli::lock::run(args),
        Command::Watch(args) => cli::watch::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Status(args) => cli::status::run(args),
        #[cfg(unix)]
        Command::Chaos(args) => cli::chaos::run(args),
    };
    ExitCode::from(code)
}

/// `lockstep run scenarios/ | head` closes the pipe early; a report-printing command then ends
/// as any Unix filter does, silently, instead of panicking in `println!` on EPIPE (Rust ignores
/// SIGPIPE by default). Only for commands that print reports and own no sockets, child
/// processes or files in flight: a server or a `lock` running a command keeps SIGPIPE ignored,
/// so a closed peer is an error it handles, not its death.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called before any thread starts; restoring a signal's default disposition has no
    // other effect on this process's state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
