//! Scenario files: what a simulation run does, loaded from YAML or JSON and validated.
//!
//! Loading has two stages. Serde reads the file into raw structs that reject unknown keys
//! (syntax errors carry file:line:column). Validation then turns raw values into the typed
//! [`Scenario`], collecting every semantic problem at once, each named by its place
//! (`events[3].client`).
//!
//! Loading must never panic on any input: whatever a file holds becomes a [`ScenarioError`].
//! A panic here means a bug in this module, never a bad file.

use super::disk::DiskFaults;
use super::rogue::{AttackKind, ROGUE_RATE_MAX, ROGUES_MAX, RogueSpec};
use crate::net::{Endpoint, LatencyTail, NetworkParams};
use crate::node::{Claim, Consistency, LockName, Mode, PERMITS_MAX, ServerId};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A validated scenario. Every name in it refers to a server or client that exists, every
/// time lies within the run, every probability within [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// When faults and the random workload stop and the run starts to settle.
    pub duration: Duration,
    /// How long pending operations may take to finish, and replicas to converge, after
    /// `duration` (default 10 s).
    pub settle: Duration,
    pub cluster: ClusterSpec,
    pub network: NetworkParams,
    /// How the servers' disks misbehave: torn writes and corrupt records (none by default).
    pub disk: DiskFaults,
    /// `buggify: P`: each server takes rare but legal paths with probability P at each of its
    /// decision points (`node::server::Buggify`); `None` (the default) never.
    pub buggify: Option<f64>,
    /// `clock: {drift: D}`: every server and client reads its own clock, running at a rate
    /// drawn within 1 ± D from an offset drawn within the first hour. `None` (the default):
    /// every node reads true time.
    pub clock_drift: Option<f64>,
    /// `sessions: {ttl, lock_delay}`: every client registers with a session of this TTL and
    /// keeps it alive; `None` (the default): sessions never expire, as before sessions.
    pub sessions: Option<SessionsSpec>,
    pub timing: Timing,
    /// Sorted by `at` (stable: file order among equal times).
    pub events: Vec<ScheduledEvent>,
    pub workload: Option<WorkloadSpec>,
    /// Rogue clients `r1..rN` attacking from the start until `duration`.
    pub rogues: Option<RogueSpec>,
    /// Lock -> expected final state on every live replica.
    pub expect_final: BTreeMap<LockName, FinalState>,
    /// `expect_violations: [lease_safety]`: the checkers this scenario shows failing. The run
    /// passes only if exactly these fail; it goes on past their violations, so that every
    /// other checker is still judged. Empty: every checker must hold.
    pub expect_violations: BTreeSet<&'static str>,
}

/// `sessions: {ttl: 3s, lock_delay: 0s}`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionsSpec {
    /// Every client's session TTL.
    pub ttl: Duration,
    /// How long a lock freed by an expiry is granted to nobody (every server's `lock_delay`).
    pub lock_delay: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSpec {
    pub servers: u32,
    pub clients: u32,
    /// Starts this server as the term-1 leader.
    pub leader: Option<ServerId>,
    /// Client number (1-based) -> the server it talks to first. Complete: every client has one.
    pub connect: BTreeMap<u32, ServerId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    /// Default per-operation timeout of clients (5 s).
    pub client_timeout: Duration,
    /// Silence after which a client resends to the next server.
    pub client_retry: Duration,
    /// Log entries one AppendEntries message carries at most (1 to 1024, default 64). Small
    /// batches make replication lag in steps, which exposes commit-rule bugs.
    pub append_batch: usize,
    /// Applied log entries a server keeps before it snapshots its lock table and compacts them
    /// away (1 to 1,000,000; default: never). Small values make lagging followers catch up by
    /// snapshot (Raft §7).
    pub snapshot_entries: Option<u64>,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            client_timeout: Duration::from_secs(5),
            client_retry: Duration::from_millis(500),
            append_batch: 64,
            snapshot_entries: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledEvent {
    pub at: Duration,
    pub action: Action,
    /// Position in the file's `events` list, for messages.
    pub index: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    ClientOp {
        /// 1-based client number.
        client: u32,
        op: OpKind,
        lock: LockName,
        consistency: Consistency,
        timeout: Option<Duration>,
        expect: Option<Expect>,
        /// `mode: shared` and `permits: N` of a preempt or acquire; exclusive and none for
        /// every other operation (docs/design.md, "Shared locks and semaphores").
        claim: Claim,
    },
    /// The client renews its session now (`{client: c1, op: keepalive}`), besides the renewals
    /// it sends on its own. Nothing to expect: its lease, not an answer, is what it changes.
    Keepalive {
        client: u32,
    },
    /// `{client: c3, op: watch, lock: a}` (or `prefix: w`; optionally `from: 12`): the client
    /// watches through a connection of its own, resuming on another server when it breaks or
    /// goes silent (`sim::watch`). What it hears goes into the history.
    Watch {
        client: u32,
        target: crate::node::watch::WatchTarget,
        from: Option<u64>,
    },
    /// `{client: c1, op: write, lock: a}`: the application writes to the fenced resource under
    /// `lock`, with the token of its client's grant, if the client believes at this moment
    /// that it holds the lock (acknowledged grant, not released, session believed alive by its
    /// own clock). A paused client's write leaves when it wakes, unchecked: the application
    /// had decided to write before it froze.
    Write {
        client: u32,
        lock: LockName,
        expect: Option<WriteExpect>,
    },
    Crash(CrashTarget),
    /// Crash `server` inside its first step, at or after the event's time, that has more than
    /// `after_effects` effects: exactly the first `after_effects` are carried out. With
    /// `restart_after`, the server restarts that long after the crash. A restart or crash of
    /// the server before such a step comes cancels it.
    CrashInStep {
        server: ServerId,
        after_effects: u32,
        restart_after: Option<Duration>,
    },
    /// Damage the record of `server`'s log that holds log entry `entry` now; it shows when
    /// the server next starts.
    Corrupt {
        server: ServerId,
        entry: u64,
    },
    Restart(RestartTarget),
    Partition(Vec<Vec<Endpoint>>),
    Isolate(IsolateTarget),
    Cut {
        from: Endpoint,
        to: Vec<Endpoint>,
    },
    Heal,
    /// New network parameters from this moment on (unspecified fields keep their value).
    Network(NetworkChange),
    /// Freeze a server or client for `length`, as a GC pause or SIGSTOP does: no steps, no
    /// timers; what arrives for it waits. It resumes with its clock moved on.
    Pause {
        node: Endpoint,
        length: Duration,
    },
    /// From now on `node`'s clock runs at `rate_ppb` parts per billion of true time.
    ClockRate {
        node: Endpoint,
        rate_ppb: u64,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Preempt,
    Release,
    Check,
    /// The blocking acquire, waiting at most `wait_ms` in the lock's queue.
    Acquire {
        wait_ms: u64,
    },
    /// Stops the client's wait for the lock.
    Cancel,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CrashTarget {
    Server(ServerId),
    Leader,
    All,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RestartTarget {
    Server(ServerId),
    All,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IsolateTarget {
    Node(Endpoint),
    Leader,
}

/// A partial update of [`NetworkParams`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NetworkChange {
    pub latency_min: Option<Duration>,
    pub latency_max: Option<Duration>,
    pub drop: Option<f64>,
    pub duplicate: Option<f64>,
}

impl NetworkChange {
    pub fn apply_to(&self, params: &NetworkParams) -> NetworkParams {
        NetworkParams {
            latency_min: self.latency_min.unwrap_or(params.latency_min),
            latency_max: self.latency_max.unwrap_or(params.latency_max),
            tail: params.tail,
            drop: self.drop.unwrap_or(params.drop),
            duplicate: self.duplicate.unwrap_or(params.duplicate),
        }
    }
}

/// What a scripted operation is expected to return. Client numbers are 1-based.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Granted,
    HeldBy(u32),
    Released,
    NotOwner,
    Free,
    Owner(u32),
    /// No answer before the operation's timeout.
    Unknown,
    /// Any answer at all before the timeout: a liveness probe.
    Answered,
    /// Refused because the client's session ended (`session_expired`).
    SessionExpired,
    /// An acquire whose wait ran out (`timed_out`; `timeout` is the client's own limit).
    TimedOut,
    /// An acquire stopped by a cancel, and the cancel that stopped it.
    Cancelled,
    /// A cancel that found no wait to stop.
    NotWaiting,
    /// A preempt or acquire naming permits other than those the lock in use declared.
    PermitsMismatch,
    /// A check of a lock held in shared mode.
    Shared,
}

/// What a scripted write is expected to come to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WriteExpect {
    /// The resource accepted it.
    Accepted,
    /// The resource rejected it: a higher token had been accepted for the lock.
    Rejected,
    /// The client did not believe it held the lock, so nothing was written.
    NotWritten,
}

impl WriteExpect {
    pub fn name(self) -> &'static str {
        match self {
            WriteExpect::Accepted => "accepted",
            WriteExpect::Rejected => "rejected",
            WriteExpect::NotWritten => "not_written",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FinalState {
    Free,
    HeldBy(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// 1-based client numbers.
    pub clients: Vec<u32>,
    /// Total operations, shared among the clients.
    pub ops: u32,
    /// Locks w1..wK.
    pub locks: u32,
    pub mix: Mix,
    pub think_min: Duration,
    pub think_max: Duration,
}

/// Relative weights of the operation kinds (normalised at use).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Mix {
    pub preempt: f64,
    pub release: f64,
    pub check: f64,
    /// Fraction of checks that ask for linearizable consistency.
    pub linearizable: f64,
    /// Weight of blocking acquires (0, the default, draws none: the draws of older scenarios
    /// stay what they were).
    pub acquire: f64,
    /// Each acquire waits a uniform draw from 0 to this.
    pub acquire_wait_ms: u64,
    /// Fraction of preempts and acquires that claim shared mode (0, the default, draws
    /// nothing: the draws of older scenarios stay what they were).
    pub shared: f64,
    /// The permits every shared claim names (a semaphore of that many); `None`: readers of
    /// a readers-writer lock.
    pub permits: Option<u32>,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {}", list_problems(problems))]
    Invalid { path: String, problems: Vec<String> },
}

/// "2 problem(s):" and one indented line per problem, for [`ScenarioError::Invalid`].
fn list_problems(problems: &[String]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect();
    format!("{} problem(s):\n{}", problems.len(), lines.join("\n"))
}

// Bounds. Every one is ours, not the protocol's, and every one is named in the error that
// reports it, so a file author knows what to change.

/// Most servers a cluster may have.
pub const SERVERS_MAX: u32 = 15;
/// Most clients a cluster may have.
pub const CLIENTS_MAX: u32 = 1_000;
/// Most scripted events in one scenario.
pub const EVENTS_MAX: usize = 100_000;
/// Longest `duration`, and longest any duration in a scenario may be.
pub const DURATION_MAX: Duration = Duration::from_secs(60 * 60);
/// Largest `timing.append_batch`.
pub const APPEND_BATCH_MAX: usize = 1_024;
/// Largest `timing.snapshot_entries`.
pub const SNAPSHOT_ENTRIES_MAX: u64 = 1_000_000;
/// Longest `settle`.
pub const SETTLE_MAX: Duration = Duration::from_secs(10 * 60);
/// Default `settle`.
pub const SETTLE_DEFAULT: Duration = Duration::from_secs(10);
/// Longest lock name, in bytes: the node's own limit, which the wire protocol shares.
pub use crate::node::LOCK_NAME_BYTES_MAX;
/// Most operations a random workload may issue.
pub const WORKLOAD_OPS_MAX: u32 = 1_000_000;
/// Most locks (`w1..wK`) a random workload may use.
pub const WORKLOAD_LOCKS_MAX: u32 = 10_000;
/// Largest `after_effects` of a crash inside a step.
pub const AFTER_EFFECTS_MAX: u32 = 100_000;
/// Largest `clock.drift`: clocks between half and one and a half times true speed.
pub const CLOCK_DRIFT_MAX: f64 = 0.5;
/// Largest scenario file read, so that a wrong path cannot make us read a disk image.
pub const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most problems listed in one [`ScenarioError::Invalid`]; the rest are counted.
const PROBLEMS_LISTED_MAX: usize = 200;

const DURATION_HINT: &str = "(use a number with ms, s or m, e.g. 250ms)";

/// The two scenario file formats. Both go through the same raw structs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// The format a file's extension names (`.yaml`, `.yml`, `.json`, any case), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

impl Scenario {
    /// The same scenario under another seed (for `--seed`). Nothing else depends on the seed,
    /// so the scenario stays valid.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        self
    }
}

/// Reads and validates one scenario file; the extension picks the format.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
    let shown = path.display().to_string();
    let Some(format) = Format::from_path(path) else {
        let problem = match path.extension() {
            Some(extension) => format!(
                "extension: \".{}\" is not a scenario format (use .yaml, .yml or .json)",
                extension.to_string_lossy()
            ),
            None => "extension: missing (use .yaml, .yml or .json)".to_owned(),
        };
        return Err(ScenarioError::Invalid {
            path: shown,
            problems: vec![problem],
        });
    };
    let text = read_bounded(path, &shown)?;
    parse_str(&text, format, &shown)
}

/// Parses and validates scenario text. `path` only names the source in errors.
pub fn parse_str(text: &str, format: Format, path: &str) -> Result<Scenario, ScenarioError> {
    if text.len() as u64 > FILE_BYTES_MAX {
        let problem = format!("file: larger than the limit of {FILE_BYTES_MAX} bytes");
        return Err(ScenarioError::Invalid {
            path: path.to_owned(),
            problems: vec![problem],
        });
    }
    let raw = match format {
        Format::Yaml => parse_yaml(text, path)?,
        Format::Json => parse_json(text, path)?,
    };
    validate(&raw, path)
}

/// The scenario files at `path`: a file is itself (whatever its extension, so that
/// [`load_file`] can say what is wrong with it); a directory gives its `*.yaml`, `*.yml` and
/// `*.json` files, not recursively, sorted by name.
pub fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let io_error = |source: std::io::Error| ScenarioError::Io {
        path: path.display().to_string(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_error)? {
        let file = entry.map_err(io_error)?.path();
        if Format::from_path(&file).is_some() && file.is_file() {
            files.push(file);
        }
    }
    // All entries share the directory, so path order is file-name order.
    files.sort();
    assert!(
        files.windows(2).all(|pair| pair[0] < pair[1]),
        "scenario files listed twice"
    );
    Ok(files)
}

fn read_bounded(path: &Path, shown: &str) -> Result<String, ScenarioError> {
    let io_error = |source: std::io::Error| ScenarioError::Io {
        path: shown.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "at the limit" from "above it".
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        let problem = format!("file: larger than the limit of {FILE_BYTES_MAX} bytes");
        return Err(ScenarioError::Invalid {
            path: shown.to_owned(),
            problems: vec![problem],
        });
    }
    String::from_utf8(bytes)
        .map_err(|error| io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))
}

fn parse_yaml(text: &str, path: &str) -> Result<RawScenario, ScenarioError> {
    // The parser's default budget (250,000 nodes) would refuse files far below EVENTS_MAX
    // events. The file size already bounds the work: a node takes at least two bytes ("a,"),
    // and a parser event is the start or end of a node.
    let node_count_max = usize::try_from(FILE_BYTES_MAX / 2).unwrap_or(usize::MAX);
    let budget = serde_saphyr::budget! {
        max_nodes: node_count_max,
        max_events: node_count_max.saturating_mul(2),
    };
    let options = serde_saphyr::options! { budget: budget };
    serde_saphyr::from_str_with_options::<RawScenario>(text, options).map_err(|error| {
        // Line and column are 0 when the parser could not place the error.
        let (line, column) = error
            .location()
            .map_or((0, 0), |location| (location.line(), location.column()));
        let rendered = error.without_snippet().to_string();
        let suffix = format!(" at line {line}, column {column}");
        let prefix = format!("error: line {line} column {column}: ");
        let message = strip_position(&rendered, &prefix, &suffix);
        ScenarioError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

fn parse_json(text: &str, path: &str) -> Result<RawScenario, ScenarioError> {
    serde_json::from_str::<RawScenario>(text).map_err(|error| {
        let (line, column) = (error.line() as u64, error.column() as u64);
        let rendered = error.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = strip_position(&rendered, "", &suffix);
        ScenarioError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// The parser's message without the position it adds before or after it, since `Syntax`
/// shows the position itself.
fn strip_position(rendered: &str, prefix: &str, suffix: &str) -> String {
    let message = rendered.strip_suffix(suffix).unwrap_or(rendered);
    let message = message.strip_prefix(prefix).unwrap_or(message);
    message.trim().to_owned()
}

/// Parses a duration: a non-negative integer or decimal number followed by `ms`, `s` or `m`
/// (`250ms`, `1.5s`, `2m`). Exact to the nanosecond (finer digits are dropped); `None` for
/// anything else, including values beyond `u64` nanoseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    const MILLISECOND_NANOS: u128 = 1_000_000;
    const SECOND_NANOS: u128 = 1_000_000_000;
    // Enough digits for any duration up to u64 nanoseconds in any unit, and small enough that
    // the arithmetic below cannot overflow u128 before checked_mul catches it.
    const DIGITS_MAX: usize = 30;
    let (number, unit_nanos) = if let Some(number) = text.strip_suffix("ms") {
        (number, MILLISECOND_NANOS)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, SECOND_NANOS)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60 * SECOND_NANOS)
    } else {
        return None;
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    if whole.len() + fraction.len() > DIGITS_MAX {
        return None;
    }
    let whole_value: u128 = whole.parse().ok()?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let fraction_scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let whole_nanos = whole_value.checked_mul(unit_nanos)?;
    let fraction_nanos = fraction_value.checked_mul(unit_nanos)? / fraction_scale;
    let nanos = u64::try_from(whole_nanos.checked_add(fraction_nanos)?).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Shows a duration in the units a scenario file uses (`2m`, `25s`, `250ms`), falling back to
/// `Duration`'s own form (`1.5ms`) for anything finer.
fn show(duration: Duration) -> String {
    const MILLISECOND_NANOS: u128 = 1_000_000;
    const SECOND_NANOS: u128 = 1_000_000_000;
    let nanos = duration.as_nanos();
    if nanos > 0 && nanos.is_multiple_of(60 * SECOND_NANOS) {
        format!("{}m", nanos / (60 * SECOND_NANOS))
    } else if nanos.is_multiple_of(SECOND_NANOS) {
        format!("{}s", nanos / SECOND_NANOS)
    } else if nanos.is_multiple_of(MILLISECOND_NANOS) {
        format!("{}ms", nanos / MILLISECOND_NANOS)
    } else {
        format!("{duration:?}")
    }
}

// Raw structs: the file as written. Every field is optional so that a missing key becomes a
// collected semantic problem ("name: missing") rather than a lone syntax error; unknown keys
// are syntax errors with a position, because a misspelt key silently ignored would run a
// different scenario from the one the author meant.

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    duration: Option<RawDuration>,
    settle: Option<RawDuration>,
    cluster: Option<RawCluster>,
    network: Option<RawNetwork>,
    disk: Option<RawDisk>,
    buggify: Option<f64>,
    clock: Option<RawClock>,
    sessions: Option<RawSessions>,
    timing: Option<RawTiming>,
    events: Option<Vec<RawEvent>>,
    workload: Option<RawWorkload>,
    rogues: Option<RawRogues>,
    expect_final: Option<BTreeMap<String, String>>,
    expect_violations: Option<Vec<String>>,
}

/// `rogues: {clients: 2, rate: 20/s, mix: {forged_id: 2, huge_seq: 1}}`. The mix's keys are
/// attack kinds, checked by validation so that an unknown one is named with the known ones.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRogues {
    clients: Option<i64>,
    rate: Option<String>,
    mix: Option<BTreeMap<String, f64>>,
    until: Option<RawDuration>,
}

/// Counts are signed and wide so that `servers: -1` or `servers: 99` reaches validation and
/// gets a message with the bounds, instead of a bare "invalid u32".
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    servers: Option<i64>,
    clients: Option<i64>,
    leader: Option<String>,
    connect: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    latency: Option<RawLatency>,
    drop: Option<f64>,
    duplicate: Option<f64>,
}

/// `sessions: {ttl: 3s, lock_delay: 0s}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    ttl: Option<RawDuration>,
    lock_delay: Option<RawDuration>,
}

/// `clock: {drift: 0.01}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawClock {
    drift: Option<f64>,
}

/// The event `clock: {node: s2, rate: 1.03}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawClockChange {
    node: Option<String>,
    rate: Option<f64>,
}

