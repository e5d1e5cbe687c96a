//! Watchers in the simulator, and the `watch_streams` checker (docs/design.md, "Watches").
//!
//! A watcher belongs to a scenario client (`{client: c3, op: watch, lock: a}`, or `prefix: w`,
//! optionally `from: N`). It watches through one server at a time over a connection of its
//! own, modelled as TCP is: replies arrive in order or the connection breaks. It breaks when the
//! server crashes or a partition separates them; the watcher also gives up on a server it heard
//! nothing from for [`SILENCE_RESUME`] (a partitioned follower goes quiet, and quiet looks like
//! idle). Either way it resumes on the next server `from` the index after the last it knew, as
//! a real client would. It acknowledges what it heard every [`TICK`].
//!
//! The checker never reads the node's watch code: it replays the committed log (as the first
//! server to apply each index reported it) through a fresh lock table, diffs every lock before
//! and after each entry, and requires each stream to be a gap-free, duplicate-free, in-order
//! subsequence of those changes for what it watches, and every `current` state to be the
//! table's at its index.

use super::checkers::Violation;
use super::cluster::{Cluster, Event};
use super::queue::QueueFull;
use crate::net::Endpoint;
use crate::node::watch::{Change, LockChange, LockState, LockView, WatchInput, WatchReply};
use crate::node::{ClientAddr, ClientId, Command, LockName, LockTable, LogIndex, ServerId, Time};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use crate::node::watch::WatchTarget;

/// Each watch stream is a gap-free, duplicate-free, in-order subsequence of the committed
/// changes of what it watches, and each state it was given is the committed state at its index.
pub const WATCH_STREAMS: &str = "watch_streams";

/// How often a watcher acknowledges what it heard and looks at its connection.
pub const TICK: Duration = Duration::from_millis(100);
/// A watcher that heard nothing for this long resumes on the next server.
pub const SILENCE_RESUME: Duration = Duration::from_secs(2);
/// Most watchers in one run; more scripted watches are ignored with a fault note.
pub const WATCHERS_MAX: usize = 64;
/// Most lines one watcher records (starts, replies, breaks); past it the watcher stops, so
/// a run's memory stays bounded.
pub const WATCH_LINES_MAX: usize = 200_000;

/// Watch connections' addresses: apart from clients' (their numbers) and rogues' (bit 63).
const WATCH_ADDRESS_BIT: u64 = 1 << 62;

/// What a watcher recorded, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchLineKind {
    /// It asked `server` to start watching, from this index (`None`: from now).
    Start { from: Option<LogIndex> },
    /// `server` told it this.
    Reply(WatchReply),
    /// The connection to `server` broke or was given up, and why.
    Broken { reason: &'static str },
}

#[derive(Clone, Debug, PartialEq)]
pub struct WatchLine {
    pub at: Time,
    pub server: u32,
    pub kind: WatchLineKind,
}

#[derive(Copy, Clone, Debug)]
struct Connection {
    server: u32,
    incarnation: u32,
    address: ClientAddr,
    /// The index of the last event heard on this connection, and of the last acknowledged.
    heard: LogIndex,
    acknowledged: LogIndex,
}

/// One watcher and everything it heard.
#[derive(Clone, Debug)]
pub struct SimWatcher {
    /// The scenario client it belongs to (1-based).
    pub client: u32,
    pub target: WatchTarget,
    pub lines: Vec<WatchLine>,
    /// The `from` of its first start.
    first_from: Option<LogIndex>,
    connection: Option<Connection>,
    /// The last server it used, so that it resumes on the next one.
    server: u32,
    attempts: u32,
    /// The last index it knows everything through (an event's, or a `current` answer's).
    known: Option<LogIndex>,
    last_heard: Time,
}

impl SimWatcher {
    fn record(&mut self, at: Time, server: u32, kind: WatchLineKind) {
        if self.lines.len() < WATCH_LINES_MAX {
            self.lines.push(WatchLine { at, server, kind });
        }
    }
}

