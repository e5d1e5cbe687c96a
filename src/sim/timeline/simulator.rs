//! The timeline of a simulator run: its kept trace ([`super::super::trace::KeptTrace`]) turned
//! into messages, role changes, fault spans and markers, with the run's history and verdict.
//!
//! The trace names no message: a delivery is paired with the oldest send still unpaired on the
//! same link (from, to) of the same kind. Where latency reorders two messages of one kind on
//! one link, their arrows are swapped; every send and every arrival is still drawn at its own
//! time, and no arrow runs backwards (the k-th arrival cannot precede the k-th send).

use super::{
    FailurePoint, Fate, FaultSpan, Marker, Message, RoleChange, Timeline, TimelineInput, build,
};
use crate::node::Time;
use crate::sim::history::{ClientNames, HistoryOp, HistoryOpKind};
use crate::sim::linearizability::{self, LINEARIZABILITY, MONOTONIC_READS};
use crate::sim::report::RunReport;
use crate::sim::scenario::{Action, OpKind, Scenario};
use crate::sim::trace::TraceEvent;
use std::collections::{BTreeMap, VecDeque};

/// The most trace events a run keeps for its timeline. A 60 s run of the standard bench
/// workload makes millions; a page of more than this would be too big to open comfortably, so
/// later events are counted and the page says where it stops.
pub const EVENTS_MAX: usize = 2_000_000;

/// The timeline of `report`, a run of `scenario` with
/// [`crate::sim::runner::RunOptions::keep_trace_events`] set. Without a kept trace it shows
/// the history alone and says so.
pub fn from_run(scenario: &Scenario, report: &RunReport) -> Timeline {
    let names = ClientNames::simulator();
    let end_ns = report.simulated_ns;
    let mut input = TimelineInput::new(
        &format!("lockstep run: {}", report.name),
        &report.history,
        names,
    );
    input.subtitle = format!(
        "seed {}, {} servers, {} clients, {} simulated, {} events: {}\n{}",
        report.seed,
        scenario.cluster.servers,
        scenario.cluster.clients,
        crate::sim::runner::format_duration(Time::from_nanos(end_ns)),
        report.events_processed,
        report.verdict_line(),
        report.description.trim(),
    );
    input.source = "simulator".into();
    input.servers = (1..=scenario.cluster.servers)
        .map(|n| format!("s{n}"))
        .collect();
    input.clients = (1..=scenario.cluster.clients).collect();
    input.origin_ns = Some(0);
    input.end_ns = Some(end_ns);
    match &report.trace {
        Some(kept) => {
            let events = from_trace(&kept.events);
            input.messages = events.messages;
            input.roles = events.roles;
            input.faults = events.faults;
            input.markers = events.markers;
            if kept.dropped > 0 {
                let last = kept.events.last().map_or(0, |(at, _)| at.as_nanos());
                input.notes.push(format!(
                    "Only the first {} trace events are drawn ({} more after {} were left out).",
                    kept.events.len(),
                    kept.dropped,
                    crate::sim::runner::format_duration(Time::from_nanos(last)),
                ));
            }
            if events.unpaired > 0 {
                input.notes.push(format!(
                    "{} arrivals matched no send and are not drawn.",
                    events.unpaired
                ));
            }
        }
        None => input
            .notes
            .push("No trace was kept for this run: operations only.".into()),
    }
    input.notes.push(
        "Arrows pair each arrival with the oldest unpaired send of the same kind on the same \
         link; where latency reordered two such messages, their arrows are swapped."
            .into(),
    );
    let verdict = report.violation.as_ref().and_then(|violation| {
        [LINEARIZABILITY, MONOTONIC_READS]
            .contains(&violation.invariant.as_str())
            .then(|| linearizability::check_history(&report.history))
    });
    input.verdict = verdict.as_ref();
    input.failure = run_failure(scenario, report);
    build(input)
}

/// What the trace turns into.
pub(super) struct FromTrace {
    pub(super) messages: Vec<Message>,
    roles: Vec<RoleChange>,
    faults: Vec<FaultSpan>,
    markers: Vec<Marker>,
    /// Arrivals with no send to pair with (only when the trace was cut short).
    unpaired: u64,
}

