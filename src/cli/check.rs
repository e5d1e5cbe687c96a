//! `lockstep check HISTORY.jsonl`: judge any history in the documented format (README,
//! "Histories"), from the simulator or from another tool, with the checkers the simulator runs
//! at the end of every run: linearizability (all but local checks) and monotonic reads (local
//! checks).
//!
//! It only reads the file, calls [`lockstep::sim::history::read_history`] and
//! [`lockstep::sim::linearizability::check_named_history`], and prints the verdict. It must never
//! panic on input, and never call a history linearizable that it did not finish checking: a
//! search stopped by `--timeout` or by its step bound is the third answer, unknown.

use clap::Args;
use lockstep::node::Consistency;
use lockstep::sim::history::{self, ClientNames, History, HistoryOp};
use lockstep::sim::linearizability::{
    self, CheckLimits, LinearizabilityReport, LinearizabilityViolation,
};
use lockstep::sim::timeline;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every operation fits some order in real time, and local checks never go backwards.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// A violation: the lock and its smallest failing window are printed.
pub const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// The history could not be read: the message names the line and the field.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The search stopped (`--timeout`, or its step bound) before deciding every lock.
pub const EXIT_UNKNOWN: u8 = 3;

/// Larger files are refused rather than read: a history of ten million operations is about
/// 1.2 GB, and the whole file is held in memory.
const HISTORY_BYTES_MAX: u64 = 4 << 30;
/// Bounds of `--generate`.
const GENERATE_OPERATIONS_MAX: usize = 10_000_000;
const GENERATE_LOCKS_MAX: usize = 100_000;
const GENERATE_CLIENTS_MAX: u32 = 100_000;

