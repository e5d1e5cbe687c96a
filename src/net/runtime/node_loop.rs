//! The node thread: the one place where the `Server` state machine runs and its write-ahead log
//! is written. fsync blocks, so this is a plain OS thread, never a tokio task.
//!
//! # One round
//! 1. Wait for an input or the earliest timer deadline, then drain every input that is ready
//!    (at most [`BATCH_INPUTS_MAX`]) into one batch.
//! 2. Step the node once per input, then once per due timer. Each `Persist` is queued for the
//!    log as it comes; `PersistSnapshot` flushes the queue and writes the snapshot at its place;
//!    `SetTimer` updates the deadlines; `Send` and `Reply` are buffered.
//! 3. Append the queued operations and `sync` once (group commit), and only then carry out the
//!    buffered sends and replies, in order. That keeps the node's contract for the whole batch:
//!    nothing leaves before the state it depends on is on disk.
//!
//! A storage error ends the loop: the `Wal` is poisoned, and a server that cannot persist must
//! not keep answering. Nothing buffered in that round is sent.

use super::clients::{ClientRegistry, Outgoing};
use crate::net::peer::PeerSender;
use crate::node::{
    LogIndex, PeerMessage, PersistOp, Role, Server, ServerId, ServerInput, ServerOutput,
    ServerTimer, Term, Time,
};
use crate::storage::{StorageError, Wal};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Most inputs stepped between two syncs.
pub const BATCH_INPUTS_MAX: usize = 1_024;
/// Longest wait for input, so that a stop request is noticed promptly.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(50);

/// Monotonic process time as the node's `Time`.
#[derive(Copy, Clone, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }
    pub fn now(&self) -> Time {
        Time::from_duration(self.origin.elapsed())
    }
}

/// An effect that waits for the batch's sync.
enum Deferred {
    Send {
        to: ServerId,
        msg: crate::node::PeerMessage,
    },
    Reply {
        to: crate::node::ClientAddr,
        reply: crate::node::ClientReply,
    },
}

/// What the log says about leadership, to report changes.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
struct Leadership {
    role: Role,
    term: Term,
    leader: Option<ServerId>,
}

impl Leadership {
    fn of(server: &Server) -> Leadership {
        Leadership {
            role: server.role(),
            term: server.term(),
            leader: server.leader(),
        }
    }
}

/// Counters, logged at debug when the loop ends.
#[derive(Default, Debug)]
struct LoopStats {
    batches: u64,
    inputs: u64,
    syncs: u64,
    replies_dropped: u64,
}

pub struct NodeLoop {
    pub server: Server,
    pub wal: Wal,
    pub inputs: Receiver<ServerInput>,
    pub peers: PeerSender,
    pub clients: ClientRegistry,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    /// Where the node's term is published for the client front end.
    pub term: Arc<AtomicU64>,
    /// Servers in the cluster: with one, an append commits in its own step.
    server_count: usize,
    election_at: Option<Time>,
    heartbeat_at: Option<Time>,
    pending_ops: Vec<PersistOp>,
    deferred: Vec<Deferred>,
    /// Per peer, where in `deferred` the last message to it sits: see `defer_send`.
    last_send_to: BTreeMap<ServerId, usize>,
    leadership: Leadership,
    stats: LoopStats,
}