pub(super) fn from_trace(events: &[(Time, TraceEvent)]) -> FromTrace {
    let mut messages: Vec<Message> = Vec::new();
    // Per (from, to, kind): the messages sent and not yet arrived, oldest first.
    let mut pending: BTreeMap<(String, String, &str), VecDeque<usize>> = BTreeMap::new();
    let mut roles = Vec::new();
    let mut markers = Vec::new();
    let mut fault_texts = Vec::new();
    let mut unpaired = 0;
    for (at, event) in events {
        let at_ns = at.as_nanos();
        match event {
            TraceEvent::Send {
                from,
                to,
                msg,
                fate,
            } => {
                let (fate, copies) = match *fate {
                    "blocked" => (Fate::Blocked, 0),
                    "dropped" => (Fate::Dropped, 0),
                    "duplicated" => (Fate::Duplicated, 2),
                    _ => (Fate::InFlight, 1),
                };
                let key = (from.to_string(), to.to_string(), *msg);
                for _ in 0..copies.max(1) {
                    if copies > 0 {
                        pending
                            .entry(key.clone())
                            .or_default()
                            .push_back(messages.len());
                    }
                    messages.push(Message {
                        send_ns: at_ns,
                        arrive_ns: None,
                        from: key.0.clone(),
                        to: key.1.clone(),
                        kind: msg.to_string(),
                        fate,
                    });
                }
            }
            TraceEvent::Deliver { from, to, msg }
            | TraceEvent::LostInFlight { from, to, msg, .. } => {
                let key = (from.to_string(), to.to_string(), *msg);
                let Some(index) = pending.get_mut(&key).and_then(VecDeque::pop_front) else {
                    unpaired += 1;
                    continue;
                };
                let message = &mut messages[index];
                message.arrive_ns = Some(at_ns);
                message.fate = match event {
                    TraceEvent::LostInFlight { reason, .. } if reason.contains("crash") => {
                        Fate::LostCrashed
                    }
                    TraceEvent::LostInFlight { .. } => Fate::LostPartitioned,
                    _ if message.fate == Fate::Duplicated => Fate::Duplicated,
                    _ => Fate::Delivered,
                };
            }
            TraceEvent::Role { server, role, term } => roles.push(RoleChange {
                at_ns,
                server: server.to_string(),
                role: role.to_string(),
                term: *term,
            }),
            TraceEvent::Fault { fault } => fault_texts.push((at_ns, fault.clone())),
            TraceEvent::Phase { phase } => markers.push(Marker {
                at_ns,
                kind: "phase".into(),
                label: format!("phase: {phase}"),
            }),
            // A write the fenced resource turned away is a moment worth seeing; accepted ones
            // are the ordinary work under a lock.
            TraceEvent::ResourceWrite {
                client,
                lock,
                token,
                verdict,
            } if verdict.starts_with("rejected") => markers.push(Marker {
                at_ns,
                kind: "resource".into(),
                label: format!("{client}'s write to {lock} with token {token} {verdict}"),
            }),
            TraceEvent::ResourceWrite { .. } => {}
            // Timers are the server's own business; operations come from the history.
            TraceEvent::Timer { .. } | TraceEvent::OpStart { .. } | TraceEvent::OpDone { .. } => {}
        }
    }
    // A copy of a duplicated message that never arrived is still in flight.
    for message in &mut messages {
        if message.fate == Fate::Duplicated && message.arrive_ns.is_none() {
            message.fate = Fate::InFlight;
        }
    }
    let (faults, fault_markers) = parse_faults(&fault_texts);
    markers.extend(fault_markers);
    FromTrace {
        messages,
        roles,
        faults,
        markers,
        unpaired,
    }
}

