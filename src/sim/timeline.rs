//! The timeline of a run, as one self-contained HTML page (`--html`): a lane per server and per
//! client against time, messages as arrows, roles and terms, faults as shaded spans, client
//! operations coloured by result, and the failing step highlighted. For a linearizability
//! failure it shows the smallest window that cannot be linearized and the furthest partial
//! linearization, as Porcupine does.
//!
//! Three parts:
//! - [`build`] turns a [`TimelineInput`] into the [`Timeline`] model: a history, and optionally
//!   servers, messages, role changes, fault spans, markers, a failure and the checker's verdict.
//!   Anything that has a history can call it: the simulator ([`from_run`]), `lockstep check`
//!   ([`from_history`]), and a run against real processes with its fault log.
//! - [`render_html`] writes the model into the page as one JSON blob, with the hand-written
//!   script and style sheet (`timeline/timeline.js`, `timeline/timeline.css`) inline.
//! - The page draws it on a canvas, aggregating messages when too many are in view.
//!
//! What this must never do: make a run slower when no timeline is asked for (the simulator
//! keeps its events for it only on request, [`super::runner::RunOptions::keep_trace_events`]),
//! put anything in the page that reaches the network, or let input order that is not the
//! run's own decide what the page shows (everything is sorted stably, maps are BTreeMaps).

mod html;
mod simulator;

pub use html::{render_html, write_html};
pub use simulator::{EVENTS_MAX, from_run, parse_faults};

use super::history::{ClientNames, HistoryOp, HistoryOpKind, HistoryResult};
use super::linearizability::{LinearizabilityReport, LinearizabilityViolation};
use crate::node::Consistency;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The version of the model the page's script reads.
pub const FORMAT: u32 = 1;

/// Operation bars a client lane stacks when its operations overlap; more overlap shares rows.
const OP_ROWS_MAX: u32 = 4;

/// Operation kinds as the page names them; [`OpRow`] refers to them by position.
const OP_KINDS: [&str; 7] = [
    "preempt",
    "release",
    "check",
    "check (local)",
    "expire",
    "acquire",
    "cancel",
];

/// Results as the page names (and colours) them; [`OpRow`] refers to them by position.
const RESULTS: [&str; 13] = [
    "granted",
    "held_by",
    "released",
    "not_owner",
    "free",
    "owner",
    "unknown",
    "expired",
    "timed_out",
    "cancelled",
    "not_waiting",
    "permits_mismatch",
    "shared",
];

// ---------------------------------------------------------------------------------------------
// What a caller hands in.

/// What became of a message.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Fate {
    Delivered,
    /// Delivered, and the network delivered a copy too (each copy is a [`Message`]).
    Duplicated,
    /// Lost by the network when sent.
    Dropped,
    /// Not sent: a partition or cut stood between the two ends.
    Blocked,
    /// Lost in flight: a partition came up before it arrived.
    LostPartitioned,
    /// Lost in flight: its target crashed before it arrived.
    LostCrashed,
    /// Still travelling when the run ended.
    InFlight,
}

impl Fate {
    pub const ALL: [Fate; 7] = [
        Fate::Delivered,
        Fate::Duplicated,
        Fate::Dropped,
        Fate::Blocked,
        Fate::LostPartitioned,
        Fate::LostCrashed,
        Fate::InFlight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Duplicated => "duplicated",
            Fate::Dropped => "dropped",
            Fate::Blocked => "blocked",
            Fate::LostPartitioned => "lost_partitioned",
            Fate::LostCrashed => "lost_crashed",
            Fate::InFlight => "in_flight",
        }
    }
}

/// One message between two endpoints (lanes, by name).
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub send_ns: u64,
    /// When it arrived, or was lost in flight; `None` if it never did either.
    pub arrive_ns: Option<u64>,
    pub from: String,
    pub to: String,
    /// `append_entries`, `client_request`, ...
    pub kind: String,
    pub fate: Fate,
}

/// A server took a role in a term.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleChange {
    pub at_ns: u64,
    pub server: String,
    /// `follower`, `pre_candidate`, `candidate`, `leader` (the page colours these four).
    pub role: String,
    pub term: u64,
}

