//! The node task and the log thread: where the `Server` state machine runs and where its
//! write-ahead log is written.
//!
//! The node runs as a task on the one network thread (a tokio current-thread runtime), next to
//! the socket tasks: handing an input from a socket to the node, or a message or reply from the
//! node to a socket, is then a queue push on one thread, not a wake-up of another (on a small
//! machine running several servers, cross-thread wake-ups were most of the cost). The node
//! task never blocks: it never touches the disk and only ever sends without waiting. fsync
//! blocks, so the log is written by a plain OS thread, never a tokio task.
//!
//! # The node task, one round
//! 1. Wait for an input or the earliest timer deadline, then drain every input that is ready
//!    (at most [`BATCH_INPUTS_MAX`]) into one batch, stepped at one instant.
//! 2. Step the node once per input, then once per due timer. `Persist` and `PersistSnapshot`
//!    are queued for the log; `SetTimer` updates the deadlines; `Send` and `Reply` are sorted
//!    into what may leave now and what must wait for the batch to be durable (see
//!    [`leaves_before_sync`]).
//! 3. Carry out what may leave now, and hand the batch's log operations and waiting effects to
//!    the log thread as one job. The node task does not wait for the disk: the server runs
//!    with `durability_reported`, so a leader counts itself toward a majority only for entries
//!    the log thread has reported durable (`ServerInput::Persisted`).
//! 4. Yield to the socket tasks, so that they write the round's messages and replies and read
//!    what arrived meanwhile before the next round.
//!
//! # The log thread
//! Takes every job that is ready, appends their operations, syncs once (group commit across
//! node rounds), and hands the node task one [`Durable`] report: how many persist outputs are
//! now durable, and the jobs' waiting messages in order, which the node task sends before it
//! steps anything else. Nothing a job holds leaves before its sync.
//!
//! One report per sync wakes the network thread once. (The log thread used to queue the
//! waiting messages on the peer queues itself and then report: two cross-thread wake-ups of
//! the network thread per sync, each an `eventfd` write and a loop of the runtime, on the
//! chain of every hand-off on the follower that acknowledges it.)
//!
//! When every job taken is non-urgent (appends from a leader that is not counting on this
//! server to commit them, or, on a leader, appends of acquires that queue: see
//! `Server::prompt_through`), the sync first waits up to `LAZY_SYNC_WINDOW` for more work, and
//! urgent work ends the wait: see `PeerMessage::AppendEntries::urgent`. Work that may wait does
//! not wake it meanwhile (`job_queue`).
//!
//! A storage error ends both: the `Wal` is poisoned, and a server that cannot persist must not
//! keep answering. Nothing the failed job held is sent.

use super::clients::{ClientRegistry, Outgoing};
use super::job_queue::{self, JobReceiver, JobSender};
use crate::net::metrics::{NodeState, Publisher, ServerMetrics};
use crate::net::peer::PeerSender;
use crate::node::{
    LogIndex, PeerMessage, PersistOp, Role, Server, ServerId, ServerInput, ServerOutput,
    ServerTimer, Snapshot, Term, Time,
};
use crate::storage::{StorageError, Wal};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

/// Most inputs stepped in one round of the node task.
pub const BATCH_INPUTS_MAX: usize = 1_024;
/// Most node rounds the log thread writes under one sync.
const JOBS_PER_SYNC_MAX: usize = 64;
/// Longest wait for input, so that a stop request is noticed promptly.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(50);
/// Longest the log thread holds the sync of non-urgent work (appends from a leader that does
/// not count on this server's acknowledgement to commit: `PeerMessage::AppendEntries::urgent`)
/// waiting for more to share it. Urgent work ends the wait at once.
///
/// Three servers on one machine share its disk, and a flush costs more the more flushes run
/// beside it. A follower a commit does not wait for flushing every append only slows the
/// flushes a commit does wait for; holding its flush for a few milliseconds turns a flush per
/// write into a few hundred per second. The window bounds how long a commit waits for this
/// server if the follower the leader counted on stops answering.
const LAZY_SYNC_WINDOW: Duration = Duration::from_millis(5);

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

/// An effect of a round, before it is sorted into "now" and "after the sync".
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
    /// Repairing a damaged log: no votes until a leader has repaired it.
    repairing: bool,
}