/// The run's watchers. Empty in runs without watches: then nothing here draws, schedules or
/// records anything, and such runs' traces are what they were before watches.
#[derive(Clone, Debug, Default)]
pub struct SimWatchers {
    pub watchers: Vec<SimWatcher>,
}

impl SimWatchers {
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// A reply from `server` to `to`: recorded by its watcher if it is for the watcher's
    /// current connection and the network lets it through; a reply the network cuts breaks
    /// the connection (a stream loses nothing silently).
    pub fn on_reply(
        &mut self,
        now: Time,
        server: u32,
        to: ClientAddr,
        reply: WatchReply,
        reachable: impl Fn(u32) -> bool,
    ) {
        let Some(watcher) = self.watchers.iter_mut().find(|watcher| {
            watcher
                .connection
                .is_some_and(|c| c.address == to && c.server == server)
        }) else {
            return; // for a connection its watcher gave up
        };
        if !reachable(watcher.client) {
            watcher.connection = None;
            let reason = "partitioned from its server";
            watcher.record(now, server, WatchLineKind::Broken { reason });
            return;
        }
        watcher.last_heard = now;
        let connection = watcher.connection.as_mut().expect("matched above");
        match &reply {
            WatchReply::Event { event, .. } => {
                connection.heard = event.index;
                watcher.known = Some(event.index);
            }
            WatchReply::Current { index, .. } => watcher.known = Some(*index),
            WatchReply::Cancelled { .. } | WatchReply::Refused { .. } => {
                watcher.connection = None;
            }
            WatchReply::Resumed { .. } => {}
        }
        watcher.record(now, server, WatchLineKind::Reply(reply));
    }
}

fn address(watcher: usize, attempt: u32) -> ClientAddr {
    ClientAddr(WATCH_ADDRESS_BIT | ((watcher as u64) << 32) | u64::from(attempt))
}

/// Starts a watcher for `client` on its first server, from `from` (or from now).
pub fn start(
    cluster: &mut Cluster,
    client: u32,
    target: WatchTarget,
    from: Option<LogIndex>,
    first_server: u32,
) -> Result<(), QueueFull> {
    let number = cluster.watchers.watchers.len();
    if number >= WATCHERS_MAX {
        cluster.note_fault(format!(
            "watch of c{client} ignored: {WATCHERS_MAX} watchers run"
        ));
        return Ok(());
    }
    let now = cluster.now();
    cluster.watchers.watchers.push(SimWatcher {
        client,
        target,
        lines: Vec::new(),
        first_from: from,
        connection: None,
        server: first_server,
        attempts: 0,
        known: None,
        last_heard: now,
    });
    connect(cluster, number, first_server)?;
    let watcher = u32::try_from(number).expect("watchers are bounded");
    cluster.queue.push(now + TICK, Event::WatchTick(watcher))
}

/// Opens a new connection of watcher `number` to `server` and starts its watch there.
fn connect(cluster: &mut Cluster, number: usize, server: u32) -> Result<(), QueueFull> {
    let now = cluster.now();
    let incarnation = cluster.watchable_incarnation(server);
    let watcher = &mut cluster.watchers.watchers[number];
    watcher.attempts += 1;
    watcher.server = server;
    watcher.last_heard = now;
    let from = watcher.known.map(|known| known + 1).or(watcher.first_from);
    watcher.record(now, server, WatchLineKind::Start { from });
    let client = Endpoint::Client(watcher.client);
    let to_server = Endpoint::Server(ServerId(server));
    let reachable = cluster.network().can_deliver(client, to_server);
    let (Some(incarnation), true) = (incarnation, reachable) else {
        let reason = "its server is down, paused or cut off";
        let watcher = &mut cluster.watchers.watchers[number];
        watcher.record(now, server, WatchLineKind::Broken { reason });
        return Ok(());
    };
    let watcher = &mut cluster.watchers.watchers[number];
    let address = address(number, watcher.attempts);
    watcher.connection = Some(Connection {
        server,
        incarnation,
        address,
        heard: 0,
        acknowledged: 0,
    });
    let target = watcher.target.clone();
    let input = WatchInput::Start {
        from: address,
        id: 1,
        target,
        from_index: from,
        credential: None,
    };
    cluster.step_watch(server, input)
}

