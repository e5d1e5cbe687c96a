//! `lockstep bench --servers HOST:PORT,... --keepalive-sessions N --ttl D`: N live sessions
//! renewing every TTL/3 (`lockstep::loadgen::keepalive`), and what they cost the cluster:
//! keepalives answered a second and their latency, the entries the leader's log gained during
//! the renewal phase (read with `status` before and after, so that "keepalives cost no log
//! entry" is counted), and with `--metrics` the servers' CPU per keepalive.

use super::{CpuMeter, cpu_json, cpu_text};
use indicatif::{ProgressBar, ProgressStyle};
use lockstep::client::{ClientTls, StatusReport, server_status};
use lockstep::loadgen::keepalive::{
    self, KeepalivePlan, KeepaliveProgress, KeepaliveResult, Phase,
};
use lockstep::net::protocol::role_name;
use lockstep::node::Role;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most sessions.
pub const SESSIONS_MAX: u32 = 100_000;
/// Most connections.
pub const CONNECTIONS_MAX: u32 = 1_024;
/// Connections when `--connections` is not given.
pub const CONNECTIONS_DEFAULT: u32 = 16;

/// What to run.
pub struct KeepaliveOptions {
    pub servers: Vec<String>,
    pub sessions: u32,
    pub connections: u32,
    pub ttl: Duration,
    pub duration: Duration,
    pub json: bool,
    pub tls: crate::cli::client::TlsFlags,
    pub metrics: Vec<String>,
}

impl KeepaliveOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.sessions == 0 || self.sessions > SESSIONS_MAX {
            return Err(format!(
                "--keepalive-sessions must be within 1..={SESSIONS_MAX}"
            ));
        }
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(format!(
                "--connections must be within 1..={CONNECTIONS_MAX}"
            ));
        }
        if self.duration < Duration::from_secs(1) || self.duration > super::DURATION_MAX {
            return Err("--duration must be within 1s..=60m".into());
        }
        super::validate_ttl(Some(self.ttl))
    }
}

/// The cluster as `status` showed it at a phase's end: every server's answer, or why none.
struct Snapshot {
    servers: Vec<(String, Result<StatusReport, String>)>,
}

impl Snapshot {
    fn take(servers: &[String], tls: Option<&ClientTls>) -> Snapshot {
        Snapshot {
            servers: servers
                .iter()
                .map(|address| {
                    let report = server_status(address, tls, super::PROBE_TIMEOUT);
                    (address.clone(), report)
                })
                .collect(),
        }
    }

    /// The leader's report (the highest term's, should two claim it).
    fn leader(&self) -> Option<&StatusReport> {
        self.servers
            .iter()
            .filter_map(|(_, report)| report.as_ref().ok())
            .filter(|report| report.status.role == Role::Leader)
            .max_by_key(|report| report.term)
    }

    fn json(&self) -> serde_json::Value {
        let servers: Vec<serde_json::Value> = self
            .servers
            .iter()
            .map(|(address, report)| match report {
                Ok(report) => json!({
                    "address": address, "server": report.status.server.to_string(),
                    "role": role_name(report.status.role), "term": report.term,
                    "last_index": report.status.last_index,
                    "commit_index": report.status.commit_index,
                }),
                Err(problem) => json!({"address": address, "error": problem}),
            })
            .collect();
        json!(servers)
    }
}

/// The log figures: the leader's last and commit index before and after the renewal phase.
struct LogGrowth<'a> {
    before: &'a Snapshot,
    after: &'a Snapshot,
}

impl LogGrowth<'_> {
    /// Entries the leader's log gained over the renewal phase; `None` without a leader at
    /// either end.
    fn entries_appended(&self) -> Option<u64> {
        let (before, after) = (self.before.leader()?, self.after.leader()?);
        Some(
            after
                .status
                .last_index
                .saturating_sub(before.status.last_index),
        )
    }

    /// True if another server, or the same one in a later term, led at the end.
    fn leader_changed(&self) -> Option<bool> {
        let (before, after) = (self.before.leader()?, self.after.leader()?);
        Some(before.status.server != after.status.server || before.term != after.term)
    }

    fn json(&self) -> serde_json::Value {
        let leader = |snapshot: &Snapshot| {
            snapshot.leader().map(|report| {
                json!({"server": report.status.server.to_string(), "term": report.term,
                       "last_index": report.status.last_index,
                       "commit_index": report.status.commit_index})
            })
        };
        json!({
            "leader_before": leader(self.before), "leader_after": leader(self.after),
            "entries_appended": self.entries_appended(),
            "leader_changed": self.leader_changed(),
            "servers_before": self.before.json(), "servers_after": self.after.json(),
        })
    }

    fn text(&self) -> String {
        let (Some(before), Some(after)) = (self.before.leader(), self.after.leader()) else {
            return "unknown: no leader answered status at one end of the renewal phase".into();
        };
        format!(
            "{} entries appended (leader {} last/commit index {}/{} before, {} {}/{} after{})",
            self.entries_appended().unwrap_or(0),
            before.status.server,
            before.status.last_index,
            before.status.commit_index,
            after.status.server,
            after.status.last_index,
            after.status.commit_index,
            if self.leader_changed() == Some(true) {
                "; the leader changed"
            } else {
                ""
            }
        )
    }
}

