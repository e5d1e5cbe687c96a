//! Watches (docs/design.md, "Watches"): a client's stream of the committed changes of one lock
//! or of every lock under a prefix, in commit order, each event carrying its log index.
//!
//! Any server serves a watch from its own applied state: every replica applies the same entries
//! in the same order, so every replica computes the same changes at the same index, and a client
//! resumes on another server `from` the index after the last one it saw, with no gap and no
//! repeat. Each server keeps the changes of its latest entries in a bounded ring to serve such
//! resumptions; older ones get the current state instead (`compacted`).
//!
//! Like the rest of `node`, this never reads a clock or a socket: [`WatchState`] is fed the
//! entries the server applies and the driver's [`WatchInput`]s, and pushes
//! [`ServerOutput::Watch`] effects. What a lock's changes are is decided in ONE function,
//! [`lock_changes`], from the lock's [`LockView`] before and after apply.

use super::lock_table::{Holder, LockTable};
use super::messages::{
    ClientAddr, ClientId, ClientSecret, Command, LOCK_NAME_BYTES_MAX, LockName, LogIndex,
    ServiceError,
};
use super::server::ServerOutput;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

/// Most watches one server serves at once; one more is refused `too_many_watches`.
pub const WATCHES_PER_SERVER_MAX: usize = 1_024;
/// Most watches one connection holds at once.
pub const WATCHES_PER_CONNECTION_MAX: usize = 16;
/// Most changes a server keeps to serve watches resumed from an old index (the oldest entries'
/// changes are dropped first).
pub const WATCH_HISTORY_CHANGES_MAX: usize = 16_384;
/// Most events of one watch sent and not yet acknowledged by the driver. Past it the watch
/// waits in the ring; a watch the ring leaves behind is cancelled `fell_behind`.
pub const WATCH_EVENTS_UNACKNOWLEDGED_MAX: usize = 64;
/// Longest prefix a watch may name, in bytes: a lock name's limit.
pub const WATCH_PREFIX_BYTES_MAX: usize = LOCK_NAME_BYTES_MAX;

/// What a watch covers.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchTarget {
    /// One lock, by name.
    Lock(LockName),
    /// Every lock whose name starts with this (the empty prefix: every lock).
    Prefix(String),
}

impl WatchTarget {
    pub fn covers(&self, lock: &str) -> bool {
        match self {
            WatchTarget::Lock(name) => &**name == lock,
            WatchTarget::Prefix(prefix) => lock.starts_with(prefix.as_str()),
        }
    }

    /// Why a client may not watch this, if it may not.
    fn problem(&self) -> Option<String> {
        match self {
            WatchTarget::Lock(name) if name.is_empty() => Some("the lock name is empty".into()),
            WatchTarget::Lock(name) if name.len() > LOCK_NAME_BYTES_MAX => Some(format!(
                "the lock name is {} bytes long; the limit is {LOCK_NAME_BYTES_MAX}",
                name.len()
            )),
            WatchTarget::Prefix(prefix) if prefix.len() > WATCH_PREFIX_BYTES_MAX => Some(format!(
                "the prefix is {} bytes long; the limit is {WATCH_PREFIX_BYTES_MAX}",
                prefix.len()
            )),
            _ => None,
        }
    }
}

/// What a watcher can know of one lock: every holder and how many wait for it.
///
/// `holders` is sorted by token, then owner: grant order, with shared holders granted in one
/// entry (same token) by client id, so two replicas' views of one state are equal. An
/// exclusive lock has one holder; a shared lock or semaphore has one per reader or permit.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct LockView {
    pub holders: Vec<Holder>,
    pub waiters: u32,
}

impl LockView {
    /// `lock` as `table` has it now.
    pub fn of(table: &LockTable, lock: &str) -> LockView {
        let waiters = table.queues().get(lock).map_or(0, VecDeque::len);
        LockView {
            holders: sorted_holders(table.holders(lock)),
            waiters: u32::try_from(waiters).expect("queues are bounded far below u32::MAX"),
        }
    }
}