/// Every [`TICK`]: acknowledges what the watcher heard, notices a broken or silent
/// connection, and resumes on the next server when it has none.
pub fn tick(cluster: &mut Cluster, watcher: u32) -> Result<(), QueueFull> {
    let number = watcher as usize;
    let now = cluster.now();
    let servers = cluster.server_count();
    let Some(connection) = cluster.watchers.watchers[number].connection else {
        let next = cluster.watchers.watchers[number].server % servers + 1;
        connect(cluster, number, next)?;
        return cluster.queue.push(now + TICK, Event::WatchTick(watcher));
    };
    let server = connection.server;
    let client = Endpoint::Client(cluster.watchers.watchers[number].client);
    let to_server = Endpoint::Server(ServerId(server));
    let alive = cluster.watchable_incarnation(server) == Some(connection.incarnation);
    let reachable = cluster.network().can_deliver(client, to_server)
        && cluster.network().can_deliver(to_server, client);
    let silent_since = cluster.watchers.watchers[number].last_heard;
    let broken = if !alive {
        Some("its server crashed or paused")
    } else if !reachable {
        Some("partitioned from its server")
    } else if now.saturating_since(silent_since) >= SILENCE_RESUME {
        let closed = WatchInput::Closed {
            from: connection.address,
        };
        cluster.step_watch(server, closed)?;
        Some("silent: resuming elsewhere")
    } else {
        None
    };
    let watcher_state = &mut cluster.watchers.watchers[number];
    if let Some(reason) = broken {
        watcher_state.connection = None;
        watcher_state.record(now, server, WatchLineKind::Broken { reason });
    } else if connection.heard > connection.acknowledged {
        if let Some(live) = watcher_state.connection.as_mut() {
            live.acknowledged = connection.heard;
        }
        let acknowledge = WatchInput::Acknowledge {
            from: connection.address,
            id: 1,
            through: connection.heard,
        };
        cluster.step_watch(server, acknowledge)?;
    }
    cluster.queue.push(now + TICK, Event::WatchTick(watcher))
}

// ----- the checker -----

/// One watcher's stream, as the checker sees it: what servers told it, in order.
#[derive(Clone, Debug)]
pub struct Stream {
    pub name: String,
    pub target: WatchTarget,
    /// The `from` of the watcher's first start: a stream that begins `resumed` is judged from
    /// there. Later resumptions are judged from what the stream itself told, not from what the
    /// watcher asked.
    pub first_from: Option<LogIndex>,
    pub replies: Vec<(u32, WatchReply)>,
}

impl SimWatcher {
    pub fn stream(&self, name: String) -> Stream {
        let replies = self.lines.iter().filter_map(|line| match &line.kind {
            WatchLineKind::Reply(reply) => Some((line.server, reply.clone())),
            _ => None,
        });
        Stream {
            name,
            target: self.target.clone(),
            first_from: self.first_from,
            replies: replies.collect(),
        }
    }
}

/// The committed changes, derived from the committed log alone: every lock of the table
/// diffed before and after each entry, and the states the streams asked about.
struct Reference {
    /// Index -> every change there, in lock-name order.
    changes: BTreeMap<LogIndex, Vec<LockChange>>,
    /// (index, target) -> the state of what the target covers after that index.
    states: BTreeMap<(LogIndex, String), Vec<LockState>>,
}

fn target_key(target: &WatchTarget) -> String {
    match target {
        WatchTarget::Lock(lock) => format!("lock {lock}"),
        WatchTarget::Prefix(prefix) => format!("prefix {prefix}"),
    }
}