/// A fault that lasted: shaded on the lanes it hit, or across the chart when `nodes` is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpan {
    /// `crash`, `pause`, `partition`, `isolate`, `cut` (the page colours these), or any other.
    pub kind: String,
    pub label: String,
    pub start_ns: u64,
    /// `None`: until the end of the run.
    pub end_ns: Option<u64>,
    pub nodes: Vec<String>,
}

/// Something that happened at one instant and concerns every lane: a phase, a one-off fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at_ns: u64,
    /// `phase`, `fault`, or any other word.
    pub kind: String,
    pub label: String,
}

/// The first thing a checker found wrong, when it is not (only) in the history's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct FailurePoint {
    /// The invariant's name, `expectation` or `liveness`.
    pub invariant: String,
    pub message: String,
    pub at_ns: u64,
    /// The operation it concerns: a position in [`TimelineInput::history`].
    pub op: Option<usize>,
    /// The lane it concerns, by name.
    pub node: Option<String>,
}

/// Everything [`build`] draws. Only `history` is required; the rest may be empty.
pub struct TimelineInput<'a> {
    pub title: String,
    pub subtitle: String,
    /// Where the data came from: `simulator`, `history`, `chaos`, ...
    pub source: String,
    /// Server lanes, in the order shown.
    pub servers: Vec<String>,
    /// Client numbers that get a lane even if they did nothing; every client in the history
    /// gets one anyway.
    pub clients: Vec<u32>,
    pub history: &'a [HistoryOp],
    pub names: &'a ClientNames,
    pub messages: Vec<Message>,
    pub roles: Vec<RoleChange>,
    pub faults: Vec<FaultSpan>,
    pub markers: Vec<Marker>,
    /// The run's first violation. A linearizability or monotonic-reads failure here is pinned
    /// to the operation the verdict names.
    pub failure: Option<FailurePoint>,
    /// The history checkers' verdict; its first violation is the failure when `failure` is
    /// `None`, and a linearizability violation's window is shown either way.
    pub verdict: Option<&'a LinearizabilityReport>,
    /// Time zero of the picture. `None`: the earliest time in the input. Times are shown, and
    /// stored in the page, relative to it (a browser counts in doubles; epoch nanoseconds would
    /// lose precision).
    pub origin_ns: Option<u64>,
    /// The end of the run, if it went on after the last thing shown.
    pub end_ns: Option<u64>,
    /// Lines shown under the chart: what was left out, and why.
    pub notes: Vec<String>,
}