/// `holders` in a view's order: by token, then owner.
fn sorted_holders(mut holders: Vec<Holder>) -> Vec<Holder> {
    holders.sort_by_key(|holder| (holder.token, holder.owner));
    holders
}

/// One fact about a lock that a committed entry made true.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// The lock has a new holder (one of several, for a shared lock), with this fencing token.
    Granted { owner: ClientId, token: LogIndex },
    /// This holder released it.
    Released { owner: ClientId },
    /// This holder's session ended, and with it its hold of the lock.
    Expired { owner: ClientId },
    /// The number of waiters in its queue changed to this.
    Queue { waiters: u32 },
}

/// A change of one named lock.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LockChange {
    pub lock: LockName,
    #[serde(flatten)]
    pub change: Change,
}

/// What one watch gets for one log index: the changes at that index of the locks it covers,
/// in lock-name order (per lock, as [`lock_changes`] orders them: released or expired holders,
/// then granted ones, then queue).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct WatchEvent {
    pub index: LogIndex,
    pub changes: Vec<LockChange>,
}

/// A lock's state in a `current` answer.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LockState {
    pub lock: LockName,
    #[serde(flatten)]
    pub view: LockView,
}

/// Who asks for a watch, as a request line names it: checked like a `check`'s credentials,
/// against the registrations this server has applied (a watch reveals what a check does).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct WatchCredential {
    pub client: ClientId,
    pub secret: Option<ClientSecret>,
}

/// What the driver tells the server about watches. `from` is the connection; `id` the watch's
/// id, chosen by the client, unique on its connection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WatchInput {
    /// Starts a watch: from `from_index` (changes at indexes >= it), or from now (`None`).
    /// `credential`: the TCP driver MUST pass the request's; `None` is for a driver whose
    /// watchers are its own (the simulator's, which belong to scenario clients).
    Start {
        from: ClientAddr,
        id: u64,
        target: WatchTarget,
        from_index: Option<LogIndex>,
        credential: Option<WatchCredential>,
    },
    /// The client stops the watch: answered `cancelled { stopped }`, also when no watch has
    /// that id (any more), so that every stop gets an answer.
    Stop { from: ClientAddr, id: u64 },
    /// The events of the watch through `through` left the driver: more may be sent.
    Acknowledge {
        from: ClientAddr,
        id: u64,
        through: LogIndex,
    },
    /// The connection closed: its watches end, with nothing sent.
    Closed { from: ClientAddr },
}

/// What a server tells a watcher, in order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchReply {
    /// The state of what the watch covers at `index` (every covered lock held or queued for; a
    /// lock watched by name even when free); events after `index` follow. `compacted`: the
    /// watch asked for an index at or below it, whose changes this server no longer keeps.
    Current {
        id: u64,
        index: LogIndex,
        state: Vec<LockState>,
        compacted: Option<LogIndex>,
    },
    /// The watch is served from its `from_index`; `index` is this server's applied index now.
    Resumed {
        id: u64,
        index: LogIndex,
    },
    Event {
        id: u64,
        event: WatchEvent,
    },
    /// The watch ended; nothing more follows for `id`.
    Cancelled {
        id: u64,
        reason: WatchCancel,
    },
    /// The watch was not started; nothing was registered.
    Refused {
        id: u64,
        refusal: WatchRefusal,
    },
}

impl WatchReply {
    pub fn id(&self) -> u64 {
        match self {
            WatchReply::Current { id, .. }
            | WatchReply::Resumed { id, .. }
            | WatchReply::Event { id, .. }
            | WatchReply::Cancelled { id, .. }
            | WatchReply::Refused { id, .. } => *id,
        }
    }
}

/// Why a watch ended.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchCancel {
    /// Its client stopped it.
    Stopped,
    /// The server no longer keeps changes the watch has not been sent (it stayed behind, or the
    /// server installed a snapshot past it): resume from the last index seen.
    FellBehind { kept_after: LogIndex },
}

