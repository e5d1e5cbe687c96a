//! The scenario runner: plays one [`Scenario`] through the simulated cluster and says what
//! happened.
//!
//! A run has three phases:
//! 1. until `duration`: scripted events, faults and the random workload;
//! 2. at `duration`: the network heals and the workload stops;
//! 3. settling, for up to `settle`: pending operations finish and replicas converge. Then
//!    convergence and `expect_final` are checked on every live replica.
//!
//! Safety checkers watch every step; the first violation stops the run.

use super::checkers::{self, Violation};
use super::cluster::{ClientEvent, Cluster, ClusterSpec, Event, Restart};
use super::durability;
use super::fairness;
use super::history::{HistoryOp, HistoryOpKind, HistoryResult};
use super::lease::LeaseSafety;
use super::linearizability;
use super::queue::QueueFull;
use super::report::{
    ExpectationResult, ExpectedViolation, InvariantResult, OpStats, ResourceWrites, RunReport,
    ViolationReport, percentile_ms,
};
use super::resource::WriteVerdict;
use super::rng::Stream;
use super::scenario::{
    Action, CrashTarget, Expect, FinalState, IsolateTarget, OpKind, RestartTarget, Scenario,
    WriteExpect,
};
use super::trace::{self, Recorder, TraceEvent};
use super::workload::WorkloadClient;
use crate::net::Endpoint;
use crate::node::{
    Claim, ClientError, Consistency, LockName, LogIndex, Operation, Outcome, Refused, ServerId,
    Time,
};
use std::io::Write;
use std::time::{Duration, Instant};

/// How often, after `duration`, the runner looks whether the run has settled.
const SETTLE_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Knobs of a run that are not part of the scenario.
pub struct RunOptions {
    /// Where to write every trace event as JSON Lines.
    pub trace: Option<Box<dyn Write>>,
    /// Bound on scheduled events (a run that exceeds it fails rather than exhausting memory).
    pub queue_max: usize,
    /// Bound on processed events.
    pub events_max: u64,
    /// Check the client-observed history for linearizability and monotonic reads at the end.
    pub check_linearizability: bool,
    /// Keep up to this many trace events in memory for a timeline ([`RunReport::trace`]).
    /// `None`, the default, keeps none and costs nothing.
    pub keep_trace_events: Option<usize>,
    /// Tests only, and unsafe: servers repairing a damaged log vote anyway
    /// (`ServerConfig::unsafe_recovering_votes`), to show what the repair rule prevents.
    pub unsafe_recovering_votes: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            trace: None,
            queue_max: 5_000_000,
            events_max: 500_000_000,
            check_linearizability: true,
            keep_trace_events: None,
            unsafe_recovering_votes: false,
        }
    }
}

/// A run could not be completed for a reason outside the protocol.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot write the trace: {0}")]
    Trace(#[from] std::io::Error),
}

/// Where an operation came from.
#[derive(Clone, Debug)]
enum Source {
    Script {
        event_index: usize,
        expect: Option<Expect>,
        at: Duration,
    },
    Workload,
}

#[derive(Clone, Debug)]
struct OpRecord {
    client: u32,
    op: Operation,
    source: Source,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    result: Option<Result<Outcome, ClientError>>,
    /// The log index the answer reflected, when there was one.
    index: Option<LogIndex>,
    /// The seq the client sent it under, once started.
    seq: Option<u64>,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    cluster: Cluster,
    ops: Vec<OpRecord>,
    workload: Vec<WorkloadClient>,
    workload_open: bool,
    faults: Vec<String>,
    end_of_duration: Time,
    settle_deadline: Time,
    settled: bool,
    options_events_max: u64,
    check_linearizability: bool,
    /// Operations the history checks covered (linearizable ones, local reads), for the summary.
    history_checks: Option<(u64, u64)>,
    /// What each client believes it holds (`lease_safety`).
    lease_safety: LeaseSafety,
    /// The scenario's writes, by number: (event index, time, client, lock, expectation, whether
    /// the client believed it held the lock and wrote).
    scripted_writes: Vec<ScriptedWrite>,
}

struct ScriptedWrite {
    event_index: usize,
    at: Duration,
    client: u32,
    lock: LockName,
    expect: Option<WriteExpect>,
    written: bool,
}

/// Runs `scenario` with its own seed.
pub fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, RunError> {
    let wall_start = Instant::now();
    let spec = ClusterSpec {
        servers: scenario.cluster.servers,
        clients: scenario.cluster.clients,
        initial_leader: scenario.cluster.leader,
        connect: scenario.cluster.connect.clone(),
        network: scenario.network,
        election_timeout_min: scenario.timing.election_timeout_min,
        election_timeout_max: scenario.timing.election_timeout_max,
        heartbeat_interval: scenario.timing.heartbeat_interval,
        client_timeout: scenario.timing.client_timeout,
        client_retry: scenario.timing.client_retry,
        append_batch: scenario.timing.append_batch,
        snapshot_entries: scenario.timing.snapshot_entries,
        rogues: scenario.rogues.clone(),
        disk: scenario.disk,
        buggify: scenario.buggify,
        clock_drift: scenario.clock_drift,
        session_ttl: scenario.sessions.map(|sessions| sessions.ttl),
        lock_delay: scenario
            .sessions
            .map_or(Duration::ZERO, |sessions| sessions.lock_delay),
        expected_violations: scenario.expect_violations.clone(),
        unsafe_recovering_votes: options.unsafe_recovering_votes,
    };
    let mut recorder = Recorder::new(options.trace);
    if let Some(events_max) = options.keep_trace_events {
        recorder.keep_events(events_max);
    }
    let end_of_duration = Time::from_duration(scenario.duration);
    let mut runner = match Cluster::new(&spec, scenario.seed, recorder, options.queue_max) {
        Ok(cluster) => Runner {
            scenario,
            workload: Vec::new(),
            cluster,
            ops: Vec::new(),
            workload_open: true,
            faults: Vec::new(),
            end_of_duration,
            settle_deadline: end_of_duration + scenario.settle,
            settled: false,
            options_events_max: options.events_max,
            check_linearizability: options.check_linearizability,
            history_checks: None,
            lease_safety: LeaseSafety::default(),
            scripted_writes: Vec::new(),
        },
        Err(full) => unreachable!("booting cannot fill a queue of {}", full.pending_max),
    };
    if let Err(full) = runner.play() {
        runner.cluster.report_violation(Violation {
            invariant: "simulation_bound",
            at: runner.cluster.now(),
            message: format!("{full}: the run generates events faster than it consumes them"),
        });
    }
    let mut report = runner.report(wall_start);
    report.trace_events_written = runner.cluster.recorder.finish()?;
    report.history = runner.history();
    report.watch_history = runner.watch_history();
    report.trace = runner.cluster.recorder.take_kept();
    Ok(report)
}

