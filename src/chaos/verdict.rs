//! The end-of-run checks of a chaos run, on what the run left behind: the history file, the
//! servers' logs, and what chaos saw happen. Pure: it reads nothing itself, so each check can
//! be shown catching a violation on fabricated input.
//!
//! - `linearizability` and `monotonic_reads`: the history file read back with
//!   [`crate::sim::history::read_history`] and judged by
//!   [`crate::sim::linearizability::check_named_history`], exactly as `lockstep check` does.
//! - `fencing_tokens`: [`fencing_violations`], an independent look at the tokens.
//! - `server_logs`: no server panicked.
//! - `processes`, `liveness`, `client_errors`: what the run itself found (servers that died on
//!   their own, servers that never rejoined or never answered the final reads, operations the
//!   cluster refused for good).

use crate::sim::history::{self, ClientNames, HistoryOp, HistoryResult};
use crate::sim::linearizability::{self, CheckLimits, LinearizabilityReport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most lines of detail one check reports.
const DETAIL_LINES_MAX: usize = 20;
/// What a server's log says when it panics (Rust's panic message).
pub const PANIC_MARKER: &str = "panicked at";

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    pub name: &'static str,
    pub passed: bool,
    /// What was checked, when it passed; what went wrong, when it did not.
    pub detail: Vec<String>,
}

/// What the run found by itself, for [`judge`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFindings {
    /// Servers that exited without chaos stopping them.
    pub unexpected_exits: Vec<String>,
    /// Healed servers that did not rejoin in time, and final reads never answered.
    pub liveness: Vec<String>,
    /// Operations refused for good or answered against the protocol.
    pub client_errors: Vec<String>,
}

/// Runs every check. `history_jsonl` is the history file's text, `logs` each server's name and
/// log text, `check_time_max` how long the linearizability search may take.
pub fn judge(
    history_jsonl: &str,
    logs: &[(String, String)],
    findings: &RunFindings,
    check_time_max: Duration,
) -> Vec<CheckOutcome> {
    judge_with_report(history_jsonl, logs, findings, check_time_max).0
}

/// [`judge`], also returning the history checkers' report (for the timeline), or `None` when
/// the history did not read back.
pub fn judge_with_report(
    history_jsonl: &str,
    logs: &[(String, String)],
    findings: &RunFindings,
    check_time_max: Duration,
) -> (Vec<CheckOutcome>, Option<LinearizabilityReport>) {
    let (mut outcomes, report) = check_history_with_report(history_jsonl, check_time_max);
    outcomes.push(check_logs(logs));
    outcomes.push(listed(
        "processes",
        &findings.unexpected_exits,
        "no server exited on its own",
    ));
    outcomes.push(listed(
        "liveness",
        &findings.liveness,
        "every healed server rejoined, every final read was answered",
    ));
    outcomes.push(listed(
        "client_errors",
        &findings.client_errors,
        "no operation was refused for good or answered against the protocol",
    ));
    (outcomes, report)
}

/// Linearizability, monotonic reads and fencing tokens, on the history as written.
pub fn check_history(history_jsonl: &str, check_time_max: Duration) -> Vec<CheckOutcome> {
    check_history_with_report(history_jsonl, check_time_max).0
}

/// [`check_history`], also returning the linearizability report when the history read back.
fn check_history_with_report(
    history_jsonl: &str,
    check_time_max: Duration,
) -> (Vec<CheckOutcome>, Option<LinearizabilityReport>) {
    let history = match history::read_history(history_jsonl) {
        Ok(history) => history,
        Err(error) => {
            // Chaos wrote it: a history it cannot read back is a bug in chaos itself.
            let failed = |name| CheckOutcome {
                name,
                passed: false,
                detail: vec![format!("the history does not read back: {error}")],
            };
            let outcomes = vec![
                failed(linearizability::LINEARIZABILITY),
                failed(linearizability::MONOTONIC_READS),
                failed("fencing_tokens"),
            ];
            return (outcomes, None);
        }
    };
    let limits = CheckLimits {
        deadline: Some(Instant::now() + check_time_max),
        ..CheckLimits::default()
    };
    let report = linearizability::check_named_history(&history.ops, &history.clients, &limits);
    let mut outcomes = Vec::new();
    for name in [
        linearizability::LINEARIZABILITY,
        linearizability::MONOTONIC_READS,
    ] {
        let violations: Vec<String> = report
            .violations
            .iter()
            .filter(|violation| violation.invariant() == name)
            .map(|violation| violation.render(&history.clients))
            .collect();
        let mut detail = violations.clone();
        if name == linearizability::LINEARIZABILITY && !report.inconclusive_locks.is_empty() {
            detail.push(format!(
                "undecided within {check_time_max:?} (or the search bound): locks {}",
                report.inconclusive_locks.join(", ")
            ));
        }
        let passed = detail.is_empty();
        if passed {
            detail.push(format!(
                "{} operations on {} locks",
                report.operations_checked, report.locks_checked
            ));
        }
        outcomes.push(CheckOutcome {
            name,
            passed,
            detail: bounded(detail),
        });
    }
    let fencing = fencing_violations(&history.ops, &history.clients);
    outcomes.push(CheckOutcome {
        name: "fencing_tokens",
        passed: fencing.is_empty(),
        detail: bounded(if fencing.is_empty() {
            vec![format!("{} observed holds", observed_holds(&history.ops))]
        } else {
            fencing
        }),
    });
    (outcomes, Some(report))
}