/// Why a watch was not started.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchRefusal {
    /// The server or the connection already serves its most watches.
    TooManyWatches {
        max: u32,
    },
    /// The connection already has a watch with this id.
    IdInUse,
    BadTarget {
        reason: String,
    },
    /// The credential's secret is not the one its client was registered with.
    Unauthorized,
    /// No registration this server applied issued the client id (a follower may not have
    /// applied it yet: ask again, or another server).
    UnknownClient {
        client: ClientId,
    },
}

/// The locks applying `command` to `table` may change: its own lock and those of the client it
/// names (the lock it waits for, which any newer write of it leaves; for an expiry, every lock
/// it holds, exclusively or shared). Nothing else changes at apply.
pub fn touched_locks(table: &LockTable, command: &Command) -> Vec<LockName> {
    let mut locks: Vec<LockName> = Vec::new();
    match command {
        Command::Expire { client } => {
            locks.extend(table.waiting_for(*client).cloned());
            let held = table.locks().iter().filter(|(_, h)| h.owner == *client);
            locks.extend(held.map(|(lock, _)| lock.clone()));
            let shared = (table.shared_holders().iter())
                .filter(|(_, holders)| holders.iter().any(|h| h.owner == *client));
            locks.extend(shared.map(|(lock, _)| lock.clone()));
        }
        Command::Timeout { lock, .. } | Command::HandOver { lock } => locks.push(lock.clone()),
        Command::Noop
        | Command::Register { .. }
        | Command::MarkSilent { .. }
        | Command::Revive { .. } => {}
        Command::Preempt { .. }
        | Command::Release { .. }
        | Command::Acquire { .. }
        | Command::Cancel { .. } => {
            let (client, _, _, lock) = command.client_write().expect("a client write");
            locks.push(lock.clone());
            locks.extend(table.waiting_for(client).cloned());
        }
    }
    locks.sort();
    locks.dedup();
    locks
}

/// THE function that says what changed about one lock when `command` was applied: from its
/// view `before` and `after`. Each holder (owner and token) in `before` but not in `after` was
/// released, or expired if `command` is an expiry; each in `after` but not in `before` was
/// granted. Order: every lost holder, then every new one, each in the views' order (token,
/// then owner), then the queue length. An exclusive lock has at most one of each, so its
/// changes read `released`/`expired`, `granted`, `queue`.
#[must_use]
pub fn lock_changes(command: &Command, before: &LockView, after: &LockView) -> Vec<Change> {
    let mut changes = Vec::new();
    for lost in before.holders.iter().filter(|h| !after.holders.contains(h)) {
        changes.push(match command {
            Command::Expire { .. } => Change::Expired { owner: lost.owner },
            _ => Change::Released { owner: lost.owner },
        });
    }
    for gained in after.holders.iter().filter(|h| !before.holders.contains(h)) {
        changes.push(Change::Granted {
            owner: gained.owner,
            token: gained.token,
        });
    }
    if before.waiters != after.waiters {
        changes.push(Change::Queue {
            waiters: after.waiters,
        });
    }
    changes
}

/// One watch: a cursor into the ring and the events out, unacknowledged.
#[derive(Clone, Debug)]
struct Watch {
    target: WatchTarget,
    /// Every covered change at an index below this was sent (or predates the watch's start).
    next_index: LogIndex,
    /// The indexes of the events sent and not acknowledged, oldest first.
    unacknowledged: VecDeque<LogIndex>,
    /// The index of the last event sent (0: none yet).
    last_sent: LogIndex,
}

/// Changes applied at one index.
#[derive(Clone, Debug)]
struct Applied {
    index: LogIndex,
    changes: Vec<LockChange>,
}