#[derive(Args)]
#[command(
    after_help = "The history: JSON Lines, one operation per line, as `lockstep run \
--history FILE` writes it (README, \"Histories\"):
  {\"client\":\"c1\",\"op\":\"preempt\",\"lock\":\"a\",\"call\":1000,\"return\":4200,\"result\":\"granted\",\"token\":12}
  {\"client\":\"alice\",\"op\":\"check\",\"lock\":\"a\",\"consistency\":\"linearizable\",\"call\":6000,\"return\":7100,\"result\":\"owner\",\"owner\":\"c1\",\"token\":12}
  {\"client\":\"node-7\",\"op\":\"release\",\"lock\":\"a\",\"call\":8000,\"return\":null,\"result\":\"unknown\"}
Fields: client (any non-empty name), op (preempt, release, check), lock, consistency (checks: \
local or linearizable), call and return (nanoseconds on one clock; return null when the client \
never learned the result), result (granted+token, held_by+owner, released, not_owner, free, \
owner+owner[+token], unknown). Fields the format does not define are ignored, with one warning \
naming them. Blank lines are skipped.

Local checks are held to monotonic reads per client, everything else to linearizability \
against one sequential lock table, lock by lock. An `unknown` preempt or release may have taken \
effect at any time after its call, or never.

Exit codes: 0 linearizable (and monotonic reads hold); 1 not: each violation names the lock and \
the smallest window of operations that cannot be linearized; 2 bad input: `FILE:LINE: field \
`NAME`: problem`; 3 unknown: --timeout passed, or the search hit its step bound, before every \
lock was decided.

Examples:
  lockstep run scenarios/02-leader-crash-after-grant.yaml --history run.jsonl
  lockstep check run.jsonl
  lockstep check --timeout 30s --json jepsen-export.jsonl
  lockstep check --html run.html run.jsonl                   # and draw it
  lockstep check --generate 100000 --locks 100 > big.jsonl   # a linearizable history to time"
)]
pub struct CheckArgs {
    /// The history to check, as JSON Lines; `-` reads standard input.
    #[arg(value_name = "HISTORY", required_unless_present = "generate")]
    history: Option<PathBuf>,
    /// Give up after this long (e.g. 500ms, 30s, 5m) and answer unknown (exit 3). The search
    /// stops within about a thousand steps of the deadline; reading the file is not cut short.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Print the verdict as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the history's timeline to FILE: one self-contained HTML page with a lane per
    /// client, operations coloured by result, and for a violation the failing step, the
    /// smallest window that cannot be linearized and the furthest partial linearization. A
    /// history has no servers or messages, so it shows none.
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    html: Option<PathBuf>,
    /// Instead of checking, write a random linearizable history of N operations to stdout
    /// (seeded; about 3% unknown results, half the checks local), to measure the checker.
    #[arg(long, value_name = "N", conflicts_with = "history")]
    generate: Option<usize>,
    /// With --generate: locks `l1`.. the operations spread over.
    #[arg(long, value_name = "L", default_value_t = 100, requires = "generate")]
    locks: usize,
    /// With --generate: concurrent clients `c1`.., one operation in flight each.
    #[arg(long, value_name = "C", default_value_t = 50, requires = "generate")]
    clients: u32,
    /// With --generate: the seed.
    #[arg(long, value_name = "S", default_value_t = 1, requires = "generate")]
    seed: u64,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match lockstep::sim::scenario::parse_duration(text) {
        Some(duration) if !duration.is_zero() => Ok(duration),
        Some(_) => Err(format!("{text:?}: a timeout must be more than zero")),
        None => Err(format!(
            "{text:?} is not a duration (use a number with ms, s or m)"
        )),
    }
}

pub fn run(args: CheckArgs) -> u8 {
    if let Some(operations) = args.generate {
        return generate(operations, args.locks, args.clients, args.seed);
    }
    let started = Instant::now();
    let path = args
        .history
        .expect("clap requires HISTORY without --generate");
    let shown = if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let history = match load(&path, &shown) {
        Ok(history) => history,
        Err(message) => return bad_input(&message, args.json),
    };
    let read_seconds = started.elapsed().as_secs_f64();
    if !history.unknown_fields.is_empty() {
        let named: Vec<String> = history
            .unknown_fields
            .iter()
            .map(|(field, line)| format!("`{field}` (first on line {line})"))
            .collect();
        eprintln!(
            "warning: {shown}: ignoring fields the history format does not define: {}",
            named.join(", ")
        );
    }
    let limits = CheckLimits {
        deadline: args.timeout.map(|timeout| started + timeout),
        ..CheckLimits::default()
    };
    let report = linearizability::check_named_history(&history.ops, &history.clients, &limits);
    let verdict = Verdict::of(&report);
    let summary = Summary::of(&history, &report, started.elapsed(), read_seconds);
    if let Some(html) = &args.html {
        let title = format!("lockstep check: {shown}");
        let page = timeline::from_history(&title, &history.ops, &history.clients, &report);
        if let Err(error) = timeline::write_html(html, &page) {
            let message = format!("{}: cannot write the timeline: {error}", html.display());
            return bad_input(&message, args.json);
        }
    }
    if args.json {
        let document = json_verdict(&shown, verdict, &summary, &report, &history, args.timeout);
        println!("{document:#}");
    } else {
        print_text(
            &shown,
            verdict,
            &summary,
            &report,
            &history.clients,
            args.timeout,
        );
    }
    verdict.exit_code()
}

/// Reads and parses the history; the error is the whole message, place first.
fn load(path: &Path, shown: &str) -> Result<History, String> {
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(HISTORY_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(HISTORY_BYTES_MAX + 1).read_to_end(&mut bytes))
    };
    read.map_err(|error| format!("{shown}: cannot read: {error}"))?;
    if bytes.len() as u64 > HISTORY_BYTES_MAX {
        return Err(format!(
            "{shown}: larger than {} GiB, the most this reads",
            HISTORY_BYTES_MAX >> 30
        ));
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        format!("{shown}:{line}: not UTF-8 text")
    })?;
    history::read_history(&text)
        .map_err(|error| format!("{shown}:{}: {}", error.line, error.problem))
}