/// Turns the runner's fault lines (`crash s2 (the leader)`, `restart s2`, `partition [s1] |
/// [s2 s3]`, `isolate c1`, `cut s1 -> s2, s3`, `heal all`, `pause s2`, `resume s2`) into spans:
/// a crash lasts until its restart, a pause until its resume, and a partition, isolation or
/// cut until the next heal (a new partition replaces the one before). Spans still open at the
/// end have no end (they last to the end of the run). Any other line (a network change, a skipped fault, a fault kind
/// this does not know) becomes a marker at its instant, so nothing is left out.
pub fn parse_faults(lines: &[(u64, String)]) -> (Vec<FaultSpan>, Vec<Marker>) {
    let mut spans: Vec<FaultSpan> = Vec::new();
    let mut markers = Vec::new();
    // Open spans: per node for crashes and pauses; network ones in order.
    let mut down: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    let mut network: Vec<usize> = Vec::new();
    let open =
        |spans: &mut Vec<FaultSpan>, kind: &str, label: &str, at: u64, nodes: Vec<String>| {
            spans.push(FaultSpan {
                kind: kind.into(),
                label: label.into(),
                start_ns: at,
                end_ns: None,
                nodes,
            });
            spans.len() - 1
        };
    for (at, line) in lines {
        let at = *at;
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let node = words.next().unwrap_or("").to_string();
        let skipped = line.ends_with("skipped");
        match verb {
            "crash" | "pause" if !skipped && !node.is_empty() => {
                let kind = if verb == "crash" { "crash" } else { "pause" };
                let label = if kind == "crash" { "crashed" } else { "paused" };
                // A second crash of a node already down changes nothing.
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    down.entry((node.clone(), kind))
                {
                    let text = format!("{label}: {line}");
                    entry.insert(open(&mut spans, kind, &text, at, vec![node]));
                }
            }
            "restart" | "resume" if !node.is_empty() => {
                let kind = if verb == "restart" { "crash" } else { "pause" };
                match down.remove(&(node, kind)) {
                    Some(index) => spans[index].end_ns = Some(at),
                    None => markers.push(fault_marker(at, line)),
                }
            }
            "partition" => {
                for &index in &network {
                    if spans[index].kind == "partition" && spans[index].end_ns.is_none() {
                        spans[index].end_ns = Some(at);
                    }
                }
                network.push(open(&mut spans, "partition", line, at, Vec::new()));
            }
            "isolate" if !skipped && !node.is_empty() => {
                network.push(open(&mut spans, "isolate", line, at, vec![node]));
            }
            "cut" if !node.is_empty() => {
                network.push(open(&mut spans, "cut", line, at, vec![node]));
            }
            "heal" => {
                for index in network.drain(..) {
                    if spans[index].end_ns.is_none() {
                        spans[index].end_ns = Some(at);
                    }
                }
                markers.push(fault_marker(at, line));
            }
            _ => markers.push(fault_marker(at, line)),
        }
    }
    (spans, markers)
}

fn fault_marker(at_ns: u64, line: &str) -> Marker {
    Marker {
        at_ns,
        kind: "fault".into(),
        label: line.to_string(),
    }
}

/// The run's failing step: its violation, or else its first unmet expectation (a scripted
/// operation's answer, or the final state at the end).
fn run_failure(scenario: &Scenario, report: &RunReport) -> Option<FailurePoint> {
    if let Some(violation) = &report.violation {
        return Some(FailurePoint {
            invariant: violation.invariant.clone(),
            message: violation.message.clone(),
            at_ns: (violation.at_ms * 1e6).round() as u64,
            op: None,
            node: None,
        });
    }
    let unmet = report.expectations.iter().find(|e| !e.met)?;
    let invariant = if unmet.expected == "answered" {
        "liveness"
    } else {
        "expectation"
    };
    let message = format!(
        "{} ({}): expected {}, got {}",
        unmet.place, unmet.what, unmet.expected, unmet.actual
    );
    let scripted = unmet
        .place
        .strip_prefix("events[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|index| index.parse::<usize>().ok())
        .and_then(|index| scenario.events.iter().find(|event| event.index == index));
    let (op, at_ns, node) = match scripted {
        Some(event) => match &event.action {
            Action::ClientOp {
                client, op, lock, ..
            } => {
                let at_ns = Time::from_duration(event.at).as_nanos();
                let position = scripted_op(&report.history, *client, *op, lock, at_ns);
                let at_ns = position
                    .map(|p| &report.history[p])
                    .map_or(at_ns, |op| op.return_ns.unwrap_or(op.call_ns));
                (position, at_ns, Some(format!("c{client}")))
            }
            _ => (None, Time::from_duration(event.at).as_nanos(), None),
        },
        None => (None, report.simulated_ns, None),
    };
    Some(FailurePoint {
        invariant: invariant.into(),
        message,
        at_ns,
        op,
        node,
    })
}

/// The history position of a scripted operation: the client's first operation of that kind on
/// that lock called at or after the script's time (the client may have queued it).
fn scripted_op(
    history: &[HistoryOp],
    client: u32,
    kind: OpKind,
    lock: &str,
    at_ns: u64,
) -> Option<usize> {
    let kind = match kind {
        OpKind::Preempt => HistoryOpKind::Preempt,
        OpKind::Release => HistoryOpKind::Release,
        OpKind::Check => HistoryOpKind::Check,
        OpKind::Acquire { .. } => HistoryOpKind::Acquire,
        OpKind::Cancel => HistoryOpKind::Cancel,
    };
    history
        .iter()
        .enumerate()
        .filter(|(_, op)| op.client == client && op.op == kind && op.lock == lock)
        .filter(|(_, op)| op.call_ns >= at_ns)
        .min_by_key(|(position, op)| (op.call_ns, *position))
        .map(|(position, _)| position)
}