impl<'a> TimelineInput<'a> {
    /// An input with only a history: the rest empty, to be filled in.
    pub fn new(title: &str, history: &'a [HistoryOp], names: &'a ClientNames) -> TimelineInput<'a> {
        TimelineInput {
            title: title.to_string(),
            subtitle: String::new(),
            source: "history".into(),
            servers: Vec::new(),
            clients: Vec::new(),
            history,
            names,
            messages: Vec::new(),
            roles: Vec::new(),
            faults: Vec::new(),
            markers: Vec::new(),
            failure: None,
            verdict: None,
            origin_ns: None,
            end_ns: None,
            notes: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model the page reads. Rows are JSON arrays, not objects, to keep 100,000 of them small;
// their fields are documented on each type, in order. Times are nanoseconds after the origin.

#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    pub format: u32,
    pub title: String,
    pub subtitle: String,
    pub source: String,
    /// Time zero, in the input's own nanoseconds.
    pub origin_ns: u64,
    pub end_ns: u64,
    pub lanes: Vec<Lane>,
    pub locks: Vec<String>,
    pub op_kinds: Vec<&'static str>,
    pub results: Vec<&'static str>,
    pub message_kinds: Vec<String>,
    pub fates: Vec<&'static str>,
    pub role_names: Vec<String>,
    /// By send time.
    pub messages: Vec<MessageRow>,
    /// By time.
    pub roles: Vec<RoleRow>,
    pub faults: Vec<FaultRow>,
    pub markers: Vec<MarkerRow>,
    /// By call time; an operation's id is its position here.
    pub ops: Vec<OpRow>,
    pub failure: Option<FailureMark>,
    pub window: Option<WindowMark>,
    /// Locks the history checkers could not decide (out of time or steps): with no failure,
    /// the page says the verdict is unknown rather than clean.
    pub undecided_locks: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Lane {
    pub name: String,
    /// `server`, `client` or `other`.
    pub kind: &'static str,
    /// Rows of operation bars (clients).
    pub rows: u32,
}

/// `[send, arrive or null, from lane, to lane, message kind, fate]`.
#[derive(Clone, Debug, Serialize)]
pub struct MessageRow(pub u64, pub Option<u64>, pub u32, pub u32, pub u32, pub u32);

/// `[at, lane, role name, term]`.
#[derive(Clone, Debug, Serialize)]
pub struct RoleRow(pub u64, pub u32, pub u32, pub u64);

#[derive(Clone, Debug, Serialize)]
pub struct FaultRow {
    pub kind: String,
    pub label: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Empty: every lane.
    pub lanes: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MarkerRow {
    pub at_ns: u64,
    pub kind: String,
    pub label: String,
}

/// `[lane, op kind, lock, call, return or null, result, result as text, row in the lane,
/// drawn until]`. An operation with an unknown result may take effect any time after its
/// call; its bar is drawn until its client's next call (the client stopped waiting by then),
/// or to the end.
#[derive(Clone, Debug, Serialize)]
pub struct OpRow(
    pub u32,
    pub u32,
    pub u32,
    pub u64,
    pub Option<u64>,
    pub u32,
    pub String,
    pub u32,
    pub u64,
);

/// The failing step.
#[derive(Clone, Debug, Serialize)]
pub struct FailureMark {
    pub invariant: String,
    pub message: String,
    pub at_ns: u64,
    /// `op-<id>` when the step is an operation, `t-<ns>` otherwise: what the page highlights.
    pub step_id: String,
    pub op: Option<u32>,
    pub lane: Option<u32>,
    /// Operations to outline with it.
    pub related: Vec<u32>,
}

/// A linearizability failure's smallest window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowMark {
    pub lock: String,
    pub explanation: String,
    /// The window's operations (ids), in the checker's order.
    pub ops: Vec<u32>,
    /// The answer that cannot be placed.
    pub culprit: u32,
    /// From the first call in the window to its last return (or call).
    pub start_ns: u64,
    pub end_ns: u64,
    pub furthest: FurthestMark,
}

#[derive(Clone, Debug, Serialize)]
pub struct FurthestMark {
    /// The lock before the first step, as text.
    pub start: String,
    pub steps: Vec<FurthestStep>,
    /// Operations (ids) whose answers no order could place next.
    pub unplaced: Vec<u32>,
    pub cut_short: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FurthestStep {
    pub op: u32,
    /// False: an operation the search assumed took effect (it might not have).
    pub required: bool,
    /// The lock after it, as text.
    pub after: String,
}

// ---------------------------------------------------------------------------------------------
// Building the model.

/// Names to lane positions.
struct Lanes {
    lanes: Vec<Lane>,
    by_name: BTreeMap<String, u32>,
}

impl Lanes {
    fn add(&mut self, name: &str, kind: &'static str) -> u32 {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let index = u32::try_from(self.lanes.len()).expect("lanes fit in u32");
        self.lanes.push(Lane {
            name: name.to_string(),
            kind,
            rows: 1,
        });
        self.by_name.insert(name.to_string(), index);
        index
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

/// Positions of distinct names, in sorted order.
fn table(names: impl Iterator<Item = String>) -> (Vec<String>, BTreeMap<String, u32>) {
    let sorted: Vec<String> = names.collect::<BTreeSet<String>>().into_iter().collect();
    let positions = sorted
        .iter()
        .enumerate()
        .map(|(position, name)| (name.clone(), position as u32))
        .collect();
    (sorted, positions)
}

/// Builds the model: lanes for every server, client and other endpoint named, the rows the
/// page draws, and the failing step.
pub fn build(input: TimelineInput<'_>) -> Timeline {
    let origin_ns = input.origin_ns.unwrap_or_else(|| earliest(&input));
    let at = |ns: u64| ns.saturating_sub(origin_ns);
    let mut lanes = client_and_server_lanes(&input);
    let mut ops = op_rows(&input, &lanes, origin_ns);
    let latest = latest(&input).max(input.end_ns.unwrap_or(0));
    let end_ns = at(latest).max(1);
    assign_rows(&mut ops, &mut lanes.lanes, end_ns);
    let (message_kinds, kind_index) = table(input.messages.iter().map(|m| m.kind.clone()));
    let mut messages: Vec<MessageRow> = input
        .messages
        .iter()
        .map(|message| {
            let from = lanes.add(&message.from, "other");
            let to = lanes.add(&message.to, "other");
            let fate = Fate::ALL.iter().position(|&f| f == message.fate);
            MessageRow(
                at(message.send_ns),
                message.arrive_ns.map(at),
                from,
                to,
                kind_index[&message.kind],
                fate.expect("every fate is listed") as u32,
            )
        })
        .collect();
    // Stable: messages sent at the same instant keep the caller's order.
    messages.sort_by_key(|row| row.0);
    let role_changes = roles_with_crashes(&input);
    let (role_names, role_index) = table(role_changes.iter().map(|(r, _)| r.role.clone()));
    let mut roles: Vec<(RoleRow, bool)> = role_changes
        .iter()
        .filter_map(|(change, reported)| {
            let lane = lanes.get(&change.server)?;
            let row = RoleRow(
                at(change.at_ns),
                lane,
                role_index[&change.role],
                change.term,
            );
            Some((row, *reported))
        })
        .collect();
    // At one instant, what the server reported comes after what a fault implies.
    roles.sort_by_key(|(row, reported)| (row.0, *reported));
    let roles: Vec<RoleRow> = roles.into_iter().map(|(row, _)| row).collect();
    let mut faults: Vec<FaultRow> = input
        .faults
        .iter()
        .map(|fault| FaultRow {
            kind: fault.kind.clone(),
            label: fault.label.clone(),
            start_ns: at(fault.start_ns),
            end_ns: fault.end_ns.map_or(end_ns, at),
            lanes: fault.nodes.iter().filter_map(|n| lanes.get(n)).collect(),
        })
        .collect();
    faults.sort_by_key(|fault| fault.start_ns);
    let mut markers: Vec<MarkerRow> = input
        .markers
        .iter()
        .map(|marker| MarkerRow {
            at_ns: at(marker.at_ns),
            kind: marker.kind.clone(),
            label: marker.label.clone(),
        })
        .collect();
    markers.sort_by_key(|marker| marker.at_ns);
    let ids = OpIds::new(input.history, &ops.order);
    let window = window_mark(&input, &ids, origin_ns);
    let failure = failure_mark(&input, &ids, &lanes, origin_ns);
    Timeline {
        format: FORMAT,
        title: input.title,
        subtitle: input.subtitle,
        source: input.source,
        origin_ns,
        end_ns,
        lanes: lanes.lanes,
        locks: ops.locks,
        op_kinds: OP_KINDS.to_vec(),
        results: RESULTS.to_vec(),
        message_kinds,
        fates: Fate::ALL.iter().map(|fate| fate.name()).collect(),
        role_names,
        messages,
        roles,
        faults,
        markers,
        ops: ops.rows,
        failure,
        window,
        undecided_locks: input
            .verdict
            .map_or_else(Vec::new, |verdict| verdict.inconclusive_locks.clone()),
        notes: input.notes,
    }
}

/// The role changes given (marked `true`), and those a crash implies (`false`): a crashed
/// server is `down` from its crash, and a follower in its last term when it restarts (Raft
/// restarts every server as a follower; a role it reports at that instant overrides this), or
/// just `up` for a server that never reports a role (chaos sees a real cluster from outside).
fn roles_with_crashes(input: &TimelineInput<'_>) -> Vec<(RoleChange, bool)> {
    let mut changes: Vec<(RoleChange, bool)> = input
        .roles
        .iter()
        .map(|change| (change.clone(), true))
        .collect();
    let term_before = |server: &str, at_ns: u64| {
        input
            .roles
            .iter()
            .filter(|change| change.server == server && change.at_ns <= at_ns)
            .max_by_key(|change| change.at_ns)
            .map_or(0, |change| change.term)
    };
    for fault in input.faults.iter().filter(|fault| fault.kind == "crash") {
        for server in fault
            .nodes
            .iter()
            .filter(|node| input.servers.contains(node))
        {
            let term = term_before(server, fault.start_ns);
            let implied = |at_ns: u64, role: &str| RoleChange {
                at_ns,
                server: server.clone(),
                role: role.into(),
                term,
            };
            changes.push((implied(fault.start_ns, "down"), false));
            if let Some(end_ns) = fault.end_ns {
                // Without any reported role (a real cluster seen from outside), only that it
                // is up again is known, not its role or term.
                let reported = input.roles.iter().any(|change| &change.server == server);
                let role = if reported { "follower" } else { "up" };
                changes.push((implied(end_ns, role), false));
            }
        }
    }
    changes
}

/// Every time the input holds, to find the origin and the end.
fn times<'a>(input: &'a TimelineInput<'_>) -> impl Iterator<Item = u64> + 'a {
    let ops = input
        .history
        .iter()
        .flat_map(|op| std::iter::once(op.call_ns).chain(op.return_ns));
    let messages = input
        .messages
        .iter()
        .flat_map(|m| std::iter::once(m.send_ns).chain(m.arrive_ns));
    let faults = input
        .faults
        .iter()
        .flat_map(|f| std::iter::once(f.start_ns).chain(f.end_ns));
    ops.chain(messages)
        .chain(faults)
        .chain(input.roles.iter().map(|r| r.at_ns))
        .chain(input.markers.iter().map(|m| m.at_ns))
        .chain(input.failure.iter().map(|f| f.at_ns))
}

fn earliest(input: &TimelineInput<'_>) -> u64 {
    times(input).min().unwrap_or(0)
}

fn latest(input: &TimelineInput<'_>) -> u64 {
    times(input).max().unwrap_or(0)
}

/// Servers in the order given, then clients by number (the history's and the idle ones).
fn client_and_server_lanes(input: &TimelineInput<'_>) -> Lanes {
    let mut lanes = Lanes {
        lanes: Vec::new(),
        by_name: BTreeMap::new(),
    };
    for server in &input.servers {
        lanes.add(server, "server");
    }
    let clients: BTreeSet<u32> = input
        .clients
        .iter()
        .copied()
        .chain(input.history.iter().map(|op| op.client))
        .collect();
    for client in clients {
        lanes.add(&input.names.name(client), "client");
    }
    lanes
}

/// The operation rows, and which history position each came from.
struct OpRows {
    rows: Vec<OpRow>,
    /// Per row: its position in the history.
    order: Vec<usize>,
    locks: Vec<String>,
}

fn op_rows(input: &TimelineInput<'_>, lanes: &Lanes, origin_ns: u64) -> OpRows {
    let (locks, lock_index) = table(input.history.iter().map(|op| op.lock.clone()));
    let mut order: Vec<usize> = (0..input.history.len()).collect();
    order.sort_by_key(|&position| (input.history[position].call_ns, position));
    let rows = order
        .iter()
        .map(|&position| {
            let op = &input.history[position];
            let lane = lanes
                .get(&input.names.name(op.client))
                .expect("every client has a lane");
            let kind = match (op.op, op.consistency) {
                (HistoryOpKind::Preempt, _) => 0,
                (HistoryOpKind::Release, _) => 1,
                (HistoryOpKind::Check, Some(Consistency::Local)) => 3,
                (HistoryOpKind::Check, _) => 2,
                (HistoryOpKind::Expire, _) => 4,
                (HistoryOpKind::Acquire, _) => 5,
                (HistoryOpKind::Cancel, _) => 6,
            };
            OpRow(
                lane,
                kind,
                lock_index[&op.lock],
                op.call_ns.saturating_sub(origin_ns),
                op.return_ns.map(|ns| ns.saturating_sub(origin_ns)),
                result_index(op.result),
                op.result.named(input.names).to_string(),
                0,
                0,
            )
        })
        .collect();
    OpRows { rows, order, locks }
}

fn result_index(result: HistoryResult) -> u32 {
    let position = RESULTS.iter().position(|&name| name == result.name());
    position.expect("every result is listed") as u32
}

/// Stacks overlapping operations of a lane in rows, greedily in call order: each goes to the
/// first row free by its call. Past [`OP_ROWS_MAX`] rows, the row that frees first is shared.
fn assign_rows(ops: &mut OpRows, lanes: &mut [Lane], end_ns: u64) {
    // Drawn until: the return, or for an unknown result the lane's next call after its own.
    let mut next_call: BTreeMap<u32, u64> = BTreeMap::new();
    for row in ops.rows.iter_mut().rev() {
        let next = next_call.get(&row.0).copied().filter(|&next| next > row.3);
        row.8 = row.4.unwrap_or_else(|| next.unwrap_or(end_ns).max(row.3));
        next_call.insert(row.0, row.3);
    }
    let mut row_ends: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for row in &mut ops.rows {
        let (lane, call, end) = (row.0, row.3, row.8);
        let ends = row_ends.entry(lane).or_default();
        let chosen = match ends.iter().position(|&free_at| free_at <= call) {
            Some(free) => free,
            None if (ends.len() as u32) < OP_ROWS_MAX => {
                ends.push(0);
                ends.len() - 1
            }
            None => (0..ends.len())
                .min_by_key(|&r| ends[r])
                .expect("at least one row"),
        };
        ends[chosen] = ends[chosen].max(end);
        row.7 = chosen as u32;
    }
    for (lane, ends) in row_ends {
        lanes[lane as usize].rows = ends.len().max(1) as u32;
    }
}

/// History operations to the ids of their rows.
struct OpIds<'h> {
    history: &'h [HistoryOp],
    /// (client, call) to (history position, id), for finding the checker's copies.
    by_call: BTreeMap<(u32, u64), Vec<(usize, u32)>>,
    /// Per history position: its id.
    id_of: Vec<u32>,
}

impl<'h> OpIds<'h> {
    fn new(history: &'h [HistoryOp], order: &[usize]) -> OpIds<'h> {
        let mut by_call: BTreeMap<(u32, u64), Vec<(usize, u32)>> = BTreeMap::new();
        let mut id_of = vec![0; history.len()];
        for (id, &position) in order.iter().enumerate() {
            let op = &history[position];
            by_call
                .entry((op.client, op.call_ns))
                .or_default()
                .push((position, id as u32));
            id_of[position] = id as u32;
        }
        OpIds {
            history,
            by_call,
            id_of,
        }
    }

    /// The id of an operation equal to `op` (the checker hands back clones).
    fn find(&self, op: &HistoryOp) -> Option<u32> {
        self.by_call
            .get(&(op.client, op.call_ns))?
            .iter()
            .find(|&&(position, _)| self.history[position] == *op)
            .map(|&(_, id)| id)
    }
}

fn window_mark(input: &TimelineInput<'_>, ids: &OpIds<'_>, origin_ns: u64) -> Option<WindowMark> {
    let violation = input.verdict?.violations.first()?;
    let LinearizabilityViolation::NotLinearizable {
        lock,
        window,
        explanation,
        culprit,
        furthest,
    } = violation
    else {
        return None;
    };
    let found = |op: &HistoryOp| ids.find(op);
    let start_ns = window.iter().map(|op| op.call_ns).min()?;
    let end_ns = window
        .iter()
        .map(|op| op.return_ns.unwrap_or(op.call_ns))
        .max()?;
    Some(WindowMark {
        lock: lock.clone(),
        explanation: explanation.clone(),
        ops: window.iter().filter_map(found).collect(),
        culprit: found(&window[*culprit])?,
        start_ns: start_ns.saturating_sub(origin_ns),
        end_ns: end_ns.saturating_sub(origin_ns),
        furthest: FurthestMark {
            start: furthest.start.render(input.names),
            steps: furthest
                .steps
                .iter()
                .filter_map(|step| {
                    Some(FurthestStep {
                        op: found(&step.op)?,
                        required: step.required,
                        after: step.after.render(input.names),
                    })
                })
                .collect(),
            unplaced: furthest.unplaced.iter().filter_map(found).collect(),
            cut_short: furthest.cut_short,
        },
    })
}

/// The failing step: the caller's failure, pinned to the operation the verdict names when the
/// verdict is about the same property; else the verdict's first violation.
fn failure_mark(
    input: &TimelineInput<'_>,
    ids: &OpIds<'_>,
    lanes: &Lanes,
    origin_ns: u64,
) -> Option<FailureMark> {
    let verdict_point = input
        .verdict
        .and_then(|report| report.violations.first())
        .map(|violation| {
            let (op, related) = match violation {
                LinearizabilityViolation::NotLinearizable {
                    window, culprit, ..
                } => (&window[*culprit], vec![]),
                LinearizabilityViolation::NonMonotonicRead { earlier, later, .. }
                | LinearizabilityViolation::StaleRead { earlier, later, .. } => {
                    (later, vec![earlier])
                }
            };
            (violation, op, related)
        });
    let (invariant, message, at_ns, op, node, related) = match (&input.failure, verdict_point) {
        (Some(failure), Some((violation, op, related)))
            if failure.op.is_none() && failure.invariant == violation.invariant() =>
        {
            let at_ns = op.return_ns.unwrap_or(op.call_ns);
            (
                failure.invariant.clone(),
                failure.message.clone(),
                at_ns,
                ids.find(op),
                None,
                related,
            )
        }
        (Some(failure), _) => {
            let op = failure.op.map(|position| ids.id_of[position]);
            (
                failure.invariant.clone(),
                failure.message.clone(),
                failure.at_ns,
                op,
                failure.node.clone(),
                vec![],
            )
        }
        (None, Some((violation, op, related))) => (
            violation.invariant().to_string(),
            violation.render(input.names),
            op.return_ns.unwrap_or(op.call_ns),
            ids.find(op),
            None,
            related,
        ),
        (None, None) => return None,
    };
    let at_ns = at_ns.saturating_sub(origin_ns);
    let lane = match (op, node) {
        (Some(id), _) => Some(op_lane(input, ids, id, lanes)),
        (None, Some(name)) => lanes.get(&name),
        (None, None) => None,
    };
    let mut related: Vec<u32> = related.into_iter().filter_map(|op| ids.find(op)).collect();
    related.extend(op);
    Some(FailureMark {
        invariant,
        message,
        at_ns,
        step_id: op.map_or_else(|| format!("t-{at_ns}"), |id| format!("op-{id}")),
        op,
        lane,
        related,
    })
}

fn op_lane(input: &TimelineInput<'_>, ids: &OpIds<'_>, id: u32, lanes: &Lanes) -> u32 {
    let position = ids
        .id_of
        .iter()
        .position(|&candidate| candidate == id)
        .expect("an id names a history position");
    let client = input.history[position].client;
    lanes
        .get(&input.names.name(client))
        .expect("every client has a lane")
}

/// The timeline of a history alone (`lockstep check --html`): client lanes and operations,
/// and the verdict's first violation as the failing step.
pub fn from_history(
    title: &str,
    history: &[HistoryOp],
    names: &ClientNames,
    verdict: &LinearizabilityReport,
) -> Timeline {
    let mut input = TimelineInput::new(title, history, names);
    let unknown = history.iter().filter(|op| op.return_ns.is_none()).count();
    input.subtitle = format!(
        "{} operations ({unknown} with unknown results), {} locks, {} clients: {}",
        history.len(),
        verdict.locks_checked,
        history
            .iter()
            .map(|op| op.client)
            .collect::<BTreeSet<_>>()
            .len(),
        if verdict.passed() {
            "linearizable, monotonic reads hold".to_string()
        } else if verdict.violations.is_empty() {
            "undecided (the search stopped before deciding every lock)".to_string()
        } else {
            format!("{} violation(s)", verdict.violations.len())
        }
    );
    input.verdict = Some(verdict);
    input
        .notes
        .push("A history has no servers or messages: only client lanes and operations.".into());
    build(input)
}

#[cfg(test)]
mod tests;
