//! The client-observed history of a run: every lock operation a client called, when it called
//! it, when (and whether) it learned the result, and what that result was. This is what the
//! linearizability checker ([`super::linearizability`]) judges, and what `--history FILE` writes
//! as JSON Lines, one operation per line, times in simulated nanoseconds:
//!
//! ```text
//! {"client":"c1","op":"preempt","lock":"a","call":1000000,"return":4200000,"result":"granted","token":12}
//! {"client":"c2","op":"check","lock":"a","consistency":"linearizable","call":6000000,"return":7100000,"result":"owner","owner":"c1","token":12}
//! {"client":"c1","op":"release","lock":"a","call":8000000,"return":null,"result":"unknown"}
//! {"client":"c1","op":"expire","lock":"a","call":9100000,"return":9100000,"result":"expired"}
//! {"client":"c2","op":"acquire","lock":"a","call":9000000,"return":9300000,"result":"granted","token":15}
//! {"client":"c3","op":"acquire","lock":"a","call":9100000,"return":11200000,"result":"timed_out"}
//! {"client":"c4","op":"cancel","lock":"a","call":9500000,"return":9900000,"result":"not_waiting"}
//! ```
//!
//! An `acquire` (the blocking acquire) answers like a preempt (`granted`, `held_by`), or
//! `timed_out` or `cancelled`, which took no effect: it is a preempt that may take effect at any
//! point before it returns. A `cancel` answers `cancelled` or `not_waiting` and changes no
//! holder.
//!
//! `"return": null` with `"result": "unknown"` marks an operation whose outcome the client never
//! learned (timeout, crash, or still running at the end): it may or may not have taken effect.
//!
//! The simulator names its clients `c1`, `c2`, ...; histories written by other tools may name
//! them any way they like (`alice`, `node-7`): [`read_history`] accepts any non-empty name and
//! numbers it ([`ClientNames`]), and it reports fields it does not know instead of refusing them.
//!
//! What this module must never do: panic on input. A bad line is a [`HistoryError`] naming the
//! line, the field and the problem. Writing checks every operation with the same rules as reading
//! (a pair assertion), so whatever [`write_jsonl`] accepts, [`read_jsonl`] reads back unchanged.

use crate::node::{Claim, Consistency, Mode, PERMITS_MAX};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What a client asked for.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum HistoryOpKind {
    Preempt,
    Release,
    Check,
    /// Not a client's call: the cluster expired the session of `client`, freeing `lock` if that
    /// session held it. Its `call` and `return` bound when the expiry took effect.
    Expire,
    /// The blocking acquire: a preempt that may take effect at any point before it returns.
    Acquire,
    /// Stops a blocking acquire's wait; changes no holder.
    Cancel,
}

impl HistoryOpKind {
    pub fn name(self) -> &'static str {
        match self {
            HistoryOpKind::Preempt => "preempt",
            HistoryOpKind::Release => "release",
            HistoryOpKind::Check => "check",
            HistoryOpKind::Expire => "expire",
            HistoryOpKind::Acquire => "acquire",
            HistoryOpKind::Cancel => "cancel",
        }
    }

    fn parse(name: &str) -> Option<HistoryOpKind> {
        match name {
            "preempt" => Some(HistoryOpKind::Preempt),
            "release" => Some(HistoryOpKind::Release),
            "check" => Some(HistoryOpKind::Check),
            "expire" => Some(HistoryOpKind::Expire),
            "acquire" => Some(HistoryOpKind::Acquire),
            "cancel" => Some(HistoryOpKind::Cancel),
            _ => None,
        }
    }
}

/// What the client learned. Owners are client numbers, as in [`HistoryOp::client`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum HistoryResult {
    /// Preempt: the client holds the lock under fencing token `token`.
    Granted { token: u64 },
    /// Preempt: `owner` holds the lock.
    HeldBy { owner: u32 },
    /// Release: the lock is free now.
    Released,
    /// Release: the caller did not hold the lock.
    NotOwner,
    /// Check: nobody holds the lock.
    Free,
    /// Check: `owner` holds the lock, under `token` when the answer carried it.
    Owner { owner: u32, token: Option<u64> },
    /// The client never learned the result: the operation may or may not have taken effect.
    Unknown,
    /// Expire: the session ended; the lock is free if that session held it.
    Expired,
    /// Acquire: the wait ran out; no effect.
    TimedOut,
    /// Acquire: its client cancelled it; no effect. Cancel: it stopped a wait.
    Cancelled,
    /// Cancel: there was no wait to stop.
    NotWaiting,
    /// Preempt or acquire: the lock is in use with other permits (`None`: a plain lock).
    PermitsMismatch { permits: Option<u32> },
    /// Check: `holders` clients hold the lock in shared mode.
    Shared { holders: u32 },
}