/// Runs the keepalive workload and prints its report. Exit 0 if every session registered and
/// every keepalive was answered `kept_alive`, 1 if not, 2 for bad flags or no cluster.
pub fn run(options: &KeepaliveOptions) -> u8 {
    let (plan, tls) = match plan(options) {
        Ok(planned) => planned,
        Err(problem) => {
            eprintln!("error: {problem}");
            return 2;
        }
    };
    let progress = Arc::new(KeepaliveProgress::default());
    let done = Arc::new(AtomicBool::new(false));
    let renewing_since = Arc::new(Mutex::new(None::<Instant>));
    let display = {
        let (progress, done, since) = (progress.clone(), done.clone(), renewing_since.clone());
        let (sessions, duration) = (options.sessions, options.duration);
        std::thread::spawn(move || show_progress(sessions, duration, &progress, &done, &since))
    };
    let mut meter = CpuMeter::new(&options.metrics);
    let mut snapshots = Vec::new();
    let mut cpu = None;
    let result = keepalive::run(&plan, progress, |phase| match phase {
        Phase::Registered => {
            snapshots.push(Snapshot::take(&options.servers, tls.as_ref()));
            meter.start();
            *renewing_since.lock().expect("not poisoned") = Some(Instant::now());
        }
        Phase::Renewed => {
            cpu = Some(meter.finish());
            snapshots.push(Snapshot::take(&options.servers, tls.as_ref()));
        }
    });
    done.store(true, Ordering::Relaxed);
    let _ = display.join();
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            eprintln!("error: could not start the load generator: {error}");
            return 2;
        }
    };
    let cpu = cpu.expect("keepalive: the renewal phase ended");
    report(options, &result, cpu, snapshots)
}

/// The plan the flags ask for, and the TLS it speaks; `Err` names the flag at fault.
fn plan(options: &KeepaliveOptions) -> Result<(KeepalivePlan, Option<ClientTls>), String> {
    options.validate()?;
    let tls = options.tls.load()?;
    let plan = KeepalivePlan {
        servers: options.servers.clone(),
        sessions: options.sessions,
        connections: options.connections.min(options.sessions),
        ttl: options.ttl,
        duration: options.duration,
        tls: tls.clone(),
    };
    Ok((plan, tls))
}

/// Prints the report of a finished run and says how it ended (the exit code).
fn report(
    options: &KeepaliveOptions,
    result: &KeepaliveResult,
    cpu: (Option<Result<f64, String>>, f64),
    snapshots: Vec<Snapshot>,
) -> u8 {
    if result.total.registered == 0 {
        let reason = result.total.registration_failures.first();
        eprintln!(
            "error: no session could register: {}",
            reason.map_or("no reason given", String::as_str)
        );
        return 2;
    }
    let [before, after] = <[Snapshot; 2]>::try_from(snapshots)
        .unwrap_or_else(|_| unreachable!("keepalive: a snapshot at each phase's end"));
    let report = Report {
        result,
        cpu,
        log: LogGrowth {
            before: &before,
            after: &after,
        },
    };
    if options.json {
        println!("{}", report.json(options));
    } else {
        println!("{}", report.render(options));
    }
    let total = &result.total;
    if total.refusals() > 0 || !total.registration_failures.is_empty() {
        1
    } else {
        0
    }
}