/// A hold's fencing token as an operation saw it: a granted preempt, or a linearizable check
/// that found an owner. Local checks may be stale by design and are left to monotonic reads.
fn observed_token(op: &HistoryOp) -> Option<(u32, u64)> {
    match op.result {
        HistoryResult::Granted { token } => Some((op.client, token)),
        HistoryResult::Owner {
            owner,
            token: Some(token),
        } if op.consistency == Some(crate::node::Consistency::Linearizable) => Some((owner, token)),
        _ => None,
    }
}

fn observed_holds(ops: &[HistoryOp]) -> usize {
    ops.iter().filter(|op| observed_token(op).is_some()).count()
}

/// Fencing tokens, lock by lock: a token names one hold, so it never has two owners; and
/// holds follow each other in token order, so an operation called after another returned
/// never sees an older token than that one saw. Returns each violation, described.
pub fn fencing_violations(ops: &[HistoryOp], names: &ClientNames) -> Vec<String> {
    let mut by_lock: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in ops.iter().filter(|op| observed_token(op).is_some()) {
        by_lock.entry(op.lock.as_str()).or_default().push(op);
    }
    let mut violations = Vec::new();
    for (lock, observations) in by_lock {
        let mut owners: BTreeMap<u64, &HistoryOp> = BTreeMap::new();
        for op in &observations {
            let (owner, token) = observed_token(op).expect("filtered");
            match owners.get(&token) {
                Some(first) if observed_token(first).expect("filtered").0 != owner => {
                    violations.push(format!(
                        "lock `{lock}`: token {token} names two holders:\n    {}\n    {}",
                        first.named(names),
                        op.named(names)
                    ));
                }
                Some(_) => {}
                None => {
                    owners.insert(token, op);
                }
            }
        }
        // Sweep calls in order, keeping the highest token among observations returned before.
        let mut by_return: Vec<&HistoryOp> = observations.clone();
        by_return.sort_by_key(|op| op.return_ns);
        let mut by_call = observations;
        by_call.sort_by_key(|op| op.call_ns);
        let mut returned = 0;
        let mut highest: Option<&HistoryOp> = None;
        for op in by_call {
            while returned < by_return.len()
                && by_return[returned]
                    .return_ns
                    .is_some_and(|at| at < op.call_ns)
            {
                let candidate = by_return[returned];
                let token = observed_token(candidate).expect("filtered").1;
                if highest.is_none_or(|h| token > observed_token(h).expect("filtered").1) {
                    highest = Some(candidate);
                }
                returned += 1;
            }
            let token = observed_token(op).expect("filtered").1;
            if let Some(earlier) = highest
                && token < observed_token(earlier).expect("filtered").1
            {
                violations.push(format!(
                    "lock `{lock}`: token {token} seen after token {} had been:\n    {}\n    {}",
                    observed_token(earlier).expect("filtered").1,
                    earlier.named(names),
                    op.named(names)
                ));
            }
        }
    }
    violations
}

/// Every server log line that reports a panic.
pub fn check_logs(logs: &[(String, String)]) -> CheckOutcome {
    let mut panics = Vec::new();
    for (server, log) in logs {
        for (number, line) in log.lines().enumerate() {
            if line.contains(PANIC_MARKER) {
                panics.push(format!("{server} log line {}: {}", number + 1, line.trim()));
            }
        }
    }
    let passed = panics.is_empty();
    CheckOutcome {
        name: "server_logs",
        passed,
        detail: bounded(if passed {
            vec![format!("no panic in {} server logs", logs.len())]
        } else {
            panics
        }),
    }
}

fn listed(name: &'static str, problems: &[String], clean: &str) -> CheckOutcome {
    CheckOutcome {
        name,
        passed: problems.is_empty(),
        detail: bounded(if problems.is_empty() {
            vec![clean.to_string()]
        } else {
            problems.to_vec()
        }),
    }
}