impl HistoryResult {
    pub fn name(self) -> &'static str {
        match self {
            HistoryResult::Granted { .. } => "granted",
            HistoryResult::HeldBy { .. } => "held_by",
            HistoryResult::Released => "released",
            HistoryResult::NotOwner => "not_owner",
            HistoryResult::Free => "free",
            HistoryResult::Owner { .. } => "owner",
            HistoryResult::Unknown => "unknown",
            HistoryResult::Expired => "expired",
            HistoryResult::TimedOut => "timed_out",
            HistoryResult::Cancelled => "cancelled",
            HistoryResult::NotWaiting => "not_waiting",
            HistoryResult::PermitsMismatch { .. } => "permits_mismatch",
            HistoryResult::Shared { .. } => "shared",
        }
    }

    /// Whether an operation of `kind` can answer this.
    pub fn fits(self, kind: HistoryOpKind) -> bool {
        match self {
            HistoryResult::Granted { .. } | HistoryResult::HeldBy { .. } => {
                matches!(kind, HistoryOpKind::Preempt | HistoryOpKind::Acquire)
            }
            HistoryResult::TimedOut => kind == HistoryOpKind::Acquire,
            HistoryResult::Cancelled => {
                matches!(kind, HistoryOpKind::Acquire | HistoryOpKind::Cancel)
            }
            HistoryResult::NotWaiting => kind == HistoryOpKind::Cancel,
            HistoryResult::PermitsMismatch { .. } => {
                matches!(kind, HistoryOpKind::Preempt | HistoryOpKind::Acquire)
            }
            HistoryResult::Shared { .. } => kind == HistoryOpKind::Check,
            HistoryResult::Released | HistoryResult::NotOwner => kind == HistoryOpKind::Release,
            HistoryResult::Free | HistoryResult::Owner { .. } => kind == HistoryOpKind::Check,
            HistoryResult::Expired => kind == HistoryOpKind::Expire,
            // The cluster decided an expiry: it is never unknown.
            HistoryResult::Unknown => kind != HistoryOpKind::Expire,
        }
    }
}

impl HistoryResult {
    /// The result as people read it, with owners by their names in `names`.
    pub fn named<'a>(&'a self, names: &'a ClientNames) -> Named<'a, HistoryResult> {
        Named { item: self, names }
    }
}

impl fmt::Display for Named<'_, HistoryResult> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names;
        match *self.item {
            HistoryResult::Granted { token } => write!(f, "granted (token {token})"),
            HistoryResult::HeldBy { owner } => write!(f, "held_by {}", names.name(owner)),
            HistoryResult::Owner {
                owner,
                token: Some(token),
            } => {
                write!(f, "owner {} (token {token})", names.name(owner))
            }
            HistoryResult::Owner { owner, token: None } => {
                write!(f, "owner {}", names.name(owner))
            }
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Display for HistoryResult {
    /// With the simulator's names (`c3` for client 3).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.named(ClientNames::simulator()).fmt(f)
    }
}

/// Something shown with clients by their names ([`HistoryOp::named`], [`HistoryResult::named`]).
pub struct Named<'a, T> {
    item: &'a T,
    names: &'a ClientNames,
}

/// Who the client numbers of a history stand for. A client named `c<N>` the way the simulator
/// names them (no leading zero, N at least 1) is number N; any other name gets a number no such
/// name uses, and is kept here so that it can be shown as it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientNames {
    /// Number to name, for names not of the form `c<N>`.
    foreign: BTreeMap<u32, String>,
}

impl ClientNames {
    /// The simulator's names only: client N is `cN`.
    pub fn simulator() -> &'static ClientNames {
        static SIMULATOR: ClientNames = ClientNames {
            foreign: BTreeMap::new(),
        };
        &SIMULATOR
    }

    /// The name client `number` had in its history.
    pub fn name(&self, number: u32) -> Cow<'_, str> {
        match self.foreign.get(&number) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("c{number}")),
        }
    }

    /// How many clients have names not of the form `c<N>`.
    pub fn foreign_count(&self) -> usize {
        self.foreign.len()
    }
}

/// One operation as its client saw it.
///
/// Invariants (checked by [`HistoryOp::validate`] on both reading and writing): the result fits
/// the op; `consistency` is set on checks and only on checks; `return_ns` is `None` exactly when
/// the result is `Unknown`, and otherwise not before `call_ns`; `client` and owners are at least 1;
/// the lock name is not empty.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(into = "RawLine")]
pub struct HistoryOp {
    /// The client's number: `c1` is 1.
    pub client: u32,
    pub op: HistoryOpKind,
    pub lock: String,
    /// Checks only.
    pub consistency: Option<Consistency>,
    /// When the client called the operation, in simulated nanoseconds.
    pub call_ns: u64,
    /// When the client learned the result; `None` if it never did.
    pub return_ns: Option<u64>,
    pub result: HistoryResult,
    /// Optional: the log index the answer reflects (a write's own entry, or the applied index a
    /// check was answered at). With it, `monotonic_reads` also catches a read older than
    /// anything its client had already seen (a stale `free` included). Only answered
    /// operations carry one.
    pub index: Option<u64>,
    /// A preempt's or acquire's mode and permits (docs/design.md, "Shared locks and
    /// semaphores"); exclusive with no permits for every other operation, and in histories
    /// from before modes. Written as `mode` and `permits`, only when not the default.
    pub claim: Claim,
}

impl HistoryOp {
    /// Whether the operation obeys the invariants written on the type.
    pub fn validate(&self) -> Result<(), HistoryProblem> {
        if self.client == 0 {
            return Err(HistoryProblem::BadClient("c0".into()));
        }
        if let HistoryResult::HeldBy { owner: 0 } | HistoryResult::Owner { owner: 0, .. } =
            self.result
        {
            return Err(HistoryProblem::BadOwner("c0".into()));
        }
        self.validate_shape()
    }