/// A server's watches and the ring of recent changes. Volatile: rebuilt from the log on
/// restart (the ring) or dropped (the watches, whose clients resume elsewhere).
///
/// Calling contract: [`WatchState::touched_views`] MUST be taken just before each entry is
/// applied and handed to [`WatchState::on_applied`] just after, for every applied entry in
/// order; [`WatchState::on_snapshot_installed`] whenever the table jumps to a snapshot.
#[derive(Clone, Debug)]
pub struct WatchState {
    watches: BTreeMap<(ClientAddr, u64), Watch>,
    ring: VecDeque<Applied>,
    ring_changes: usize,
    /// The ring holds every change at indexes above this.
    kept_after: LogIndex,
    /// The table's applied index, as last seen.
    applied: LogIndex,
}

impl WatchState {
    /// For a server whose table starts at `applied` (its snapshot's index, or 0).
    pub fn new(applied: LogIndex) -> WatchState {
        WatchState {
            watches: BTreeMap::new(),
            ring: VecDeque::new(),
            ring_changes: 0,
            kept_after: applied,
            applied,
        }
    }

    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// The index above which this server keeps every change.
    pub fn kept_after(&self) -> LogIndex {
        self.kept_after
    }

    /// The views of the locks `command` may change, before it is applied.
    pub fn touched_views(table: &LockTable, command: &Command) -> Vec<(LockName, LockView)> {
        let locks = touched_locks(table, command);
        locks
            .into_iter()
            .map(|lock| {
                let view = LockView::of(table, &lock);
                (lock, view)
            })
            .collect()
    }

    /// The entry at `index` was applied to `table`: keeps its changes and sends them on.
    pub fn on_applied(
        &mut self,
        index: LogIndex,
        command: &Command,
        before: Vec<(LockName, LockView)>,
        table: &LockTable,
        out: &mut Vec<ServerOutput>,
    ) {
        assert_eq!(index, self.applied + 1, "watch: index {index} out of order");
        assert_eq!(
            index,
            table.applied_index(),
            "watch: told of an unapplied index"
        );
        self.applied = index;
        let mut changes = Vec::new();
        for (lock, view_before) in before {
            let view_after = LockView::of(table, &lock);
            for change in lock_changes(command, &view_before, &view_after) {
                changes.push(LockChange {
                    lock: lock.clone(),
                    change,
                });
            }
        }
        if changes.is_empty() {
            return;
        }
        let newest = self
            .ring
            .back()
            .map_or(self.kept_after, |applied| applied.index);
        assert!(index > newest, "watch: ring entry {index} after {newest}");
        self.ring_changes += changes.len();
        self.ring.push_back(Applied { index, changes });
        // Bounded: each turn drops one entry's changes, and the newest always stays.
        while self.ring_changes > WATCH_HISTORY_CHANGES_MAX && self.ring.len() > 1 {
            let dropped = self.ring.pop_front().expect("more than one in the ring");
            self.ring_changes -= dropped.changes.len();
            self.kept_after = dropped.index;
        }
        self.pump_all(out);
    }

    /// The table jumped to a snapshot at `index`: the changes between are unknown here.
    pub fn on_snapshot_installed(&mut self, index: LogIndex, out: &mut Vec<ServerOutput>) {
        assert!(
            index > self.applied,
            "watch: a snapshot behind what was applied"
        );
        self.ring.clear();
        self.ring_changes = 0;
        self.kept_after = index;
        self.applied = index;
        self.pump_all(out);
    }

    /// Handles a driver's input about watches.
    pub fn on_input(&mut self, input: WatchInput, table: &LockTable, out: &mut Vec<ServerOutput>) {
        assert_eq!(
            self.applied,
            table.applied_index(),
            "watch: missed an apply"
        );
        match input {
            WatchInput::Start {
                from,
                id,
                target,
                from_index,
                credential,
            } => {
                if let Some(refusal) = credential.and_then(|c| credential_refusal(table, c)) {
                    push(out, from, WatchReply::Refused { id, refusal });
                    return;
                }
                self.start(from, id, target, from_index, table, out);
            }
            WatchInput::Stop { from, id } => {
                // Idempotent: a watch already ended (fell behind) is stopped all the same.
                self.watches.remove(&(from, id));
                let reason = WatchCancel::Stopped;
                push(out, from, WatchReply::Cancelled { id, reason });
            }
            WatchInput::Acknowledge { from, id, through } => {
                let Some(watch) = self.watches.get_mut(&(from, id)) else {
                    return; // a late acknowledgement of an ended watch
                };
                while watch.unacknowledged.front().is_some_and(|&i| i <= through) {
                    watch.unacknowledged.pop_front();
                }
                self.pump((from, id), out);
            }
            WatchInput::Closed { from } => {
                self.watches
                    .retain(|(connection, _), _| *connection != from);
            }
        }
    }