fn bad_input(message: &str, json: bool) -> u8 {
    eprintln!("error: {message}");
    if json {
        let document =
            json!({ "verdict": "bad_input", "exit_code": EXIT_BAD_INPUT, "error": message });
        println!("{document:#}");
    }
    EXIT_BAD_INPUT
}

/// The three answers.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Verdict {
    Linearizable,
    /// Also when some locks were left undecided: a violation found is a violation.
    NotLinearizable,
    Unknown,
}

impl Verdict {
    fn of(report: &LinearizabilityReport) -> Verdict {
        if !report.violations.is_empty() {
            Verdict::NotLinearizable
        } else if !report.inconclusive_locks.is_empty() {
            Verdict::Unknown
        } else {
            debug_assert!(report.passed(), "neither violated nor undecided");
            Verdict::Linearizable
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not_linearizable",
            Verdict::Unknown => "unknown",
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            Verdict::Linearizable => EXIT_LINEARIZABLE,
            Verdict::NotLinearizable => EXIT_NOT_LINEARIZABLE,
            Verdict::Unknown => EXIT_UNKNOWN,
        }
    }
}

/// The figures of the summary line.
struct Summary {
    operations: usize,
    local_checks: usize,
    unknown_results: usize,
    locks: usize,
    clients: usize,
    seconds: f64,
    read_seconds: f64,
}

impl Summary {
    fn of(
        history: &History,
        report: &LinearizabilityReport,
        elapsed: Duration,
        read_seconds: f64,
    ) -> Summary {
        let ops = &history.ops;
        let clients: BTreeSet<u32> = ops.iter().map(|op| op.client).collect();
        assert_eq!(
            report.operations_checked,
            ops.len(),
            "every operation is checked"
        );
        Summary {
            operations: ops.len(),
            local_checks: ops
                .iter()
                .filter(|op| op.consistency == Some(Consistency::Local))
                .count(),
            unknown_results: ops.iter().filter(|op| op.return_ns.is_none()).count(),
            locks: report.locks_checked,
            clients: clients.len(),
            seconds: elapsed.as_secs_f64(),
            read_seconds,
        }
    }
}

fn print_text(
    shown: &str,
    verdict: Verdict,
    summary: &Summary,
    report: &LinearizabilityReport,
    names: &ClientNames,
    timeout: Option<Duration>,
) {
    for violation in &report.violations {
        println!("{}\n", violation.render(names));
    }
    let verdict_text = match verdict {
        Verdict::Linearizable => "linearizable, monotonic reads hold".to_string(),
        Verdict::NotLinearizable => format!(
            "NOT LINEARIZABLE: {} violation(s){}",
            report.violations.len(),
            undecided_note(report, timeout)
        ),
        Verdict::Unknown => format!("UNKNOWN{}", undecided_note(report, timeout)),
    };
    println!(
        "{shown}: {} operations ({} local checks, {} unknown results), {} locks, {} clients, \
         checked in {:.3}s (reading {:.3}s): {verdict_text}",
        summary.operations,
        summary.local_checks,
        summary.unknown_results,
        summary.locks,
        summary.clients,
        summary.seconds,
        summary.read_seconds,
    );
}

/// Why some locks are undecided, if any are: `; timed out after 1ms: 1 of 3 locks undecided (a)`.
fn undecided_note(report: &LinearizabilityReport, timeout: Option<Duration>) -> String {
    let undecided = &report.inconclusive_locks;
    if undecided.is_empty() {
        return String::new();
    }
    const NAMED_MAX: usize = 10;
    let mut named = undecided[..undecided.len().min(NAMED_MAX)].join(", ");
    if undecided.len() > NAMED_MAX {
        named.push_str(", ...");
    }
    let why = match timeout {
        Some(timeout) if report.timed_out => format!("timed out after {timeout:?}"),
        _ => "the search hit its step bound".to_string(),
    };
    format!(
        "; {why}: {} of {} locks undecided ({named})",
        undecided.len(),
        report.locks_checked
    )
}