    /// Every invariant but the client numbers: what a line says, whoever its clients are.
    fn validate_shape(&self) -> Result<(), HistoryProblem> {
        if self.lock.is_empty() {
            return Err(HistoryProblem::EmptyLock);
        }
        match (self.op, self.consistency) {
            (HistoryOpKind::Check, None) => return Err(HistoryProblem::MissingConsistency),
            (
                HistoryOpKind::Preempt
                | HistoryOpKind::Release
                | HistoryOpKind::Expire
                | HistoryOpKind::Acquire
                | HistoryOpKind::Cancel,
                Some(_),
            ) => {
                return Err(HistoryProblem::ConsistencyOnNonCheck(self.op.name()));
            }
            _ => {}
        }
        if !self.result.fits(self.op) {
            return Err(HistoryProblem::ResultDoesNotFitOp {
                op: self.op.name(),
                result: self.result.name().into(),
            });
        }
        if let (HistoryResult::Unknown, Some(index)) = (self.result, self.index) {
            return Err(HistoryProblem::IndexWithoutAnswer(index));
        }
        match (self.result, self.return_ns) {
            (HistoryResult::Unknown, Some(return_ns)) => {
                Err(HistoryProblem::UnknownWithReturn(return_ns))
            }
            (HistoryResult::Unknown, None) => Ok(()),
            (known, None) => Err(HistoryProblem::KnownWithoutReturn(known.name())),
            (_, Some(return_ns)) if return_ns < self.call_ns => {
                Err(HistoryProblem::ReturnBeforeCall {
                    call_ns: self.call_ns,
                    return_ns,
                })
            }
            (_, Some(_)) => Ok(()),
        }
    }
}

impl HistoryOp {
    /// The operation as people read it, with clients by their names in `names`.
    pub fn named<'a>(&'a self, names: &'a ClientNames) -> Named<'a, HistoryOp> {
        Named { item: self, names }
    }

    /// The operation as one line of the history format, with clients by their names in `names`.
    pub fn to_json(&self, names: &ClientNames) -> Value {
        serde_json::to_value(RawLine::new(self.clone(), names)).expect("a line serialises")
    }
}

impl fmt::Display for Named<'_, HistoryOp> {
    /// `6.000ms .. 7.100ms  c2 check a (linearizable): owner c1 (token 12)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.item;
        let call = milliseconds(op.call_ns);
        let ret = match op.return_ns {
            Some(return_ns) => milliseconds(return_ns),
            None => "never".into(),
        };
        write!(
            f,
            "{call:>12} .. {ret:<12} {} {} {}",
            self.names.name(op.client),
            op.op.name(),
            op.lock
        )?;
        match op.consistency {
            Some(Consistency::Linearizable) => f.write_str(" (linearizable)")?,
            Some(Consistency::Local) => f.write_str(" (local)")?,
            None => {}
        }
        write!(f, ": {}", op.result.named(self.names))
    }
}

impl fmt::Display for HistoryOp {
    /// With the simulator's names (`c3` for client 3).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.named(ClientNames::simulator()).fmt(f)
    }
}

/// Simulated nanoseconds as milliseconds with three decimals (`4.200ms`).
pub fn milliseconds(nanos: u64) -> String {
    format!("{}.{:03}ms", nanos / 1_000_000, nanos % 1_000_000 / 1_000)
}

/// Why a line is not a history operation. Every problem but the first two names its field.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HistoryProblem {
    #[error("not JSON: {0}")]
    BadJson(String),
    #[error("not a JSON object (each line is one operation, an object of fields)")]
    NotAnObject,
    #[error("field `{0}`: missing")]
    Missing(&'static str),
    #[error("field `{field}`: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `client`: the client's name is empty")]
    EmptyClient,
    #[error("field `owner`: the owner's name is empty")]
    EmptyOwner,
    /// Writing only: client numbers start at 1.
    #[error("field `client`: `{0}` is not a client (numbers start at 1)")]
    BadClient(String),
    /// Writing only: owner numbers start at 1.
    #[error("field `owner`: `{0}` is not a client (numbers start at 1)")]
    BadOwner(String),
    #[error("field `op`: unknown op `{0}` (expected preempt, release, check or expire)")]
    UnknownOp(String),
    #[error(
        "field `result`: unknown result `{0}` (expected granted, held_by, released, not_owner, \
         free, owner, expired or unknown)"
    )]
    UnknownResult(String),
    #[error("field `consistency`: unknown consistency `{0}` (expected local or linearizable)")]
    UnknownConsistency(String),
    #[error("field `result`: result `{result}` does not fit op `{op}`")]
    ResultDoesNotFitOp { op: &'static str, result: String },
    #[error("field `{field}`: missing, and result `{result}` needs it")]
    MissingField {
        result: &'static str,
        field: &'static str,
    },
    #[error("field `{field}`: does not belong to result `{result}`")]
    UnexpectedField {
        result: &'static str,
        field: &'static str,
    },
    #[error("field `consistency`: missing, and a check needs it (local or linearizable)")]
    MissingConsistency,
    #[error("field `consistency`: belongs to checks, not to `{0}`")]
    ConsistencyOnNonCheck(&'static str),
    #[error("field `return`: return {return_ns} comes before call {call_ns}")]
    ReturnBeforeCall { call_ns: u64, return_ns: u64 },
    #[error("field `return`: result `unknown` needs `\"return\": null`, not {0}")]
    UnknownWithReturn(u64),
    #[error("field `index`: result `unknown` reflects no log index, but the line gives {0}")]
    IndexWithoutAnswer(u64),
    #[error(
        "field `return`: result `{0}` needs a return time (only `unknown` has `\"return\": null`)"
    )]
    KnownWithoutReturn(&'static str),
    #[error("field `lock`: the lock name is empty")]
    EmptyLock,
}