impl Runner<'_> {
    fn play(&mut self) -> Result<(), QueueFull> {
        for (position, event) in self.scenario.events.iter().enumerate() {
            self.cluster
                .queue
                .push(Time::from_duration(event.at), Event::Script(position))?;
        }
        if let Some(spec) = &self.scenario.workload {
            let cluster = &self.cluster;
            self.workload = WorkloadClient::for_spec(spec, |client| {
                cluster.stream_rng(Stream::Workload(client))
            });
            for position in 0..self.workload.len() {
                let at = Time::ZERO + self.workload[position].think();
                let client = self.workload[position].client;
                self.cluster.queue.push(at, Event::WorkloadNext(client))?;
            }
        }
        // Rogues attack until the end of the duration, like the faults and the workload.
        let rogues_until = (self.scenario.rogues.as_ref())
            .and_then(|rogues| rogues.until)
            .map_or(self.end_of_duration, |until| {
                Time::from_duration(until).min(self.end_of_duration)
            });
        self.cluster.start_rogues(rogues_until)?;
        self.cluster
            .queue
            .push(self.end_of_duration, Event::EndOfDuration)?;
        while let Some((now, event)) = self.cluster.queue.pop() {
            if now > self.settle_deadline || self.settled {
                break;
            }
            match event {
                Event::Script(position) => self.script_event(position)?,
                Event::WorkloadNext(client) => self.workload_next(client)?,
                Event::EndOfDuration => self.end_of_duration()?,
                Event::SettleCheck => self.settle_check()?,
                other => self.cluster.handle(other)?,
            }
            self.take_cluster_faults();
            self.drain_client_events()?;
            if self.cluster.violation().is_some() {
                return Ok(());
            }
            if self.cluster.events_processed >= self.options_events_max {
                self.cluster.report_violation(Violation {
                    invariant: "simulation_bound",
                    at: now,
                    message: format!(
                        "the run processed {} events, its bound",
                        self.options_events_max
                    ),
                });
                return Ok(());
            }
        }
        self.final_checks();
        Ok(())
    }

    /// Restarts one server, saying so in the fault list if it was down.
    fn restart(&mut self, number: u32) -> Result<(), QueueFull> {
        let refused_before = self
            .cluster
            .refused_servers()
            .iter()
            .any(|(refused, _)| *refused == number);
        match self.cluster.restart(number)? {
            Restart::Started => self.record_fault(format!("restart s{number}")),
            Restart::Running => {}
            // The cluster noted the first refusal, with its reason.
            Restart::Refused(_) if !refused_before => {}
            Restart::Refused(_) => self.record_fault(format!(
                "restart s{number}: refused again, its log is corrupt in the middle"
            )),
        }
        Ok(())
    }

    /// Moves the faults the cluster applied on its own into the fault list (they are in the
    /// trace already).
    fn take_cluster_faults(&mut self) {
        for (at, description) in self.cluster.take_fault_notes() {
            self.faults
                .push(format!("{}: {description}", format_duration(at)));
        }
    }

    fn record_fault(&mut self, description: String) {
        self.take_cluster_faults();
        let now = self.cluster.now();
        self.faults
            .push(format!("{}: {description}", format_duration(now)));
        self.cluster
            .recorder
            .record(now, TraceEvent::Fault { fault: description }, None);
    }

    fn script_event(&mut self, position: usize) -> Result<(), QueueFull> {
        let event = &self.scenario.events[position];
        match &event.action {
            Action::ClientOp {
                client,
                op,
                lock,
                consistency,
                timeout,
                expect,
                claim,
            } => {
                let operation = match op {
                    OpKind::Preempt => Operation::Preempt {
                        lock: lock.clone(),
                        claim: *claim,
                    },
                    OpKind::Release => Operation::Release { lock: lock.clone() },
                    OpKind::Check => Operation::Check {
                        lock: lock.clone(),
                        consistency: *consistency,
                    },
                    OpKind::Acquire { wait_ms } => Operation::Acquire {
                        lock: lock.clone(),
                        wait_ms: *wait_ms,
                        claim: *claim,
                    },
                    OpKind::Cancel => Operation::Cancel { lock: lock.clone() },
                };
                // An acquire may take its whole wait: the client's own limit comes after it.
                let timeout = timeout.or_else(|| {
                    operation
                        .acquire_wait()
                        .map(|wait| wait + self.scenario.timing.client_timeout)
                });
                let source = Source::Script {
                    event_index: event.index,
                    expect: *expect,
                    at: event.at,
                };
                self.invoke(*client, operation, source, timeout)?;
            }
            Action::Keepalive { client } => self.cluster.keepalive(*client)?,
            Action::Watch {
                client,
                target,
                from,
            } => {
                let first_server = self.scenario.cluster.connect[client].0;
                super::watch::start(
                    &mut self.cluster,
                    *client,
                    target.clone(),
                    *from,
                    first_server,
                )?;
            }
            Action::Write {
                client,
                lock,
                expect,
            } => {
                let token = self
                    .lease_safety
                    .token_of(*client, lock)
                    .filter(|_| self.cluster.client_believes_in_session(*client));
                let number = self.scripted_writes.len();
                self.scripted_writes.push(ScriptedWrite {
                    event_index: event.index,
                    at: event.at,
                    client: *client,
                    lock: lock.clone(),
                    expect: *expect,
                    written: token.is_some(),
                });
                if let Some(token) = token {
                    self.cluster
                        .write_resource(*client, lock.clone(), token, Some(number))?;
                }
            }
            Action::Crash(target) => self.crash(*target),
            Action::CrashInStep {
                server,
                after_effects,
                restart_after,
            } => {
                let number = server.0;
                let armed = self
                    .cluster
                    .arm_crash_in_step(number, *after_effects, *restart_after);
                let description = if armed {
                    let restart = restart_after.map_or(String::new(), |after| {
                        format!(
                            ", restart {} later",
                            format_duration(Time::from_duration(after))
                        )
                    });
                    format!(
                        "crash s{number} inside its next step of more than {after_effects} \
                         effect(s) (armed{restart})"
                    )
                } else {
                    format!("crash s{number} inside a step: s{number} is down, skipped")
                };
                self.record_fault(description);
            }
            Action::Corrupt { server, entry } => {
                let number = server.0;
                let description = match self.cluster.corrupt(number, *entry) {
                    Ok(record) => {
                        format!("corrupt entry {entry} of s{number}: its {record} is damaged")
                    }
                    Err(reason) => format!("corrupt entry {entry} of s{number}: {reason}, skipped"),
                };
                self.record_fault(description);
            }
            Action::Restart(target) => {
                let numbers: Vec<u32> = match target {
                    RestartTarget::Server(id) => vec![id.0],
                    RestartTarget::All => (1..=self.cluster.server_count()).collect(),
                };
                for number in numbers {
                    self.restart(number)?;
                }
            }
            Action::Partition(groups) => {
                self.cluster.network().partition(groups);
                let text: Vec<String> = groups
                    .iter()
                    .map(|group| {
                        group
                            .iter()
                            .map(Endpoint::to_string)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                self.record_fault(format!("partition [{}]", text.join("] | [")));
            }
            Action::Isolate(target) => {
                let endpoint = match target {
                    IsolateTarget::Node(endpoint) => Some(*endpoint),
                    IsolateTarget::Leader => self
                        .cluster
                        .current_leader()
                        .map(|n| Endpoint::Server(ServerId(n))),
                };
                match endpoint {
                    Some(endpoint) => {
                        self.cluster.network().isolate(endpoint);
                        let note = if *target == IsolateTarget::Leader {
                            " (the leader)"
                        } else {
                            ""
                        };
                        self.record_fault(format!("isolate {endpoint}{note}"));
                    }
                    None => {
                        self.record_fault("isolate leader: no leader right now, skipped".into())
                    }
                }
            }
            Action::Cut { from, to } => {
                self.cluster.network().cut(*from, to);
                let targets: Vec<String> = to.iter().map(Endpoint::to_string).collect();
                self.record_fault(format!("cut {from} -> {}", targets.join(", ")));
            }
            Action::Heal => {
                self.cluster.network().heal();
                self.record_fault("heal all".into());
            }
            Action::Pause { node, length } => {
                let description = self.cluster.pause(*node, *length)?;
                self.record_fault(description);
            }
            Action::ClockRate { node, rate_ppb } => {
                let description = self.cluster.set_clock_rate(*node, *rate_ppb)?;
                self.record_fault(description);
            }
            Action::Network(change) => {
                let params = change.apply_to(self.cluster.network().params());
                self.cluster.network().set_params(params);
                self.record_fault(format!(
                    "network latency {:?}..{:?}, drop {}, duplicate {}",
                    params.latency_min, params.latency_max, params.drop, params.duplicate
                ));
            }
        }
        Ok(())
    }

    fn crash(&mut self, target: CrashTarget) {
        let numbers: Vec<u32> = match target {
            CrashTarget::Server(id) => vec![id.0],
            CrashTarget::All => (1..=self.cluster.server_count()).collect(),
            CrashTarget::Leader => match self.cluster.current_leader() {
                Some(number) => vec![number],
                None => {
                    self.record_fault("crash leader: no leader right now, skipped".into());
                    return;
                }
            },
        };
        for number in numbers {
            if self.cluster.is_up(number) {
                self.cluster.crash(number);
                let note = if target == CrashTarget::Leader {
                    " (the leader)"
                } else {
                    ""
                };
                self.record_fault(format!("crash s{number}{note}"));
            }
        }
    }

    fn invoke(
        &mut self,
        client: u32,
        op: Operation,
        source: Source,
        timeout: Option<Duration>,
    ) -> Result<(), QueueFull> {
        let tag = self.ops.len() as u64;
        self.ops.push(OpRecord {
            client,
            op: op.clone(),
            source,
            started_at: None,
            finished_at: None,
            result: None,
            index: None,
            seq: None,
        });
        self.cluster.invoke(client, tag, op, timeout)
    }

    fn workload_next(&mut self, client: u32) -> Result<(), QueueFull> {
        if !self.workload_open {
            return Ok(());
        }
        let position = self
            .workload
            .iter()
            .position(|w| w.client == client)
            .expect("a workload client");
        // Work under the lock: before its next operation, the client writes to the fenced
        // resource under every lock it believes it holds, with that grant's token.
        let believes = self.cluster.client_believes_in_session(client);
        let held: Vec<(LockName, LogIndex)> = self.workload[position]
            .held()
            .filter(|_| believes)
            .map(|(lock, token)| (lock.clone(), token))
            .collect();
        for (lock, token) in held {
            self.cluster.write_resource(client, lock, token, None)?;
        }
        if let Some(op) = self.workload[position].next_op() {
            // An acquire may take its whole wait: the client's own limit comes after it.
            let timeout = op
                .acquire_wait()
                .map(|wait| wait + self.scenario.timing.client_timeout);
            self.invoke(client, op, Source::Workload, timeout)?;
        }
        Ok(())
    }

    fn drain_client_events(&mut self) -> Result<(), QueueFull> {
        while !self.cluster.client_events.is_empty() {
            let events = std::mem::take(&mut self.cluster.client_events);
            for event in events {
                self.client_event(event)?;
            }
        }
        Ok(())
    }

    fn client_event(&mut self, event: ClientEvent) -> Result<(), QueueFull> {
        let now = self.cluster.now();
        match event {
            ClientEvent::Started { client, tag, seq } => {
                let record = &mut self.ops[tag as usize];
                record.started_at = Some(now);
                record.seq = Some(seq);
                let event = TraceEvent::OpStart {
                    client: Endpoint::Client(client),
                    tag,
                    op: record.op.kind_name(),
                    lock: record.op.lock().to_string(),
                    seq,
                };
                self.cluster.recorder.record(now, event, None);
                // A client that sends a release has let go of the lock, whatever the answer.
                if let Operation::Release { lock } = &record.op {
                    self.lease_safety.forget(client, lock);
                }
            }
            ClientEvent::SessionLost { client } => {
                self.lease_safety.forget_client(client);
                if let Some(workload) = self.workload.iter_mut().find(|w| w.client == client) {
                    workload.forget_all();
                }
            }
            ClientEvent::Completed {
                client,
                tag,
                result,
                index,
            } => {
                if let Ok(outcome) = &result {
                    let op = self.ops[tag as usize].op.clone();
                    self.observe_belief(client, &op, outcome);
                }
                let described = self.describe_result(&result);
                let record = &mut self.ops[tag as usize];
                record.finished_at = Some(now);
                record.result = Some(result);
                record.index = index;
                let event = TraceEvent::OpDone {
                    client: Endpoint::Client(client),
                    tag,
                    op: record.op.kind_name(),
                    lock: record.op.lock().to_string(),
                    result: described,
                };
                self.cluster.recorder.record(now, event, None);
                if matches!(record.source, Source::Workload) {
                    let op = record.op.clone();
                    let position = self
                        .workload
                        .iter()
                        .position(|w| w.client == client)
                        .expect("workload client");
                    if let Ok(outcome) = &result {
                        self.workload[position].observe(&op, outcome);
                    }
                    if self.workload_open && self.workload[position].remaining() > 0 {
                        let at = now + self.workload[position].think();
                        if at < self.end_of_duration {
                            self.cluster.queue.push(at, Event::WorkloadNext(client))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Feeds `lease_safety` what an answer made client `client` believe about its locks.
    fn observe_belief(&mut self, client: u32, op: &Operation, outcome: &Outcome) {
        match (op, outcome) {
            (
                Operation::Preempt { lock, .. } | Operation::Acquire { lock, .. },
                Outcome::Granted { token },
            ) => {
                // The mode the grant holds, which the committed log decided: a holder that
                // asks again in another mode keeps the one it has.
                let claim = self.cluster.granted_claim(client, lock, *token);
                *self
                    .cluster
                    .checks_performed
                    .entry(checkers::LEASE_SAFETY)
                    .or_default() += 1;
                let cluster = &self.cluster;
                let verdict = self.lease_safety.observe_claimed_grant(
                    cluster.now(),
                    (client, claim),
                    lock,
                    *token,
                    |other| cluster.client_believes_in_session(other),
                );
                if let Err(violation) = verdict {
                    self.cluster.report_violation(violation);
                }
            }
            (
                Operation::Preempt { lock, .. } | Operation::Acquire { lock, .. },
                Outcome::HeldBy { .. }
                | Outcome::TimedOut
                | Outcome::Cancelled
                | Outcome::PermitsMismatch { .. },
            ) => {
                self.lease_safety.forget(client, lock);
            }
            _ => {}
        }
    }

    fn describe_result(&self, result: &Result<Outcome, ClientError>) -> String {
        match result {
            Ok(outcome) => self.describe_outcome(outcome),
            Err(ClientError::TimedOut) => "unknown".into(),
            Err(ClientError::QueueFull) => "refused by the client (queue full)".into(),
            Err(ClientError::Refused(refused)) => format!("refused for good ({refused})"),
            Err(ClientError::LeaseExpired) => "unknown (the client's lease ran out)".into(),
        }
    }

    /// An outcome with client ids replaced by scenario names (`held_by c1`).
    fn describe_outcome(&self, outcome: &Outcome) -> String {
        let name = |id| match self.cluster.client_number(id) {
            Some(number) => format!("c{number}"),
            None => id.to_string(),
        };
        match outcome {
            Outcome::Granted { token } => format!("granted (token {token})"),
            Outcome::HeldBy { owner } => format!("held_by {}", name(*owner)),
            Outcome::Released => "released".into(),
            Outcome::NotOwner => "not_owner".into(),
            Outcome::Free => "free".into(),
            Outcome::Owner { owner, token } => format!("owner {} (token {token})", name(*owner)),
            Outcome::Queued => "queued".into(),
            Outcome::TimedOut => "timed_out".into(),
            Outcome::Cancelled => "cancelled".into(),
            Outcome::NotWaiting => "not_waiting".into(),
            Outcome::PermitsMismatch {
                permits: Some(permits),
            } => {
                format!("permits_mismatch (in use with {permits})")
            }
            Outcome::PermitsMismatch { permits: None } => "permits_mismatch (plain lock)".into(),
            Outcome::Shared { holders, .. } => format!("shared ({holders} holders)"),
        }
    }

    fn end_of_duration(&mut self) -> Result<(), QueueFull> {
        self.workload_open = false;
        let now = self.cluster.now();
        self.cluster
            .recorder
            .record(now, TraceEvent::Phase { phase: "settle" }, None);
        if !self.cluster.network().is_healed() {
            self.cluster.network().heal();
            self.record_fault("heal all (end of duration)".into());
        }
        self.settle_check()
    }

    fn settle_check(&mut self) -> Result<(), QueueFull> {
        let clients_idle =
            (1..=self.scenario.cluster.clients).all(|c| !self.cluster.client_is_busy(c));
        let settled = clients_idle
            && self.cluster.is_converged()
            && !self.cluster.sessions_await_expiry()
            && !self.cluster.waiters_remain();
        if settled {
            self.settled = true;
            return Ok(());
        }
        let next = self.cluster.now() + SETTLE_POLL_INTERVAL;
        if next <= self.settle_deadline {
            self.cluster.queue.push(next, Event::SettleCheck)?;
        }
        Ok(())
    }

    fn final_checks(&mut self) {
        if self.cluster.violation().is_some() {
            return;
        }
        if self.check_linearizability && !self.check_history() {
            return;
        }
        if !self.cluster.watchers.is_empty() {
            match super::watch::final_check(&self.cluster, self.cluster.now()) {
                Ok(events) => {
                    *self
                        .cluster
                        .checks_performed
                        .entry(super::watch::WATCH_STREAMS)
                        .or_default() += events;
                }
                Err(violation) => {
                    self.cluster.report_violation(violation);
                    return;
                }
            }
        }
        if let Err(violation) = self.cluster.check_acknowledged_writes() {
            self.cluster.report_violation(violation);
            return;
        }
        let refused = self.cluster.refused_servers();
        let repairing = self.cluster.unrepaired_servers();
        let unable = refused.len() + repairing.len();
        if unable as u32 > self.cluster.server_count().saturating_sub(1) / 2 {
            // Raft makes progress only while a majority can vote: with more than a minority
            // down for good or waiting for a leader to repair its log, the rest cannot elect
            // one. Whether equal applied indexes hold equal lock maps was checked all along.
            let names: Vec<String> = refused
                .iter()
                .map(|(n, _)| format!("s{n} refused to start"))
                .chain(
                    repairing
                        .iter()
                        .map(|n| format!("s{n} is repairing its log")),
                )
                .collect();
            self.record_fault(format!(
                "convergence not judged: {}, and the rest are no majority",
                names.join(", ")
            ));
            return;
        }
        if let Err(violation) = self.cluster.check_convergence() {
            self.cluster.report_violation(violation);
            return;
        }
        if let Some(sessions) = self.scenario.sessions {
            let bound = self.session_expiry_bound(sessions.ttl);
            self.cluster
                .check_sessions_expired(self.end_of_duration, bound);
        }
        self.cluster.check_waiters_decided();
        if !self.cluster.is_converged() {
            let applied: Vec<String> = self
                .cluster
                .live_servers()
                .map(|s| {
                    format!(
                        "{} applied {} of commit {}",
                        s.id(),
                        s.last_applied(),
                        s.commit_index()
                    )
                })
                .collect();
            self.cluster.report_violation(Violation {
                invariant: checkers::CONVERGENCE,
                at: self.cluster.now(),
                message: format!(
                    "replicas did not catch up within the settle time of {}: {}",
                    format_duration(Time::from_duration(self.scenario.settle)),
                    applied.join(", ")
                ),
            });
        }
    }

    /// The stated bound on how late a session nobody renews expires (`docs/design.md`,
    /// "Sessions and leases"): TTL stretched by the drift bound, plus two heartbeats, two
    /// commits and an election, from when the client fell silent or the faults stopped.
    /// A commit is taken as a heartbeat and a round trip at the network's longest latency; an
    /// election as the longest election timeout and a commit.
    fn session_expiry_bound(&self, ttl: Duration) -> Duration {
        let timing = &self.scenario.timing;
        let drift = self.scenario.clock_drift.unwrap_or(0.01);
        let heartbeat = timing.heartbeat_interval;
        let commit = heartbeat + self.scenario.network.latency_max * 2;
        let election = timing.election_timeout_max + commit;
        ttl.mul_f64(1.0 + drift) + heartbeat * 2 + commit * 2 + election
    }

    /// Checks the clients' history: linearizability (all but local checks) and monotonic reads
    /// (local checks). Returns false after reporting a violation.
    fn check_history(&mut self) -> bool {
        let history = self.history();
        let local_reads = history
            .iter()
            .filter(|op| op.consistency == Some(Consistency::Local))
            .count();
        let report = linearizability::check_history(&history);
        let others = history.len() - local_reads;
        self.history_checks = Some((others as u64, local_reads as u64));
        let now = self.cluster.now();
        if let Some(violation) = report.violations.first() {
            self.cluster.report_violation(Violation {
                invariant: violation.invariant(),
                at: now,
                message: violation.to_string(),
            });
            return false;
        }
        if let Some(lock) = report.inconclusive_locks.first() {
            self.cluster.report_violation(Violation {
                invariant: linearizability::LINEARIZABILITY,
                at: now,
                message: format!(
                    "inconclusive: the search for lock `{lock}` exceeded its step bound \
                     ({} lock(s) inconclusive)",
                    report.inconclusive_locks.len()
                ),
            });
            return false;
        }
        true
    }

    /// What the watchers heard, with clients named as in [`Runner::history`].
    fn watch_history(&self) -> Vec<serde_json::Value> {
        let name = |id: crate::node::ClientId| match self.cluster.history_client(id) {
            Some(number) => format!("c{number}"),
            None => id.to_string(),
        };
        super::watch::history_lines(&self.cluster.watchers, name)
    }

    /// The history the clients observed: every operation that was sent, in invocation order.
    pub fn history(&self) -> Vec<HistoryOp> {
        // An id no client adopted (an orphan of a retried hello) owns nothing, so it cannot
        // appear as an owner; should it ever, it gets a number no scenario client has.
        let number = |id: crate::node::ClientId| {
            self.cluster
                .history_client(id)
                .unwrap_or_else(|| u32::try_from(1_000_000 + id.0).unwrap_or(u32::MAX))
        };
        self.ops
            .iter()
            .filter_map(|record| {
                let call = record.started_at?;
                // An operation is the act of the session it was sent under; one never sent
                // took no effect and is not in the history.
                let client = number(self.cluster.request_identity(record.client, record.seq?)?);
                let (op, consistency) = match &record.op {
                    Operation::Preempt { .. } => (HistoryOpKind::Preempt, None),
                    Operation::Release { .. } => (HistoryOpKind::Release, None),
                    Operation::Acquire { .. } => (HistoryOpKind::Acquire, None),
                    Operation::Cancel { .. } => (HistoryOpKind::Cancel, None),
                    Operation::Check { consistency, .. } => {
                        (HistoryOpKind::Check, Some(*consistency))
                    }
                };
                let (return_ns, result) = match &record.result {
                    Some(Ok(outcome)) => {
                        let result = match *outcome {
                            Outcome::Granted { token } => HistoryResult::Granted { token },
                            Outcome::HeldBy { owner } => HistoryResult::HeldBy {
                                owner: number(owner),
                            },
                            Outcome::Released => HistoryResult::Released,
                            Outcome::NotOwner => HistoryResult::NotOwner,
                            Outcome::Free => HistoryResult::Free,
                            Outcome::Owner { owner, token } => HistoryResult::Owner {
                                owner: number(owner),
                                token: Some(token),
                            },
                            Outcome::TimedOut => HistoryResult::TimedOut,
                            Outcome::Cancelled => HistoryResult::Cancelled,
                            Outcome::NotWaiting => HistoryResult::NotWaiting,
                            Outcome::PermitsMismatch { permits } => {
                                HistoryResult::PermitsMismatch { permits }
                            }
                            Outcome::Shared { holders, .. } => HistoryResult::Shared { holders },
                            // Never an answer: the table keeps it, the client hears what follows.
                            Outcome::Queued => HistoryResult::Unknown,
                        };
                        (record.finished_at.map(Time::as_nanos), result)
                    }
                    Some(Err(_)) | None => (None, HistoryResult::Unknown),
                };
                Some(HistoryOp {
                    client,
                    op,
                    lock: record.op.lock().to_string(),
                    consistency,
                    call_ns: call.as_nanos(),
                    return_ns,
                    result,
                    index: record.index.filter(|_| return_ns.is_some()),
                    claim: match &record.op {
                        Operation::Preempt { claim, .. } | Operation::Acquire { claim, .. } => {
                            *claim
                        }
                        _ => Claim::EXCLUSIVE,
                    },
                })
            })
            .chain(self.expiry_history(number))
            .collect()
    }

    /// One `expire` operation per lock each expiry freed, at the instant it was first applied
    /// (its commit is no later; every operation that could see it came after). No index: the
    /// client did not see it.
    fn expiry_history(&self, number: impl Fn(crate::node::ClientId) -> u32) -> Vec<HistoryOp> {
        self.cluster
            .expiries
            .iter()
            .flat_map(|(at, client, freed)| {
                let client = number(*client);
                freed.iter().map(move |lock| HistoryOp {
                    client,
                    op: HistoryOpKind::Expire,
                    lock: lock.to_string(),
                    consistency: None,
                    call_ns: at.as_nanos(),
                    return_ns: Some(at.as_nanos()),
                    result: HistoryResult::Expired,
                    index: None,
                    claim: Claim::EXCLUSIVE,
                })
            })
            .collect()
    }

    fn expectations(&self) -> Vec<ExpectationResult> {
        let mut results = Vec::new();
        for record in &self.ops {
            let Source::Script {
                event_index,
                expect: Some(expect),
                at,
            } = &record.source
            else {
                continue;
            };
            let actual = match &record.result {
                Some(result) => self.describe_result(result),
                None => "unfinished (unknown)".into(),
            };
            results.push(ExpectationResult {
                place: format!("events[{event_index}]"),
                what: format!(
                    "{} c{} {} {}",
                    format_duration(Time::from_duration(*at)),
                    record.client,
                    record.op.kind_name(),
                    record.op.lock()
                ),
                expected: super::scenario_yaml::expect_text(*expect),
                actual,
                met: self.expect_met(*expect, record.result.as_ref()),
            });
        }
        for (number, write) in self.scripted_writes.iter().enumerate() {
            let Some(expect) = write.expect else {
                continue;
            };
            let verdict = self.cluster.scripted_write_verdicts.get(&number);
            let actual = match (write.written, verdict) {
                (false, _) => "not_written (the client did not believe it held the lock)".into(),
                (true, None) => "still on its way at the end".into(),
                (true, Some(WriteVerdict::Accepted)) => "accepted".to_string(),
                (true, Some(WriteVerdict::Rejected { highest })) => {
                    format!("rejected (token {highest} was accepted before)")
                }
            };
            let met = matches!(
                (expect, write.written, verdict),
                (WriteExpect::NotWritten, false, _)
                    | (WriteExpect::Accepted, true, Some(WriteVerdict::Accepted))
                    | (
                        WriteExpect::Rejected,
                        true,
                        Some(WriteVerdict::Rejected { .. })
                    )
            );
            results.push(ExpectationResult {
                place: format!("events[{}]", write.event_index),
                what: format!(
                    "{} c{} write {}",
                    format_duration(Time::from_duration(write.at)),
                    write.client,
                    write.lock
                ),
                expected: expect.name().to_string(),
                actual,
                met,
            });
        }
        for (lock, state) in &self.scenario.expect_final {
            let expected = match state {
                FinalState::Free => "free".to_string(),
                FinalState::HeldBy(n) => format!("held by c{n}"),
            };
            let mut seen = Vec::new();
            let mut met = self.cluster.live_servers().next().is_some();
            for server in self.cluster.live_servers() {
                let holder = server.lock_table().holder(lock);
                let actual_number = holder.map(|h| self.cluster.client_number(h.owner));
                met &= match (state, actual_number) {
                    (FinalState::Free, None) => true,
                    (FinalState::HeldBy(n), Some(Some(number))) => *n == number,
                    _ => false,
                };
                let text = match holder {
                    None => "free".to_string(),
                    Some(h) => match self.cluster.client_number(h.owner) {
                        Some(number) => format!("c{number}"),
                        None => h.owner.to_string(),
                    },
                };
                seen.push(format!("{} {text}", server.id()));
            }
            if seen.is_empty() {
                seen.push("no live replica".into());
            }
            results.push(ExpectationResult {
                place: format!("expect_final.{lock}"),
                what: format!("final state of {lock} on every live replica"),
                expected,
                actual: seen.join(", "),
                met,
            });
        }
        results
    }

    fn expect_met(&self, expect: Expect, result: Option<&Result<Outcome, ClientError>>) -> bool {
        let owner_is = |owner, n: u32| self.cluster.client_number(owner) == Some(n);
        match (expect, result) {
            (Expect::Unknown, None | Some(Err(_))) => true,
            (Expect::Answered, Some(Ok(_))) => true,
            (Expect::SessionExpired, Some(Err(ClientError::Refused(Refused::SessionExpired)))) => {
                true
            }
            (Expect::Granted, Some(Ok(Outcome::Granted { .. }))) => true,
            (Expect::HeldBy(n), Some(Ok(Outcome::HeldBy { owner }))) => owner_is(*owner, n),
            (Expect::Released, Some(Ok(Outcome::Released))) => true,
            (Expect::NotOwner, Some(Ok(Outcome::NotOwner))) => true,
            (Expect::Free, Some(Ok(Outcome::Free))) => true,
            (Expect::Owner(n), Some(Ok(Outcome::Owner { owner, .. }))) => owner_is(*owner, n),
            (Expect::TimedOut, Some(Ok(Outcome::TimedOut))) => true,
            (Expect::Cancelled, Some(Ok(Outcome::Cancelled))) => true,
            (Expect::NotWaiting, Some(Ok(Outcome::NotWaiting))) => true,
            (Expect::PermitsMismatch, Some(Ok(Outcome::PermitsMismatch { .. }))) => true,
            (Expect::Shared, Some(Ok(Outcome::Shared { .. }))) => true,
            _ => false,
        }
    }

    fn op_stats(&self) -> OpStats {
        let mut latencies: Vec<Duration> = Vec::new();
        let mut stats = OpStats::default();
        for record in &self.ops {
            stats.issued += 1;
            match &record.result {
                Some(Ok(outcome)) => {
                    stats.completed += 1;
                    if matches!(outcome, Outcome::HeldBy { .. } | Outcome::NotOwner) {
                        stats.refused += 1;
                    }
                    if let (Some(start), Some(end)) = (record.started_at, record.finished_at) {
                        latencies.push(end.saturating_since(start));
                    }
                }
                Some(Err(_)) | None => stats.unknown += 1,
            }
        }
        latencies.sort_unstable();
        stats.latency_p50_ms = percentile_ms(&latencies, 0.50);
        stats.latency_p99_ms = percentile_ms(&latencies, 0.99);
        stats
    }

    /// Whether checker `name` held: it is not the run's violation, nor one it expected.
    fn held(&self, violated: Option<&str>, name: &str) -> bool {
        violated != Some(name) && !self.cluster.expected_violations_seen().contains_key(name)
    }

    fn report(&self, wall_start: Instant) -> RunReport {
        let expectations = self.expectations();
        let violation = self.cluster.violation().map(|v| ViolationReport {
            invariant: v.invariant.to_string(),
            at_ms: v.at.as_nanos() as f64 / 1e6,
            message: v.message.clone(),
            recent_events: self
                .cluster
                .recorder
                .recent()
                .map(|(at, e)| trace::describe(*at, e))
                .collect(),
        });
        let violated = violation.as_ref().map(|v| v.invariant.clone());
        // Session expiry is checked, and listed, only in runs with sessions.
        let session_expiry = self
            .scenario
            .sessions
            .is_some()
            .then_some(checkers::SESSION_EXPIRY);
        // Rogue isolation is checked, and listed, only in runs that have rogues.
        let rogue_isolation = self
            .scenario
            .rogues
            .is_some()
            .then_some(checkers::ROGUE_ISOLATION);
        // The queue checkers are listed only in runs where somebody waited in a queue.
        let queues_used = [fairness::FIFO_FAIRNESS, fairness::WAITERS_DECIDED]
            .iter()
            .any(|name| self.cluster.checks_performed.contains_key(name));
        let queue_checkers = [
            fairness::FIFO_FAIRNESS,
            fairness::NO_GRANT_AFTER_EXPIRY,
            fairness::WAITERS_DECIDED,
        ]
        .into_iter()
        .filter(|_| queues_used);
        // Listed only in runs with watchers.
        let watch_streams =
            (!self.cluster.watchers.is_empty()).then_some(super::watch::WATCH_STREAMS);
        let mut invariants: Vec<InvariantResult> = [
            checkers::ELECTION_SAFETY,
            checkers::STATE_MACHINE_SAFETY,
            checkers::ONE_VOTE_PER_TERM,
            checkers::LEADER_COMPLETENESS,
            checkers::MUTUAL_EXCLUSION,
            checkers::FENCED_WRITES,
            checkers::LEASE_SAFETY,
            checkers::CONVERGENCE,
            durability::ACKNOWLEDGED_WRITES_SURVIVE,
        ]
        .into_iter()
        .chain(session_expiry)
        .chain(rogue_isolation)
        .chain(queue_checkers)
        .chain(watch_streams)
        .map(|name| InvariantResult {
            name: name.to_string(),
            checks: self
                .cluster
                .checks_performed
                .get(name)
                .copied()
                .unwrap_or(0),
            held: self.held(violated.as_deref(), name),
            expected_to_fail: self.scenario.expect_violations.contains(name),
        })
        .collect();
        if let Some((linearizable_ops, local_reads)) = self.history_checks {
            for (name, checks) in [
                (linearizability::LINEARIZABILITY, linearizable_ops),
                (linearizability::MONOTONIC_READS, local_reads),
            ] {
                invariants.push(InvariantResult {
                    name: name.to_string(),
                    checks,
                    held: self.held(violated.as_deref(), name),
                    expected_to_fail: self.scenario.expect_violations.contains(name),
                });
            }
        }
        let simulated = self.cluster.now();
        let seen = self.cluster.expected_violations_seen();
        let expected_violations: Vec<ExpectedViolation> = self
            .scenario
            .expect_violations
            .iter()
            .map(|name| ExpectedViolation {
                invariant: name.to_string(),
                at_ms: seen.get(name).map(|v| v.at.as_nanos() as f64 / 1e6),
                message: seen.get(name).map(|v| v.message.clone()),
            })
            .collect();
        let passed = violation.is_none()
            && expectations.iter().all(|e| e.met)
            && expected_violations.iter().all(|e| e.at_ms.is_some());
        RunReport {
            coverage: self.cluster.coverage(),
            name: self.scenario.name.clone(),
            description: self.scenario.description.clone(),
            seed: self.scenario.seed,
            passed,
            simulated_ms: simulated.as_nanos() as f64 / 1e6,
            simulated_ns: simulated.as_nanos(),
            wall_ms: wall_start.elapsed().as_secs_f64() * 1e3,
            ops: self.op_stats(),
            network: self.cluster.network_stats.clone(),
            events_processed: self.cluster.events_processed,
            committed_entries: self.cluster.committed_count() as u64,
            max_term: self.cluster.max_term,
            leaders_elected: self.cluster.leaders.len() as u64,
            leader_timeline: self
                .cluster
                .leaders
                .iter()
                .map(|(at, term, id)| format!("{id} (term {term}) at {}", format_duration(*at)))
                .collect(),
            faults: self.faults.clone(),
            servers: self.cluster.server_count(),
            refused_to_start: self
                .cluster
                .refused_servers()
                .into_iter()
                .map(|(number, reason)| format!("s{number}: {reason}"))
                .collect(),
            repairing_at_end: self
                .cluster
                .unrepaired_servers()
                .into_iter()
                .map(|number| format!("s{number}"))
                .collect(),
            rogues: self.cluster.rogue_stats().cloned(),
            invariants,
            resource_writes: ResourceWrites {
                accepted: self.cluster.resource.accepted,
                rejected: self.cluster.resource.rejected,
            },
            expected_violations,
            expectations,
            violation,
            trace_events_written: 0,
            history: Vec::new(),
            watch_history: Vec::new(),
            trace: None,
        }
    }
}

/// `1.250s`-style simulated time for humans.
pub fn format_duration(at: Time) -> String {
    let millis = at.as_nanos() / 1_000_000;
    format!("{}.{:03}s", millis / 1_000, millis % 1_000)
}