impl Leadership {
    fn of(server: &Server) -> Leadership {
        Leadership {
            role: server.role(),
            term: server.term(),
            leader: server.leader(),
            repairing: server.is_recovering(),
        }
    }
}

/// Counters, logged at debug when the loop ends.
#[derive(Default, Debug)]
struct LoopStats {
    batches: u64,
    inputs: u64,
    jobs: u64,
    /// Replies whose connection's queue was full (the client retries).
    replies_dropped: u64,
}

/// A change for the log, in the order the node emitted it.
enum LogOp {
    Persist(PersistOp),
    Snapshot(Arc<Snapshot>),
}

/// What one sync made durable, from the log thread to the node task.
struct Durable {
    /// Persist outputs now durable, counted as [`LogJob::persisted_through`].
    through: u64,
    /// The synced jobs' held messages, in order: they may leave now.
    held: Vec<(ServerId, PeerMessage)>,
}

/// Reports waiting for the node task. The log thread blocks when it is full, which only
/// happens when the node task has fallen that many syncs behind.
const DURABLE_REPORTS_MAX: usize = 64;

/// One node round's work for the log thread.
struct LogJob {
    /// Whether anything in the round wants its sync at once: everything but appends the leader
    /// marked non-urgent (see [`LAZY_SYNC_WINDOW`]).
    urgent: bool,
    ops: Vec<LogOp>,
    /// Messages that must not leave before `ops` are durable, in order (client replies never
    /// wait: see `leaves_before_sync`).
    held: Vec<(ServerId, PeerMessage)>,
    /// Persist outputs the node had emitted by the end of the round.
    persisted_through: u64,
}

pub struct NodeLoop {
    pub server: Server,
    pub inputs: tokio_mpsc::Receiver<ServerInput>,
    /// The log thread's reports (see [`Durable`]).
    durable: tokio_mpsc::Receiver<Durable>,
    pub peers: PeerSender,
    pub clients: ClientRegistry,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    /// Where the node's term is published for the client front end.
    pub term: Arc<AtomicU64>,
    jobs: JobSender<LogJob>,
    /// Persist outputs seen so far (`ServerInput::Persisted` counts the same way).
    persist_count: u64,
    /// The last `through` stepped as `ServerInput::Persisted`.
    durable_through: u64,
    election_at: Option<Time>,
    heartbeat_at: Option<Time>,
    pending_ops: Vec<LogOp>,
    /// Whether this round produced log work that must not wait (see [`LogJob::urgent`]).
    round_urgent: bool,
    deferred: Vec<Deferred>,
    /// Per peer, where in `deferred` the last message to it sits: see `defer_send`.
    last_send_to: BTreeMap<ServerId, usize>,
    leadership: Leadership,
    /// What was last published to `metrics` (status requests and scrapes read it there).
    published: Publisher,
    metrics: Arc<ServerMetrics>,
    stats: LoopStats,
}