/// A line of a history file that could not be read. `line` counts from 1.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct HistoryError {
    pub line: usize,
    pub problem: HistoryProblem,
}

/// Writes one JSON object per operation, each followed by a newline, with the simulator's client
/// names (`c1`, ...).
///
/// An operation that breaks [`HistoryOp`]'s invariants is refused with
/// [`std::io::ErrorKind::InvalidInput`] before anything of it is written, so that a file this
/// writes always reads back.
pub fn write_jsonl(ops: &[HistoryOp], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for (position, op) in ops.iter().enumerate() {
        if let Err(problem) = op.validate() {
            let message = format!("history operation {position} ({op:?}): {problem}");
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                message,
            ));
        }
        serde_json::to_writer(&mut *out, &RawLine::from(op.clone()))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A history as [`read_history`] read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// In file order.
    pub ops: Vec<HistoryOp>,
    /// Who the client numbers in `ops` stand for.
    pub clients: ClientNames,
    /// Fields the format does not define, each with the first line it is on. They were ignored.
    pub unknown_fields: BTreeMap<String, usize>,
}

/// The `op` of the lines that say what a watcher heard (README, "Histories"): skipped by
/// [`read_history`], since no operation checker judges them.
pub const WATCH_OP: &str = "watch";

/// The fields of the format, in the order [`write_jsonl`] writes them.
pub const FIELDS: [&str; 13] = [
    "client",
    "op",
    "lock",
    "mode",
    "permits",
    "consistency",
    "call",
    "return",
    "result",
    "owner",
    "token",
    "holders",
    "index",
];

/// Reads a JSON Lines history written by anyone: blank lines are skipped, every other line must
/// be one operation. Clients may have any non-empty name ([`ClientNames`]); fields the format
/// does not define are ignored and listed in [`History::unknown_fields`]. Stops at the first bad
/// line.
pub fn read_history(text: &str) -> Result<History, HistoryError> {
    let mut ops = Vec::new();
    let mut names = NameTable::default();
    let mut unknown_fields = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let op = parse_line(line, &mut names, |field| {
            unknown_fields
                .entry(field.to_string())
                .or_insert(line_number);
        })
        .map_err(|problem| HistoryError {
            line: line_number,
            problem,
        })?;
        // A watch line (`sim::watch`) is judged by `watch_streams`, not by these checkers.
        ops.extend(op);
    }
    let (numbers, clients) = names.settle();
    for op in &mut ops {
        op.client = numbers[op.client as usize];
        match &mut op.result {
            HistoryResult::HeldBy { owner } | HistoryResult::Owner { owner, .. } => {
                *owner = numbers[*owner as usize];
            }
            _ => {}
        }
        assert!(op.validate().is_ok(), "a parsed operation is valid: {op:?}");
    }
    Ok(History {
        ops,
        clients,
        unknown_fields,
    })
}

/// [`read_history`], keeping only the operations: for histories whose clients have the
/// simulator's names, which are then exactly their numbers (`c7` is 7).
pub fn read_jsonl(text: &str) -> Result<Vec<HistoryOp>, HistoryError> {
    read_history(text).map(|history| history.ops)
}

/// Names as they are met, numbered provisionally in order of first appearance (from 0).
#[derive(Default)]
struct NameTable {
    /// Only inserted into and probed, never iterated.
    numbers: HashMap<String, u32>,
    names: Vec<String>,
}

impl NameTable {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = u32::try_from(self.names.len()).expect("fewer names than lines");
        self.numbers.insert(name.to_string(), number);
        self.names.push(name.to_string());
        number
    }

    /// The final number of each provisional one: `c<N>` is N, and every other name gets the
    /// lowest number no `c<N>` has, in order of first appearance. Deterministic: it depends only
    /// on the order names appear in.
    fn settle(self) -> (Vec<u32>, ClientNames) {
        let simulator: Vec<Option<u32>> =
            self.names.iter().map(|name| parse_client(name)).collect();
        let taken: std::collections::BTreeSet<u32> = simulator.iter().flatten().copied().collect();
        let mut free = (1..=u32::MAX).filter(|number| !taken.contains(number));
        let mut clients = ClientNames::default();
        let numbers = self
            .names
            .into_iter()
            .zip(simulator)
            .map(|(name, simulator)| {
                simulator.unwrap_or_else(|| {
                    // There are fewer names than lines, far fewer than u32::MAX.
                    let number = free.next().expect("a free client number");
                    clients.foreign.insert(number, name);
                    number
                })
            })
            .collect();
        (numbers, clients)
    }
}