fn json_verdict(
    shown: &str,
    verdict: Verdict,
    summary: &Summary,
    report: &LinearizabilityReport,
    history: &History,
    timeout: Option<Duration>,
) -> Value {
    let names = &history.clients;
    let violations: Vec<Value> = report
        .violations
        .iter()
        .map(|violation| json_violation(violation, names))
        .collect();
    json!({
        "verdict": verdict.name(),
        "exit_code": verdict.exit_code(),
        "history": shown,
        "operations": summary.operations,
        "local_checks": summary.local_checks,
        "unknown_results": summary.unknown_results,
        "locks": summary.locks,
        "clients": summary.clients,
        "seconds": summary.seconds,
        "read_seconds": summary.read_seconds,
        "timeout_seconds": timeout.map(|timeout| timeout.as_secs_f64()),
        "timed_out": report.timed_out,
        "undecided_locks": report.inconclusive_locks,
        "unknown_fields": history.unknown_fields.keys().collect::<Vec<_>>(),
        "violations": violations,
    })
}

fn json_violation(violation: &LinearizabilityViolation, names: &ClientNames) -> Value {
    let lines =
        |ops: &[HistoryOp]| -> Vec<Value> { ops.iter().map(|op| op.to_json(names)).collect() };
    match violation {
        LinearizabilityViolation::NotLinearizable {
            lock,
            window,
            explanation,
            culprit,
            furthest,
        } => json!({
            "invariant": violation.invariant(),
            "lock": lock,
            "explanation": explanation,
            "window": lines(window),
            "culprit": culprit,
            "furthest": json!({
                "start": furthest.start.render(names),
                "steps": furthest.steps.iter().map(|step| json!({
                    "op": step.op.to_json(names),
                    "required": step.required,
                    "after": step.after.render(names),
                })).collect::<Vec<Value>>(),
                "unplaced": lines(&furthest.unplaced),
                "cut_short": furthest.cut_short,
            }),
            "message": violation.render(names),
        }),
        LinearizabilityViolation::NonMonotonicRead {
            client,
            lock,
            earlier,
            later,
        } => json!({
            "invariant": violation.invariant(),
            "lock": lock,
            "client": names.name(*client),
            "earlier": earlier.to_json(names),
            "later": later.to_json(names),
            "message": violation.render(names),
        }),
        LinearizabilityViolation::StaleRead {
            client,
            earlier,
            later,
        } => json!({
            "invariant": violation.invariant(),
            "lock": later.lock,
            "client": names.name(*client),
            "earlier": earlier.to_json(names),
            "later": later.to_json(names),
            "message": violation.render(names),
        }),
    }
}

/// `--generate`: a synthetic linearizable history on stdout.
fn generate(operations: usize, locks: usize, clients: u32, seed: u64) -> u8 {
    let mut problems = Vec::new();
    if !(1..=GENERATE_OPERATIONS_MAX).contains(&operations) {
        problems.push(format!(
            "--generate {operations} is outside 1..={GENERATE_OPERATIONS_MAX}"
        ));
    }
    if !(1..=GENERATE_LOCKS_MAX).contains(&locks) {
        problems.push(format!(
            "--locks {locks} is outside 1..={GENERATE_LOCKS_MAX}"
        ));
    }
    if !(1..=GENERATE_CLIENTS_MAX).contains(&clients) {
        problems.push(format!(
            "--clients {clients} is outside 1..={GENERATE_CLIENTS_MAX}"
        ));
    }
    if !problems.is_empty() {
        return bad_input(&problems.join("; "), false);
    }
    let ops = linearizability::synthetic_history(operations, locks, clients, seed);
    let mut out = BufWriter::new(std::io::stdout().lock());
    match history::write_jsonl(&ops, &mut out).and_then(|()| out.flush()) {
        Ok(()) => EXIT_LINEARIZABLE,
        Err(error) => {
            eprintln!("error: writing the history: {error}");
            EXIT_BAD_INPUT
        }
    }
}