    fn start(
        &mut self,
        from: ClientAddr,
        id: u64,
        target: WatchTarget,
        from_index: Option<LogIndex>,
        table: &LockTable,
        out: &mut Vec<ServerOutput>,
    ) {
        if let Some(refusal) = self.refusal(from, id, &target) {
            push(out, from, WatchReply::Refused { id, refusal });
            return;
        }
        let next_index = match from_index {
            Some(first) if first > self.kept_after => {
                push(
                    out,
                    from,
                    WatchReply::Resumed {
                        id,
                        index: self.applied,
                    },
                );
                first
            }
            older => {
                let state = current_state(table, &target);
                let compacted = older.map(|_| self.kept_after);
                let index = self.applied;
                push(
                    out,
                    from,
                    WatchReply::Current {
                        id,
                        index,
                        state,
                        compacted,
                    },
                );
                self.applied + 1
            }
        };
        let watch = Watch {
            target,
            next_index,
            unacknowledged: VecDeque::new(),
            last_sent: 0,
        };
        self.watches.insert((from, id), watch);
        self.pump((from, id), out);
    }

    fn refusal(&self, from: ClientAddr, id: u64, target: &WatchTarget) -> Option<WatchRefusal> {
        if let Some(reason) = target.problem() {
            return Some(WatchRefusal::BadTarget { reason });
        }
        if self.watches.contains_key(&(from, id)) {
            return Some(WatchRefusal::IdInUse);
        }
        let on_connection = self.watches.keys().filter(|(c, _)| *c == from).count();
        if on_connection >= WATCHES_PER_CONNECTION_MAX {
            let max = WATCHES_PER_CONNECTION_MAX as u32;
            return Some(WatchRefusal::TooManyWatches { max });
        }
        if self.watches.len() >= WATCHES_PER_SERVER_MAX {
            let max = WATCHES_PER_SERVER_MAX as u32;
            return Some(WatchRefusal::TooManyWatches { max });
        }
        None
    }

    fn pump_all(&mut self, out: &mut Vec<ServerOutput>) {
        let keys: Vec<(ClientAddr, u64)> = self.watches.keys().copied().collect();
        for key in keys {
            self.pump(key, out);
        }
    }

    /// Sends the watch what it may be sent from the ring, up to its unacknowledged bound;
    /// cancels it if the ring no longer holds what it needs next.
    fn pump(&mut self, key: (ClientAddr, u64), out: &mut Vec<ServerOutput>) {
        let (from, id) = key;
        let applied = self.applied;
        let Some(watch) = self.watches.get_mut(&key) else {
            return;
        };
        // Bounded by the unacknowledged bound: each turn sends one event or returns.
        loop {
            if watch.next_index <= self.kept_after {
                let reason = WatchCancel::FellBehind {
                    kept_after: self.kept_after,
                };
                self.watches.remove(&key);
                push(out, from, WatchReply::Cancelled { id, reason });
                return;
            }
            if watch.unacknowledged.len() >= WATCH_EVENTS_UNACKNOWLEDGED_MAX {
                return; // waits in the ring for acknowledgements
            }
            let start = self.ring.partition_point(|a| a.index < watch.next_index);
            let next = self.ring.range(start..).find_map(|applied| {
                let covered: Vec<LockChange> = (applied.changes.iter())
                    .filter(|change| watch.target.covers(&change.lock))
                    .cloned()
                    .collect();
                (!covered.is_empty()).then_some((applied.index, covered))
            });
            let Some((index, changes)) = next else {
                // Caught up; never back below where the client asked to start.
                watch.next_index = watch.next_index.max(applied + 1);
                return;
            };
            assert!(
                index > watch.last_sent,
                "watch {id}: event {index} out of order"
            );
            assert!(index <= applied, "watch {id}: event {index} not applied");
            watch.last_sent = index;
            watch.next_index = index + 1;
            watch.unacknowledged.push_back(index);
            let event = WatchEvent { index, changes };
            push(out, from, WatchReply::Event { id, event });
        }
    }