/// At most [`DETAIL_LINES_MAX`] lines, the last saying how many more there were.
fn bounded(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > DETAIL_LINES_MAX {
        let more = lines.len() - (DETAIL_LINES_MAX - 1);
        lines.truncate(DETAIL_LINES_MAX - 1);
        lines.push(format!("... and {more} more"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = r#"{"client":"c1","op":"preempt","lock":"w1","call":10,"return":20,"result":"granted","token":5}
{"client":"c2","op":"preempt","lock":"w1","call":30,"return":40,"result":"held_by","owner":"c1"}
{"client":"c1","op":"release","lock":"w1","call":50,"return":60,"result":"released"}
{"client":"c2","op":"preempt","lock":"w1","call":70,"return":80,"result":"granted","token":9}
{"client":"c3","op":"check","lock":"w1","consistency":"linearizable","call":90,"return":95,"result":"owner","owner":"c2","token":9}
"#;

    fn outcome<'a>(outcomes: &'a [CheckOutcome], name: &str) -> &'a CheckOutcome {
        outcomes
            .iter()
            .find(|o| o.name == name)
            .expect("a check of that name")
    }

    fn logs(text: &str) -> Vec<(String, String)> {
        vec![("s1".to_string(), text.to_string())]
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let outcomes = judge(
            CLEAN,
            &logs("INFO all fine\n"),
            &RunFindings::default(),
            Duration::from_secs(10),
        );
        for outcome in &outcomes {
            assert!(outcome.passed, "{outcome:?}");
        }
        assert_eq!(outcomes.len(), 7);
    }

    #[test]
    fn a_grant_of_a_held_lock_is_caught_as_not_linearizable() {
        // c2 is granted w1 while c1 holds it, with no release in between.
        let history = CLEAN.replace(
            r#"{"client":"c1","op":"release","lock":"w1","call":50,"return":60,"result":"released"}
"#,
            "",
        );
        let outcomes = check_history(&history, Duration::from_secs(10));
        let linearizability = outcome(&outcomes, "linearizability");
        assert!(!linearizability.passed);
        assert!(
            linearizability.detail[0].contains("`w1`"),
            "{:?}",
            linearizability.detail
        );
    }

    #[test]
    fn a_token_that_goes_backwards_is_caught_by_the_fencing_check() {
        let history = CLEAN.replace(r#""token":9}"#, r#""token":3}"#);
        let outcomes = check_history(&history, Duration::from_secs(10));
        let fencing = outcome(&outcomes, "fencing_tokens");
        assert!(!fencing.passed);
        assert!(
            fencing.detail[0].contains("token 3 seen after token 5"),
            "{:?}",
            fencing.detail
        );
    }

    #[test]
    fn one_token_for_two_holders_is_caught() {
        let history = r#"{"client":"c1","op":"preempt","lock":"w1","call":10,"return":20,"result":"granted","token":5}
{"client":"c2","op":"check","lock":"w1","consistency":"linearizable","call":15,"return":25,"result":"owner","owner":"c2","token":5}
"#;
        let ops = history::read_history(history).unwrap();
        let violations = fencing_violations(&ops.ops, &ops.clients);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("two holders"));
    }

    #[test]
    fn stale_local_reads_are_not_fencing_violations() {
        // A local check may lag: it is monotonic reads' business, not this check's.
        let history = CLEAN.to_string()
            + r#"{"client":"c3","op":"check","lock":"w1","consistency":"local","call":100,"return":110,"result":"owner","owner":"c1","token":5}
"#;
        let ops = history::read_history(&history).unwrap();
        assert!(fencing_violations(&ops.ops, &ops.clients).is_empty());
    }

    #[test]
    fn a_panic_in_a_server_log_is_caught_and_quoted() {
        let log = "INFO serving\nthread 'main' panicked at src/node/server.rs:12:5:\nboom\n";
        let check = check_logs(&logs(log));
        assert!(!check.passed);
        assert_eq!(check.detail.len(), 1);
        assert!(
            check.detail[0].starts_with("s1 log line 2:"),
            "{:?}",
            check.detail
        );
    }

    #[test]
    fn a_history_that_does_not_read_back_fails_every_history_check() {
        let outcomes = check_history("{\"client\":\"c1\"}\n", Duration::from_secs(1));
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes.iter().all(|o| !o.passed));
    }

    #[test]
    fn findings_of_the_run_fail_their_checks() {
        let findings = RunFindings {
            unexpected_exits: vec!["s2 exited on its own (exit code 101)".into()],
            liveness: vec![],
            client_errors: vec!["c3 preempt w1: unauthorized".into()],
        };
        let outcomes = judge(CLEAN, &logs(""), &findings, Duration::from_secs(10));
        assert!(!outcome(&outcomes, "processes").passed);
        assert!(outcome(&outcomes, "liveness").passed);
        assert!(!outcome(&outcomes, "client_errors").passed);
    }

    #[test]
    fn details_are_bounded() {
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let lines = bounded(many);
        assert_eq!(lines.len(), DETAIL_LINES_MAX);
        assert_eq!(lines.last().unwrap(), "... and 81 more");
    }
}