/// One line into an operation, with clients by provisional number. `unknown` hears every field
/// the format does not define.
fn parse_line(
    line: &str,
    names: &mut NameTable,
    mut unknown: impl FnMut(&str),
) -> Result<Option<HistoryOp>, HistoryProblem> {
    let value: Value = serde_json::from_str(line).map_err(|error| {
        // serde_json says "at line 1 column N"; within one line only the column means anything.
        let text = error.to_string();
        let message = text
            .rfind(" at line ")
            .map_or(text.as_str(), |end| &text[..end]);
        HistoryProblem::BadJson(format!("{message} (column {})", error.column()))
    })?;
    let Value::Object(fields) = value else {
        return Err(HistoryProblem::NotAnObject);
    };
    if fields.get("op").and_then(Value::as_str) == Some(WATCH_OP) {
        return Ok(None);
    }
    fields
        .keys()
        .filter(|key| !FIELDS.contains(&key.as_str()))
        .for_each(|key| unknown(key));
    let client_name = text_field(&fields, "client")?.ok_or(HistoryProblem::Missing("client"))?;
    if client_name.is_empty() {
        return Err(HistoryProblem::EmptyClient);
    }
    let op_name = text_field(&fields, "op")?.ok_or(HistoryProblem::Missing("op"))?;
    let op = HistoryOpKind::parse(op_name).ok_or(HistoryProblem::UnknownOp(op_name.into()))?;
    let lock = text_field(&fields, "lock")?.ok_or(HistoryProblem::Missing("lock"))?;
    let consistency = match text_field(&fields, "consistency")? {
        None => None,
        Some("local") => Some(Consistency::Local),
        Some("linearizable") => Some(Consistency::Linearizable),
        Some(other) => return Err(HistoryProblem::UnknownConsistency(other.into())),
    };
    let call_ns = time_field(&fields, "call")?.ok_or(HistoryProblem::Missing("call"))?;
    if !fields.contains_key("return") {
        return Err(HistoryProblem::Missing("return"));
    }
    let return_ns = time_field(&fields, "return")?;
    let result_name = text_field(&fields, "result")?.ok_or(HistoryProblem::Missing("result"))?;
    let owner = match text_field(&fields, "owner")? {
        Some("") => return Err(HistoryProblem::EmptyOwner),
        Some(name) => Some(name),
        None => None,
    };
    let token = time_field(&fields, "token").map_err(|_| HistoryProblem::WrongType {
        field: "token",
        expected: "a whole number, 0 or more",
    })?;
    let holders = time_field(&fields, "holders").map_err(|_| HistoryProblem::WrongType {
        field: "holders",
        expected: "a whole number, 0 or more",
    })?;
    let result = match (result_name, holders) {
        ("shared", Some(holders)) => HistoryResult::Shared {
            holders: u32::try_from(holders).map_err(|_| HistoryProblem::WrongType {
                field: "holders",
                expected: "a number of holders",
            })?,
        },
        ("shared", None) => {
            return Err(HistoryProblem::MissingField {
                result: "shared",
                field: "holders",
            });
        }
        (_, Some(_)) => {
            return Err(HistoryProblem::UnexpectedField {
                result: "not shared",
                field: "holders",
            });
        }
        (_, None) => parse_result(result_name, owner.map(|name| names.number(name)), token)?,
    };
    let claim = parse_claim(&fields, op)?;
    let index = time_field(&fields, "index").map_err(|_| HistoryProblem::WrongType {
        field: "index",
        expected: "a whole number, 0 or more",
    })?;
    let history_op = HistoryOp {
        client: names.number(client_name),
        op,
        lock: lock.to_string(),
        consistency,
        call_ns,
        return_ns,
        result,
        index,
        claim,
    };
    // Provisional numbers start at 0: the final ones are checked once they are settled.
    history_op.validate_shape()?;
    Ok(Some(history_op))
}

/// The `mode` and `permits` of a preempt or acquire: `permits` without `mode` is shared, as in
/// scenario files; either on another operation is refused.
fn parse_claim(fields: &Map<String, Value>, op: HistoryOpKind) -> Result<Claim, HistoryProblem> {
    let mode_text = text_field(fields, "mode")?;
    let permits = time_field(fields, "permits").map_err(|_| HistoryProblem::WrongType {
        field: "permits",
        expected: "a whole number of permits, 1 or more",
    })?;
    let claims = matches!(op, HistoryOpKind::Preempt | HistoryOpKind::Acquire);
    if !claims && (mode_text.is_some() || permits.is_some()) {
        return Err(HistoryProblem::WrongType {
            field: if mode_text.is_some() {
                "mode"
            } else {
                "permits"
            },
            expected: "absent: only a preempt or an acquire has a mode or permits",
        });
    }
    let mode = match mode_text {
        None if permits.is_some() => Mode::Shared,
        None | Some("exclusive") => Mode::Exclusive,
        Some("shared") => Mode::Shared,
        Some(_) => {
            return Err(HistoryProblem::WrongType {
                field: "mode",
                expected: "shared or exclusive",
            });
        }
    };
    let permits = match permits {
        None => None,
        Some(permits) if (1..=u64::from(PERMITS_MAX)).contains(&permits) => {
            u32::try_from(permits).ok()
        }
        Some(_) => {
            return Err(HistoryProblem::WrongType {
                field: "permits",
                expected: "1 to 64 permits",
            });
        }
    };
    Ok(Claim { mode, permits })
}

/// A string field; `null` or absent is `None`.
fn text_field<'a>(
    fields: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, HistoryProblem> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(HistoryProblem::WrongType {
            field,
            expected: "a string",
        }),
    }
}

/// A time in nanoseconds (or a token): a whole number, 0 or more; `null` or absent is `None`.
fn time_field(
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, HistoryProblem> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or(HistoryProblem::WrongType {
            field,
            expected: "a whole number of nanoseconds, 0 or more",
        }),
    }
}

/// One line exactly as it is written: field order here is the order in the file.
#[derive(Serialize)]
struct RawLine {
    client: String,
    op: &'static str,
    lock: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<&'static str>,
    call: u64,
    #[serde(rename = "return")]
    return_ns: Option<u64>,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
}