impl NodeLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: Server,
        wal: Wal,
        inputs: Receiver<ServerInput>,
        peers: PeerSender,
        clients: ClientRegistry,
        clock: Clock,
        stop: Arc<AtomicBool>,
        term: Arc<AtomicU64>,
    ) -> NodeLoop {
        let leadership = Leadership::of(&server);
        let server_count = server.server_count();
        NodeLoop {
            server,
            wal,
            inputs,
            peers,
            clients,
            clock,
            stop,
            term,
            server_count,
            election_at: None,
            heartbeat_at: None,
            pending_ops: Vec::new(),
            deferred: Vec::new(),
            last_send_to: BTreeMap::new(),
            leadership,
            stats: LoopStats::default(),
        }
    }

    /// Runs until `stop` is set or every input sender is gone. `initial` are the outputs of
    /// `Server::new`, carried out first like any batch.
    pub fn run(mut self, initial: Vec<ServerOutput>) -> Result<(), StorageError> {
        self.take_outputs(initial)?;
        self.finish_batch()?;
        let mut batch = Vec::with_capacity(BATCH_INPUTS_MAX);
        // Bounded by the process's life: every round waits at most IDLE_WAIT_MAX.
        while !self.stop.load(Ordering::Relaxed) {
            let wait = self.time_to_next_deadline().min(IDLE_WAIT_MAX);
            match self.inputs.recv_timeout(wait) {
                Ok(input) => batch.push(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH_INPUTS_MAX {
                match self.inputs.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
            self.stats.inputs += batch.len() as u64;
            // One instant for the whole batch: its effects all leave after one sync, and reads
            // stepped at one `now` share one confirming heartbeat round.
            let now = self.clock.now();
            for input in batch.drain(..) {
                let outputs = self.server.step(now, input);
                self.take_outputs(outputs)?;
            }
            self.fire_due_timers()?;
            self.finish_batch()?;
        }
        tracing::debug!(stats = ?self.stats, "node loop stopped");
        Ok(())
    }

    fn time_to_next_deadline(&self) -> Duration {
        let now = self.clock.now();
        [self.election_at, self.heartbeat_at]
            .into_iter()
            .flatten()
            .min()
            .map_or(IDLE_WAIT_MAX, |at| at.saturating_since(now))
    }

    fn fire_due_timers(&mut self) -> Result<(), StorageError> {
        let now = self.clock.now();
        for timer in [ServerTimer::Election, ServerTimer::Heartbeat] {
            let slot = match timer {
                ServerTimer::Election => &mut self.election_at,
                ServerTimer::Heartbeat => &mut self.heartbeat_at,
            };
            if slot.is_some_and(|at| at <= now) {
                // Cleared before stepping: the step sets it again if the node wants it.
                *slot = None;
                let outputs = self.server.step(now, ServerInput::Timer(timer));
                self.take_outputs(outputs)?;
            }
        }
        Ok(())
    }

    /// Queues persistence, sets timers, and defers everything that leaves the process.
    fn take_outputs(&mut self, outputs: Vec<ServerOutput>) -> Result<(), StorageError> {
        for output in outputs {
            match output {
                ServerOutput::Persist(op) => self.pending_ops.push(op),
                ServerOutput::PersistSnapshot(snapshot) => {
                    // The snapshot takes its place in the batch: what was persisted before it
                    // goes first, and write_snapshot syncs it.
                    self.append_pending()?;
                    self.write_snapshot(&snapshot)?;
                }
                ServerOutput::SetTimer { timer, at } => match timer {
                    ServerTimer::Election => self.election_at = Some(at),
                    ServerTimer::Heartbeat => self.heartbeat_at = Some(at),
                },
                ServerOutput::Send { to, msg } => self.defer_send(to, msg),
                ServerOutput::Reply { to, reply } => {
                    self.deferred.push(Deferred::Reply { to, reply });
                }
                ServerOutput::Applied {
                    index,
                    entry,
                    result,
                } => {
                    tracing::trace!(index, command = ?entry.command, ?result, "applied");
                }
            }
        }
        Ok(())
    }

    /// Carries out, before the sync, every effect of the batch that does not depend on what
    /// the sync makes durable; the rest waits for it. The node's contract is stricter (nothing
    /// after a `Persist` leaves before it is durable); this driver may relax it only where it
    /// can show why, since the node cannot see batches:
    ///
    /// - AppendEntries and InstallSnapshot: Raft thesis §10.2.1, a leader may write its log in
    ///   parallel with replicating it, as long as it does not count itself toward a majority
    ///   before its own write is durable. Acknowledgements are stepped only in a later batch,
    ///   which starts after this batch's sync, so the leader never does. The term they carry
    ///   was made durable when the server became a candidate, before any vote could arrive.
    /// - Client replies and forwarded requests and replies: a write's answer comes from a
    ///   committed entry, and with two or more servers no entry of this batch can be committed
    ///   in this batch (its acknowledgements come later), so every answer reflects state made
    ///   durable by a majority in an earlier batch. Reads are answered from applied, hence
    ///   committed, state. With a single server an append commits at once, so then they wait.
    /// - What waits: acknowledgements and votes (`AppendResponse`, `VoteResponse`) promise
    ///   state of this batch; `RequestVote` carries the candidate's new term and self-vote;
    ///   pre-votes are kept with them for simplicity.
    ///
    /// Messages to one peer may change order; the protocol allows any order.
    fn send_before_sync(&mut self) {
        if self.wal.unsynced_bytes() == 0 && self.pending_ops.is_empty() {
            return; // Nothing to overlap with: everything goes out in order after the batch.
        }
        let replies_early = self.server_count > 1;
        let mut kept = Vec::with_capacity(self.deferred.len());
        let mut replies = Vec::new();
        for effect in self.deferred.drain(..) {
            match effect {
                Deferred::Send { to, msg } if leaves_before_sync(&msg, replies_early) => {
                    self.peers.send(to, msg)
                }
                Deferred::Reply { to, reply } if replies_early => replies.push((to, reply)),
                other => kept.push(other),
            }
        }
        self.deferred = kept;
        self.last_send_to.clear();
        if !replies.is_empty() {
            let clients = self.clients.lock();
            for (to, reply) in replies {
                if let Some(connection) = clients.get(&to)
                    && connection.try_send(Outgoing::Reply(reply)).is_err()
                {
                    self.stats.replies_dropped += 1;
                }
            }
        }
    }

    /// Defers a message to a peer, merging an AppendEntries into the previous message to the
    /// same peer when that is an AppendEntries of the same term that it continues.
    ///
    /// A leader steps one input at a time and replicates each new entry at once, so a batch
    /// of client writes yields one AppendEntries per write and peer. Delivered in order, two
    /// contiguous AppendEntries mean exactly what one carrying both runs of entries, the
    /// later commit index and the later round means; merging them saves a frame, a follower
    /// step and an acknowledgement per write. Only the last message to a peer is merged into,
    /// so no other message to that peer changes its place.
    fn defer_send(&mut self, to: ServerId, msg: PeerMessage) {
        if let Some(&position) = self.last_send_to.get(&to)
            && let Deferred::Send { msg: previous, .. } = &mut self.deferred[position]
            && merge_append_entries(previous, &msg)
        {
            return;
        }
        self.last_send_to.insert(to, self.deferred.len());
        self.deferred.push(Deferred::Send { to, msg });
    }

    fn append_pending(&mut self) -> Result<(), StorageError> {
        if !self.pending_ops.is_empty() {
            self.wal.append(&self.pending_ops)?;
            self.pending_ops.clear();
        }
        Ok(())
    }

    fn write_snapshot(&mut self, snapshot: &crate::node::Snapshot) -> Result<(), StorageError> {
        let base: LogIndex = self.wal.log_base().index;
        if snapshot.last_included_index <= base {
            // Already covered (the node may hand over a snapshot equal to the durable one).
            assert!(
                snapshot.last_included_index < base
                    || snapshot.last_included_term == self.wal.log_base().term,
                "{}: a snapshot at the log base with another term",
                self.server.id()
            );
            return Ok(());
        }
        let bytes = super::encode_snapshot(snapshot);
        self.wal.write_snapshot(
            &bytes,
            snapshot.last_included_index,
            snapshot.last_included_term,
        )?;
        assert_eq!(self.wal.log_base().index, snapshot.last_included_index);
        tracing::info!(
            index = snapshot.last_included_index,
            term = snapshot.last_included_term,
            bytes = bytes.len(),
            "snapshot written, log compacted"
        );
        Ok(())
    }

    /// Group commit, then everything that waited for it, then a leadership report.
    fn finish_batch(&mut self) -> Result<(), StorageError> {
        self.append_pending()?;
        self.send_before_sync();
        if self.wal.unsynced_bytes() > 0 {
            self.wal.sync()?;
            self.stats.syncs += 1;
        }
        assert_eq!(
            self.wal.unsynced_bytes(),
            0,
            "effects leave only after a sync"
        );
        self.stats.batches += 1;
        self.last_send_to.clear();
        if !self.deferred.is_empty() {
            let clients = self.clients.lock();
            for effect in self.deferred.drain(..) {
                match effect {
                    Deferred::Send { to, msg } => self.peers.send(to, msg),
                    Deferred::Reply { to, reply } => {
                        // A closed connection is gone from the registry: drop its reply.
                        if let Some(connection) = clients.get(&to)
                            && connection.try_send(Outgoing::Reply(reply)).is_err()
                        {
                            self.stats.replies_dropped += 1;
                        }
                    }
                }
            }
        }
        self.term.store(self.server.term(), Ordering::Relaxed);
        self.report_leadership();
        Ok(())
    }

    fn report_leadership(&mut self) {
        let now = Leadership::of(&self.server);
        if now == self.leadership {
            return;
        }
        let before = std::mem::replace(&mut self.leadership, now);
        let id = self.server.id();
        match now.role {
            Role::Leader if before.role != Role::Leader || before.term != now.term => {
                tracing::info!(term = now.term, "{id} is now the leader");
            }
            Role::Follower if now.leader.is_some() && now.leader != before.leader => {
                let leader = now.leader.expect("checked");
                tracing::info!(term = now.term, %leader, "{id} follows leader {leader}");
            }
            Role::Follower if before.leader.is_some() && now.leader.is_none() => {
                tracing::info!(term = now.term, "{id} knows no leader");
            }
            role => {
                tracing::debug!(term = now.term, ?role, leader = ?now.leader, "role changed");
            }
        }
    }
}

/// Whether a message may leave before the batch's sync (see `NodeLoop::send_before_sync`).
fn leaves_before_sync(msg: &PeerMessage, replies_early: bool) -> bool {
    match msg {
        PeerMessage::AppendEntries { .. } | PeerMessage::InstallSnapshot { .. } => true,
        PeerMessage::Forward { .. }
        | PeerMessage::ForwardReply { .. }
        | PeerMessage::ReadIndexRequest { .. }
        | PeerMessage::ReadIndexResponse { .. } => replies_early,
        PeerMessage::AppendResponse { .. }
        | PeerMessage::VoteResponse { .. }
        | PeerMessage::RequestVote { .. }
        | PeerMessage::PreVote { .. }
        | PeerMessage::PreVoteResponse { .. } => false,
    }
}

/// Appends `next` to `previous` if both are AppendEntries of one term and `next` starts right
/// after `previous` ends; returns whether it did.
fn merge_append_entries(previous: &mut PeerMessage, next: &PeerMessage) -> bool {
    let (
        PeerMessage::AppendEntries {
            term,
            prev_log_index,
            entries,
            leader_commit,
            round,
            ..
        },
        PeerMessage::AppendEntries {
            term: next_term,
            prev_log_index: next_prev_log_index,
            entries: next_entries,
            leader_commit: next_leader_commit,
            round: next_round,
            ..
        },
    ) = (previous, next)
    else {
        return false;
    };
    let continues = *prev_log_index + entries.len() as LogIndex == *next_prev_log_index;
    if *term != *next_term || !continues || entries.len() >= MERGED_ENTRIES_MAX {
        return false;
    }
    entries.extend(next_entries.iter().cloned());
    *leader_commit = (*leader_commit).max(*next_leader_commit);
    *round = (*round).max(*next_round);
    true
}

/// Most entries one merged AppendEntries carries, to bound a frame.
const MERGED_ENTRIES_MAX: usize = 1_024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Command, Entry};

    fn append(
        prev_log_index: LogIndex,
        count: usize,
        leader_commit: LogIndex,
        round: u64,
    ) -> PeerMessage {
        PeerMessage::AppendEntries {
            term: 2,
            prev_log_index,
            prev_log_term: 2,
            entries: vec![
                Entry {
                    term: 2,
                    command: Command::Noop
                };
                count
            ],
            leader_commit,
            round,
        }
    }

    #[test]
    fn contiguous_append_entries_of_one_term_merge_into_one() {
        let mut first = append(10, 1, 9, 4);
        assert!(merge_append_entries(&mut first, &append(11, 2, 10, 5)));
        assert_eq!(first, append(10, 3, 10, 5));
    }

    #[test]
    fn append_entries_that_leave_a_gap_overlap_or_change_term_stay_apart() {
        let mut first = append(10, 1, 9, 4);
        assert!(
            !merge_append_entries(&mut first, &append(12, 1, 9, 4)),
            "a gap"
        );
        assert!(
            !merge_append_entries(&mut first, &append(10, 1, 9, 4)),
            "a resend"
        );
        let PeerMessage::AppendEntries { term, .. } = &mut first else {
            unreachable!()
        };
        *term = 1;
        assert!(
            !merge_append_entries(&mut first, &append(11, 1, 9, 4)),
            "another term"
        );
        let vote = PeerMessage::VoteResponse {
            term: 2,
            granted: true,
        };
        assert!(!merge_append_entries(&mut first, &vote));
    }
}