    /// Checked by the server after every step.
    pub fn check_invariants(&self, applied: LogIndex) {
        assert_eq!(self.applied, applied, "watch: applied index drifted");
        assert!(
            self.watches.len() <= WATCHES_PER_SERVER_MAX,
            "watch: too many"
        );
        assert!(self.ring_changes <= WATCH_HISTORY_CHANGES_MAX || self.ring.len() == 1);
        // O(1) per step: the order inside the ring is asserted where entries are pushed.
        if let (Some(oldest), Some(newest)) = (self.ring.front(), self.ring.back()) {
            assert!(
                oldest.index > self.kept_after,
                "watch: the ring below its floor"
            );
            assert!(
                newest.index <= applied,
                "watch: the ring holds an unapplied index"
            );
            assert!(
                self.ring_changes >= self.ring.len(),
                "watch: an empty ring entry"
            );
        } else {
            assert_eq!(
                self.ring_changes, 0,
                "watch: changes counted in an empty ring"
            );
        }
        for ((_, id), watch) in &self.watches {
            assert!(watch.unacknowledged.len() <= WATCH_EVENTS_UNACKNOWLEDGED_MAX);
            assert!(
                watch.last_sent <= applied,
                "watch {id}: sent an unapplied index"
            );
            assert!(
                watch.next_index > watch.last_sent,
                "watch {id}: cursor behind"
            );
            assert!(
                watch.next_index > self.kept_after,
                "watch {id}: lives behind the ring"
            );
            let increasing = (watch
                .unacknowledged
                .iter()
                .zip(watch.unacknowledged.iter().skip(1)))
            .all(|(a, b)| a < b);
            assert!(increasing, "watch {id}: unacknowledged out of order");
        }
    }
}

/// Why `credential` may not watch here, if it may not.
fn credential_refusal(table: &LockTable, credential: WatchCredential) -> Option<WatchRefusal> {
    match table.authenticate(credential.client, credential.secret) {
        Ok(()) => None,
        Err(ServiceError::UnknownClient { client }) => Some(WatchRefusal::UnknownClient { client }),
        Err(_) => Some(WatchRefusal::Unauthorized),
    }
}

fn push(out: &mut Vec<ServerOutput>, to: ClientAddr, reply: WatchReply) {
    out.push(ServerOutput::Watch { to, reply });
}

/// The state of every lock `target` covers: held or queued for, and a lock watched by name
/// even when free.
pub fn current_state(table: &LockTable, target: &WatchTarget) -> Vec<LockState> {
    let state = |lock: &LockName| LockState {
        lock: lock.clone(),
        view: LockView::of(table, lock),
    };
    match target {
        WatchTarget::Lock(lock) => vec![state(lock)],
        WatchTarget::Prefix(prefix) => {
            let under = |name: &&LockName| name.starts_with(prefix.as_str());
            let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
            let held = table.locks().range::<str, _>(from).map(|(l, _)| l);
            let shared = table.shared_holders().range::<str, _>(from).map(|(l, _)| l);
            let queued = table.queues().range::<str, _>(from).map(|(l, _)| l);
            let mut locks: Vec<&LockName> = held.take_while(under).collect();
            locks.extend(shared.take_while(under));
            locks.extend(queued.take_while(under));
            locks.sort();
            locks.dedup();
            locks.into_iter().map(state).collect()
        }
    }
}

#[cfg(test)]
#[path = "watch_invariant_tests.rs"]
mod invariant_tests;