impl RawLine {
    fn new(op: HistoryOp, names: &ClientNames) -> RawLine {
        let (owner, token) = match op.result {
            HistoryResult::Granted { token } => (None, Some(token)),
            HistoryResult::HeldBy { owner } => (Some(owner), None),
            HistoryResult::Owner { owner, token } => (Some(owner), token),
            _ => (None, None),
        };
        // The mode only when not the default; `permits` alone would read back as shared.
        let mode = (!op.claim.is_default()).then_some(match op.claim.mode {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        });
        let holders = match op.result {
            HistoryResult::Shared { holders } => Some(holders),
            _ => None,
        };
        RawLine {
            client: names.name(op.client).into_owned(),
            op: op.op.name(),
            lock: op.lock,
            mode,
            permits: op.claim.permits,
            consistency: op.consistency.map(consistency_name),
            call: op.call_ns,
            return_ns: op.return_ns,
            result: op.result.name(),
            owner: owner.map(|owner| names.name(owner).into_owned()),
            token,
            holders,
            index: op.index,
        }
    }
}

impl From<HistoryOp> for RawLine {
    fn from(op: HistoryOp) -> RawLine {
        RawLine::new(op, ClientNames::simulator())
    }
}

/// The result named `name`, with exactly the fields that result carries.
fn parse_result(
    name: &str,
    owner: Option<u32>,
    token: Option<u64>,
) -> Result<HistoryResult, HistoryProblem> {
    let (result, takes_owner, takes_token): (&'static str, bool, bool) = match name {
        "granted" => ("granted", false, true),
        "held_by" => ("held_by", true, false),
        "released" => ("released", false, false),
        "not_owner" => ("not_owner", false, false),
        "free" => ("free", false, false),
        "owner" => ("owner", true, true),
        "unknown" => ("unknown", false, false),
        "expired" => ("expired", false, false),
        "timed_out" => ("timed_out", false, false),
        "cancelled" => ("cancelled", false, false),
        "not_waiting" => ("not_waiting", false, false),
        "permits_mismatch" => ("permits_mismatch", false, false),
        other => return Err(HistoryProblem::UnknownResult(other.into())),
    };
    if owner.is_some() && !takes_owner {
        return Err(HistoryProblem::UnexpectedField {
            result,
            field: "owner",
        });
    }
    if token.is_some() && !takes_token {
        return Err(HistoryProblem::UnexpectedField {
            result,
            field: "token",
        });
    }
    if owner.is_none() && takes_owner {
        return Err(HistoryProblem::MissingField {
            result,
            field: "owner",
        });
    }
    Ok(match (result, owner, token) {
        ("granted", _, Some(token)) => HistoryResult::Granted { token },
        ("granted", _, None) => {
            return Err(HistoryProblem::MissingField {
                result,
                field: "token",
            });
        }
        ("held_by", Some(owner), _) => HistoryResult::HeldBy { owner },
        ("owner", Some(owner), token) => HistoryResult::Owner { owner, token },
        ("released", ..) => HistoryResult::Released,
        ("not_owner", ..) => HistoryResult::NotOwner,
        ("free", ..) => HistoryResult::Free,
        ("expired", ..) => HistoryResult::Expired,
        ("timed_out", ..) => HistoryResult::TimedOut,
        ("cancelled", ..) => HistoryResult::Cancelled,
        ("not_waiting", ..) => HistoryResult::NotWaiting,
        // The declared permits are not in the history: the claim and the checkers have them.
        ("permits_mismatch", ..) => HistoryResult::PermitsMismatch { permits: None },
        _ => HistoryResult::Unknown,
    })
}