/// The event `pause: {node: c1, for: 4s}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPause {
    node: Option<String>,
    r#for: Option<RawDuration>,
}

/// `disk: {torn_write: 0.01, corrupt: 0.001}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    torn_write: Option<f64>,
    corrupt: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    min: Option<RawDuration>,
    max: Option<RawDuration>,
    tail: Option<RawTail>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTail {
    probability: Option<f64>,
    max: Option<RawDuration>,
}

/// `{min, max}` of durations: election timeout, think time, a latency change.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: Option<RawDuration>,
    max: Option<RawDuration>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    election_timeout: Option<RawRange>,
    heartbeat: Option<RawDuration>,
    client_timeout: Option<RawDuration>,
    client_retry: Option<RawDuration>,
    append_batch: Option<u64>,
    snapshot_entries: Option<u64>,
}

/// One event with every action's keys, so that "two actions" and "no action" are problems
/// this module words, not serde's "data did not match any variant".
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Option<RawDuration>,
    client: Option<String>,
    op: Option<String>,
    lock: Option<String>,
    consistency: Option<String>,
    timeout: Option<RawDuration>,
    /// An acquire's wait (`wait: 2s`; 0s tries once, like a preempt).
    wait: Option<RawDuration>,
    /// A preempt's or acquire's mode: `shared` or `exclusive`.
    mode: Option<String>,
    /// A preempt's or acquire's semaphore permits; signed and wide, so that `permits: -1`
    /// reaches validation and gets its bounds.
    permits: Option<i64>,
    /// A watch's prefix, instead of a lock (`prefix: w`).
    prefix: Option<String>,
    /// A watch's first index (`from: 12`). Signed, so that -1 reaches validation.
    from: Option<i64>,
    expect: Option<RawExpect>,
    crash: Option<RawCrash>,
    corrupt: Option<RawCorrupt>,
    restart: Option<String>,
    partition: Option<Vec<Vec<String>>>,
    isolate: Option<String>,
    cut: Option<RawCut>,
    heal: Option<String>,
    network: Option<RawNetworkChange>,
    pause: Option<RawPause>,
    clock: Option<RawClockChange>,
}

/// `crash: s2` (or `leader`, `all`), or `crash: {node: s2, after_effects: 2}` inside a step.
/// Deserialized by hand, like [`RawExpect`], so that an unknown key inside the map keeps
/// serde's message and position.
#[derive(Debug)]
enum RawCrash {
    Name(String),
    InStep(RawCrashInStep),
}

/// Signed and wide, so that `after_effects: -1` reaches validation and gets its bounds.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCrashInStep {
    node: Option<String>,
    after_effects: Option<i64>,
    restart_after: Option<RawDuration>,
}