/// Every lock `table` knows of (held in either mode, or queued for), with all its holders and
/// its queue length. Read from the table's maps directly, not through `LockView::of`.
fn all_views(table: &LockTable) -> BTreeMap<LockName, LockView> {
    let mut views: BTreeMap<LockName, LockView> = BTreeMap::new();
    for (lock, holder) in table.locks() {
        views.entry(lock.clone()).or_default().holders.push(*holder);
    }
    for (lock, holders) in table.shared_holders() {
        let view = views.entry(lock.clone()).or_default();
        view.holders.extend(holders.iter().copied());
        view.holders
            .sort_by_key(|holder| (holder.token, holder.owner));
    }
    for (lock, queue) in table.queues() {
        let waiters = u32::try_from(queue.len()).unwrap_or(u32::MAX);
        views.entry(lock.clone()).or_default().waiters = waiters;
    }
    views
}

/// The changes between two full views of the table, for the entry `command`: per lock, every
/// holder that left (expired under an expiry, else released), every holder that came, then the
/// queue length, each in token-then-owner order.
fn diff(
    command: &Command,
    before: &BTreeMap<LockName, LockView>,
    after: &BTreeMap<LockName, LockView>,
) -> Vec<LockChange> {
    let names: BTreeSet<&LockName> = before.keys().chain(after.keys()).collect();
    let empty = LockView::default();
    let mut changes = Vec::new();
    for name in names {
        let old = before.get(name).unwrap_or(&empty);
        let new = after.get(name).unwrap_or(&empty);
        let mut push = |change| {
            changes.push(LockChange {
                lock: name.clone(),
                change,
            })
        };
        let expiry = matches!(command, Command::Expire { .. });
        for lost in old.holders.iter().filter(|h| !new.holders.contains(h)) {
            push(match expiry {
                true => Change::Expired { owner: lost.owner },
                false => Change::Released { owner: lost.owner },
            });
        }
        for holder in new.holders.iter().filter(|h| !old.holders.contains(h)) {
            let (owner, token) = (holder.owner, holder.token);
            push(Change::Granted { owner, token });
        }
        if old.waiters != new.waiters {
            push(Change::Queue {
                waiters: new.waiters,
            });
        }
    }
    changes
}

fn state_of(views: &BTreeMap<LockName, LockView>, target: &WatchTarget) -> Vec<LockState> {
    match target {
        WatchTarget::Lock(lock) => vec![LockState {
            lock: lock.clone(),
            view: views.get(lock).cloned().unwrap_or_default(),
        }],
        WatchTarget::Prefix(_) => (views.iter())
            .filter(|(lock, _)| target.covers(lock))
            .map(|(lock, view)| LockState {
                lock: lock.clone(),
                view: view.clone(),
            })
            .collect(),
    }
}

/// Replays the committed log through `last` (it must hold every index up to it).
fn replay<'a>(
    committed: impl Fn(LogIndex) -> Option<&'a Command>,
    last: LogIndex,
    asked: &BTreeMap<LogIndex, Vec<WatchTarget>>,
) -> Result<Reference, String> {
    let mut table = LockTable::new();
    let mut views = all_views(&table);
    let mut reference = Reference {
        changes: BTreeMap::new(),
        states: BTreeMap::new(),
    };
    let mut answer = |index: LogIndex, views: &BTreeMap<LockName, LockView>| {
        for target in asked.get(&index).into_iter().flatten() {
            let key = (index, target_key(target));
            reference.states.insert(key, state_of(views, target));
        }
    };
    answer(0, &views);
    for index in 1..=last {
        let Some(command) = committed(index) else {
            return Err(format!(
                "index {index} was heard of but no server applied it"
            ));
        };
        let _ = table.apply(index, command);
        let after = all_views(&table);
        let changes = diff(command, &views, &after);
        if !changes.is_empty() {
            reference.changes.insert(index, changes);
        }
        views = after;
        answer(index, &views);
    }
    Ok(reference)
}