impl NodeLoop {
    /// The node loop and the log writer it hands its jobs to. Run the loop as a task on the
    /// network runtime and the writer on its own OS thread. The server MUST have been built
    /// with `durability_reported`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: Server,
        wal: Wal,
        inputs: tokio_mpsc::Receiver<ServerInput>,
        peers: PeerSender,
        clients: ClientRegistry,
        clock: Clock,
        stop: Arc<AtomicBool>,
        term: Arc<AtomicU64>,
        metrics: Arc<ServerMetrics>,
    ) -> (NodeLoop, LogWriter) {
        let leadership = Leadership::of(&server);
        // Unbounded, so that the node task never waits for the disk; the leader's
        // `uncommitted_entries_max` bounds how far ahead of it the node can run.
        let (jobs, job_receiver) = job_queue::channel();
        let (durable_sender, durable) = tokio_mpsc::channel(DURABLE_REPORTS_MAX);
        let writer = LogWriter::new(
            wal,
            job_receiver,
            durable_sender,
            Arc::clone(&stop),
            Arc::clone(&metrics),
        );
        let node_loop = NodeLoop {
            server,
            inputs,
            durable,
            peers,
            clients,
            clock,
            stop,
            term,
            jobs,
            persist_count: 0,
            durable_through: 0,
            election_at: None,
            heartbeat_at: None,
            pending_ops: Vec::new(),
            round_urgent: false,
            deferred: Vec::new(),
            last_send_to: BTreeMap::new(),
            leadership,
            published: Publisher::new(metrics.state()),
            metrics,
            stats: LoopStats::default(),
        };
        (node_loop, writer)
    }

    /// Runs until `stop` is set, every input sender is gone, or the log thread failed.
    /// `initial` are the outputs of `Server::new`, carried out first like any round.
    ///
    /// Contract: run it on the network runtime; it never blocks that thread for longer than
    /// one round of stepping.
    pub async fn run(mut self, initial: Vec<ServerOutput>) {
        self.take_outputs(initial, false);
        if !self.finish_round() {
            return;
        }
        let mut batch = Vec::with_capacity(BATCH_INPUTS_MAX);
        // Bounded by the process's life: every round waits at most IDLE_WAIT_MAX.
        while !self.stop.load(Ordering::Relaxed) {
            let wait = self.time_to_next_deadline().min(IDLE_WAIT_MAX);
            tokio::select! {
                // A sync's report first: its messages are on the chain of a commit.
                biased;
                report = self.durable.recv() => match report {
                    Some(report) => self.take_durable(report, &mut batch),
                    // The log thread is gone: it failed or stopped.
                    None => break,
                },
                input = self.inputs.recv() => match input {
                    Some(input) => batch.push(input),
                    None => break,
                },
                () = tokio::time::sleep(wait) => {}
            }
            self.drain_ready(&mut batch);
            self.stats.inputs += batch.len() as u64;
            // One instant for the whole round: reads stepped at one `now` share one
            // confirming heartbeat round.
            let now = self.clock.now();
            for input in batch.drain(..) {
                let lazy_append = is_lazy_append(&input);
                let prompt_before = self.server.prompt_through();
                let outputs = self.server.step(now, input);
                let may_wait = lazy_append || self.leader_step_may_wait(prompt_before, &outputs);
                self.take_outputs(outputs, may_wait);
            }
            self.fire_due_timers();
            if !self.finish_round() {
                break;
            }
            // Let the socket tasks carry out this round and gather the next one's inputs.
            tokio::task::yield_now().await;
        }
        tracing::debug!(stats = ?self.stats, "node loop stopped");
    }

    /// Whether a leader's step only appended entries nobody waits for promptly (acquires that
    /// queue: `Server::prompt_through` did not move), so that its sync may wait to share a
    /// flush with the next hand-over's, as a follower's lazy append does. Anything else it
    /// persisted (a term, a vote) is urgent.
    fn leader_step_may_wait(&self, prompt_before: LogIndex, outputs: &[ServerOutput]) -> bool {
        self.server.role() == Role::Leader
            && self.server.prompt_through() == prompt_before
            && outputs.iter().all(|output| match output {
                ServerOutput::Persist(op) => matches!(op, PersistOp::Append { .. }),
                ServerOutput::PersistSnapshot(_) => false,
                _ => true,
            })
    }

    /// Sends a sync's held messages, in order, and queues its durability report as an input.
    fn take_durable(&mut self, report: Durable, batch: &mut Vec<ServerInput>) {
        for (to, msg) in report.held {
            self.peers.send(to, msg);
        }
        if report.through > self.durable_through {
            self.durable_through = report.through;
            batch.push(ServerInput::Persisted {
                through: report.through,
            });
        }
    }

    fn drain_ready(&mut self, batch: &mut Vec<ServerInput>) {
        // Bounded: the log thread sends at most one report per sync.
        while batch.len() < BATCH_INPUTS_MAX {
            match self.durable.try_recv() {
                Ok(report) => self.take_durable(report, batch),
                Err(_) => break,
            }
        }
        while batch.len() < BATCH_INPUTS_MAX {
            match self.inputs.try_recv() {
                Ok(input) => batch.push(input),
                Err(_) => break,
            }
        }
    }

    fn time_to_next_deadline(&self) -> Duration {
        let now = self.clock.now();
        [self.election_at, self.heartbeat_at]
            .into_iter()
            .flatten()
            .min()
            .map_or(IDLE_WAIT_MAX, |at| at.saturating_since(now))
    }

    fn fire_due_timers(&mut self) {
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
                self.take_outputs(outputs, false);
            }
        }
    }

    /// Queues log operations, sets timers, and defers everything that leaves the process.
    /// `may_wait`: the outputs answer a non-urgent append, so their log work may wait to
    /// share a sync (see [`LogJob::urgent`]).
    fn take_outputs(&mut self, outputs: Vec<ServerOutput>, may_wait: bool) {
        for output in outputs {
            match output {
                ServerOutput::Persist(op) => {
                    self.persist_count += 1;
                    self.round_urgent |= !may_wait;
                    self.pending_ops.push(LogOp::Persist(op));
                }
                ServerOutput::PersistSnapshot(snapshot) => {
                    self.persist_count += 1;
                    self.round_urgent |= !may_wait;
                    self.pending_ops.push(LogOp::Snapshot(snapshot));
                }
                ServerOutput::SetTimer { timer, at } => match timer {
                    ServerTimer::Election => self.election_at = Some(at),
                    ServerTimer::Heartbeat => self.heartbeat_at = Some(at),
                },
                ServerOutput::Send { to, msg } => {
                    // A message that waits for the sync (a vote, an acknowledgement) must not
                    // wait longer because of an earlier non-urgent append.
                    self.round_urgent |= !may_wait && !leaves_before_sync(&msg);
                    self.defer_send(to, msg);
                }
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
                ServerOutput::Woken { index, woken } => {
                    tracing::trace!(index, ?woken, "waiter decided");
                }
                // From applied (so committed) state: it never waits for the round's sync.
                ServerOutput::Watch { to, reply } => {
                    super::clients::deliver_watch_reply(&self.clients, to, reply);
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

    /// Ends a round: carries out what may leave before the round is durable, hands the rest
    /// and the round's log operations to the log thread, publishes the term and reports
    /// leadership changes. False once the log thread is gone (it failed or stopped).
    fn finish_round(&mut self) -> bool {
        self.stats.batches += 1;
        self.last_send_to.clear();
        let mut held = Vec::new();
        let mut replies = Vec::new();
        for effect in self.deferred.drain(..) {
            match effect {
                Deferred::Send { to, msg } if leaves_before_sync(&msg) => self.peers.send(to, msg),
                Deferred::Send { to, msg } => held.push((to, msg)),
                Deferred::Reply { to, reply } => replies.push((to, reply)),
            }
        }
        if !replies.is_empty() {
            self.stats.replies_dropped += deliver_replies(&self.clients, replies);
        }
        if !self.pending_ops.is_empty() || !held.is_empty() {
            let job = LogJob {
                urgent: std::mem::take(&mut self.round_urgent),
                ops: std::mem::take(&mut self.pending_ops),
                held,
                persisted_through: self.persist_count,
            };
            self.stats.jobs += 1;
            let urgent = job.urgent;
            if self.jobs.send(job, urgent).is_err() {
                return false;
            }
        }
        self.term.store(self.server.term(), Ordering::Relaxed);
        self.report_leadership();
        self.metrics
            .publish(&mut self.published, NodeState::of(&self.server));
        true
    }

    fn report_leadership(&mut self) {
        let now = Leadership::of(&self.server);
        if now == self.leadership {
            return;
        }
        let before = std::mem::replace(&mut self.leadership, now);
        let id = self.server.id();
        if before.repairing && !now.repairing {
            tracing::warn!(
                term = now.term,
                commit_index = self.server.commit_index(),
                "{id} repaired its damaged log from the leader: it votes again"
            );
        }
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

/// Whether a message may leave before the state of its round is durable. Client replies
/// always may; messages that promise this server's durable state may not.
///
/// - AppendEntries and InstallSnapshot: Raft thesis §10.2.1, a leader may write its log in
///   parallel with replicating it, as long as it counts itself toward a majority only for
///   entries already durable, which the node does with `durability_reported`. So the commit
///   index they carry is made of entries a majority holds durably. Their term was made
///   durable when the server became a candidate, before any vote for it could arrive.
/// - Client replies, forwarded requests and replies, read-index messages: a write's answer
///   comes from a committed entry (durable on a majority), a read's from applied, so
///   committed, state; nothing in them depends on this server's own unsynced writes.
/// - What waits: acknowledgements and votes (`AppendResponse`, `VoteResponse`) promise state
///   of this round; `RequestVote` carries the candidate's new term and self-vote; pre-votes
///   wait with them for simplicity.
///
/// Messages to one peer may change order; the protocol allows any order.
fn leaves_before_sync(msg: &PeerMessage) -> bool {
    match msg {
        PeerMessage::AppendEntries { .. }
        | PeerMessage::InstallSnapshot { .. }
        | PeerMessage::Forward { .. }
        | PeerMessage::ForwardReply { .. }
        | PeerMessage::ReadIndexRequest { .. }
        | PeerMessage::ReadIndexResponse { .. } => true,
        PeerMessage::AppendResponse { .. }
        | PeerMessage::VoteResponse { .. }
        | PeerMessage::RequestVote { .. }
        | PeerMessage::PreVote { .. }
        | PeerMessage::PreVoteResponse { .. } => false,
    }
}

/// Whether `input` is an append its leader marked non-urgent: its log work may wait up to
/// [`LAZY_SYNC_WINDOW`] to share a sync.
fn is_lazy_append(input: &ServerInput) -> bool {
    matches!(
        input,
        ServerInput::Peer {
            msg: PeerMessage::AppendEntries { urgent: false, .. },
            ..
        }
    )
}

/// Hands replies to their connections; a closed connection is gone from the registry and its
/// reply is dropped (the client retries). Returns how many were dropped for a full queue.
pub(super) fn deliver_replies(
    clients: &ClientRegistry,
    replies: Vec<(crate::node::ClientAddr, crate::node::ClientReply)>,
) -> u64 {
    let connections = clients.lock();
    let mut dropped = 0;
    for (to, reply) in replies {
        if let Some(connection) = connections.get(&to)
            && connection.try_send(Outgoing::Reply(reply)).is_err()
        {
            dropped += 1;
        }
    }
    dropped
}

/// The log thread: see the module documentation.
pub struct LogWriter {
    wal: Wal,
    jobs: JobReceiver<LogJob>,
    /// Where each sync's [`Durable`] report goes.
    reports: tokio_mpsc::Sender<Durable>,
    stop: Arc<AtomicBool>,
    reported_through: u64,
    syncs: u64,
    /// Syncs that first waited for more work (see [`LAZY_SYNC_WINDOW`]).
    lazy_syncs: u64,
    /// Appends taken from jobs and not yet written, so that a burst of jobs is one write.
    unwritten: Vec<PersistOp>,
    /// fsync times, snapshots and the log's size go here.
    metrics: Arc<ServerMetrics>,
}

impl LogWriter {
    fn new(
        wal: Wal,
        jobs: JobReceiver<LogJob>,
        reports: tokio_mpsc::Sender<Durable>,
        stop: Arc<AtomicBool>,
        metrics: Arc<ServerMetrics>,
    ) -> LogWriter {
        metrics.publish_log_bytes(wal.log_bytes());
        LogWriter {
            wal,
            jobs,
            reports,
            stop,
            reported_through: 0,
            syncs: 0,
            lazy_syncs: 0,
            unwritten: Vec::new(),
            metrics,
        }
    }

    /// Runs until the node task drops its end (then every job left is written and its
    /// effects carried out) or a storage error, which also stops the node task.
    pub fn run(mut self) -> Result<(), StorageError> {
        let result = self.write_jobs();
        if result.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        tracing::debug!(
            syncs = self.syncs,
            lazy_syncs = self.lazy_syncs,
            "log thread stopped"
        );
        result
    }

    fn write_jobs(&mut self) -> Result<(), StorageError> {
        let mut jobs = Vec::with_capacity(JOBS_PER_SYNC_MAX);
        while let Some(first) = self.jobs.recv() {
            self.take_job(first, &mut jobs)?;
            self.take_ready_jobs(&mut jobs)?;
            if !jobs.iter().any(|job| job.urgent) && self.has_unsynced() {
                // Only non-urgent work to sync: sleep until urgent work arrives or the window
                // closes (not woken by more work that may wait), then let all that came
                // share the flush. Bounded by the window and by JOBS_PER_SYNC_MAX.
                self.jobs.wait_for_urgent(Instant::now() + LAZY_SYNC_WINDOW);
                self.take_ready_jobs(&mut jobs)?;
                self.lazy_syncs += 1;
            }
            self.write_unwritten()?;
            if self.wal.unsynced_bytes() > 0 {
                let started = Instant::now();
                self.wal.sync()?;
                self.metrics.record_fsync(started.elapsed());
                self.metrics.publish_log_bytes(self.wal.log_bytes());
                self.syncs += 1;
            }
            assert_eq!(
                self.wal.unsynced_bytes(),
                0,
                "held effects leave only after a sync"
            );
            let mut through = self.reported_through;
            let mut held = Vec::new();
            for job in jobs.drain(..) {
                assert!(job.ops.is_empty(), "every operation was written");
                held.extend(job.held);
                through = through.max(job.persisted_through);
            }
            if through > self.reported_through || !held.is_empty() {
                self.reported_through = through;
                // Blocking is fine: the node task never waits for this thread. A node that
                // has stopped no longer needs the report.
                let _ = self.reports.blocking_send(Durable { through, held });
            }
        }
        Ok(())
    }

    /// Takes the jobs already queued, up to [`JOBS_PER_SYNC_MAX`] in all.
    fn take_ready_jobs(&mut self, jobs: &mut Vec<LogJob>) -> Result<(), StorageError> {
        while jobs.len() < JOBS_PER_SYNC_MAX {
            let Some(job) = self.jobs.try_recv() else {
                break;
            };
            self.take_job(job, jobs)?;
        }
        Ok(())
    }

    /// Takes a job's operations in order (appends are gathered, to be written together
    /// before the sync) and keeps the job for its held messages.
    fn take_job(&mut self, mut job: LogJob, jobs: &mut Vec<LogJob>) -> Result<(), StorageError> {
        for op in job.ops.drain(..) {
            match op {
                LogOp::Persist(op) => self.unwritten.push(op),
                LogOp::Snapshot(snapshot) => {
                    // At its place: what was persisted before it goes first.
                    self.write_unwritten()?;
                    self.write_snapshot(&snapshot)?;
                }
            }
        }
        jobs.push(job);
        Ok(())
    }

    /// Whether anything taken is not yet durable.
    fn has_unsynced(&self) -> bool {
        !self.unwritten.is_empty() || self.wal.unsynced_bytes() > 0
    }

    /// Writes the gathered appends, in one go (not yet synced).
    fn write_unwritten(&mut self) -> Result<(), StorageError> {
        if !self.unwritten.is_empty() {
            self.wal.append(&self.unwritten)?;
            self.unwritten.clear();
        }
        Ok(())
    }

    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let base: LogIndex = self.wal.log_base().index;
        if snapshot.last_included_index <= base {
            // Already covered (the node may hand over a snapshot equal to the durable one).
            assert!(
                snapshot.last_included_index < base
                    || snapshot.last_included_term == self.wal.log_base().term,
                "a snapshot at the log base with another term"
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
        self.metrics.record_snapshot();
        self.metrics.publish_log_bytes(self.wal.log_bytes());
        tracing::info!(
            index = snapshot.last_included_index,
            term = snapshot.last_included_term,
            bytes = bytes.len(),
            "snapshot written, log compacted"
        );
        Ok(())
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
            urgent,
            ..
        },
        PeerMessage::AppendEntries {
            term: next_term,
            prev_log_index: next_prev_log_index,
            entries: next_entries,
            leader_commit: next_leader_commit,
            round: next_round,
            urgent: next_urgent,
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
    *urgent |= *next_urgent;
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
            urgent: true,
        }
    }

    fn lazy(mut msg: PeerMessage) -> PeerMessage {
        if let PeerMessage::AppendEntries { urgent, .. } = &mut msg {
            *urgent = false;
        }
        msg
    }

    #[test]
    fn a_merged_append_is_urgent_if_either_part_was() {
        let mut first = lazy(append(10, 1, 9, 4));
        assert!(merge_append_entries(&mut first, &lazy(append(11, 1, 9, 4))));
        assert_eq!(first, lazy(append(10, 2, 9, 4)), "two lazy parts stay lazy");
        assert!(merge_append_entries(&mut first, &append(12, 1, 9, 4)));
        assert_eq!(first, append(10, 3, 9, 4), "an urgent part makes it urgent");
    }

    #[test]
    fn only_appends_marked_non_urgent_may_wait() {
        let from = ServerId(1);
        let lazy_input = ServerInput::Peer {
            from,
            msg: lazy(append(10, 1, 9, 4)),
        };
        let urgent_input = ServerInput::Peer {
            from,
            msg: append(10, 1, 9, 4),
        };
        assert!(is_lazy_append(&lazy_input));
        assert!(!is_lazy_append(&urgent_input));
        assert!(!is_lazy_append(&ServerInput::Timer(ServerTimer::Election)));
    }

    /// A log writer over a fresh log; returns it with the job queue and the queue of its
    /// reports to the node task.
    fn writer(
        directory: &crate::storage::test_directory::TestDirectory,
    ) -> (LogWriter, JobSender<LogJob>, tokio_mpsc::Receiver<Durable>) {
        let (wal, _recovery) = Wal::open(directory.path()).expect("test: open a log");
        let (job_sender, jobs) = job_queue::channel();
        let (reports, report_receiver) = tokio_mpsc::channel(16);
        let initial = NodeState {
            role: crate::node::Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            snapshot_index: 0,
        };
        let writer = LogWriter::new(
            wal,
            jobs,
            reports,
            Arc::new(AtomicBool::new(false)),
            Arc::new(ServerMetrics::new(ServerId(1), initial)),
        );
        (writer, job_sender, report_receiver)
    }

    fn job(urgent: bool, first_index: LogIndex, persisted_through: u64) -> LogJob {
        LogJob {
            urgent,
            ops: vec![LogOp::Persist(PersistOp::Append {
                first_index,
                entries: vec![Entry {
                    term: 0,
                    command: Command::Noop,
                }],
            })],
            held: Vec::new(),
            persisted_through,
        }
    }

    /// The `through` of every report the log thread sent, in order.
    fn reports(reports: &mut tokio_mpsc::Receiver<Durable>) -> Vec<u64> {
        let mut through = Vec::new();
        while let Ok(report) = reports.try_recv() {
            through.push(report.through);
        }
        through
    }

    #[test]
    fn a_non_urgent_append_waits_for_urgent_work_and_shares_its_sync() {
        let directory = crate::storage::test_directory::TestDirectory::new("lazy-then-urgent");
        let (mut writer, jobs, mut inputs) = writer(&directory);
        jobs.send(job(false, 1, 1), false)
            .unwrap_or_else(|_| panic!("test: send"));
        jobs.send(job(true, 2, 2), true)
            .unwrap_or_else(|_| panic!("test: send"));
        drop(jobs);
        writer.write_jobs().expect("test: write");
        assert_eq!(writer.syncs, 1, "one flush for both");
        assert_eq!(
            writer.lazy_syncs, 0,
            "urgent work was already there: no wait"
        );
        assert_eq!(reports(&mut inputs), vec![2]);
    }

    /// An acknowledgement leaves only through the report of the sync that made its append
    /// durable, in the order the jobs held it, and one report carries a whole group commit.
    #[test]
    fn held_messages_come_back_with_the_report_of_their_sync_in_order() {
        let directory = crate::storage::test_directory::TestDirectory::new("held-in-report");
        let (mut writer, jobs, mut reports) = writer(&directory);
        let ack = |match_index| PeerMessage::AppendResponse {
            term: 2,
            success: true,
            match_index,
            conflict_index: 0,
            conflict_term: None,
            round: 0,
        };
        let mut first = job(true, 1, 1);
        first.held.push((ServerId(2), ack(1)));
        let mut second = job(true, 2, 2);
        second.held.push((ServerId(3), ack(2)));
        jobs.send(first, true)
            .unwrap_or_else(|_| panic!("test: send"));
        jobs.send(second, true)
            .unwrap_or_else(|_| panic!("test: send"));
        drop(jobs);
        writer.write_jobs().expect("test: write");
        assert_eq!(writer.syncs, 1, "one group commit");
        let report = reports.try_recv().expect("a report");
        assert_eq!(report.through, 2);
        assert_eq!(
            report.held,
            vec![(ServerId(2), ack(1)), (ServerId(3), ack(2))],
            "both acknowledgements, in order"
        );
        assert!(reports.try_recv().is_err(), "one report per sync");
        drop(writer);
        let (_wal, recovery) = Wal::open(directory.path()).expect("test: reopen");
        assert_eq!(recovery.state.log.len(), 2, "what they promise is on disk");
    }

    /// A round that persisted nothing but holds a message (a refused vote) still gets it sent,
    /// without claiming anything new durable.
    #[test]
    fn a_held_message_without_log_work_is_reported_without_a_sync() {
        let directory = crate::storage::test_directory::TestDirectory::new("held-only");
        let (mut writer, jobs, mut reports) = writer(&directory);
        let refusal = PeerMessage::VoteResponse {
            term: 3,
            granted: false,
        };
        let vote_only = LogJob {
            urgent: true,
            ops: Vec::new(),
            held: vec![(ServerId(2), refusal.clone())],
            persisted_through: 0,
        };
        jobs.send(vote_only, true)
            .unwrap_or_else(|_| panic!("test: send"));
        drop(jobs);
        writer.write_jobs().expect("test: write");
        assert_eq!(writer.syncs, 0, "nothing to sync");
        let report = reports.try_recv().expect("a report");
        assert_eq!(
            (report.through, report.held),
            (0, vec![(ServerId(2), refusal)])
        );
    }

    #[test]
    fn a_non_urgent_append_alone_still_becomes_durable_after_its_wait() {
        let directory = crate::storage::test_directory::TestDirectory::new("lazy-alone");
        let (mut writer, jobs, mut inputs) = writer(&directory);
        jobs.send(job(false, 1, 1), false)
            .unwrap_or_else(|_| panic!("test: send"));
        // The sender stays open, so the writer waits out its window for company.
        let handle = std::thread::spawn(move || {
            writer.write_jobs().expect("test: write");
            writer
        });
        let first = inputs.blocking_recv().map(|report| report.through);
        assert_eq!(first, Some(1), "reported durable");
        drop(jobs);
        let writer = handle.join().expect("test: the log thread");
        assert_eq!((writer.syncs, writer.lazy_syncs), (1, 1));
        let (_wal, recovery) = {
            drop(writer);
            Wal::open(directory.path()).expect("test: reopen")
        };
        assert_eq!(recovery.state.log.len(), 1, "the append is on disk");
    }

    #[test]
    fn a_non_urgent_round_with_nothing_to_sync_does_not_wait() {
        let directory = crate::storage::test_directory::TestDirectory::new("lazy-empty");
        let (mut writer, jobs, mut inputs) = writer(&directory);
        let nothing = LogJob {
            urgent: false,
            ops: Vec::new(),
            held: Vec::new(),
            persisted_through: 0,
        };
        jobs.send(nothing, false)
            .unwrap_or_else(|_| panic!("test: send"));
        drop(jobs);
        writer.write_jobs().expect("test: write");
        assert_eq!((writer.syncs, writer.lazy_syncs), (0, 0));
        assert!(reports(&mut inputs).is_empty());
    }

    /// A server that cannot persist must stop answering: the log thread's error stops the
    /// node task too, and nothing is reported durable.
    #[test]
    fn a_storage_error_stops_the_server_and_reports_nothing_durable() {
        let directory = crate::storage::test_directory::TestDirectory::new("storage-error");
        let (writer, jobs, mut inputs) = writer(&directory);
        let stop = Arc::clone(&writer.stop);
        // Index 5 of an empty log: the log refuses the batch, as it would a failed write.
        jobs.send(job(true, 5, 1), true)
            .unwrap_or_else(|_| panic!("test: send"));
        drop(jobs);
        let result = writer.run();
        assert!(
            matches!(result, Err(StorageError::OpRejected { .. })),
            "{result:?}"
        );
        assert!(
            stop.load(Ordering::Relaxed),
            "the node task is told to stop"
        );
        assert!(reports(&mut inputs).is_empty(), "nothing reported durable");
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