/// `c7` is 7. Rejects `c0`, leading zeros and anything else, so that names round-trip: every
/// other name is a foreign one ([`ClientNames`]).
fn parse_client(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('c')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn consistency_name(consistency: Consistency) -> &'static str {
    match consistency {
        Consistency::Local => "local",
        Consistency::Linearizable => "linearizable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the module's specification, one operation of each interesting shape.
    const EXAMPLE: &str = r#"{"client":"c1","op":"preempt","lock":"a","call":1000000,"return":4200000,"result":"granted","token":12}
{"client":"c2","op":"preempt","lock":"a","call":1500000,"return":5000000,"result":"held_by","owner":"c1"}
{"client":"c2","op":"check","lock":"a","consistency":"linearizable","call":6000000,"return":7100000,"result":"owner","owner":"c1","token":12}
{"client":"c3","op":"check","lock":"a","consistency":"local","call":6100000,"return":6300000,"result":"free"}
{"client":"c1","op":"release","lock":"a","call":8000000,"return":null,"result":"unknown"}
{"client":"c1","op":"expire","lock":"a","call":9100000,"return":9100000,"result":"expired"}
"#;

    #[test]
    fn an_expiry_is_never_unknown_and_only_an_expire_is_expired() {
        let unknown = problem_of(
            r#"{"client":"c1","op":"expire","lock":"a","call":1,"return":null,"result":"unknown"}"#,
        );
        assert!(
            matches!(unknown, HistoryProblem::ResultDoesNotFitOp { .. }),
            "{unknown}"
        );
        let misplaced = problem_of(
            r#"{"client":"c1","op":"release","lock":"a","call":1,"return":2,"result":"expired"}"#,
        );
        assert!(
            matches!(misplaced, HistoryProblem::ResultDoesNotFitOp { .. }),
            "{misplaced}"
        );
    }

    fn problem_of(line: &str) -> HistoryProblem {
        match read_jsonl(line) {
            Err(error) => {
                assert_eq!(error.line, 1, "{error}");
                error.problem
            }
            Ok(ops) => panic!("{line} was accepted as {ops:?}"),
        }
    }

    #[test]
    fn the_example_reads_and_writes_back_byte_for_byte() {
        let ops = read_jsonl(EXAMPLE).expect("the example reads");
        assert_eq!(ops.len(), 6);
        assert_eq!(ops[0].result, HistoryResult::Granted { token: 12 });
        assert_eq!(ops[5].op, HistoryOpKind::Expire);
        assert_eq!(
            ops[2].result,
            HistoryResult::Owner {
                owner: 1,
                token: Some(12)
            }
        );
        assert_eq!(ops[3].consistency, Some(Consistency::Local));
        assert_eq!(ops[4].return_ns, None);
        let mut written = Vec::new();
        write_jsonl(&ops, &mut written).expect("writes to memory");
        assert_eq!(String::from_utf8(written).expect("utf-8"), EXAMPLE);
    }

    #[test]
    fn shared_claims_and_answers_read_and_write_back_byte_for_byte() {
        let text = r#"{"client":"c2","op":"acquire","lock":"pool","mode":"shared","permits":2,"call":9,"return":10,"result":"granted","token":18}
{"client":"c3","op":"preempt","lock":"pool","mode":"shared","permits":3,"call":11,"return":12,"result":"permits_mismatch"}
{"client":"c5","op":"check","lock":"a","consistency":"linearizable","call":13,"return":14,"result":"shared","holders":2}
{"client":"c4","op":"preempt","lock":"pool","mode":"exclusive","permits":3,"call":15,"return":16,"result":"granted","token":24}
"#;
        let ops = read_jsonl(text).expect("reads");
        assert_eq!(ops[0].claim, Claim::semaphore(2));
        assert_eq!(ops[2].result, HistoryResult::Shared { holders: 2 });
        assert_eq!(ops[3].claim.mode, Mode::Exclusive);
        let mut written = Vec::new();
        write_jsonl(&ops, &mut written).expect("writes to memory");
        assert_eq!(String::from_utf8(written).expect("utf-8"), text);
        let permits_alone = r#"{"client":"c1","op":"preempt","lock":"p","permits":4,"call":1,"return":2,"result":"granted","token":3}"#;
        let ops = read_jsonl(permits_alone).expect("reads");
        assert_eq!(
            ops[0].claim,
            Claim::semaphore(4),
            "permits alone read as shared"
        );
        for bad in [
            r#"{"client":"c1","op":"release","lock":"p","mode":"shared","call":1,"return":2,"result":"released"}"#,
            r#"{"client":"c1","op":"preempt","lock":"p","permits":0,"call":1,"return":2,"result":"granted","token":3}"#,
            r#"{"client":"c1","op":"check","lock":"p","consistency":"local","call":1,"return":2,"result":"shared"}"#,
        ] {
            assert!(read_jsonl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_owner_answer_without_a_token_is_read() {
        let line = r#"{"client":"c2","op":"check","lock":"a","consistency":"local","call":1,"return":2,"result":"owner","owner":"c1"}"#;
        let ops = read_jsonl(line).expect("reads");
        assert_eq!(
            ops[0].result,
            HistoryResult::Owner {
                owner: 1,
                token: None
            }
        );
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        let text = format!("{EXAMPLE}\n{{\"client\":\"c1\"");
        let error = read_jsonl(&text).expect_err("a truncated line");
        assert_eq!(error.line, 8, "the blank line 7 is skipped but counted");
        assert!(
            matches!(error.problem, HistoryProblem::BadJson(_)),
            "{error}"
        );
        assert!(error.to_string().starts_with("line 8: not JSON"), "{error}");
    }

    /// A line by c1 on lock `a` with the given op, result, times and extra fields.
    fn line(op: &str, result: &str, times: &str, extra: &str) -> String {
        format!(r#"{{"client":"c1","op":"{op}","lock":"a",{times},"result":"{result}"{extra}}}"#)
    }

    #[test]
    fn every_kind_of_bad_line_is_refused_with_its_reason() {
        use HistoryProblem::*;
        let done = r#""call":5,"return":9"#;
        let cases = [
            (line("grab", "released", done, ""), UnknownOp("grab".into())),
            (line("release", "ok", done, ""), UnknownResult("ok".into())),
            (
                line("release", "free", done, ""),
                ResultDoesNotFitOp {
                    op: "release",
                    result: "free".into(),
                },
            ),
            (
                line("preempt", "granted", done, ""),
                MissingField {
                    result: "granted",
                    field: "token",
                },
            ),
            (
                line("preempt", "held_by", done, ""),
                MissingField {
                    result: "held_by",
                    field: "owner",
                },
            ),
            (line("check", "free", done, ""), MissingConsistency),
            (
                line("release", "released", done, r#","consistency":"local""#),
                ConsistencyOnNonCheck("release"),
            ),
            (
                line("release", "released", r#""call":9,"return":5"#, ""),
                ReturnBeforeCall {
                    call_ns: 9,
                    return_ns: 5,
                },
            ),
            (line("release", "unknown", done, ""), UnknownWithReturn(9)),
            (
                line("release", "released", r#""call":5,"return":null"#, ""),
                KnownWithoutReturn("released"),
            ),
            (
                line("release", "released", done, r#","token":3"#),
                UnexpectedField {
                    result: "released",
                    field: "token",
                },
            ),
            (
                line("preempt", "held_by", done, r#","owner":"""#),
                EmptyOwner,
            ),
            (
                line("release", "released", r#""call":"5","return":9"#, ""),
                WrongType {
                    field: "call",
                    expected: "a whole number of nanoseconds, 0 or more",
                },
            ),
            (
                line("release", "released", r#""call":-5,"return":9"#, ""),
                WrongType {
                    field: "call",
                    expected: "a whole number of nanoseconds, 0 or more",
                },
            ),
            (
                line("release", "released", r#""return":9"#, ""),
                Missing("call"),
            ),
            (
                line("release", "released", r#""call":5"#, ""),
                Missing("return"),
            ),
            (
                line("release", "released", done, "").replace(r#""c1""#, r#""""#),
                EmptyClient,
            ),
            (
                line("release", "released", done, "").replace(r#""c1""#, "7"),
                WrongType {
                    field: "client",
                    expected: "a string",
                },
            ),
            ("[1, 2]".to_string(), NotAnObject),
        ];
        for (text, expected) in cases {
            assert_eq!(problem_of(&text), expected, "{text}");
        }
    }

    #[test]
    fn every_problem_after_the_json_names_its_field() {
        let problem = HistoryProblem::Missing("call");
        assert_eq!(problem.to_string(), "field `call`: missing");
        let problem = HistoryProblem::UnknownOp("grab".into());
        assert!(problem.to_string().starts_with("field `op`: "), "{problem}");
        let problem = HistoryProblem::ReturnBeforeCall {
            call_ns: 9,
            return_ns: 5,
        };
        assert!(
            problem.to_string().starts_with("field `return`: "),
            "{problem}"
        );
    }

    #[test]
    fn foreign_client_names_get_numbers_no_simulator_name_uses() {
        let text = r#"{"client":"alice","op":"preempt","lock":"a","call":1,"return":2,"result":"granted","token":1}
{"client":"c1","op":"preempt","lock":"a","call":3,"return":4,"result":"held_by","owner":"alice"}
{"client":"node-7","op":"check","lock":"a","consistency":"local","call":5,"return":6,"result":"owner","owner":"alice","token":1}
{"client":"c01","op":"release","lock":"a","call":7,"return":null,"result":"unknown"}
"#;
        let history = read_history(text).expect("foreign names are accepted");
        let numbers: Vec<u32> = history.ops.iter().map(|op| op.client).collect();
        assert_eq!(
            numbers,
            vec![2, 1, 3, 4],
            "c1 keeps 1; the others take 2, 3, 4"
        );
        assert_eq!(history.ops[1].result, HistoryResult::HeldBy { owner: 2 });
        assert_eq!(history.clients.name(2), "alice");
        assert_eq!(history.clients.name(3), "node-7");
        assert_eq!(history.clients.name(4), "c01");
        assert_eq!(history.clients.name(1), "c1");
        assert_eq!(history.clients.foreign_count(), 3);
        let shown = history.ops[2].named(&history.clients).to_string();
        assert!(
            shown.ends_with("node-7 check a (local): owner alice (token 1)"),
            "{shown}"
        );
        let line = history.ops[1].to_json(&history.clients);
        assert_eq!(line["owner"], "alice");
        assert_eq!(line["client"], "c1");
    }

    #[test]
    fn unknown_fields_are_listed_with_their_first_line_not_refused() {
        let text = [
            line(
                "release",
                "released",
                r#""call":1,"return":2"#,
                r#","node":"s1""#,
            ),
            line(
                "release",
                "released",
                r#""call":3,"return":4"#,
                r#","node":"s2","why":1"#,
            ),
            line("release", "released", r#""call":5,"return":6"#, ""),
        ]
        .join("\n");
        let history = read_history(&text).expect("unknown fields are ignored");
        assert_eq!(history.ops.len(), 3);
        let unknown: Vec<(&str, usize)> = history
            .unknown_fields
            .iter()
            .map(|(field, &line)| (field.as_str(), line))
            .collect();
        assert_eq!(unknown, vec![("node", 1), ("why", 2)]);
    }

    #[test]
    fn client_names_round_trip_or_are_refused() {
        assert_eq!(parse_client("c1"), Some(1));
        assert_eq!(parse_client("c4294967295"), Some(u32::MAX));
        for bad in ["c0", "c01", "c", "1", "c-1", "c1x", "c4294967296", "C1"] {
            assert_eq!(parse_client(bad), None, "{bad}");
        }
    }

    #[test]
    fn writing_refuses_an_operation_that_could_not_be_read_back() {
        let op = HistoryOp {
            client: 1,
            op: HistoryOpKind::Release,
            lock: "a".into(),
            consistency: None,
            call_ns: 1,
            return_ns: Some(2),
            result: HistoryResult::Free,
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        let mut written = Vec::new();
        let error = write_jsonl(&[op], &mut written).expect_err("free does not answer a release");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            written.is_empty(),
            "nothing of a refused operation is written"
        );
    }

    #[test]
    fn operations_display_with_milliseconds() {
        let ops = read_jsonl(EXAMPLE).expect("reads");
        let shown = ops[2].to_string();
        assert!(shown.contains("6.000ms .. 7.100ms"), "{shown}");
        assert!(
            shown.ends_with("c2 check a (linearizable): owner c1 (token 12)"),
            "{shown}"
        );
        assert!(ops[4].to_string().contains("never"), "{}", ops[4]);
    }
}