/// `watch_streams` over `streams`, given the committed log. Returns the number of events
/// checked, or what broke.
pub fn check_streams<'a>(
    committed: impl Fn(LogIndex) -> Option<&'a Command>,
    streams: &[Stream],
) -> Result<u64, String> {
    let mut last = 0;
    let mut asked: BTreeMap<LogIndex, Vec<WatchTarget>> = BTreeMap::new();
    for stream in streams {
        for (_, reply) in &stream.replies {
            match reply {
                WatchReply::Event { event, .. } => last = last.max(event.index),
                WatchReply::Current { index, .. } => {
                    last = last.max(*index);
                    asked.entry(*index).or_default().push(stream.target.clone());
                }
                _ => {}
            }
        }
    }
    let reference = replay(committed, last, &asked)?;
    let mut checked = 0;
    for stream in streams {
        checked += check_stream(&reference, stream)?;
    }
    Ok(checked)
}

/// Changes as a watcher reads them on the wire (one JSON array), for violation messages.
fn wire(changes: &[LockChange]) -> String {
    serde_json::to_string(changes).expect("lock changes serialise")
}

fn covered(target: &WatchTarget, changes: &[LockChange]) -> Vec<LockChange> {
    let covered = changes.iter().filter(|change| target.covers(&change.lock));
    covered.cloned().collect()
}

fn check_stream(reference: &Reference, stream: &Stream) -> Result<u64, String> {
    let name = &stream.name;
    // The index the watcher knows everything through; `None` before it knows anything.
    let mut known: Option<LogIndex> = None;
    let mut checked = 0;
    for (server, reply) in &stream.replies {
        match reply {
            WatchReply::Current { index, state, .. } => {
                let key = (*index, target_key(&stream.target));
                let expected = reference.states.get(&key).expect("asked for in the replay");
                if state != expected {
                    return Err(format!(
                        "{name}: s{server} gave the state at {index} as {state:?}; the \
                         committed log has {expected:?}"
                    ));
                }
                known = Some(*index);
            }
            WatchReply::Event { event, .. } => {
                let index = event.index;
                let Some(through) = known else {
                    return Err(format!(
                        "{name}: s{server} sent event {index} before a start"
                    ));
                };
                if index <= through {
                    let what = if index == through {
                        "again"
                    } else {
                        "out of order"
                    };
                    return Err(format!(
                        "{name}: s{server} sent event {index} {what}, after {through}"
                    ));
                }
                let between = reference.changes.range(through + 1..index);
                let missed = between.into_iter().find_map(|(at, changes)| {
                    let lost = covered(&stream.target, changes);
                    (!lost.is_empty()).then_some((*at, lost))
                });
                if let Some((at, lost)) = missed {
                    return Err(format!(
                        "{name}: a gap: s{server} sent event {index} after {through}, but the \
                         committed log changed {} at {at}",
                        wire(&lost)
                    ));
                }
                let expected = reference.changes.get(&index).map(Vec::as_slice);
                let expected = covered(&stream.target, expected.unwrap_or_default());
                if event.changes != expected {
                    return Err(format!(
                        "{name}: s{server} sent {} at {index}; the committed log changed {}",
                        wire(&event.changes),
                        wire(&expected)
                    ));
                }
                known = Some(index);
                checked += 1;
            }
            WatchReply::Resumed { .. } if known.is_none() => {
                let Some(from) = stream.first_from else {
                    return Err(format!(
                        "{name}: s{server} resumed a watch that gave no from"
                    ));
                };
                known = Some(from.saturating_sub(1));
            }
            WatchReply::Resumed { .. }
            | WatchReply::Cancelled { .. }
            | WatchReply::Refused { .. } => {}
        }
    }
    Ok(checked)
}

/// Runs `watch_streams` on the cluster's watchers at the end of a run.
pub fn final_check(cluster: &Cluster, now: Time) -> Result<u64, Violation> {
    let streams: Vec<Stream> = (cluster.watchers.watchers.iter().enumerate())
        .map(|(number, watcher)| {
            let name = format!("watch {} of c{}", number + 1, watcher.client);
            watcher.stream(name)
        })
        .collect();
    check_streams(|index| cluster.committed_command(index), &streams)
        .map_err(|message| Violation::new(WATCH_STREAMS, now, message))
}

// ----- the history -----

