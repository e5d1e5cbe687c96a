//! What a run reports: the summary behind `lockstep run`'s table, its `--json` output and its
//! PASS/FAIL line.

use super::cluster::NetworkStats;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;
use tabled::builder::Builder;
use tabled::settings::Style;

#[derive(Clone, Debug, Default, Serialize)]
pub struct OpStats {
    /// Operations handed to clients (scripted and workload).
    pub issued: u64,
    /// Operations that got an answer.
    pub completed: u64,
    /// Answered operations the lock service refused (held_by, not_owner).
    pub refused: u64,
    /// Operations without an answer: timed out, or still running when the run ended.
    pub unknown: u64,
    /// Simulated latency of answered operations, from first send to answer.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct InvariantResult {
    pub name: String,
    /// Observations checked against it.
    pub checks: u64,
    pub held: bool,
    /// The scenario expects this checker to fail (`expect_violations`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expected_to_fail: bool,
}

/// What the fenced resource did with the writes that reached it.
#[derive(Copy, Clone, Debug, Default, Serialize)]
pub struct ResourceWrites {
    pub accepted: u64,
    /// Turned away because a higher token had been accepted for the lock: fencing at work.
    pub rejected: u64,
}

/// A checker the scenario expects to fail, and whether and how it did.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectedViolation {
    pub invariant: String,
    /// When it first failed, if it did.
    pub at_ms: Option<f64>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectationResult {
    /// Where in the scenario file: `events[3]` or `expect_final.a`.
    pub place: String,
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ViolationReport {
    pub invariant: String,
    pub at_ms: f64,
    pub message: String,
    /// The last trace events before the violation, oldest first.
    pub recent_events: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub passed: bool,
    pub simulated_ms: f64,
    /// The same simulated time, exact: sums of it do not depend on the order of addition.
    pub simulated_ns: u64,
    pub wall_ms: f64,
    pub ops: OpStats,
    pub network: NetworkStats,
    pub events_processed: u64,
    pub committed_entries: u64,
    pub max_term: u64,
    pub leaders_elected: u64,
    /// Each leader as it was elected: `s3 (term 2) at 3.312s`.
    pub leader_timeline: Vec<String>,
    pub faults: Vec<String>,
    /// Servers in the cluster.
    pub servers: u32,
    /// Servers that refused to start from a disk corrupt in the middle of its log, and stayed
    /// down: `s2: record 3 (entries 5-9) of 40 is corrupt ...`.
    pub refused_to_start: Vec<String>,
    /// Servers still repairing a damaged log at the end (`s2`): they do not vote until a
    /// leader has repaired them, so with the refused they may leave no majority to elect one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repairing_at_end: Vec<String>,
    /// What rogue clients sent and heard; absent without rogues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rogues: Option<super::cluster::RogueStats>,
    pub invariants: Vec<InvariantResult>,
    /// Writes that reached the fenced resource (`sim::resource`).
    pub resource_writes: ResourceWrites,
    /// The checkers the scenario expects to fail (`expect_violations`), each with its first
    /// violation if it came. The run passes only if every one came.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_violations: Vec<ExpectedViolation>,
    pub expectations: Vec<ExpectationResult>,
    pub violation: Option<ViolationReport>,
    pub trace_events_written: u64,
    /// What the clients observed, for `--history` (not part of the JSON summary).
    #[serde(skip)]
    pub history: Vec<super::history::HistoryOp>,
    /// What the watchers heard (`sim::watch::history_lines`), written after `history`.
    #[serde(skip)]
    pub watch_history: Vec<serde_json::Value>,
    /// The protocol branches every server took, summed (not part of the JSON summary: the
    /// explorer sums it over seeds and names what no seed reached).
    #[serde(skip)]
    pub coverage: crate::node::coverage::Coverage,
    /// Every trace event, when [`super::runner::RunOptions::keep_trace_events`] asked for them
    /// (for `--html`; not part of the JSON summary).
    #[serde(skip)]
    pub trace: Option<super::trace::KeptTrace>,
}

/// The `p`-quantile (0..=1) of sorted durations, in milliseconds; 0 for none.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

impl RunReport {
    pub fn expectations_met(&self) -> usize {
        self.expectations.iter().filter(|e| e.met).count()
    }

    /// The one-line verdict, with what is needed to reproduce the run.
    pub fn verdict_line(&self) -> String {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let mut line = format!("{verdict} {} (seed {})", self.name, self.seed);
        if let Some(violation) = &self.violation {
            let _ = write!(
                line,
                ": {} violated at {:.3}ms",
                violation.invariant, violation.at_ms
            );
        } else if !self.passed {
            let failed = self.expectations.len() - self.expectations_met();
            let missing: Vec<&str> = self
                .expected_violations
                .iter()
                .filter(|expected| expected.at_ms.is_none())
                .map(|expected| expected.invariant.as_str())
                .collect();
            let mut reasons = Vec::new();
            if failed > 0 {
                reasons.push(format!("{failed} expectation(s) not met"));
            }
            if !missing.is_empty() {
                reasons.push(format!(
                    "{} held but the scenario expects a violation",
                    missing.join(", ")
                ));
            }
            let _ = write!(line, ": {}", reasons.join("; "));
        }
        line
    }

    /// The human-readable summary: a table of figures, then failures in detail.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} (seed {})", self.name, self.seed);
        let _ = writeln!(out, "   {}", self.description);
        let ops = &self.ops;
        let net = &self.network;
        let invariants: Vec<String> = self
            .invariants
            .iter()
            .map(|i| {
                let verdict = match (i.held, i.expected_to_fail) {
                    (true, false) => "ok",
                    (false, false) => "VIOLATED",
                    (false, true) => "violated, as the scenario expects",
                    (true, true) => "HELD, but the scenario expects it to fail",
                };
                format!("{} {verdict} ({} checks)", i.name, i.checks)
            })
            .collect();
        let mut rows: Vec<(&str, String)> = vec![
            (
                "simulated time",
                format!(
                    "{:.3}s in {:.0}ms wall",
                    self.simulated_ms / 1e3,
                    self.wall_ms
                ),
            ),
            (
                "operations",
                format!(
                    "{} issued, {} completed, {} refused, {} unknown",
                    ops.issued, ops.completed, ops.refused, ops.unknown
                ),
            ),
            (
                "latency (simulated)",
                format!(
                    "p50 {:.1}ms, p99 {:.1}ms",
                    ops.latency_p50_ms, ops.latency_p99_ms
                ),
            ),
            (
                "messages",
                format!(
                    "{} sent, {} delivered, {} dropped, {} duplicated, {} blocked, {} lost to crashes",
                    net.sent,
                    net.delivered,
                    net.dropped,
                    net.duplicated,
                    net.blocked,
                    net.lost_to_crash
                ),
            ),
            (
                "terms / leaders",
                format!(
                    "highest term {}, {} leaders elected",
                    self.max_term, self.leaders_elected
                ),
            ),
            (
                "log",
                format!("{} entries committed", self.committed_entries),
            ),
            (
                "faults applied",
                if self.faults.is_empty() {
                    "none".into()
                } else {
                    self.faults.len().to_string()
                },
            ),
            (
                "fenced resource",
                format!(
                    "{} writes accepted, {} rejected as stale",
                    self.resource_writes.accepted, self.resource_writes.rejected
                ),
            ),
            ("invariants", invariants.join("\n")),
            (
                "expectations",
                format!(
                    "{} of {} met",
                    self.expectations_met(),
                    self.expectations.len()
                ),
            ),
        ];
        if let Some(rogues) = &self.rogues {
            let sent: Vec<String> = rogues
                .sent
                .iter()
                .map(|(kind, count)| format!("{count} {kind}"))
                .collect();
            let mut text = String::new();
            for line in sent.chunks(4) {
                let _ = writeln!(text, "{}", line.join(", "));
            }
            let _ = write!(
                text,
                "answered: {} errors, {} welcomes, {} outcomes",
                rogues.errors, rogues.welcomes, rogues.outcomes
            );
            let watch_lines = rogues.watch_refusals + rogues.watch_lines + rogues.watch_lines_lost;
            if watch_lines > 0 {
                let _ = write!(
                    text,
                    "\nwatch lines: {} refusals, {} others heard, {} sent to a server down or \
                     cut off",
                    rogues.watch_refusals, rogues.watch_lines, rogues.watch_lines_lost
                );
            }
            rows.insert(rows.len() - 2, ("rogue requests", text));
        }
        let mut builder = Builder::default();
        for (key, value) in rows {
            builder.push_record([key.to_string(), value]);
        }
        let mut table = builder.build();
        table.with(Style::rounded());
        let _ = writeln!(out, "{table}");
        if !self.leader_timeline.is_empty() {
            let _ = writeln!(out, "   leaders  {}", self.leader_timeline.join("  ->  "));
        }
        for fault in &self.faults {
            let _ = writeln!(out, "   fault  {fault}");
        }
        if !self.expectations.is_empty() {
            let mut builder = Builder::default();
            builder.push_record(["", "where", "what", "expected", "got"]);
            for e in &self.expectations {
                let mark = if e.met { "ok" } else { "UNMET" };
                builder.push_record([mark, &e.place, &e.what, &e.expected, &e.actual]);
            }
            let mut table = builder.build();
            table.with(Style::psql());
            let _ = writeln!(out, "{table}");
        }
        for expectation in self.expectations.iter().filter(|e| !e.met) {
            let _ = writeln!(
                out,
                "   UNMET  {} ({}): expected {}, got {}",
                expectation.place, expectation.what, expectation.expected, expectation.actual
            );
        }
        for expected in &self.expected_violations {
            match (&expected.at_ms, &expected.message) {
                (Some(at_ms), Some(message)) => {
                    let name = &expected.invariant;
                    let _ = writeln!(
                        out,
                        "   expected violation {name} at {at_ms:.3}ms: {message}"
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "   EXPECTED VIOLATION MISSING  {} held, but the scenario expects it to \
                         fail (expect_violations)",
                        expected.invariant
                    );
                }
            }
        }
        if let Some(violation) = &self.violation {
            let _ = writeln!(
                out,
                "   VIOLATION {} at {:.3}ms: {}",
                violation.invariant, violation.at_ms, violation.message
            );
            let _ = writeln!(out, "   last events before it:");
            for event in &violation.recent_events {
                let _ = writeln!(out, "     {event}");
            }
            let _ = writeln!(
                out,
                "   reproduce: lockstep run <this file> --seed {} --trace trace.jsonl",
                self.seed
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}