fn show_progress(
    sessions: u32,
    duration: Duration,
    progress: &KeepaliveProgress,
    done: &AtomicBool,
    renewing_since: &Mutex<Option<Instant>>,
) {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    // Bounded by the run: `done` is set when it ends.
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let since = *renewing_since.lock().expect("not poisoned");
        let Some(since) = since else {
            let registered = progress.registered.load(Ordering::Relaxed);
            bar.set_message(format!("{registered}/{sessions} sessions registered"));
            continue;
        };
        let seconds = since.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(since.elapsed().as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "{:.0} keepalives/s, {} refused",
            progress.answered.load(Ordering::Relaxed) as f64 / seconds,
            progress.refused.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
}

struct Report<'a> {
    result: &'a KeepaliveResult,
    /// The servers' and the bench's CPU seconds over the renewal phase.
    cpu: (Option<Result<f64, String>>, f64),
    log: LogGrowth<'a>,
}

impl Report<'_> {
    fn rate(&self, count: u64) -> f64 {
        count as f64 / self.result.measured.as_secs_f64().max(1e-9)
    }

    fn render(&self, options: &KeepaliveOptions) -> String {
        use tabled::builder::Builder;
        use tabled::settings::Style;
        let total = &self.result.total;
        let ms = |micros: u64| format!("{:.2}ms", micros as f64 / 1_000.0);
        let rows = [
            (
                "workload",
                format!(
                    "{} sessions on {} connections, TTL {:?}, a keepalive every {:?}",
                    options.sessions,
                    options.connections.min(options.sessions),
                    options.ttl,
                    options.ttl / 3
                ),
            ),
            (
                "servers",
                format!("{} ({})", options.servers.len(), options.servers.join(", ")),
            ),
            (
                "registration",
                format!(
                    "{} sessions in {:.1}s",
                    total.registered,
                    self.result.registration.as_secs_f64()
                ),
            ),
            (
                "renewal phase",
                format!("{:.1}s", self.result.measured.as_secs_f64()),
            ),
            (
                "keepalives answered/s",
                format!("{:.0}", self.rate(total.answered.count())),
            ),
            (
                "keepalive latency",
                format!(
                    "p50 {}, p99 {}, max {}",
                    ms(total.answered.quantile(0.5)),
                    ms(total.answered.quantile(0.99)),
                    ms(total.answered.max())
                ),
            ),
            ("refused", self.refusals()),
            (
                "sent late",
                format!(
                    "p99 {} after schedule; {} after a silence of 45% of the TTL or more",
                    ms(total.lateness.quantile(0.99)),
                    total.late_renewals
                ),
            ),
            ("leader's log", self.log.text()),
            (
                "CPU per keepalive",
                cpu_text(&self.cpu, total.answered.count(), "keepalive"),
            ),
        ];
        let mut table = Builder::default();
        for (name, value) in rows {
            table.push_record([name.to_string(), value]);
        }
        let mut table = table.build();
        table.with(Style::rounded());
        table.to_string()
    }

    fn refusals(&self) -> String {
        let total = &self.result.total;
        let mut parts: Vec<String> = total
            .refused
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        if !total.registration_failures.is_empty() {
            parts.push(format!(
                "{} sessions could not register (first: {})",
                total.registration_failures.len(),
                total.registration_failures[0]
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn json(&self, options: &KeepaliveOptions) -> serde_json::Value {
        let total = &self.result.total;
        let ms = |micros: u64| micros as f64 / 1_000.0;
        json!({
            "servers": options.servers, "sessions": options.sessions,
            "connections": options.connections.min(options.sessions),
            "ttl_ms": options.ttl.as_millis() as u64,
            "tls": options.tls.tls_ca.is_some(),
            "registered": total.registered,
            "registration_failures": total.registration_failures.len(),
            "registration_seconds": self.result.registration.as_secs_f64(),
            "seconds": self.result.measured.as_secs_f64(),
            "keepalives_sent": total.sent,
            "keepalives_answered": total.answered.count(),
            "keepalives_per_second": self.rate(total.answered.count()),
            "refused": total.refused,
            "session_expired": total.session_expired(),
            "sessions_lost": total.sessions_lost,
            "latency": {"p50_ms": ms(total.answered.quantile(0.5)),
                        "p90_ms": ms(total.answered.quantile(0.9)),
                        "p99_ms": ms(total.answered.quantile(0.99)),
                        "max_ms": ms(total.answered.max())},
            "lateness": {"p50_ms": ms(total.lateness.quantile(0.5)),
                         "p99_ms": ms(total.lateness.quantile(0.99)),
                         "max_ms": ms(total.lateness.max())},
            "late_renewals": total.late_renewals,
            "log": self.log.json(),
            "cpu_per_keepalive": cpu_json(&self.cpu, total.answered.count()),
        })
    }
}