/// What every watcher recorded, one JSON object per line (README, "Histories"), in watcher
/// order and then time order; `name` gives a client id its history name (`c1`).
pub fn history_lines(watchers: &SimWatchers, name: impl Fn(ClientId) -> String) -> Vec<Value> {
    let mut lines = Vec::new();
    for (number, watcher) in watchers.watchers.iter().enumerate() {
        for line in &watcher.lines {
            let mut object = Map::new();
            object.insert("client".into(), json!(format!("c{}", watcher.client)));
            object.insert("op".into(), json!(super::history::WATCH_OP));
            object.insert("watch".into(), json!(number + 1));
            match &watcher.target {
                WatchTarget::Lock(lock) => object.insert("lock".into(), json!(&**lock)),
                WatchTarget::Prefix(prefix) => object.insert("prefix".into(), json!(prefix)),
            };
            object.insert("server".into(), json!(format!("s{}", line.server)));
            object.insert("at".into(), json!(line.at.as_nanos()));
            describe_line(&mut object, &line.kind, &name);
            lines.push(Value::Object(object));
        }
    }
    lines
}

fn describe_line(
    object: &mut Map<String, Value>,
    kind: &WatchLineKind,
    name: &dyn Fn(ClientId) -> String,
) {
    let mut put = |key: &str, value: Value| {
        object.insert(key.to_string(), value);
    };
    match kind {
        WatchLineKind::Start { from } => {
            put("kind", json!("start"));
            put("from", json!(from));
        }
        WatchLineKind::Broken { reason } => {
            put("kind", json!("broken"));
            put("reason", json!(reason));
        }
        WatchLineKind::Reply(WatchReply::Current {
            index,
            state,
            compacted,
            ..
        }) => {
            put("kind", json!("current"));
            put("index", json!(index));
            let state: Vec<Value> = state.iter().map(|s| lock_state_json(s, name)).collect();
            put("state", Value::Array(state));
            put("compacted", json!(compacted));
        }
        WatchLineKind::Reply(WatchReply::Resumed { index, .. }) => {
            put("kind", json!("resumed"));
            put("index", json!(index));
        }
        WatchLineKind::Reply(WatchReply::Event { event, .. }) => {
            put("kind", json!("event"));
            put("index", json!(event.index));
            let changes = event.changes.iter().map(|c| change_json(c, name)).collect();
            put("changes", Value::Array(changes));
        }
        WatchLineKind::Reply(WatchReply::Cancelled { reason, .. }) => {
            put("kind", json!("cancelled"));
            put(
                "reason",
                serde_json::to_value(reason).unwrap_or(Value::Null),
            );
        }
        WatchLineKind::Reply(WatchReply::Refused { refusal, .. }) => {
            put("kind", json!("refused"));
            put(
                "reason",
                serde_json::to_value(refusal).unwrap_or(Value::Null),
            );
        }
    }
}

fn lock_state_json(state: &LockState, name: &dyn Fn(ClientId) -> String) -> Value {
    let holders: Vec<Value> = (state.view.holders.iter())
        .map(|holder| json!({"owner": name(holder.owner), "token": holder.token}))
        .collect();
    json!({"lock": &*state.lock, "holders": holders, "waiters": state.view.waiters})
}

fn change_json(change: &LockChange, name: &dyn Fn(ClientId) -> String) -> Value {
    let lock = &*change.lock;
    match change.change {
        Change::Granted { owner, token } => {
            json!({"lock": lock, "change": "granted", "owner": name(owner), "token": token})
        }
        Change::Released { owner } => {
            json!({"lock": lock, "change": "released", "owner": name(owner)})
        }
        Change::Expired { owner } => {
            json!({"lock": lock, "change": "expired", "owner": name(owner)})
        }
        Change::Queue { waiters } => json!({"lock": lock, "change": "queue", "waiters": waiters}),
    }
}

/// Writes [`history_lines`] as JSON Lines, after the operations of a history file.
pub fn write_jsonl(lines: &[Value], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for line in lines {
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