impl<'de> Deserialize<'de> for RawCrash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawCrash, D::Error> {
        struct CrashVisitor;
        impl<'de> Visitor<'de> for CrashVisitor {
            type Value = RawCrash;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a server, leader, all or {node: sN, after_effects: K}")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawCrash, E> {
                Ok(RawCrash::Name(value.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCrash, A::Error> {
                let deserializer = de::value::MapAccessDeserializer::new(map);
                RawCrashInStep::deserialize(deserializer).map(RawCrash::InStep)
            }
        }
        deserializer.deserialize_any(CrashVisitor)
    }
}

/// `corrupt: {node: s2, entry: 120}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCorrupt {
    node: Option<String>,
    entry: Option<i64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCut {
    from: Option<String>,
    to: Option<Vec<String>>,
}

/// No `tail`: [`NetworkChange`] cannot change it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawNetworkChange {
    latency: Option<RawRange>,
    drop: Option<f64>,
    duplicate: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    clients: Option<Vec<String>>,
    ops: Option<i64>,
    locks: Option<i64>,
    mix: Option<RawMix>,
    think: Option<RawRange>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawMix {
    preempt: Option<f64>,
    release: Option<f64>,
    check: Option<f64>,
    linearizable: Option<f64>,
    acquire: Option<f64>,
    acquire_wait: Option<RawDuration>,
    shared: Option<f64>,
    permits: Option<i64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawExpectClient {
    held_by: Option<String>,
    owner: Option<String>,
}

/// `granted` or `{held_by: c1}`. Deserialized by hand rather than `untagged` so that an
/// unknown key inside the map keeps serde's precise message and position.
#[derive(Debug)]
enum RawExpect {
    Word(String),
    Client(RawExpectClient),
}

impl<'de> Deserialize<'de> for RawExpect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawExpect, D::Error> {
        struct ExpectVisitor;
        impl<'de> Visitor<'de> for ExpectVisitor {
            type Value = RawExpect;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an expectation such as granted or {held_by: c1}")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawExpect, E> {
                Ok(RawExpect::Word(value.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawExpect, A::Error> {
                let deserializer = de::value::MapAccessDeserializer::new(map);
                RawExpectClient::deserialize(deserializer).map(RawExpect::Client)
            }
        }
        deserializer.deserialize_any(ExpectVisitor)
    }
}

/// A duration as written. Numbers are kept (as text, for the message) so that validation can
/// say a unit is missing; other types are syntax errors.
#[derive(Debug)]
enum RawDuration {
    Text(String),
    Number(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawDuration, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a duration such as 250ms, 1.5s or 2m")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(value.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(value.to_string()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

// Names. A name is resolved against the cluster's size; when the size itself is invalid the
// count is unknown and only the name's form is checked, so one bad `cluster.servers` does not
// drown the report in "s3 is not in this cluster".

#[derive(Copy, Clone, Debug)]
struct Roster {
    servers: Option<u32>,
    clients: Option<u32>,
    /// Rogues `r1..rN`; 0 without a `rogues` section.
    rogues: Option<u32>,
}

/// Which kinds of name a place accepts.
#[derive(Copy, Clone, Debug)]
struct Accept {
    servers: bool,
    clients: bool,
    rogues: bool,
    leader: bool,
    all: bool,
    free: bool,
}

const NOTHING: Accept = Accept {
    servers: false,
    clients: false,
    rogues: false,
    leader: false,
    all: false,
    free: false,
};
const SERVER: Accept = Accept {
    servers: true,
    ..NOTHING
};
const CLIENT: Accept = Accept {
    clients: true,
    ..NOTHING
};
const ENDPOINT: Accept = Accept {
    servers: true,
    clients: true,
    rogues: true,
    ..NOTHING
};
const CRASH_TARGET: Accept = Accept {
    servers: true,
    leader: true,
    all: true,
    ..NOTHING
};
const RESTART_TARGET: Accept = Accept {
    servers: true,
    all: true,
    ..NOTHING
};
const ISOLATE_TARGET: Accept = Accept {
    servers: true,
    clients: true,
    rogues: true,
    leader: true,
    ..NOTHING
};
/// What a pause or a clock change may name: a server or a client.
const NODE: Accept = Accept {
    servers: true,
    clients: true,
    ..NOTHING
};
const FINAL_STATE: Accept = Accept {
    clients: true,
    free: true,
    ..NOTHING
};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Name {
    Node(Endpoint),
    Leader,
    All,
    Free,
}

impl Roster {
    fn resolve(&self, text: &str, accept: Accept) -> Result<Name, String> {
        let keyword = match text {
            "leader" if accept.leader => Some(Name::Leader),
            "all" if accept.all => Some(Name::All),
            "free" if accept.free => Some(Name::Free),
            _ => None,
        };
        if let Some(name) = keyword {
            return Ok(name);
        }
        let server = numbered(text, 's').filter(|_| accept.servers);
        let client = numbered(text, 'c').filter(|_| accept.clients);
        let rogue = numbered(text, 'r').filter(|_| accept.rogues);
        let (node, count) = match (server, client, rogue) {
            (Some(number), _, _) => (Endpoint::Server(ServerId(number)), self.servers),
            (None, Some(number), _) => (Endpoint::Client(number), self.clients),
            (None, None, Some(number)) => (Endpoint::Rogue(number), self.rogues),
            (None, None, None) => {
                let expected = self.expected(accept);
                return Err(format!(
                    "{text:?} is not a valid name here (expected {expected})"
                ));
            }
        };
        let number = match node {
            Endpoint::Server(ServerId(number))
            | Endpoint::Client(number)
            | Endpoint::Rogue(number) => number,
        };
        if count.is_some_and(|count| number > count) {
            let expected = self.expected(accept);
            return Err(format!(
                "{text:?} is not in this cluster (expected {expected})"
            ));
        }
        Ok(Name::Node(node))
    }

    /// The accepted names in words: "s1..s5, leader or all".
    fn expected(&self, accept: Accept) -> String {
        let mut choices = Vec::new();
        let mut range = |prefix: char, count: Option<u32>| match count {
            None => choices.push(format!("{prefix}1..{prefix}N")),
            Some(0) => {}
            Some(1) => choices.push(format!("{prefix}1")),
            Some(count) => choices.push(format!("{prefix}1..{prefix}{count}")),
        };
        if accept.servers {
            range('s', self.servers);
        }
        if accept.clients {
            range('c', self.clients);
        }
        if accept.rogues && self.rogues != Some(0) {
            range('r', self.rogues);
        }
        for (accepted, word) in [
            (accept.leader, "leader"),
            (accept.all, "all"),
            (accept.free, "free"),
        ] {
            if accepted {
                choices.push(word.to_owned());
            }
        }
        match choices.split_last() {
            None => "a client, but this cluster has none".to_owned(),
            Some((only, [])) => only.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

/// `s3` -> 3 for prefix `s`. Only the canonical form: no sign, no leading zero, not zero.
fn numbered(text: &str, prefix: char) -> Option<u32> {
    let digits = text.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|byte| byte.is_ascii_digit());
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// The server client `client` (1-based) talks to first when the file does not say: clients
/// spread round-robin over the servers, starting after the leader so that the first clients
/// exercise forwarding from a follower; with no leader named, starting at s1.
fn default_server_for(client: u32, servers: u32, leader: Option<ServerId>) -> ServerId {
    assert!(client >= 1, "clients are numbered from 1");
    assert!(servers >= 1, "a cluster has at least one server");
    let start = leader.map_or(0, |ServerId(leader)| leader % servers);
    ServerId((start + client - 1) % servers + 1)
}

/// An operation's name as scenario files write it.
pub fn op_name(op: OpKind) -> &'static str {
    match op {
        OpKind::Preempt => "preempt",
        OpKind::Release => "release",
        OpKind::Check => "check",
        OpKind::Acquire { .. } => "acquire",
        OpKind::Cancel => "cancel",
    }
}

/// Every client operation a scenario event may name.
const OPERATION_NAMES: &str = "preempt, release, check, acquire, cancel, keepalive, write or watch";

/// The longest wait an acquire may ask for in a scenario: a waiter always comes to a decision
/// within a run.
const ACQUIRE_WAIT_MAX: Duration = Duration::from_secs(3_600);

impl Checker {
    /// An acquire's required `wait` (0s allowed: try once), at most [`ACQUIRE_WAIT_MAX`].
    fn acquire_wait(&mut self, place: &str, raw: Option<&RawDuration>) -> Option<OpKind> {
        let place = format!("{place}.wait");
        let Some(raw) = raw else {
            self.add(
                &place,
                "missing: an acquire says how long it may wait (0s tries once)",
            );
            return None;
        };
        let wait = self.duration(&place, raw)?;
        if wait > ACQUIRE_WAIT_MAX {
            let limit = show(ACQUIRE_WAIT_MAX);
            self.add(&place, format!("is above the limit of {limit} for a wait"));
            return None;
        }
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        Some(OpKind::Acquire { wait_ms })
    }
}

/// Collects problems, each prefixed with its place.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn add(&mut self, place: &str, message: impl fmt::Display) {
        assert!(!place.is_empty(), "every problem names its place");
        self.problems.push(format!("{place}: {message}"));
    }

    fn name(&mut self, place: &str, text: &str, accept: Accept, roster: Roster) -> Option<Name> {
        roster
            .resolve(text, accept)
            .map_err(|message| self.add(place, message))
            .ok()
    }

    fn server(&mut self, place: &str, text: &str, roster: Roster) -> Option<ServerId> {
        match self.name(place, text, SERVER, roster)? {
            Name::Node(Endpoint::Server(id)) => Some(id),
            other => unreachable!("{place}: resolved {other:?} where only servers are accepted"),
        }
    }

    fn client(&mut self, place: &str, text: &str, roster: Roster) -> Option<u32> {
        match self.name(place, text, CLIENT, roster)? {
            Name::Node(Endpoint::Client(number)) => Some(number),
            other => unreachable!("{place}: resolved {other:?} where only clients are accepted"),
        }
    }

    fn endpoint(&mut self, place: &str, text: &str, roster: Roster) -> Option<Endpoint> {
        match self.name(place, text, ENDPOINT, roster)? {
            Name::Node(endpoint) => Some(endpoint),
            other => unreachable!("{place}: resolved {other:?} where only nodes are accepted"),
        }
    }

    fn required<'a, T>(&mut self, place: &str, value: Option<&'a T>) -> Option<&'a T> {
        if value.is_none() {
            self.add(place, "missing");
        }
        value
    }

    fn text(&mut self, place: &str, value: Option<&String>) -> String {
        match value {
            None => self.add(place, "missing"),
            Some(text) if text.trim().is_empty() => self.add(place, "is empty"),
            Some(text) => return text.clone(),
        }
        String::new()
    }

    fn lock_name(&mut self, place: &str, text: &str) -> Option<LockName> {
        if text.is_empty() {
            self.add(place, "a lock name cannot be empty");
            return None;
        }
        if text.len() > LOCK_NAME_BYTES_MAX {
            let message = format!(
                "a lock name of {} bytes is above the limit of {LOCK_NAME_BYTES_MAX}",
                text.len()
            );
            self.add(place, message);
            return None;
        }
        Some(Arc::from(text))
    }

    /// A count in `min..=max`; the bounds are said in the message.
    fn count(&mut self, place: &str, value: Option<i64>, min: u32, max: u32) -> Option<u32> {
        let Some(value) = value else {
            self.add(place, format!("missing (a whole number in {min}..={max})"));
            return None;
        };
        let count = u32::try_from(value)
            .ok()
            .filter(|count| (min..=max).contains(count));
        if count.is_none() {
            self.add(place, format!("{value} is out of range ({min}..={max})"));
        }
        count
    }

    fn probability(&mut self, place: &str, value: f64) -> Option<f64> {
        if (0.0..=1.0).contains(&value) {
            return Some(value);
        }
        self.add(
            place,
            format!("{value} is not a probability (use a number in [0, 1])"),
        );
        None
    }

    /// Any duration in a scenario: well formed, and at most [`DURATION_MAX`].
    fn duration(&mut self, place: &str, raw: &RawDuration) -> Option<Duration> {
        let text = match raw {
            RawDuration::Number(number) => {
                self.add(place, format!("{number} needs a unit {DURATION_HINT}"));
                return None;
            }
            RawDuration::Text(text) => text,
        };
        let Some(duration) = parse_duration(text) else {
            self.add(place, format!("{text:?} is not a duration {DURATION_HINT}"));
            return None;
        };
        if duration > DURATION_MAX {
            let limit = show(DURATION_MAX);
            self.add(
                place,
                format!("{text} is above the limit of {limit} for any duration"),
            );
            return None;
        }
        Some(duration)
    }

    /// A duration that must be above zero (timeouts, intervals).
    fn positive_duration(&mut self, place: &str, raw: &RawDuration) -> Option<Duration> {
        let duration = self.duration(place, raw)?;
        if duration.is_zero() {
            self.add(place, "must be above 0");
            return None;
        }
        Some(duration)
    }

    /// `{min, max}` with either side defaulted; `None` after reporting a problem.
    fn range(
        &mut self,
        place: &str,
        min: Option<&RawDuration>,
        max: Option<&RawDuration>,
        default: (Duration, Duration),
    ) -> Option<(Duration, Duration)> {
        let min = match min {
            None => Some(default.0),
            Some(min) => self.duration(&format!("{place}.min"), min),
        };
        let max = match max {
            None => Some(default.1),
            Some(max) => self.duration(&format!("{place}.max"), max),
        };
        let (min, max) = (min?, max?);
        if min > max {
            self.add(
                place,
                format!("min {} is above max {}", show(min), show(max)),
            );
            return None;
        }
        Some((min, max))
    }
}

/// Turns the raw file into a [`Scenario`], or lists every problem found.
fn validate(raw: &RawScenario, path: &str) -> Result<Scenario, ScenarioError> {
    let mut check = Checker::default();
    let name = check.text("name", raw.name.as_ref());
    let description = check.text("description", raw.description.as_ref());
    let duration = check.scenario_duration(raw.duration.as_ref());
    let settle = check.settle(raw.settle.as_ref());
    let (cluster, mut roster) = check.cluster(raw.cluster.as_ref());
    let rogues = raw.rogues.as_ref().and_then(|rogues| check.rogues(rogues));
    roster.rogues = match &raw.rogues {
        None => Some(0),
        Some(_) => rogues.as_ref().map(|rogues| rogues.clients),
    };
    let network = check.network(raw.network.as_ref());
    let disk = raw
        .disk
        .as_ref()
        .map_or_else(DiskFaults::default, |disk| check.disk(disk));
    let buggify = raw
        .buggify
        .and_then(|chance| check.probability("buggify", chance));
    let clock_drift = raw.clock.as_ref().and_then(|clock| check.clock(clock));
    let sessions = raw
        .sessions
        .as_ref()
        .and_then(|sessions| check.sessions(sessions));
    let timing = check.timing(raw.timing.as_ref());
    let events = check.events(raw.events.as_deref(), roster, duration);
    let workload = raw
        .workload
        .as_ref()
        .and_then(|workload| check.workload(workload, roster));
    let expect_final = check.expect_final(raw.expect_final.as_ref(), roster);
    let expect_violations = check.expect_violations(raw.expect_violations.as_deref());
    // Replaying network changes needs valid starting parameters and events; on an invalid file
    // it would only report echoes of problems already listed.
    if check.problems.is_empty() {
        check.network_changes(&network, &events);
    }
    if !check.problems.is_empty() {
        let mut problems = check.problems;
        if problems.len() > PROBLEMS_LISTED_MAX {
            let unlisted = problems.len() - PROBLEMS_LISTED_MAX;
            problems.truncate(PROBLEMS_LISTED_MAX);
            problems.push(format!("(and {unlisted} more problems not listed)"));
        }
        return Err(ScenarioError::Invalid {
            path: path.to_owned(),
            problems,
        });
    }
    let scenario = Scenario {
        name,
        description,
        seed: raw.seed.unwrap_or(0),
        duration: duration.unwrap_or_default(),
        settle,
        cluster,
        network,
        disk,
        buggify,
        clock_drift,
        sessions,
        timing,
        events,
        workload,
        rogues,
        expect_final,
        expect_violations,
    };
    // Without problems, nothing the file lists was dropped on the way.
    let event_count = raw.events.as_ref().map_or(0, Vec::len);
    assert_eq!(scenario.events.len(), event_count);
    assert_eq!(scenario.workload.is_some(), raw.workload.is_some());
    assert_eq!(scenario.rogues.is_some(), raw.rogues.is_some());
    let final_count = raw.expect_final.as_ref().map_or(0, BTreeMap::len);
    assert_eq!(scenario.expect_final.len(), final_count);
    assert_valid(&scenario);
    Ok(scenario)
}

/// What validation promises about a [`Scenario`]. A failure is a bug in this module.
fn assert_valid(scenario: &Scenario) {
    let cluster = &scenario.cluster;
    assert!(
        (1..=SERVERS_MAX).contains(&cluster.servers),
        "servers out of bounds"
    );
    assert!(cluster.clients <= CLIENTS_MAX, "clients out of bounds");
    assert!(
        cluster.connect.keys().copied().eq(1..=cluster.clients),
        "connect is not complete"
    );
    let servers = 1..=cluster.servers;
    assert!(
        cluster.connect.values().all(|id| servers.contains(&id.0)),
        "connect to no server"
    );
    assert!(
        cluster.leader.is_none_or(|id| servers.contains(&id.0)),
        "leader is no server"
    );
    assert!(
        scenario
            .events
            .windows(2)
            .all(|pair| pair[0].at <= pair[1].at),
        "events unsorted"
    );
    assert!(
        scenario
            .events
            .iter()
            .all(|event| event.at <= scenario.duration),
        "late event"
    );
    let network = &scenario.network;
    assert!(
        network.latency_min <= network.latency_max,
        "network latency min above max"
    );
    assert!(
        (0.0..=1.0).contains(&network.drop),
        "drop probability out of bounds"
    );
    assert!(
        (0.0..=1.0).contains(&network.duplicate),
        "duplicate probability out of bounds"
    );
    let timing = &scenario.timing;
    assert!(
        timing.heartbeat_interval < timing.election_timeout_min,
        "heartbeat too slow"
    );
    assert!(
        timing.election_timeout_min <= timing.election_timeout_max,
        "election min above max"
    );
}

impl Checker {
    fn scenario_duration(&mut self, raw: Option<&RawDuration>) -> Option<Duration> {
        let raw = self.required("duration", raw)?;
        let duration = self.positive_duration("duration", raw)?;
        assert!(duration <= DURATION_MAX, "duration() enforces the limit");
        Some(duration)
    }

    fn settle(&mut self, raw: Option<&RawDuration>) -> Duration {
        let Some(raw) = raw else {
            return SETTLE_DEFAULT;
        };
        match self.duration("settle", raw) {
            Some(settle) if settle > SETTLE_MAX => {
                let message = format!(
                    "{} is above the limit of {}",
                    show(settle),
                    show(SETTLE_MAX)
                );
                self.add("settle", message);
            }
            Some(settle) => return settle,
            None => {}
        }
        SETTLE_DEFAULT
    }

    /// The cluster, with `connect` completed by [`default_server_for`], and the roster that
    /// names in the rest of the file are resolved against.
    fn cluster(&mut self, raw: Option<&RawCluster>) -> (ClusterSpec, Roster) {
        let Some(raw) = raw else {
            self.add("cluster", "missing (e.g. {servers: 3, clients: 2})");
            let unknown = Roster {
                servers: None,
                clients: None,
                rogues: None,
            };
            let empty = ClusterSpec {
                servers: 0,
                clients: 0,
                leader: None,
                connect: BTreeMap::new(),
            };
            return (empty, unknown);
        };
        let servers = self.count("cluster.servers", raw.servers, 1, SERVERS_MAX);
        let clients = self.count("cluster.clients", raw.clients, 0, CLIENTS_MAX);
        let roster = Roster {
            servers,
            clients,
            rogues: None,
        };
        let leader = raw
            .leader
            .as_ref()
            .and_then(|text| self.server("cluster.leader", text, roster));
        let mut connect = BTreeMap::new();
        for (client_text, server_text) in raw.connect.iter().flatten() {
            let place = format!("cluster.connect.{client_text}");
            let client = self.client(&place, client_text, roster);
            let server = self.server(&place, server_text, roster);
            if let (Some(client), Some(server)) = (client, server) {
                connect.insert(client, server);
            }
        }
        if let (Some(servers), Some(clients)) = (servers, clients) {
            for client in 1..=clients {
                connect
                    .entry(client)
                    .or_insert_with(|| default_server_for(client, servers, leader));
            }
        }
        let spec = ClusterSpec {
            servers: servers.unwrap_or(0),
            clients: clients.unwrap_or(0),
            leader,
            connect,
        };
        (spec, roster)
    }

    fn network(&mut self, raw: Option<&RawNetwork>) -> NetworkParams {
        let defaults = NetworkParams::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let mut params = defaults;
        if let Some(latency) = &raw.latency {
            let bounds = (defaults.latency_min, defaults.latency_max);
            let (min, max) = (latency.min.as_ref(), latency.max.as_ref());
            if let Some((min, max)) = self.range("network.latency", min, max, bounds) {
                params.latency_min = min;
                params.latency_max = max;
            }
            params.tail = latency
                .tail
                .as_ref()
                .and_then(|tail| self.tail(tail, params.latency_max));
        }
        if let Some(drop) = raw.drop {
            params.drop = self
                .probability("network.drop", drop)
                .unwrap_or(defaults.drop);
        }
        if let Some(duplicate) = raw.duplicate {
            let duplicate = self.probability("network.duplicate", duplicate);
            params.duplicate = duplicate.unwrap_or(defaults.duplicate);
        }
        params
    }
}

impl Checker {
    /// `disk: {torn_write, corrupt}`: probabilities, 0 when left out.
    fn disk(&mut self, raw: &RawDisk) -> DiskFaults {
        let mut probability = |place: &str, value: Option<f64>| {
            value.map_or(0.0, |value| self.probability(place, value).unwrap_or(0.0))
        };
        DiskFaults {
            torn_write: probability("disk.torn_write", raw.torn_write),
            corrupt: probability("disk.corrupt", raw.corrupt),
        }
    }

    fn tail(&mut self, raw: &RawTail, latency_max: Duration) -> Option<LatencyTail> {
        let probability =
            self.required("network.latency.tail.probability", raw.probability.as_ref());
        let probability = probability
            .and_then(|&value| self.probability("network.latency.tail.probability", value));
        let max = self.required("network.latency.tail.max", raw.max.as_ref());
        let max = max.and_then(|max| self.duration("network.latency.tail.max", max));
        let (probability, max) = (probability?, max?);
        if max < latency_max {
            let message = format!(
                "{} is below latency.max {}; the tail is the slow end",
                show(max),
                show(latency_max)
            );
            self.add("network.latency.tail.max", message);
            return None;
        }
        Some(LatencyTail { probability, max })
    }

    fn timing(&mut self, raw: Option<&RawTiming>) -> Timing {
        let defaults = Timing::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let election_default = (defaults.election_timeout_min, defaults.election_timeout_max);
        let election = match &raw.election_timeout {
            None => Some(election_default),
            Some(range) => {
                let place = "timing.election_timeout";
                let bounds = self.range(
                    place,
                    range.min.as_ref(),
                    range.max.as_ref(),
                    election_default,
                );
                if bounds.is_some_and(|(min, _)| min.is_zero()) {
                    self.add("timing.election_timeout.min", "must be above 0");
                }
                bounds.filter(|(min, _)| !min.is_zero())
            }
        };
        let mut positive = |place: &str, raw: Option<&RawDuration>, default: Duration| match raw {
            None => Some(default),
            Some(raw) => self.positive_duration(place, raw),
        };
        let heartbeat = positive(
            "timing.heartbeat",
            raw.heartbeat.as_ref(),
            defaults.heartbeat_interval,
        );
        let client_timeout = positive(
            "timing.client_timeout",
            raw.client_timeout.as_ref(),
            defaults.client_timeout,
        );
        let client_retry = positive(
            "timing.client_retry",
            raw.client_retry.as_ref(),
            defaults.client_retry,
        );
        if let (Some(heartbeat), Some((election_min, _))) = (heartbeat, election)
            && heartbeat >= election_min
        {
            let message = format!(
                "{} must be below election_timeout.min {}, or followers time out between \
                 heartbeats",
                show(heartbeat),
                show(election_min)
            );
            self.add("timing.heartbeat", message);
        }
        let append_batch = match raw.append_batch {
            None => defaults.append_batch,
            Some(batch) if (1..=APPEND_BATCH_MAX as u64).contains(&batch) => batch as usize,
            Some(batch) => {
                let message = format!("{batch} is outside 1..={APPEND_BATCH_MAX}");
                self.add("timing.append_batch", message);
                defaults.append_batch
            }
        };
        let snapshot_entries = match raw.snapshot_entries {
            Some(entries) if !(1..=SNAPSHOT_ENTRIES_MAX).contains(&entries) => {
                let message = format!("{entries} is outside 1..={SNAPSHOT_ENTRIES_MAX}");
                self.add("timing.snapshot_entries", message);
                None
            }
            entries => entries,
        };
        let (election_timeout_min, election_timeout_max) = election.unwrap_or(election_default);
        Timing {
            election_timeout_min,
            election_timeout_max,
            heartbeat_interval: heartbeat.unwrap_or(defaults.heartbeat_interval),
            client_timeout: client_timeout.unwrap_or(defaults.client_timeout),
            client_retry: client_retry.unwrap_or(defaults.client_retry),
            append_batch,
            snapshot_entries,
        }
    }

    /// Scheduled events sorted stably by time; invalid events are reported and left out.
    fn events(
        &mut self,
        raw: Option<&[RawEvent]>,
        roster: Roster,
        duration: Option<Duration>,
    ) -> Vec<ScheduledEvent> {
        let raw = raw.unwrap_or_default();
        if raw.len() > EVENTS_MAX {
            self.add(
                "events",
                format!("{} events are above the limit of {EVENTS_MAX}", raw.len()),
            );
            return Vec::new();
        }
        let mut events: Vec<ScheduledEvent> = raw
            .iter()
            .enumerate()
            .filter_map(|(index, event)| self.event(index, event, roster, duration))
            .collect();
        // Stable, so events at the same time keep their file order.
        events.sort_by_key(|event| event.at);
        events
    }

    fn event(
        &mut self,
        index: usize,
        raw: &RawEvent,
        roster: Roster,
        duration: Option<Duration>,
    ) -> Option<ScheduledEvent> {
        let place = format!("events[{index}]");
        let at_place = format!("{place}.at");
        let at = self
            .required(&at_place, raw.at.as_ref())
            .and_then(|at| self.duration(&at_place, at));
        if let (Some(at), Some(duration)) = (at, duration)
            && at > duration
        {
            let message = format!(
                "{} is after the scenario's duration {}",
                show(at),
                show(duration)
            );
            self.add(&at_place, message);
        }
        let action = self.action(&place, raw, roster);
        let at = at.filter(|&at| duration.is_none_or(|duration| at <= duration));
        Some(ScheduledEvent {
            at: at?,
            action: action?,
            index,
        })
    }

    /// Exactly one action per event; a client operation counts as one.
    fn action(&mut self, place: &str, raw: &RawEvent, roster: Roster) -> Option<Action> {
        let actions: Vec<&str> = [
            ("client", raw.client.is_some()),
            ("crash", raw.crash.is_some()),
            ("corrupt", raw.corrupt.is_some()),
            ("restart", raw.restart.is_some()),
            ("partition", raw.partition.is_some()),
            ("isolate", raw.isolate.is_some()),
            ("cut", raw.cut.is_some()),
            ("heal", raw.heal.is_some()),
            ("network", raw.network.is_some()),
            ("pause", raw.pause.is_some()),
            ("clock", raw.clock.is_some()),
        ]
        .into_iter()
        .filter_map(|(action, present)| present.then_some(action))
        .collect();
        let op_fields: Vec<&str> = [
            ("op", raw.op.is_some()),
            ("lock", raw.lock.is_some()),
            ("consistency", raw.consistency.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("wait", raw.wait.is_some()),
            ("expect", raw.expect.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, present)| present.then_some(field))
        .collect();
        match actions.as_slice() {
            [] if op_fields.is_empty() => self.add(
                place,
                "has no action (give one of client, crash, corrupt, restart, partition, \
                 isolate, cut, heal, network, pause or clock)",
            ),
            [] => {
                for field in op_fields {
                    self.add(&format!("{place}.{field}"), "given without client");
                }
            }
            ["client"] => return self.client_op(place, raw, roster),
            [action] => {
                for field in op_fields {
                    let message =
                        format!("{action} events take no {field} (only client operations do)");
                    self.add(&format!("{place}.{field}"), message);
                }
                return self.fault(place, raw, roster);
            }
            [first, second] => self.add(
                place,
                format!("has both {first} and {second}; an event takes exactly one action"),
            ),
            [rest @ .., last] => self.add(
                place,
                format!(
                    "has {} and {last}; an event takes exactly one action",
                    rest.join(", ")
                ),
            ),
        }
        None
    }
}

impl Checker {
    fn client_op(&mut self, place: &str, raw: &RawEvent, roster: Roster) -> Option<Action> {
        let client_text = raw.client.as_deref().unwrap_or_default();
        let client = self.client(&format!("{place}.client"), client_text, roster);
        if raw.op.as_deref() == Some("keepalive") {
            for (field, present) in [
                ("lock", raw.lock.is_some()),
                ("consistency", raw.consistency.is_some()),
                ("timeout", raw.timeout.is_some()),
                ("wait", raw.wait.is_some()),
                ("mode", raw.mode.is_some()),
                ("permits", raw.permits.is_some()),
                ("expect", raw.expect.is_some()),
            ] {
                if present {
                    let message = "a keepalive takes no {field} (it renews the client's session)";
                    self.add(
                        &format!("{place}.{field}"),
                        message.replace("{field}", field),
                    );
                }
            }
            return Some(Action::Keepalive { client: client? });
        }
        if raw.op.as_deref() == Some("write") {
            return self.write_op(place, raw, client);
        }
        if raw.op.as_deref() == Some("watch") {
            return self.watch_op(place, raw, client);
        }
        for (field, present) in [
            ("prefix", raw.prefix.is_some()),
            ("from", raw.from.is_some()),
        ] {
            if present {
                self.add(
                    &format!("{place}.{field}"),
                    format!("only a watch takes a {field}"),
                );
            }
        }
        let op_place = format!("{place}.op");
        let op = match raw.op.as_deref() {
            Some("preempt") => Some(OpKind::Preempt),
            Some("release") => Some(OpKind::Release),
            Some("check") => Some(OpKind::Check),
            Some("acquire") => self.acquire_wait(place, raw.wait.as_ref()),
            Some("cancel") => Some(OpKind::Cancel),
            Some(other) => {
                let message = format!("{other:?} is not an operation ({OPERATION_NAMES})");
                self.add(&op_place, message);
                None
            }
            None => {
                self.add(&op_place, format!("missing ({OPERATION_NAMES})"));
                None
            }
        };
        if raw.wait.is_some() && !matches!(raw.op.as_deref(), Some("acquire")) {
            self.add(&format!("{place}.wait"), "only an acquire takes a wait");
        }
        let claim = self.claim(place, raw);
        let lock_place = format!("{place}.lock");
        let lock = self
            .required(&lock_place, raw.lock.as_ref())
            .and_then(|lock| self.lock_name(&lock_place, lock));
        let consistency = self.consistency(place, raw.consistency.as_deref(), op);
        let timeout = match &raw.timeout {
            None => Some(None),
            Some(timeout) => self
                .positive_duration(&format!("{place}.timeout"), timeout)
                .map(Some),
        };
        let expect = match &raw.expect {
            None => Some(None),
            Some(expect) => self
                .expect(&format!("{place}.expect"), expect, op, roster)
                .map(Some),
        };
        Some(Action::ClientOp {
            client: client?,
            op: op?,
            lock: lock?,
            consistency: consistency?,
            timeout: timeout?,
            expect: expect?,
            claim: claim?,
        })
    }

    /// A preempt's or acquire's `mode` and `permits`. `permits` without `mode` is shared: one
    /// permit of the semaphore, which is what a semaphore acquire takes.
    fn claim(&mut self, place: &str, raw: &RawEvent) -> Option<Claim> {
        let claims = matches!(raw.op.as_deref(), Some("preempt" | "acquire"));
        for (field, present) in [
            ("mode", raw.mode.is_some()),
            ("permits", raw.permits.is_some()),
        ] {
            if present && !claims {
                self.add(
                    &format!("{place}.{field}"),
                    format!("only a preempt or an acquire takes a {field}"),
                );
            }
        }
        let mode = match raw.mode.as_deref() {
            None if raw.permits.is_some() => Some(Mode::Shared),
            None | Some("exclusive") => Some(Mode::Exclusive),
            Some("shared") => Some(Mode::Shared),
            Some(other) => {
                let message = format!("{other:?} is not a mode (shared or exclusive)");
                self.add(&format!("{place}.mode"), message);
                None
            }
        };
        let permits = match raw.permits {
            None => Some(None),
            Some(permits) if (1..=i64::from(PERMITS_MAX)).contains(&permits) => {
                Some(u32::try_from(permits).ok())
            }
            Some(permits) => {
                let message = format!("{permits} is out of range: permits are 1 to {PERMITS_MAX}");
                self.add(&format!("{place}.permits"), message);
                None
            }
        };
        Some(Claim {
            mode: mode?,
            permits: permits?,
        })
    }

    /// `{client, op: watch, lock | prefix, from}`: a lock or a prefix, not both; `from` a log
    /// index of at least 1.
    fn watch_op(&mut self, place: &str, raw: &RawEvent, client: Option<u32>) -> Option<Action> {
        use crate::node::watch::{WATCH_PREFIX_BYTES_MAX, WatchTarget};
        for (field, present) in [
            ("consistency", raw.consistency.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("wait", raw.wait.is_some()),
            ("expect", raw.expect.is_some()),
        ] {
            if present {
                let message = format!("a watch takes no {field} (it streams changes)");
                self.add(&format!("{place}.{field}"), message);
            }
        }
        let target = match (&raw.lock, &raw.prefix) {
            (Some(lock), None) => {
                let lock = self.lock_name(&format!("{place}.lock"), lock)?;
                Some(WatchTarget::Lock(lock))
            }
            (None, Some(prefix)) if prefix.len() > WATCH_PREFIX_BYTES_MAX => {
                let message = format!(
                    "is {} bytes long; a prefix is at most {WATCH_PREFIX_BYTES_MAX}",
                    prefix.len()
                );
                self.add(&format!("{place}.prefix"), message);
                None
            }
            (None, Some(prefix)) => Some(WatchTarget::Prefix(prefix.clone())),
            (Some(_), Some(_)) => {
                self.add(place, "a watch names a lock or a prefix, not both");
                None
            }
            (None, None) => {
                self.add(place, "a watch needs a lock or a prefix");
                None
            }
        };
        let from = match raw.from {
            None => Some(None),
            Some(index) if index >= 1 => Some(Some(index as u64)),
            Some(index) => {
                let message = format!("{index} is not a log index (1 or more)");
                self.add(&format!("{place}.from"), message);
                None
            }
        };
        Some(Action::Watch {
            client: client?,
            target: target?,
            from: from?,
        })
    }

    /// `{client, op: write, lock, expect}`: a lock, and optionally accepted, rejected or
    /// not_written.
    fn write_op(&mut self, place: &str, raw: &RawEvent, client: Option<u32>) -> Option<Action> {
        for (field, present) in [
            ("consistency", raw.consistency.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("wait", raw.wait.is_some()),
        ] {
            if present {
                let message = format!("a write takes no {field}");
                self.add(&format!("{place}.{field}"), message);
            }
        }
        let lock_place = format!("{place}.lock");
        let lock = self
            .required(&lock_place, raw.lock.as_ref())
            .and_then(|lock| self.lock_name(&lock_place, lock));
        let expect = match &raw.expect {
            None => Some(None),
            Some(RawExpect::Word(word)) if word == "accepted" => Some(Some(WriteExpect::Accepted)),
            Some(RawExpect::Word(word)) if word == "rejected" => Some(Some(WriteExpect::Rejected)),
            Some(RawExpect::Word(word)) if word == "not_written" => {
                Some(Some(WriteExpect::NotWritten))
            }
            Some(_) => {
                self.add(
                    &format!("{place}.expect"),
                    "a write can expect accepted, rejected or not_written",
                );
                None
            }
        };
        Some(Action::Write {
            client: client?,
            lock: lock?,
            expect: expect?,
        })
    }

    /// Only a check takes a consistency; the default is local.
    fn consistency(
        &mut self,
        place: &str,
        text: Option<&str>,
        op: Option<OpKind>,
    ) -> Option<Consistency> {
        let place = format!("{place}.consistency");
        match (text, op) {
            (None, _) => Some(Consistency::Local),
            (Some("local"), Some(OpKind::Check)) => Some(Consistency::Local),
            (Some("linearizable"), Some(OpKind::Check)) => Some(Consistency::Linearizable),
            (Some(other), Some(OpKind::Check)) => {
                let message = format!("{other:?} is not a consistency (local or linearizable)");
                self.add(&place, message);
                None
            }
            (Some(_), Some(op)) => {
                let message = format!(
                    "only a check takes a consistency (this is a {})",
                    op_name(op)
                );
                self.add(&place, message);
                None
            }
            // The op is already reported; whether a consistency fits cannot be told.
            (Some(_), None) => None,
        }
    }

    fn expect(
        &mut self,
        place: &str,
        raw: &RawExpect,
        op: Option<OpKind>,
        roster: Roster,
    ) -> Option<Expect> {
        let expect = self.expect_value(place, raw, roster)?;
        // Without a valid op (already reported) whether the expectation fits cannot be told.
        let op = op?;
        self.expect_fitting(place, expect, op)
    }

    fn expect_value(&mut self, place: &str, raw: &RawExpect, roster: Roster) -> Option<Expect> {
        let client = match raw {
            RawExpect::Word(word) => {
                return match word.as_str() {
                    "granted" => Some(Expect::Granted),
                    "released" => Some(Expect::Released),
                    "not_owner" => Some(Expect::NotOwner),
                    "free" => Some(Expect::Free),
                    "unknown" => Some(Expect::Unknown),
                    "answered" => Some(Expect::Answered),
                    "session_expired" => Some(Expect::SessionExpired),
                    "timed_out" | "timeout" => Some(Expect::TimedOut),
                    "cancelled" => Some(Expect::Cancelled),
                    "not_waiting" => Some(Expect::NotWaiting),
                    "permits_mismatch" => Some(Expect::PermitsMismatch),
                    "shared" => Some(Expect::Shared),
                    other => {
                        let message = format!(
                            "{other:?} is not an expectation (granted, released, not_owner, \
                             free, timeout, cancelled, not_waiting, permits_mismatch, shared, \
                             unknown, answered, session_expired, {{held_by: cN}} or \
                             {{owner: cN}})"
                        );
                        self.add(place, message);
                        None
                    }
                };
            }
            RawExpect::Client(client) => client,
        };
        match (&client.held_by, &client.owner) {
            (Some(text), None) => {
                let held_by = self.client(&format!("{place}.held_by"), text, roster)?;
                Some(Expect::HeldBy(held_by))
            }
            (None, Some(text)) => {
                let owner = self.client(&format!("{place}.owner"), text, roster)?;
                Some(Expect::Owner(owner))
            }
            (Some(_), Some(_)) => {
                self.add(place, "has both held_by and owner; give one");
                None
            }
            (None, None) => {
                self.add(place, "is an empty map; give {held_by: cN} or {owner: cN}");
                None
            }
        }
    }

    /// Each operation can only answer its own kinds of reply; `unknown` (no answer in time)
    /// and `answered` (any answer) fit every operation.
    fn expect_fitting(&mut self, place: &str, expect: Expect, op: OpKind) -> Option<Expect> {
        let (fits, expected) = match op {
            OpKind::Preempt => (
                matches!(
                    expect,
                    Expect::Granted | Expect::HeldBy(_) | Expect::PermitsMismatch
                ),
                "granted, {held_by: cN}, permits_mismatch",
            ),
            OpKind::Release => (
                matches!(expect, Expect::Released | Expect::NotOwner),
                "released, not_owner",
            ),
            OpKind::Check => (
                matches!(expect, Expect::Free | Expect::Owner(_) | Expect::Shared),
                "free, {owner: cN}, shared",
            ),
            OpKind::Acquire { .. } => (
                matches!(
                    expect,
                    Expect::Granted
                        | Expect::HeldBy(_)
                        | Expect::TimedOut
                        | Expect::Cancelled
                        | Expect::PermitsMismatch
                ),
                "granted, {held_by: cN}, timeout, cancelled, permits_mismatch",
            ),
            OpKind::Cancel => (
                matches!(expect, Expect::Cancelled | Expect::NotWaiting),
                "cancelled, not_waiting",
            ),
        };
        if fits
            || matches!(
                expect,
                Expect::Unknown | Expect::Answered | Expect::SessionExpired
            )
        {
            return Some(expect);
        }
        let written = match expect {
            Expect::Granted => "granted",
            Expect::HeldBy(_) => "held_by",
            Expect::Released => "released",
            Expect::NotOwner => "not_owner",
            Expect::Free => "free",
            Expect::Owner(_) => "owner",
            Expect::TimedOut => "timeout",
            Expect::Cancelled => "cancelled",
            Expect::NotWaiting => "not_waiting",
            Expect::PermitsMismatch => "permits_mismatch",
            Expect::Shared => "shared",
            Expect::Unknown | Expect::Answered | Expect::SessionExpired => {
                unreachable!("these fit every operation")
            }
        };
        let op = op_name(op);
        let message = format!(
            "a {op} cannot answer {written} (a {op} can expect {expected}, unknown or answered)"
        );
        self.add(place, message);
        None
    }
}

impl Checker {
    /// The one fault action `raw` holds (the caller checked there is exactly one).
    fn fault(&mut self, place: &str, raw: &RawEvent, roster: Roster) -> Option<Action> {
        if let Some(crash) = &raw.crash {
            return self.crash(&format!("{place}.crash"), crash, roster);
        }
        if let Some(corrupt) = &raw.corrupt {
            return self.corrupt(&format!("{place}.corrupt"), corrupt, roster);
        }
        if let Some(text) = &raw.restart {
            let place = format!("{place}.restart");
            let target = match self.name(&place, text, RESTART_TARGET, roster)? {
                Name::Node(Endpoint::Server(id)) => RestartTarget::Server(id),
                Name::All => RestartTarget::All,
                other => unreachable!("{place}: {other:?} accepted as a restart target"),
            };
            return Some(Action::Restart(target));
        }
        if let Some(groups) = &raw.partition {
            return self.partition(&format!("{place}.partition"), groups, roster);
        }
        if let Some(text) = &raw.isolate {
            let place = format!("{place}.isolate");
            let target = match self.name(&place, text, ISOLATE_TARGET, roster)? {
                Name::Node(node) => IsolateTarget::Node(node),
                Name::Leader => IsolateTarget::Leader,
                other => unreachable!("{place}: {other:?} accepted as an isolate target"),
            };
            return Some(Action::Isolate(target));
        }
        if let Some(cut) = &raw.cut {
            return self.cut(&format!("{place}.cut"), cut, roster);
        }
        if let Some(text) = &raw.heal {
            if text != "all" {
                self.add(
                    &format!("{place}.heal"),
                    format!("{text:?} is not all (heal takes all)"),
                );
                return None;
            }
            return Some(Action::Heal);
        }
        if let Some(change) = &raw.network {
            return self.network_change(&format!("{place}.network"), change);
        }
        if let Some(pause) = &raw.pause {
            return self.pause(&format!("{place}.pause"), pause, roster);
        }
        if let Some(change) = &raw.clock {
            return self.clock_change(&format!("{place}.clock"), change, roster);
        }
        unreachable!("{place}: fault() called on an event without a fault action")
    }

    fn crash(&mut self, place: &str, raw: &RawCrash, roster: Roster) -> Option<Action> {
        let in_step = match raw {
            RawCrash::Name(text) => {
                let target = match self.name(place, text, CRASH_TARGET, roster)? {
                    Name::Node(Endpoint::Server(id)) => CrashTarget::Server(id),
                    Name::Leader => CrashTarget::Leader,
                    Name::All => CrashTarget::All,
                    other => unreachable!("{place}: {other:?} accepted as a crash target"),
                };
                return Some(Action::Crash(target));
            }
            RawCrash::InStep(in_step) => in_step,
        };
        let node_place = format!("{place}.node");
        let server = match &in_step.node {
            None => {
                self.add(
                    &node_place,
                    "missing (the server whose step is cut, e.g. s2)",
                );
                None
            }
            Some(text) => self.server(&node_place, text, roster),
        };
        let after_effects = self.count(
            &format!("{place}.after_effects"),
            in_step.after_effects,
            0,
            AFTER_EFFECTS_MAX,
        );
        let restart_after = match &in_step.restart_after {
            None => Some(None),
            Some(raw) => self
                .duration(&format!("{place}.restart_after"), raw)
                .map(Some),
        };
        Some(Action::CrashInStep {
            server: server?,
            after_effects: after_effects?,
            restart_after: restart_after?,
        })
    }

    /// `sessions: {ttl, lock_delay}`: a TTL within the servers' bounds (1 s to 1 h), a
    /// lock-delay of at most an hour (0 when left out).
    fn sessions(&mut self, raw: &RawSessions) -> Option<SessionsSpec> {
        let ttl = match &raw.ttl {
            None => {
                self.add(
                    "sessions.ttl",
                    "missing (every client's session TTL, e.g. 3s)",
                );
                None
            }
            Some(raw) => self.duration("sessions.ttl", raw),
        };
        let (ttl_min, ttl_max) = (Duration::from_secs(1), Duration::from_secs(60 * 60));
        let ttl = ttl.filter(|ttl| {
            let within = (ttl_min..=ttl_max).contains(ttl);
            if !within {
                let message = format!("{} is outside the servers' bounds of 1s to 1h", show(*ttl));
                self.add("sessions.ttl", message);
            }
            within
        });
        let lock_delay = match &raw.lock_delay {
            None => Some(Duration::ZERO),
            Some(raw) => self.duration("sessions.lock_delay", raw),
        };
        Some(SessionsSpec {
            ttl: ttl?,
            lock_delay: lock_delay?,
        })
    }

    /// `clock: {drift: D}` at the top level: D within 0..=[`CLOCK_DRIFT_MAX`].
    fn clock(&mut self, raw: &RawClock) -> Option<f64> {
        let Some(drift) = raw.drift else {
            self.add(
                "clock.drift",
                "missing (how far clock rates may stray from true time, e.g. 0.01 for 1%)",
            );
            return None;
        };
        if !(0.0..=CLOCK_DRIFT_MAX).contains(&drift) {
            let message = format!(
                "{drift} is not a drift (use a fraction in [0, {CLOCK_DRIFT_MAX}], e.g. 0.01 for \
                 clocks within 1% of true time)"
            );
            self.add("clock.drift", message);
            return None;
        }
        Some(drift)
    }

    /// The server or client a pause or clock change names, at `{place}.node`.
    fn node(&mut self, place: &str, text: Option<&String>, roster: Roster) -> Option<Endpoint> {
        let place = format!("{place}.node");
        let Some(text) = text else {
            self.add(&place, "missing (a server or client, e.g. s2 or c1)");
            return None;
        };
        match self.name(&place, text, NODE, roster)? {
            Name::Node(node) => Some(node),
            other => unreachable!("{place}: resolved {other:?} where only nodes are accepted"),
        }
    }

    fn pause(&mut self, place: &str, raw: &RawPause, roster: Roster) -> Option<Action> {
        let node = self.node(place, raw.node.as_ref(), roster);
        let for_place = format!("{place}.for");
        let length = match &raw.r#for {
            None => {
                self.add(&for_place, "missing (how long the node is frozen, e.g. 4s)");
                None
            }
            Some(raw) => self.duration(&for_place, raw),
        };
        let length = length.filter(|length| {
            let positive = !length.is_zero();
            if !positive {
                self.add(&for_place, "0ms pauses nothing (use a positive duration)");
            }
            positive
        });
        Some(Action::Pause {
            node: node?,
            length: length?,
        })
    }

    fn clock_change(
        &mut self,
        place: &str,
        raw: &RawClockChange,
        roster: Roster,
    ) -> Option<Action> {
        let node = self.node(place, raw.node.as_ref(), roster);
        let rate_place = format!("{place}.rate");
        let rate_ppb = match raw.rate {
            None => {
                self.add(
                    &rate_place,
                    "missing (the clock's new speed, e.g. 1.03 for 3% fast)",
                );
                None
            }
            Some(rate) => {
                let ppb = crate::sim::clock::rate_ppb_of(rate);
                if ppb.is_none() {
                    let message = format!(
                        "{rate} is not a clock rate (use a number in [0.5, 2], 1 being true time)"
                    );
                    self.add(&rate_place, message);
                }
                ppb
            }
        };
        Some(Action::ClockRate {
            node: node?,
            rate_ppb: rate_ppb?,
        })
    }

    fn corrupt(&mut self, place: &str, raw: &RawCorrupt, roster: Roster) -> Option<Action> {
        let node_place = format!("{place}.node");
        let server = match &raw.node {
            None => {
                self.add(
                    &node_place,
                    "missing (the server whose disk is damaged, e.g. s2)",
                );
                None
            }
            Some(text) => self.server(&node_place, text, roster),
        };
        let entry_place = format!("{place}.entry");
        let entry = match raw.entry {
            None => {
                self.add(
                    &entry_place,
                    "missing (the log index of the damaged entry, 1 or more)",
                );
                None
            }
            Some(entry) if entry < 1 => {
                let message = format!("{entry} is not a log index (entries are numbered from 1)");
                self.add(&entry_place, message);
                None
            }
            Some(entry) => u64::try_from(entry).ok(),
        };
        Some(Action::Corrupt {
            server: server?,
            entry: entry?,
        })
    }

    fn partition(&mut self, place: &str, raw: &[Vec<String>], roster: Roster) -> Option<Action> {
        if raw.is_empty() {
            self.add(
                place,
                "has no groups (give lists of names, e.g. [[s1], [s2, s3]])",
            );
            return None;
        }
        let mut seen = BTreeSet::new();
        let mut groups = Vec::with_capacity(raw.len());
        let mut valid = true;
        for (group_index, names) in raw.iter().enumerate() {
            let group_place = format!("{place}[{group_index}]");
            if names.is_empty() {
                self.add(&group_place, "is an empty group");
                valid = false;
            }
            let mut group = Vec::with_capacity(names.len());
            for (name_index, text) in names.iter().enumerate() {
                let name_place = format!("{group_place}[{name_index}]");
                match self.endpoint(&name_place, text, roster) {
                    Some(node) if !seen.insert(node) => {
                        self.add(
                            &name_place,
                            format!("{node} is listed twice; a node is in one group"),
                        );
                        valid = false;
                    }
                    Some(node) => group.push(node),
                    None => valid = false,
                }
            }
            groups.push(group);
        }
        valid.then_some(Action::Partition(groups))
    }

    fn cut(&mut self, place: &str, raw: &RawCut, roster: Roster) -> Option<Action> {
        let from_place = format!("{place}.from");
        let from = self
            .required(&from_place, raw.from.as_ref())
            .and_then(|text| self.endpoint(&from_place, text, roster));
        let to_place = format!("{place}.to");
        let names = self.required(&to_place, raw.to.as_ref())?;
        if names.is_empty() {
            self.add(
                &to_place,
                "is empty (give the nodes that stop hearing from `from`)",
            );
            return None;
        }
        let mut to = Vec::with_capacity(names.len());
        let mut valid = true;
        for (index, text) in names.iter().enumerate() {
            let name_place = format!("{to_place}[{index}]");
            match self.endpoint(&name_place, text, roster) {
                Some(node) if Some(node) == from => {
                    self.add(
                        &name_place,
                        format!("{node} is also `from`; a node always hears itself"),
                    );
                    valid = false;
                }
                Some(node) if to.contains(&node) => {
                    self.add(&name_place, format!("{node} is listed twice"));
                    valid = false;
                }
                Some(node) => to.push(node),
                None => valid = false,
            }
        }
        let from = from?;
        valid.then_some(Action::Cut { from, to })
    }

    fn network_change(&mut self, place: &str, raw: &RawNetworkChange) -> Option<Action> {
        if raw.latency.is_none() && raw.drop.is_none() && raw.duplicate.is_none() {
            self.add(place, "changes nothing (give latency, drop or duplicate)");
            return None;
        }
        let mut valid = true;
        let mut change = NetworkChange::default();
        if let Some(latency) = &raw.latency {
            let latency_place = format!("{place}.latency");
            if latency.min.is_none() && latency.max.is_none() {
                self.add(&latency_place, "changes nothing (give min, max or both)");
                valid = false;
            }
            let min = latency
                .min
                .as_ref()
                .map(|min| self.duration(&format!("{latency_place}.min"), min));
            let max = latency
                .max
                .as_ref()
                .map(|max| self.duration(&format!("{latency_place}.max"), max));
            if let (Some(Some(min)), Some(Some(max))) = (min, max)
                && min > max
            {
                let message = format!("min {} is above max {}", show(min), show(max));
                self.add(&latency_place, message);
                valid = false;
            }
            valid &= min.is_none_or(|min| min.is_some()) && max.is_none_or(|max| max.is_some());
            change.latency_min = min.flatten();
            change.latency_max = max.flatten();
        }
        if let Some(drop) = raw.drop {
            change.drop = self.probability(&format!("{place}.drop"), drop);
            valid &= change.drop.is_some();
        }
        if let Some(duplicate) = raw.duplicate {
            change.duplicate = self.probability(&format!("{place}.duplicate"), duplicate);
            valid &= change.duplicate.is_some();
        }
        valid.then_some(Action::Network(change))
    }
}

impl Checker {
    fn workload(&mut self, raw: &RawWorkload, roster: Roster) -> Option<WorkloadSpec> {
        let clients = self.workload_clients(raw.clients.as_deref(), roster);
        let ops = self.count("workload.ops", raw.ops, 1, WORKLOAD_OPS_MAX);
        let locks = self.count("workload.locks", raw.locks, 1, WORKLOAD_LOCKS_MAX);
        let mix = match &raw.mix {
            None => Some(Mix {
                preempt: 0.4,
                release: 0.4,
                check: 0.2,
                linearizable: 0.0,
                acquire: 0.0,
                acquire_wait_ms: 0,
                shared: 0.0,
                permits: None,
            }),
            Some(mix) => self.mix(mix),
        };
        let think_default = (Duration::from_millis(10), Duration::from_millis(100));
        let think = match &raw.think {
            None => Some(think_default),
            Some(think) => {
                let (min, max) = (think.min.as_ref(), think.max.as_ref());
                self.range("workload.think", min, max, think_default)
            }
        };
        let (think_min, think_max) = think?;
        Some(WorkloadSpec {
            clients: clients?,
            ops: ops?,
            locks: locks?,
            mix: mix?,
            think_min,
            think_max,
        })
    }

    fn workload_clients(&mut self, raw: Option<&[String]>, roster: Roster) -> Option<Vec<u32>> {
        let Some(names) = raw else {
            self.add("workload.clients", "missing (e.g. [c1, c2])");
            return None;
        };
        if names.is_empty() {
            self.add(
                "workload.clients",
                "is empty (give the clients that run the workload)",
            );
            return None;
        }
        let mut clients = Vec::with_capacity(names.len());
        let mut valid = true;
        for (index, text) in names.iter().enumerate() {
            let place = format!("workload.clients[{index}]");
            match self.client(&place, text, roster) {
                Some(client) if clients.contains(&client) => {
                    self.add(&place, format!("c{client} is listed twice"));
                    valid = false;
                }
                Some(client) => clients.push(client),
                None => valid = false,
            }
        }
        valid.then_some(clients)
    }

    fn mix(&mut self, raw: &RawMix) -> Option<Mix> {
        let mut weight = |kind: &str, value: Option<f64>| {
            let place = format!("workload.mix.{kind}");
            match value {
                None => self.add(&place, "missing (a weight >= 0)"),
                Some(value) if value.is_finite() && value >= 0.0 => return Some(value),
                Some(value) => self.add(
                    &place,
                    format!("{value} is not a weight (use a number >= 0)"),
                ),
            }
            None
        };
        let preempt = weight("preempt", raw.preempt);
        let release = weight("release", raw.release);
        let check = weight("check", raw.check);
        let linearizable = match raw.linearizable {
            None => Some(0.0),
            Some(value) => self.probability("workload.mix.linearizable", value),
        };
        let acquire = match raw.acquire {
            None => Some(0.0),
            Some(value) if value.is_finite() && value >= 0.0 => Some(value),
            Some(value) => {
                let message = format!("{value} is not a weight (use a number >= 0)");
                self.add("workload.mix.acquire", message);
                None
            }
        };
        let acquire_wait = match &raw.acquire_wait {
            None => Some(Duration::from_secs(1)),
            Some(wait) => self.duration("workload.mix.acquire_wait", wait),
        };
        if raw.acquire_wait.is_some() && raw.acquire.is_none_or(|weight| weight == 0.0) {
            self.add(
                "workload.mix.acquire_wait",
                "given without an acquire weight above 0",
            );
        }
        let (preempt, release, check, acquire) = (preempt?, release?, check?, acquire?);
        let acquire_wait_ms = if acquire > 0.0 {
            u64::try_from(acquire_wait?.as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        if acquire_wait_ms > ACQUIRE_WAIT_MAX.as_millis() as u64 {
            let limit = show(ACQUIRE_WAIT_MAX);
            self.add(
                "workload.mix.acquire_wait",
                format!("is above the limit of {limit}"),
            );
            return None;
        }
        if preempt + release + check + acquire <= 0.0 {
            self.add(
                "workload.mix",
                "weights sum to 0; at least one must be above 0",
            );
            return None;
        }
        let shared = raw.shared.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&shared) {
            self.add("workload.mix.shared", "is a fraction, 0 to 1");
            return None;
        }
        let permits = match raw.permits {
            None => None,
            Some(permits) if (1..=i64::from(PERMITS_MAX)).contains(&permits) && shared > 0.0 => {
                u32::try_from(permits).ok()
            }
            Some(_) => {
                let message = format!("1 to {PERMITS_MAX}, and only with a shared fraction");
                self.add("workload.mix.permits", message);
                return None;
            }
        };
        Some(Mix {
            preempt,
            release,
            check,
            linearizable: linearizable?,
            acquire,
            acquire_wait_ms,
            shared,
            permits,
        })
    }

    fn rogues(&mut self, raw: &RawRogues) -> Option<RogueSpec> {
        let clients = self.count("rogues.clients", raw.clients, 1, ROGUES_MAX);
        let rate = match raw.rate.as_deref() {
            None => {
                self.add("rogues.rate", "missing (requests per second, e.g. 20/s)");
                None
            }
            Some(text) => self.rate("rogues.rate", text),
        };
        let mix = match &raw.mix {
            None => Some(RogueSpec::EVEN_MIX),
            Some(mix) => self.attack_mix(mix),
        };
        let until = match &raw.until {
            None => Some(None),
            Some(until) => self.duration("rogues.until", until).map(Some),
        };
        Some(RogueSpec {
            clients: clients?,
            rate_per_second: rate?,
            mix: mix?,
            until: until?,
        })
    }

    /// `20/s`: requests per second, above 0 and at most [`ROGUE_RATE_MAX`].
    fn rate(&mut self, place: &str, text: &str) -> Option<f64> {
        let number = text
            .strip_suffix("/s")
            .and_then(|n| n.trim().parse::<f64>().ok());
        match number {
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= ROGUE_RATE_MAX => Some(rate),
            Some(rate) => {
                let message =
                    format!("{rate}/s is out of range (above 0, at most {ROGUE_RATE_MAX}/s)");
                self.add(place, message);
                None
            }
            None => {
                self.add(
                    place,
                    format!("{text:?} is not a rate (write requests per second, e.g. 20/s)"),
                );
                None
            }
        }
    }

    /// Weights by attack kind; the kinds left out get 0, unknown kinds are named.
    fn attack_mix(&mut self, raw: &BTreeMap<String, f64>) -> Option<[f64; AttackKind::ALL.len()]> {
        let mut mix = [0.0; AttackKind::ALL.len()];
        let mut valid = true;
        for (name, &weight) in raw {
            let place = format!("rogues.mix.{name}");
            let Some(kind) = AttackKind::from_name(name) else {
                let known: Vec<&str> = AttackKind::ALL.iter().map(|k| k.name()).collect();
                self.add(
                    &place,
                    format!("is not an attack kind (use {})", known.join(", ")),
                );
                valid = false;
                continue;
            };
            if !(weight.is_finite() && weight >= 0.0) {
                self.add(
                    &place,
                    format!("{weight} is not a weight (use a number >= 0)"),
                );
                valid = false;
                continue;
            }
            let position = AttackKind::ALL
                .iter()
                .position(|k| *k == kind)
                .expect("listed");
            mix[position] = weight;
        }
        if valid && mix.iter().all(|weight| *weight <= 0.0) {
            self.add(
                "rogues.mix",
                "weights sum to 0; at least one must be above 0",
            );
            valid = false;
        }
        valid.then_some(mix)
    }

    /// `expect_violations: [name, ...]`: known checkers, each once.
    fn expect_violations(&mut self, raw: Option<&[String]>) -> BTreeSet<&'static str> {
        let mut names = BTreeSet::new();
        for (position, text) in raw.unwrap_or_default().iter().enumerate() {
            let place = format!("expect_violations[{position}]");
            match super::checkers::EXPECTABLE
                .iter()
                .find(|name| **name == text)
            {
                None => self.add(
                    &place,
                    format!(
                        "{text:?} is not a checker (use one of {})",
                        super::checkers::EXPECTABLE.join(", ")
                    ),
                ),
                Some(name) => {
                    if !names.insert(*name) {
                        self.add(&place, format!("{name} is listed twice"));
                    }
                }
            }
        }
        names
    }

    fn expect_final(
        &mut self,
        raw: Option<&BTreeMap<String, String>>,
        roster: Roster,
    ) -> BTreeMap<LockName, FinalState> {
        let mut expect_final = BTreeMap::new();
        for (lock, state) in raw.into_iter().flatten() {
            let place = format!("expect_final.{lock}");
            let lock = self.lock_name(&place, lock);
            let state = match self.name(&place, state, FINAL_STATE, roster) {
                Some(Name::Free) => Some(FinalState::Free),
                Some(Name::Node(Endpoint::Client(client))) => Some(FinalState::HeldBy(client)),
                Some(other) => unreachable!("{place}: {other:?} accepted as a final state"),
                None => None,
            };
            if let (Some(lock), Some(state)) = (lock, state) {
                expect_final.insert(lock, state);
            }
        }
        expect_final
    }

    /// Replays the network changes in time order from `initial`, so that no change leaves
    /// latency min above max (which the simulated network would refuse mid-run).
    fn network_changes(&mut self, initial: &NetworkParams, events: &[ScheduledEvent]) {
        let mut current = *initial;
        for event in events {
            let Action::Network(change) = &event.action else {
                continue;
            };
            current = change.apply_to(&current);
            if current.latency_min > current.latency_max {
                let message = format!(
                    "leaves latency min {} above max {} from {} on",
                    show(current.latency_min),
                    show(current.latency_max),
                    show(event.at)
                );
                self.add(&format!("events[{}].network", event.index), message);
                // Report each offending change once, judged against the file as written.
                current.latency_max = current.latency_min;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER_CRASH_AFTER_GRANT: &str = r#"
name: leader-crash-after-grant
description: c1 takes lock a, the leader crashes, and the new leader still knows that c1 holds a.
seed: 7
duration: 20s
cluster: {servers: 5, clients: 3}
network: {latency: {min: 1ms, max: 15ms}, drop: 0.01, duplicate: 0.01}
events:
  - {at: 1s, client: c1, op: preempt, lock: a, expect: granted}
  - {at: 2s, client: c2, op: preempt, lock: a, expect: {held_by: c1}}
  - {at: 3s, crash: leader}
  - {at: 6s, client: c2, op: check, lock: a, consistency: linearizable, expect: {owner: c1}}
  - {at: 7s, client: c3, op: release, lock: a, expect: not_owner}
  - {at: 8s, restart: all}
  - {at: 9s, partition: [[s1, s2], [s3, s4, s5, c1, c2, c3]]}
  - {at: 12s, heal: all}
  - {at: 13s, client: c1, op: release, lock: a, expect: released}
  - {at: 14s, client: c2, op: check, lock: a, consistency: linearizable, expect: free}
workload: {clients: [c3], ops: 200, locks: 4, mix: {preempt: 0.4, release: 0.4, check: 0.2}}
expect_final: {a: free}
"#;

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn minimal(cluster: &str) -> String {
        format!("name: n\ndescription: d\nduration: 5s\ncluster: {cluster}\n")
    }

    fn load(text: &str) -> Scenario {
        match parse_str(text, Format::Yaml, "test.yaml") {
            Ok(scenario) => scenario,
            Err(error) => panic!("scenario should load, got: {error}"),
        }
    }

    #[test]
    fn durations_take_ms_s_or_m_with_integer_or_decimal_numbers() {
        assert_eq!(parse_duration("250ms"), Some(millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(millis(1_500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0.25ms"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("007s"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn durations_without_a_known_unit_or_with_a_sign_are_refused() {
        for text in [
            "", "5", "s", "-1s", "+1s", "1h", "1 s", "1.s", ".5s", "1.5.5s", "1e3ms", "١s",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?} should not parse");
        }
    }

    #[test]
    fn durations_beyond_u64_nanoseconds_are_refused_not_wrapped() {
        assert_eq!(parse_duration("99999999999999999999999999999m"), None);
        assert_eq!(parse_duration("1000000000000000000000000000000000s"), None);
        let largest = u64::MAX / 1_000_000_000;
        assert!(parse_duration(&format!("{largest}s")).is_some());
    }

    #[test]
    fn durations_are_shown_in_the_units_files_use() {
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_secs(25)), "25s");
        assert_eq!(show(millis(250)), "250ms");
        assert_eq!(show(millis(1_500)), "1500ms");
        assert_eq!(show(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    #[test]
    fn without_a_leader_clients_spread_round_robin_from_s1() {
        let scenario = load(&minimal("{servers: 3, clients: 5}"));
        let connect: Vec<u32> = scenario.cluster.connect.values().map(|id| id.0).collect();
        assert_eq!(connect, vec![1, 2, 3, 1, 2]);
        assert_eq!(
            scenario.cluster.connect.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn with_a_leader_clients_start_at_the_follower_after_it_and_wrap() {
        let scenario = load(&minimal("{servers: 3, clients: 4, leader: s3}"));
        let connect: Vec<u32> = scenario.cluster.connect.values().map(|id| id.0).collect();
        assert_eq!(connect, vec![1, 2, 3, 1]);
        let scenario = load(&minimal("{servers: 3, clients: 4, leader: s1}"));
        let connect: Vec<u32> = scenario.cluster.connect.values().map(|id| id.0).collect();
        assert_eq!(connect, vec![2, 3, 1, 2]);
        assert_eq!(scenario.cluster.leader, Some(ServerId(1)));
    }

    #[test]
    fn an_explicit_connect_wins_and_the_rest_is_filled_in() {
        let scenario = load(&minimal("{servers: 3, clients: 3, connect: {c2: s3}}"));
        let connect: Vec<u32> = scenario.cluster.connect.values().map(|id| id.0).collect();
        assert_eq!(connect, vec![1, 3, 3]);
    }

    #[test]
    fn omitted_sections_take_their_defaults() {
        let scenario = load(&minimal("{servers: 1, clients: 0}"));
        assert_eq!(scenario.seed, 0);
        assert_eq!(scenario.settle, SETTLE_DEFAULT);
        assert_eq!(scenario.network, NetworkParams::default());
        assert_eq!(scenario.timing, Timing::default());
        assert!(scenario.events.is_empty());
        assert_eq!(scenario.workload, None);
        assert!(scenario.expect_final.is_empty());
        assert!(scenario.cluster.connect.is_empty());
    }

    #[test]
    fn the_leader_crash_story_loads_its_settings_workload_and_final_expectations() {
        let scenario = load(LEADER_CRASH_AFTER_GRANT);
        assert_eq!(scenario.name, "leader-crash-after-grant");
        assert_eq!(scenario.seed, 7);
        assert_eq!(scenario.duration, Duration::from_secs(20));
        assert_eq!(scenario.settle, SETTLE_DEFAULT);
        assert_eq!((scenario.cluster.servers, scenario.cluster.clients), (5, 3));
        assert_eq!(scenario.network.latency_min, millis(1));
        assert_eq!(scenario.network.latency_max, millis(15));
        assert_eq!(
            (scenario.network.drop, scenario.network.duplicate),
            (0.01, 0.01)
        );
        assert_eq!(
            scenario.expect_final,
            BTreeMap::from([(Arc::from("a"), FinalState::Free)])
        );
        let workload = scenario
            .workload
            .as_ref()
            .expect("the story has a workload");
        assert_eq!(
            (workload.clients.as_slice(), workload.ops, workload.locks),
            (&[3][..], 200, 4)
        );
        assert_eq!(
            workload.mix,
            Mix {
                preempt: 0.4,
                release: 0.4,
                check: 0.2,
                linearizable: 0.0,
                acquire: 0.0,
                acquire_wait_ms: 0,
                shared: 0.0,
                permits: None,
            }
        );
        assert_eq!(
            (workload.think_min, workload.think_max),
            (millis(10), millis(100))
        );
    }

    #[test]
    fn the_leader_crash_story_keeps_its_events_in_order_with_their_actions() {
        let scenario = load(LEADER_CRASH_AFTER_GRANT);
        assert_eq!(scenario.events.len(), 10);
        let times: Vec<Duration> = scenario.events.iter().map(|event| event.at).collect();
        assert_eq!(times[..3], [millis(1_000), millis(2_000), millis(3_000)]);
        let indexes: Vec<usize> = scenario.events.iter().map(|event| event.index).collect();
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        let lock: LockName = Arc::from("a");
        assert_eq!(
            scenario.events[1].action,
            Action::ClientOp {
                client: 2,
                op: OpKind::Preempt,
                lock: lock.clone(),
                consistency: Consistency::Local,
                timeout: None,
                expect: Some(Expect::HeldBy(1)),
                claim: Claim::EXCLUSIVE,
            }
        );
        assert_eq!(
            scenario.events[2].action,
            Action::Crash(CrashTarget::Leader)
        );
        assert_eq!(
            scenario.events[3].action,
            Action::ClientOp {
                client: 2,
                op: OpKind::Check,
                lock: lock.clone(),
                consistency: Consistency::Linearizable,
                timeout: None,
                expect: Some(Expect::Owner(1)),
                claim: Claim::EXCLUSIVE,
            }
        );
        assert_eq!(
            scenario.events[5].action,
            Action::Restart(RestartTarget::All)
        );
        let server = |n| Endpoint::Server(ServerId(n));
        let client = Endpoint::Client;
        let groups = vec![
            vec![server(1), server(2)],
            vec![
                server(3),
                server(4),
                server(5),
                client(1),
                client(2),
                client(3),
            ],
        ];
        assert_eq!(scenario.events[6].action, Action::Partition(groups));
        assert_eq!(scenario.events[7].action, Action::Heal);
    }

    #[test]
    fn the_expectations_of_the_story_follow_the_file() {
        let scenario = load(LEADER_CRASH_AFTER_GRANT);
        let expects: Vec<Option<Expect>> = scenario
            .events
            .iter()
            .filter_map(|event| match &event.action {
                Action::ClientOp { expect, .. } => Some(*expect),
                _ => None,
            })
            .collect();
        let wanted = [
            Expect::Granted,
            Expect::HeldBy(1),
            Expect::Owner(1),
            Expect::NotOwner,
            Expect::Released,
            Expect::Free,
        ];
        assert_eq!(expects, wanted.map(Some).to_vec());
    }

    #[test]
    fn events_are_sorted_by_time_keeping_file_order_among_equal_times() {
        let events = "events:\n  - {at: 3s, heal: all}\n  - {at: 1s, crash: s1}\n  \
                      - {at: 3s, restart: s1}\n";
        let text = minimal("{servers: 3, clients: 1}") + events;
        let scenario = load(&text);
        let order: Vec<usize> = scenario.events.iter().map(|event| event.index).collect();
        assert_eq!(order, vec![1, 0, 2]);
    }

    #[test]
    fn the_same_story_in_json_loads_to_the_same_scenario() {
        let json = r#"{"name": "n", "description": "d", "duration": "5s",
            "cluster": {"servers": 3, "clients": 2},
            "events": [{"at": "1s", "client": "c2", "op": "check", "lock": "x",
                        "consistency": "linearizable", "expect": {"owner": "c1"}},
                       {"at": "2s", "network": {"latency": {"max": "30ms"}, "drop": 0.5}}]}"#;
        let yaml = minimal("{servers: 3, clients: 2}")
            + "events:\n"
            + "  - {at: 1s, client: c2, op: check, lock: x, consistency: linearizable, \
               expect: {owner: c1}}\n"
            + "  - {at: 2s, network: {latency: {max: 30ms}, drop: 0.5}}\n";
        let from_json = parse_str(json, Format::Json, "test.json").expect("json loads");
        assert_eq!(from_json, load(&yaml));
        let change = NetworkChange {
            latency_max: Some(millis(30)),
            drop: Some(0.5),
            ..NetworkChange::default()
        };
        assert_eq!(from_json.events[1].action, Action::Network(change));
    }

    #[test]
    fn with_seed_replaces_only_the_seed() {
        let scenario = load(LEADER_CRASH_AFTER_GRANT);
        let reseeded = scenario.clone().with_seed(99);
        assert_eq!(reseeded.seed, 99);
        assert_eq!(
            Scenario {
                seed: 7,
                ..reseeded
            },
            scenario
        );
    }

    #[test]
    fn extensions_pick_the_format_in_any_case() {
        assert_eq!(Format::from_path(Path::new("a.yaml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.YML")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.toml")), None);
        assert_eq!(Format::from_path(Path::new("yaml")), None);
    }
}
