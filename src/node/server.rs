//! A lock server: one Raft replica with pre-vote and check-quorum, serving client requests.
//!
//! # Calling contract
//! - Build with [`Server::new`] from the durable state the driver recovered (empty on first
//!   boot), then call [`Server::step`] once per input, passing the current time.
//! - Both return a batch of [`ServerOutput`]s. The driver MUST carry them out in order, and MUST
//!   make every `Persist` durable before carrying out anything after it in the batch: a vote or
//!   an append acknowledgement must never leave before the state it promises is on disk.
//! - `SetTimer { timer, at }` replaces the previous deadline for that timer. The driver delivers
//!   `ServerInput::Timer(timer)` at or after `at`. Late, early or repeated timer inputs are
//!   harmless: the server checks its own deadline.
//! - A server never reads a clock or an unseeded random source; it must never block.
//!
//! # Repair of a damaged log (protocol-aware recovery)
//! A driver whose storage finds the log damaged (a record that fails its checksum, in the
//! middle or at the end) keeps the valid records before it, drops the rest, and builds the
//! server from a [`DurableState`] with `recovering` set. Such a server may have lost entries
//! it acknowledged, so its log no longer speaks for them. It therefore, until repaired:
//! - starts one term above the term it had ([`Server::new`] persists that before anything
//!   leaves), so that a leader it may have acknowledged entries to steps down when it hears
//!   from it, and counts nothing on its old acknowledgements any more;
//! - grants no pre-vote and no vote, and never stands for election;
//! - accepts AppendEntries and snapshots as any follower does.
//!
//! It is repaired once its commit index reaches an entry of a term at least that raised term:
//! that entry was committed by a leader elected after the damage, whose log held every entry
//! committed before (Leader Completeness, with only undamaged servers voting), and a follower's
//! commit index only covers entries it has verified against its leader's log. So everything
//! it might have acknowledged and that counted toward a commit is back, copied from the
//! leader's log, whose committed prefix is the same on every server. Then it persists the
//! cleared flag and votes again. Liveness needs a majority of undamaged servers: a cluster of
//! one has nobody to repair from, and its driver MUST NOT ask for repair (it refuses instead).
//!
//! # What it asserts
//! After every step [`Server::step`] checks the Raft invariants it can see locally (commit and
//! apply ordering, at most one vote per term, log terms, leader bookkeeping) and panics with the
//! server id and term on a violation: that is a bug, not bad input.

use super::coverage::{Branch, Coverage};
use super::lock_table::{LockTable, Settled, Woken, WriteKind};
use super::log::{DurableState, PersistOp, RaftLog};
use super::messages::{
    ApplyResult, CLIENT_SECRET_BYTES, Claim, ClientAddr, ClientId, ClientReply, ClientRequest,
    ClientSecret, Command, Entry, LOCK_NAME_BYTES_MAX, LockName, LogIndex, Operation, Outcome,
    PeerMessage, Rejection, ReplyBody, RequestBody, ServerId, ServiceError, Snapshot, Term,
};
use super::time::Time;
use super::watch::{WatchInput, WatchRefusal, WatchReply, WatchState};
use queue::QueueState;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sessions::{KeepaliveWaiter, SessionState};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Static configuration of one server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: ServerId,
    /// Every server of the cluster, this one included.
    pub servers: Vec<ServerId>,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    /// Start as the term-1 leader (on first boot only), as the seed design does.
    pub initial_leader: Option<ServerId>,
    /// Entries carried by one AppendEntries message.
    pub append_entries_max: usize,
    /// Appended but uncommitted entries the leader accepts before answering `Overloaded`.
    pub uncommitted_entries_max: u64,
    /// Linearizable checks waiting at one server before new ones are refused.
    pub pending_reads_max: usize,
    /// Once this many applied entries are held in the log, the server snapshots its lock
    /// table and compacts them away. `None` never compacts.
    pub snapshot_entries_min: Option<u64>,
    /// The driver makes `Persist` outputs durable in the background and reports progress with
    /// `ServerInput::Persisted`. A leader then counts only its reported-durable entries toward
    /// a majority (Raft thesis §10.2.1). Otherwise (the simulator) a `Persist` counts as
    /// durable once the step that emitted it returns.
    pub durability_reported: bool,
    /// Simulator only: take rare but legal paths now and then ([`Buggify`]). `None` in every
    /// real deployment.
    pub buggify: Option<Buggify>,
    /// The shortest and longest session TTL a hello may ask for; outside them it is refused
    /// `bad_request`, naming the bounds.
    pub session_ttl_min: Duration,
    pub session_ttl_max: Duration,
    /// How long a lock freed by a session's expiry (not by a release) is not granted to
    /// anyone (Chubby's and Consul's lock-delay). Zero turns it off.
    pub lock_delay: Duration,
    /// The bound on every clock's rate error, as a fraction (0.01: each clock runs within 1%
    /// of true time). Session deadlines are stretched by it and measured silences shrunk.
    pub max_clock_drift: f64,
    /// Tests only, and unsafe: a server repairing a damaged log votes and stands for election
    /// as if its log were whole. This is the bug the repair rule exists to prevent (module
    /// docs); the simulator's `acknowledged_writes_survive` checker must catch it. Always
    /// false in a deployment.
    pub unsafe_recovering_votes: bool,
}

/// Perturbations inside the node, in the manner of FoundationDB's BUGGIFY: at each of a few
/// decision points the server, drawing from its own seeded stream, sometimes takes a path that
/// is legal but rare in a healthy run, so that the explorer reaches the states behind it:
/// - an AppendEntries batch cut to a random size (tiny or uneven batches);
/// - an election timeout shorter than the configured minimum (a spurious election timer);
/// - a heartbeat round skipped (as if all its messages were lost);
/// - a snapshot of the applied state at an odd moment;
/// - a message sent twice (a resend, as a network may duplicate it anyway).
///
/// None of these changes what a correct protocol may do: each is something a slow disk, a
/// lossy network or an unlucky timer could cause. The stream is separate from the server's
/// election jitter, so turning it on changes nothing else a seed draws.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Buggify {
    pub seed: u64,
    /// Probability of the rare path at each decision point, in 0..=1.
    pub chance: f64,
}

impl ServerConfig {
    /// A configuration with the default timing: election timeout 150-300 ms, heartbeat 50 ms.
    pub fn new(id: ServerId, servers: Vec<ServerId>) -> ServerConfig {
        ServerConfig {
            id,
            servers,
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            initial_leader: None,
            append_entries_max: 64,
            uncommitted_entries_max: 4_096,
            pending_reads_max: 1_024,
            snapshot_entries_min: None,
            durability_reported: false,
            buggify: None,
            session_ttl_min: Duration::from_secs(1),
            session_ttl_max: Duration::from_secs(3_600),
            lock_delay: Duration::ZERO,
            max_clock_drift: 0.01,
            unsafe_recovering_votes: false,
        }
    }
}

/// A server's Raft role.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Follower,
    /// Asking for pre-votes; its term is not yet incremented.
    PreCandidate,
    Candidate,
    Leader,
}

/// The server's timers.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerTimer {
    /// Follower and candidates: start an election. Leader: run the check-quorum test.
    Election,
    /// Leader only: send AppendEntries to every peer.
    Heartbeat,
}

/// Everything that can happen to a server.
#[derive(Clone, Debug)]
pub enum ServerInput {
    Peer {
        from: ServerId,
        msg: PeerMessage,
    },
    Client {
        from: ClientAddr,
        request: ClientRequest,
    },
    Timer(ServerTimer),
    /// Only with `ServerConfig::durability_reported`: the first `through` `Persist` and
    /// `PersistSnapshot` outputs this server emitted (counting from `Server::new`'s) are
    /// durable.
    Persisted {
        through: u64,
    },
    /// A connection starts, stops or acknowledges a watch, or closed (docs/design.md,
    /// "Watches").
    Watch(WatchInput),
}

/// An effect for the driver to carry out, in order. See the module's calling contract.
#[must_use = "a server's effects must be carried out by the driver"]
#[derive(Clone, Debug)]
pub enum ServerOutput {
    /// Make this change durable before carrying out any later output of the batch.
    Persist(PersistOp),
    /// Make this snapshot durable and compact the durable log behind it (Raft §7:
    /// `DurableState::install_snapshot`), before carrying out any later output of the batch.
    PersistSnapshot(Arc<Snapshot>),
    Send {
        to: ServerId,
        msg: PeerMessage,
    },
    Reply {
        to: ClientAddr,
        reply: ClientReply,
    },
    SetTimer {
        timer: ServerTimer,
        at: Time,
    },
    /// The server applied a committed entry. Informational: checkers and logs use it.
    Applied {
        index: LogIndex,
        entry: Entry,
        result: ApplyResult,
    },
    /// The entry applied at `index` (reported just before) decided a waiter of a lock's queue.
    /// Informational, on every server: the fairness checkers use it.
    Woken {
        index: LogIndex,
        woken: Woken,
    },
    /// For the watcher on connection `to`, in order: a watch's start, its events, its end.
    Watch {
        to: ClientAddr,
        reply: WatchReply,
    },
}

/// The leader's view of one follower.
#[derive(Copy, Clone, Debug)]
struct Progress {
    /// Next index to send (optimistically advanced when sending: pipelining).
    next_index: LogIndex,
    /// Highest index known to match the leader's log.
    match_index: LogIndex,
    /// Highest heartbeat round the follower acknowledged in the current term.
    acked_round: u64,
}

/// Where the answer to a write goes.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum ReplyRoute {
    /// The client is connected to this server.
    Direct(ClientAddr),
    /// The client is connected to `server`, which forwarded its request.
    Via {
        server: ServerId,
        client: ClientAddr,
    },
}

/// A linearizable check waiting at the leader for leadership confirmation.
#[derive(Clone, Debug)]
enum ReadWaiter {
    /// A check from a client of this server.
    Local {
        client: ClientAddr,
        seq: u64,
        credential: Credential,
        lock: LockName,
    },
    /// A read-index request from a follower.
    Remote { server: ServerId, id: u64 },
    /// A preempt of a lock that someone else holds (or will hold once the log's uncommitted
    /// entries apply): refused with a confirmed read instead of a log append.
    Preempt(Refusal),
    /// A keepalive: acknowledged only by a leader confirmed after it arrived.
    Keepalive(KeepaliveWaiter),
}

/// A preempt the leader means to refuse without a log entry. It is answered once leadership
/// is confirmed and the server has applied `serve_index`, after looking again: see
/// `Server::serve_refusals`.
#[derive(Clone, Debug)]
struct Refusal {
    route: ReplyRoute,
    client: ClientId,
    seq: u64,
    lock: LockName,
    /// The log's last index when the preempt arrived: the entries up to it decide the lock.
    serve_index: LogIndex,
}

/// Reads that wait for a majority to acknowledge heartbeat round `round`.
#[derive(Clone, Debug)]
struct ReadBatch {
    round: u64,
    read_index: LogIndex,
    waiters: Vec<ReadWaiter>,
    /// When the round's AppendEntries were emitted. A read arriving at that same instant may
    /// join the round: its messages leave no earlier than the read arrived.
    started_at: Time,
}

/// A confirmed linearizable check, answered once the server applied `read_index`.
#[derive(Clone, Debug)]
struct ConfirmedRead {
    read_index: LogIndex,
    client: ClientAddr,
    seq: u64,
    credential: Credential,
    lock: LockName,
    /// Local checks waiting for this replica to catch up to what their client has seen give
    /// up at this time (answered `Unavailable`, so the client tries another server).
    expires_at: Option<Time>,
}

/// A follower's linearizable check waiting for the leader's read index.
#[derive(Clone, Debug)]
struct ForwardedRead {
    client: ClientAddr,
    seq: u64,
    credential: Credential,
    lock: LockName,
}

/// Who a check claims to come from. Checked when the check is answered, against the replica
/// it is answered from: by then that replica has applied at least what the client has seen,
/// its own registration included.
#[derive(Copy, Clone, Debug)]
struct Credential {
    client: ClientId,
    secret: Option<ClientSecret>,
}

pub struct Server {
    config: ServerConfig,
    /// Election jitter.
    rng: ChaCha8Rng,
    /// Client secrets: a stream of its own, so that registrations do not shift the election
    /// jitter (and so every simulated schedule) of the seed that drew them.
    secret_rng: ChaCha8Rng,

    // Durable: mirrors what the driver has persisted, changed only together with a `Persist`.
    term: Term,
    voted_for: Option<ServerId>,
    log: RaftLog,
    /// Repairing a damaged log (module docs): the term it started this repair in. Durable as
    /// `DurableState::recovering`.
    recovering: Option<Term>,

    // Volatile: rebuilt after a restart.
    role: Role,
    leader: Option<ServerId>,
    commit_index: LogIndex,
    table: LockTable,
    election_deadline: Time,
    heartbeat_deadline: Option<Time>,
    /// When this server last heard from the leader of its current term: pre-votes and votes are
    /// refused within an election timeout of it, so a partitioned server cannot disrupt.
    last_leader_contact: Option<Time>,
    /// Pre-votes or votes granted to this server in the current election.
    votes: BTreeSet<ServerId>,
    /// Leader only.
    progress: BTreeMap<ServerId, Progress>,
    /// Leader only: peers heard from since the last check-quorum test.
    recently_active: BTreeSet<ServerId>,
    /// Leader only: the current heartbeat round.
    round: u64,
    /// Leader only: the commit index when this server became leader. Past it, a leader may
    /// only ever commit an entry of its own term (Raft §5.4.2).
    commit_index_at_election: LogIndex,
    /// Leader only: where to send the result of the write at each log index, and the request
    /// seq to echo.
    pending_replies: BTreeMap<LogIndex, Vec<(ReplyRoute, u64)>>,
    /// Leader only: the last index of its log whose commit someone waits for promptly. The
    /// entries after it are acquires that queue behind a holder: their client hears nothing
    /// until a later entry hands it the lock, and committing that entry commits them too. So
    /// their appends may wait, a bounded while, to share a disk flush with what follows
    /// (`AppendEntries::urgent` false; the driver reads [`Server::prompt_through`]), instead of
    /// taking a flush of their own that the next hand-over's flush would queue behind.
    prompt_through: LogIndex,
    /// Leader only: reads that arrived before an entry of this term was committed.
    reads_awaiting_commit: Vec<ReadWaiter>,
    /// Leader only: reads waiting for a majority to acknowledge a round.
    read_batches: VecDeque<ReadBatch>,
    /// Leader only: reads that arrived while a round was in flight. They share the next
    /// round, which starts once the rounds in flight are confirmed (`confirm_reads`).
    next_round_reads: Vec<ReadWaiter>,
    /// Reads whose index is confirmed, waiting for this server to apply up to it.
    confirmed_reads: Vec<ConfirmedRead>,
    /// Follower only: reads sent to the leader for a read index, by request id.
    forwarded_reads: BTreeMap<u64, ForwardedRead>,
    /// Leader only: confirmed refusals waiting for this server to apply their `serve_index`.
    refusals: Vec<Refusal>,
    /// Leader only: the latest preempt refused without a log entry, per client. A copy of
    /// that request arriving later gets the same answer, and an older one is stale: neither may
    /// be appended, or the client would hold a lock it was told it lost.
    refused: BTreeMap<ClientId, RefusedByRead>,
    /// The latest snapshot: the state behind the log's base, sent to followers that need
    /// compacted entries.
    snapshot: Option<Arc<Snapshot>>,
    next_read_id: u64,

    /// Sessions: deadlines and keepalives (leader), silent-mark receipts (every server).
    sessions: SessionState,
    /// Leader only: parked answers of queued acquires, and wait deadlines.
    queues: QueueState,
    /// Every server: the watches it serves and the ring of recent changes.
    watches: WatchState,

    /// The `now` of the step under way, for the few deep helpers that need it.
    step_time: Time,
    /// Which handler branches this incarnation took, for the explorer's coverage report.
    coverage: Coverage,
    /// The stream [`Buggify`] draws from; `None` when it is off.
    buggify_rng: Option<ChaCha8Rng>,
    /// `Persist` and `PersistSnapshot` outputs emitted so far.
    persist_count: u64,
    /// With `durability_reported`: appends not yet reported durable, as (their number among
    /// the persist outputs, their first index). Bounded by the driver's reporting.
    unconfirmed_appends: VecDeque<(u64, LogIndex)>,

    out: Vec<ServerOutput>,
}

impl Server {
    /// Builds a server from the durable state recovered by the driver (empty on first boot).
    ///
    /// `rng_seed` seeds the election jitter and the client secrets; the driver derives it (in
    /// the simulator, from the scenario seed, per server and per incarnation). A 64-bit seed is
    /// for tests and the simulator only: a real deployment MUST use [`Server::with_seed`] and
    /// 256 bits from the operating system, or client secrets could be guessed.
    #[must_use = "a server's effects must be carried out by the driver"]
    pub fn new(
        config: ServerConfig,
        durable: DurableState,
        rng_seed: u64,
        now: Time,
    ) -> (Server, Vec<ServerOutput>) {
        let rng = ChaCha8Rng::seed_from_u64(rng_seed);
        Server::build(config, durable, rng, now)
    }

    /// [`Server::new`] with a full 256-bit seed, which also makes the client secrets it issues
    /// as unpredictable as the seed is.
    #[must_use = "a server's effects must be carried out by the driver"]
    pub fn with_seed(
        config: ServerConfig,
        durable: DurableState,
        seed: [u8; 32],
        now: Time,
    ) -> (Server, Vec<ServerOutput>) {
        Server::build(config, durable, ChaCha8Rng::from_seed(seed), now)
    }

    /// Election jitter comes from `rng`; client secrets from another stream of the same seed.
    fn build(
        config: ServerConfig,
        durable: DurableState,
        rng: ChaCha8Rng,
        now: Time,
    ) -> (Server, Vec<ServerOutput>) {
        assert!(
            config.servers.contains(&config.id),
            "server {} is not in its own cluster",
            config.id
        );
        assert!(
            config.election_timeout_min <= config.election_timeout_max,
            "election timeout range is inverted"
        );
        assert!(
            config.append_entries_max >= 1,
            "append_entries_max must be positive"
        );
        assert!(
            config.session_ttl_min <= config.session_ttl_max,
            "session TTL range is inverted"
        );
        assert!(
            (0.0..1.0).contains(&config.max_clock_drift),
            "max_clock_drift {} is not within 0..1",
            config.max_clock_drift
        );
        let first_boot = durable.term == 0 && durable.log.last_index() == 0 && !durable.recovering;
        assert!(
            !durable.recovering || config.servers.len() > 1,
            "{}: a cluster of one has no peer to repair a damaged log from",
            config.id
        );
        // A snapshot is committed state: start from it rather than from an empty table.
        let (table, commit_index) = match &durable.snapshot {
            Some(snapshot) => {
                assert_eq!(
                    durable.log.base_index(),
                    snapshot.last_included_index,
                    "{}: the durable log does not follow the durable snapshot",
                    config.id
                );
                (snapshot.table.clone(), snapshot.last_included_index)
            }
            None => {
                assert_eq!(
                    durable.log.base_index(),
                    0,
                    "{}: a compacted log without a snapshot",
                    config.id
                );
                (LockTable::new(), 0)
            }
        };
        let mut secret_rng = rng.clone();
        secret_rng.set_stream(1);
        secret_rng.set_word_pos(0);
        if let Some(buggify) = config.buggify {
            assert!(
                (0.0..=1.0).contains(&buggify.chance),
                "buggify chance {} is not a probability",
                buggify.chance
            );
        }
        let buggify_rng = config
            .buggify
            .map(|buggify| ChaCha8Rng::seed_from_u64(buggify.seed));
        let mut server = Server {
            rng,
            secret_rng,
            buggify_rng,
            term: durable.term,
            voted_for: durable.voted_for,
            log: durable.log,
            recovering: None,
            role: Role::Follower,
            leader: None,
            commit_index,
            table,
            election_deadline: now,
            heartbeat_deadline: None,
            last_leader_contact: None,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            recently_active: BTreeSet::new(),
            round: 0,
            commit_index_at_election: 0,
            pending_replies: BTreeMap::new(),
            prompt_through: 0,
            reads_awaiting_commit: Vec::new(),
            read_batches: VecDeque::new(),
            next_round_reads: Vec::new(),
            confirmed_reads: Vec::new(),
            forwarded_reads: BTreeMap::new(),
            refusals: Vec::new(),
            refused: BTreeMap::new(),
            snapshot: durable.snapshot.clone(),
            next_read_id: 1,
            sessions: SessionState::default(),
            queues: QueueState::default(),
            watches: WatchState::new(commit_index),
            step_time: now,
            coverage: Coverage::default(),
            persist_count: 0,
            unconfirmed_appends: VecDeque::new(),
            out: Vec::new(),
            config,
        };
        if durable.recovering {
            server.start_repair();
        }
        match server.config.initial_leader {
            Some(leader) if first_boot => {
                // The seed design's fixed leader: everyone starts in term 1 as if `leader` had
                // won an election there.
                server.term = 1;
                server.voted_for = Some(leader);
                server.persist_hard_state();
                if leader == server.config.id {
                    server.become_leader(now);
                } else {
                    server.leader = Some(leader);
                    server.last_leader_contact = Some(now);
                    server.reset_election_timer(now);
                }
            }
            _ => server.reset_election_timer(now),
        }
        server.check_invariants();
        let outputs = std::mem::take(&mut server.out);
        (server, outputs)
    }

    /// Handles one input at time `now` and returns the effects, in the order they must be
    /// carried out.
    #[must_use = "a server's effects must be carried out by the driver"]
    pub fn step(&mut self, now: Time, input: ServerInput) -> Vec<ServerOutput> {
        debug_assert!(
            self.out.is_empty(),
            "outputs left over from a previous step"
        );
        self.step_time = now;
        let term_before = self.term;
        let vote_before = self.voted_for;
        let commit_before = self.commit_index;
        match input {
            ServerInput::Peer { from, msg } => self.on_peer_message(now, from, msg),
            ServerInput::Client { from, request } => self.on_client_request(now, from, request),
            ServerInput::Timer(ServerTimer::Election) => {
                if now >= self.election_deadline {
                    self.on_election_timer(now);
                }
            }
            ServerInput::Timer(ServerTimer::Heartbeat) => {
                if self.role == Role::Leader && self.heartbeat_deadline.is_some_and(|at| now >= at)
                {
                    if self.buggify(Branch::BuggifySkippedHeartbeat) {
                        let at = now + self.config.heartbeat_interval;
                        self.heartbeat_deadline = Some(at);
                        self.set_timer(ServerTimer::Heartbeat, at);
                    } else {
                        self.broadcast_append(now);
                    }
                }
            }
            ServerInput::Persisted { through } => {
                while self
                    .unconfirmed_appends
                    .front()
                    .is_some_and(|&(number, _)| number <= through)
                {
                    self.unconfirmed_appends.pop_front();
                }
                self.advance_commit();
            }
            ServerInput::Watch(input) => {
                let before = self.out.len();
                self.watches.on_input(input, &self.table, &mut self.out);
                self.count_watch_refusals(before);
            }
        }
        self.expire_local_checks(now);
        self.finish_repair_if_done();
        // Session deadlines are looked at on the leader's steps (its heartbeat timer at least),
        // so that they fire in every driver without a timer of their own.
        self.tick_sessions(now);
        self.tick_queues(now);
        // At most one vote per term: within a term, a cast vote never changes.
        if self.term == term_before && vote_before.is_some() {
            assert_eq!(
                self.voted_for, vote_before,
                "{}: changed its vote within term {}",
                self.config.id, self.term
            );
        }
        assert!(
            self.term >= term_before,
            "{}: term went backwards",
            self.config.id
        );
        assert!(
            self.commit_index >= commit_before,
            "{}: commit index went backwards",
            self.config.id
        );
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    // ----- observation, for drivers and checkers -----

    pub fn id(&self) -> ServerId {
        self.config.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    /// Whether this server is repairing a damaged log (module docs).
    pub fn is_recovering(&self) -> bool {
        self.recovering.is_some()
    }
    pub fn voted_for(&self) -> Option<ServerId> {
        self.voted_for
    }
    /// The leader this server believes in, if any (itself when leader).
    pub fn leader(&self) -> Option<ServerId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    /// Leader: the last log index whose commit someone waits for promptly; appends past it
    /// (acquires that queue) may wait a bounded while to share a flush. A driver holds its own
    /// sync of a leader's step that appended nothing up to a new `prompt_through`.
    pub fn prompt_through(&self) -> LogIndex {
        self.prompt_through
    }
    pub fn last_applied(&self) -> LogIndex {
        self.table.applied_index()
    }
    pub fn lock_table(&self) -> &LockTable {
        &self.table
    }
    /// The handler branches this server took since it was built (one incarnation).
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// Requests of any kind waiting inside this server for an answer: writes waiting for
    /// their entries, and every read (refusals by read included).
    pub fn pending_request_count(&self) -> usize {
        self.pending_replies.values().map(Vec::len).sum::<usize>() + self.pending_read_count()
    }

    // ----- peer messages -----

    fn on_peer_message(&mut self, now: Time, from: ServerId, msg: PeerMessage) {
        if from == self.config.id || !self.config.servers.contains(&from) {
            // Bad input from the transport, not a broken invariant: drop it.
            return;
        }
        match msg {
            PeerMessage::PreVote {
                term,
                last_log_index,
                last_log_term,
            } => self.on_pre_vote(now, from, term, last_log_index, last_log_term),
            PeerMessage::PreVoteResponse { term, granted } => {
                self.on_pre_vote_response(now, from, term, granted)
            }
            PeerMessage::RequestVote {
                term,
                last_log_index,
                last_log_term,
            } => self.on_request_vote(now, from, term, last_log_index, last_log_term),
            PeerMessage::VoteResponse { term, granted } => {
                self.on_vote_response(now, from, term, granted)
            }
            PeerMessage::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
                // A hint for the driver's disk, not for the protocol.
                urgent: _,
            } => self.on_append_entries(
                now,
                from,
                term,
                (prev_log_index, prev_log_term),
                entries,
                leader_commit,
                round,
            ),
            PeerMessage::AppendResponse {
                term,
                success,
                match_index,
                conflict_index,
                conflict_term,
                round,
            } => {
                if success {
                    self.on_append_success(now, from, term, match_index, round)
                } else {
                    self.on_append_failure(now, from, term, conflict_index, conflict_term, round)
                }
            }
            PeerMessage::Forward { client, request } => self.on_forward(now, from, client, request),
            PeerMessage::ForwardReply { client, reply } => {
                self.out.push(ServerOutput::Reply { to: client, reply })
            }
            PeerMessage::ReadIndexRequest { id } => {
                if self.role == Role::Leader {
                    self.start_read(now, ReadWaiter::Remote { server: from, id });
                } else {
                    self.coverage.hit(Branch::ReadIndexRefusedNotLeader);
                    self.send(from, PeerMessage::ReadIndexResponse { id, index: None });
                }
            }
            PeerMessage::ReadIndexResponse { id, index } => self.on_read_index_response(id, index),
            PeerMessage::InstallSnapshot {
                term,
                snapshot,
                round,
            } => self.on_install_snapshot(now, from, term, snapshot, round),
        }
    }

    /// True while this server believes a leader is alive: it then refuses to help anyone start
    /// an election (the "leader stickiness" half of check-quorum, Raft thesis §4.2.3).
    fn in_leader_lease(&self, now: Time) -> bool {
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self
                        .last_leader_contact
                        .is_some_and(|at| now < at + self.config.election_timeout_min)
            }
        }
    }

    fn on_pre_vote(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        // A pre-vote changes nothing here: not our term, not our vote, not our timer.
        let log_ok = self.log.is_up_to_date(last_index, last_term);
        let lease = self.in_leader_lease(now);
        let granted = term > self.term && log_ok && !lease && !self.repair_forbids_votes();
        self.coverage.hit(if granted {
            Branch::PreVoteGranted
        } else if term <= self.term {
            Branch::PreVoteRefusedStaleTerm
        } else if !log_ok {
            Branch::PreVoteRefusedLogBehind
        } else if lease {
            Branch::PreVoteRefusedLeaderLease
        } else {
            Branch::PreVoteRefusedRecovering
        });
        let reply_term = if granted { term } else { self.term };
        self.send(
            from,
            PeerMessage::PreVoteResponse {
                term: reply_term,
                granted,
            },
        );
    }

    fn on_pre_vote_response(&mut self, now: Time, from: ServerId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate {
            return;
        }
        if granted && term == self.term + 1 {
            self.votes.insert(from);
            if self.has_quorum(self.votes.len()) {
                self.coverage.hit(Branch::PreVoteResponseWon);
                self.become_candidate(now);
            }
        } else if !granted && term > self.term {
            self.coverage.hit(Branch::PreVoteResponseNewerTerm);
            self.become_follower(now, term, None);
        }
    }

    fn on_request_vote(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        if term > self.term {
            if self.in_leader_lease(now) {
                // Ignore entirely, without adopting the term: a server that lost touch with a
                // healthy leader must not depose it.
                self.coverage.hit(Branch::VoteIgnoredLeaderLease);
                return;
            }
            self.become_follower(now, term, None);
        }
        let log_ok = self.log.is_up_to_date(last_index, last_term);
        let granted = term == self.term
            && self.voted_for.is_none_or(|vote| vote == from)
            && log_ok
            && !self.repair_forbids_votes();
        self.coverage.hit(if granted {
            Branch::VoteGranted
        } else if term != self.term {
            Branch::VoteRefusedStaleTerm
        } else if self.voted_for.is_some_and(|vote| vote != from) {
            Branch::VoteRefusedAlreadyVoted
        } else if !log_ok {
            Branch::VoteRefusedLogBehind
        } else {
            Branch::VoteRefusedRecovering
        });
        if granted {
            assert!(
                self.voted_for.is_none_or(|vote| vote == from),
                "{}: second vote in term {}",
                self.config.id,
                self.term
            );
            self.voted_for = Some(from);
            self.persist_hard_state();
            self.reset_election_timer(now);
        }
        self.send(
            from,
            PeerMessage::VoteResponse {
                term: self.term,
                granted,
            },
        );
    }

    fn on_vote_response(&mut self, now: Time, from: ServerId, term: Term, granted: bool) {
        if term > self.term {
            self.coverage.hit(Branch::VoteResponseNewerTerm);
            self.become_follower(now, term, None);
            return;
        }
        if self.role != Role::Candidate || term != self.term || !granted {
            return;
        }
        self.votes.insert(from);
        if self.has_quorum(self.votes.len()) {
            self.coverage.hit(Branch::VoteResponseWon);
            self.become_leader(now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_entries(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        (prev_index, prev_term): (LogIndex, Term),
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        round: u64,
    ) {
        if !self.accept_leader(now, from, term, round) {
            return;
        }

        // Raft §5.3: the entry before the new ones must match.
        match self.log.term_at(prev_index) {
            None => {
                self.coverage.hit(Branch::AppendEntriesRefusedMissingPrev);
                let hint = (self.log.last_index() + 1, None);
                self.send_append_response(from, false, 0, hint, round);
                return;
            }
            Some(ours) if ours != prev_term => {
                self.coverage
                    .hit(Branch::AppendEntriesRefusedPrevTermConflict);
                let hint = (self.log.first_index_of_term_at(prev_index), Some(ours));
                self.send_append_response(from, false, 0, hint, round);
                return;
            }
            Some(_) => {}
        }
        // Skip entries we already have; truncate at the first conflict and append the rest.
        let mut first_new = entries.len();
        for (offset, entry) in entries.iter().enumerate() {
            let index = prev_index + 1 + offset as LogIndex;
            if self.log.term_at(index) != Some(entry.term) {
                first_new = offset;
                break;
            }
        }
        self.coverage.hit(if entries.is_empty() {
            Branch::AppendEntriesHeartbeat
        } else if first_new == entries.len() {
            Branch::AppendEntriesAllDuplicates
        } else if prev_index + 1 + (first_new as LogIndex) <= self.log.last_index() {
            Branch::AppendEntriesConflictTruncated
        } else {
            Branch::AppendEntriesAppended
        });
        if first_new < entries.len() {
            let first_index = prev_index + 1 + first_new as LogIndex;
            assert!(
                first_index > self.commit_index,
                "{}: leader {from} would overwrite committed index {first_index}",
                self.config.id
            );
            let new_entries = entries[first_new..].to_vec();
            self.log.truncate_and_append(first_index, &new_entries);
            self.forget_receipts_from(first_index);
            for (offset, entry) in new_entries.iter().enumerate() {
                self.note_appended(first_index + offset as LogIndex, &entry.command, now);
            }
            self.persist(PersistOp::Append {
                first_index,
                entries: new_entries,
            });
        }
        let last_new = prev_index + entries.len() as LogIndex;
        if leader_commit > self.commit_index {
            let commit_before = self.commit_index;
            self.commit_index = leader_commit.min(last_new).max(self.commit_index);
            if self.commit_index > commit_before {
                self.coverage.hit(Branch::AppendEntriesCommitAdvanced);
            }
            self.apply_committed();
        }
        self.send_append_response(from, true, last_new, (0, None), round);
    }

    /// What AppendEntries and InstallSnapshot share: a message from a stale leader is refused
    /// with the newer term (so that it steps down, returns false); otherwise this server follows
    /// `from` in `term` and restarts its election timer.
    fn accept_leader(&mut self, now: Time, from: ServerId, term: Term, round: u64) -> bool {
        if term < self.term {
            self.coverage.hit(Branch::LeaderMessageRefusedStaleTerm);
            self.send_append_response(from, false, 0, (self.log.last_index() + 1, None), round);
            return false;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            assert!(
                !(self.role == Role::Leader && term == self.term),
                "{}: two leaders in term {term}: itself and {from}",
                self.config.id
            );
            self.become_follower(now, term, Some(from));
        }
        self.last_leader_contact = Some(now);
        self.reset_election_timer(now);
        true
    }

    fn on_install_snapshot(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        snapshot: Arc<Snapshot>,
        round: u64,
    ) {
        if !self.accept_leader(now, from, term, round) {
            return;
        }
        let index = snapshot.last_included_index;
        self.coverage.hit(if index > self.commit_index {
            Branch::InstallSnapshotInstalled
        } else {
            Branch::InstallSnapshotAlreadyCovered
        });
        if index > self.commit_index {
            // Raft §7: keep the log after the snapshot if it holds the snapshot's last entry,
            // otherwise drop it all; the state machine becomes the snapshot's.
            assert!(
                self.pending_replies.is_empty(),
                "{}: a follower with pending writes",
                self.config.id
            );
            assert_eq!(
                snapshot.table.applied_index(),
                index,
                "{}: snapshot table applied to another index than it claims",
                self.config.id
            );
            if self.log.term_at(index) != Some(snapshot.last_included_term) {
                self.forget_all_receipts();
            }
            self.log.compact_to(index, snapshot.last_included_term);
            self.table = snapshot.table.clone();
            self.watches.on_snapshot_installed(index, &mut self.out);
            self.commit_index = index;
            self.snapshot = Some(snapshot.clone());
            self.persist_count += 1;
            self.out.push(ServerOutput::PersistSnapshot(snapshot));
            self.serve_confirmed_reads();
        }
        // Everything up to the snapshot is committed, and committed prefixes agree: our log
        // matches the leader's that far, whether we just installed it or already had it.
        self.send_append_response(from, true, index, (0, None), round);
    }

    /// Snapshots the applied state and drops the log entries it covers, once enough of them
    /// have piled up (`snapshot_entries_min`). Only applied, so committed, entries are ever
    /// compacted; followers that still need them get the snapshot instead.
    fn maybe_compact(&mut self) {
        let applied = self.table.applied_index();
        let due = self
            .config
            .snapshot_entries_min
            .is_some_and(|entries_min| applied - self.log.base_index() >= entries_min.max(1));
        let odd_moment =
            !due && applied > self.log.base_index() && self.buggify(Branch::BuggifyOddSnapshot);
        if !due && !odd_moment {
            return;
        }
        let term = self
            .log
            .term_at(applied)
            .expect("applied entries are in the log or are its base");
        let snapshot = Arc::new(Snapshot {
            last_included_index: applied,
            last_included_term: term,
            table: self.table.clone(),
        });
        self.coverage.hit(Branch::SnapshotCompacted);
        self.log.compact_to(applied, term);
        self.snapshot = Some(snapshot.clone());
        self.persist_count += 1;
        self.out.push(ServerOutput::PersistSnapshot(snapshot));
    }

    fn send_append_response(
        &mut self,
        to: ServerId,
        success: bool,
        match_index: LogIndex,
        (conflict_index, conflict_term): (LogIndex, Option<Term>),
        round: u64,
    ) {
        let msg = PeerMessage::AppendResponse {
            term: self.term,
            success,
            match_index,
            conflict_index,
            conflict_term,
            round,
        };
        self.send(to, msg);
    }

    /// Common handling of an AppendResponse; returns false if it is stale or moot.
    fn accept_append_response(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        round: u64,
    ) -> bool {
        if term > self.term {
            self.coverage.hit(Branch::AppendResponseNewerTerm);
            self.become_follower(now, term, None);
            return false;
        }
        if self.role != Role::Leader || term != self.term {
            self.coverage.hit(Branch::AppendResponseStale);
            return false;
        }
        self.recently_active.insert(from);
        let progress = self
            .progress
            .get_mut(&from)
            .expect("leader tracks every peer");
        progress.acked_round = progress.acked_round.max(round);
        true
    }

    fn on_append_success(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        match_index: LogIndex,
        round: u64,
    ) {
        if !self.accept_append_response(now, from, term, round) {
            return;
        }
        assert!(
            match_index <= self.log.last_index(),
            "{}: {from} claims to match {match_index}, beyond our last index",
            self.config.id
        );
        self.coverage.hit(Branch::AppendResponseSuccess);
        let progress = self
            .progress
            .get_mut(&from)
            .expect("leader tracks every peer");
        progress.match_index = progress.match_index.max(match_index);
        progress.next_index = progress.next_index.max(progress.match_index + 1);
        let more_to_send = progress.next_index <= self.log.last_index();
        self.advance_commit();
        self.confirm_reads();
        if more_to_send && self.role == Role::Leader {
            self.send_append(from);
        }
    }

    fn on_append_failure(
        &mut self,
        now: Time,
        from: ServerId,
        term: Term,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
        round: u64,
    ) {
        if !self.accept_append_response(now, from, term, round) {
            return;
        }
        // Raft §5.3 with the conflict-term optimisation: skip a whole term per round trip.
        let mut next = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
            Some(last_of_term) => {
                self.coverage.hit(Branch::AppendResponseBackOffByTerm);
                last_of_term + 1
            }
            None => {
                self.coverage.hit(Branch::AppendResponseBackOffToIndex);
                conflict_index
            }
        };
        let last_index = self.log.last_index();
        let progress = self
            .progress
            .get_mut(&from)
            .expect("leader tracks every peer");
        next = next.clamp(progress.match_index + 1, last_index + 1);
        progress.next_index = next;
        self.confirm_reads();
        self.send_append(from);
    }

    // ----- client requests -----

    fn on_client_request(&mut self, now: Time, from: ClientAddr, request: ClientRequest) {
        match &request.body {
            RequestBody::Op {
                op: Operation::Check { lock, consistency },
                client,
                secret,
            } => {
                let lock = lock.clone();
                let credential = Credential {
                    client: *client,
                    secret: *secret,
                };
                if let Some(reason) = bad_lock_name(&request) {
                    self.coverage.hit(Branch::CheckBadLockName);
                    let body = ReplyBody::Error(ServiceError::BadRequest { reason });
                    self.reply(ReplyRoute::Direct(from), request.seq, body);
                    return;
                }
                match consistency {
                    super::messages::Consistency::Local => {
                        self.coverage.hit(Branch::CheckLocal);
                        self.start_local_check(now, from, &request, credential, lock)
                    }
                    super::messages::Consistency::Linearizable => {
                        self.coverage.hit(Branch::CheckLinearizable);
                        self.start_linearizable_check(now, from, request.seq, credential, lock)
                    }
                }
            }
            RequestBody::Hello { .. } | RequestBody::Op { .. } | RequestBody::Keepalive { .. } => {
                if let Some((branch, reason)) = self.request_problem(&request) {
                    self.coverage.hit(branch);
                    let body = ReplyBody::Error(ServiceError::BadRequest { reason });
                    self.reply(ReplyRoute::Direct(from), request.seq, body);
                } else if self.role == Role::Leader {
                    self.coverage.hit(Branch::WriteAtLeader);
                    self.propose_request(now, ReplyRoute::Direct(from), request);
                } else if let Some(leader) = self.leader
                    && is_write(&request)
                    && request.term != self.term
                {
                    self.coverage.hit(Branch::WriteNotLeaderTermMismatch);
                    // The client names another term than the one this server follows: tell it
                    // the leader and term now instead of forwarding a request the leader would
                    // refuse.
                    let body = ReplyBody::Error(ServiceError::NotLeader {
                        leader: Some(leader),
                        term: self.term,
                    });
                    self.reply(ReplyRoute::Direct(from), request.seq, body);
                } else if let Some(leader) = self.leader {
                    self.coverage.hit(Branch::WriteForwarded);
                    self.send(
                        leader,
                        PeerMessage::Forward {
                            client: from,
                            request,
                        },
                    );
                } else {
                    self.coverage.hit(Branch::WriteNoLeader);
                    self.reply(
                        ReplyRoute::Direct(from),
                        request.seq,
                        ReplyBody::Error(ServiceError::Unavailable),
                    );
                }
            }
        }
    }

    fn on_forward(
        &mut self,
        now: Time,
        from: ServerId,
        client: ClientAddr,
        request: ClientRequest,
    ) {
        let route = ReplyRoute::Via {
            server: from,
            client,
        };
        let is_write = !matches!(
            request.body,
            RequestBody::Op {
                op: Operation::Check { .. },
                ..
            }
        );
        if let Some((_, reason)) = self.request_problem(&request) {
            let body = ReplyBody::Error(ServiceError::BadRequest { reason });
            self.reply(route, request.seq, body);
        } else if self.role == Role::Leader && is_write {
            self.coverage.hit(Branch::ForwardProposed);
            self.propose_request(now, route, request);
        } else {
            // Not the leader any more (or a malformed forward): let the client retry elsewhere.
            self.coverage.hit(Branch::ForwardRefusedNotLeader);
            self.reply(
                route,
                request.seq,
                ReplyBody::Error(ServiceError::Unavailable),
            );
        }
    }

    /// Leader: answer a write from the deduplication table, refuse a preempt of a held lock
    /// with a confirmed read, or append it to the log.
    ///
    /// Refusing by read is what keeps contended locks cheap: a refused preempt changes nothing,
    /// so it needs no log entry and no fsync. It is exactly-once only because no copy of the
    /// refused request can ever be appended later:
    /// - copies already in this leader's log are found by the scan in `projected_owner`;
    /// - copies in other servers' logs from earlier terms died when this leader committed an
    ///   entry of its own term at or below them (which every read waits for, Raft §5.4.2);
    /// - copies arriving later at this leader get the same answer from `refused`;
    /// - copies arriving at any later leader name an older term and are answered `NotLeader`
    ///   (the term rule below), and the client ignores answers from older terms.
    fn propose_request(&mut self, now: Time, route: ReplyRoute, request: ClientRequest) {
        assert_eq!(
            self.role,
            Role::Leader,
            "{}: proposing while not leader",
            self.config.id
        );
        let seq = request.seq;
        let (client, secret, op) = match request.body {
            RequestBody::Hello { nonce, ttl_ms } => {
                self.coverage.hit(Branch::ProposeHello);
                let secret = self.draw_client_secret();
                self.append_request(
                    route,
                    seq,
                    Command::Register {
                        nonce,
                        secret: Some(secret),
                        ttl_ms,
                    },
                );
                return;
            }
            RequestBody::Keepalive { client, secret } => {
                self.on_keepalive(now, route, seq, client, secret);
                return;
            }
            RequestBody::Op { client, secret, op } => (client, secret, op),
        };
        let (kind, lock, wait_ms, claim) = match op {
            Operation::Preempt { lock, claim } => (WriteKind::Preempt, lock, 0, claim),
            Operation::Release { lock } => (WriteKind::Release, lock, 0, Claim::EXCLUSIVE),
            Operation::Acquire {
                lock,
                wait_ms,
                claim,
            } => (WriteKind::Acquire, lock, wait_ms, claim),
            Operation::Cancel { lock } => (WriteKind::Cancel, lock, 0, Claim::EXCLUSIVE),
            Operation::Check { .. } => unreachable!("checks are never proposed"),
        };
        // Who asks comes first: a request that cannot prove it is its client learns nothing,
        // not even that client's last answer, and nothing of it reaches the log.
        if let Err(error) = self.authenticate(client, secret) {
            self.coverage.hit(Branch::ProposeUnauthenticated);
            self.reply(route, seq, ReplyBody::Error(error));
            return;
        }
        // Any write renews its client's session on this leader (volatile only).
        self.renew_session(client, now);
        if let Some((body, index)) = self.settled_answer(client, seq, (kind, claim), &lock) {
            // Even after the session expired: a retry of a write that took effect hears what
            // the write did, not that nothing was done.
            self.coverage.hit(Branch::ProposeReplayedAnswer);
            // A retried acquire still queued waits for its decision again (exactly-once).
            self.answer_or_park(route, (client, seq), body, index);
            return;
        }
        if self.table.session_expired(client) {
            self.coverage.hit(Branch::ProposeSessionExpired);
            let body = ReplyBody::Error(ServiceError::SessionExpired { client });
            self.reply(route, seq, body);
            return;
        }
        if request.term != self.term {
            self.coverage.hit(Branch::ProposeStaleTerm);
            let body = ReplyBody::Error(ServiceError::NotLeader {
                leader: Some(self.config.id),
                term: self.term,
            });
            self.reply(route, seq, body);
            return;
        }
        if !claim.permits_are_valid() {
            let body = ReplyBody::Error(Rejection::BadPermits.service_error(client, seq));
            self.reply(route, seq, body);
            return;
        }
        let seq_reused = ReplyBody::Error(ServiceError::SeqReused { seq });
        match kind {
            // A shared or semaphore claim: apply decides it (docs/design.md, "Shared locks and
            // semaphores", the leader), with no refusal by read.
            WriteKind::Preempt if !claim.is_default() => {
                self.propose_claim(now, route, (client, seq), lock, claim);
            }
            // One scan of the unapplied log answers both questions: is this seq there with
            // another write, and who will hold the lock once it applies.
            WriteKind::Preempt => match self.projected_owner(client, seq, &lock, claim) {
                Projection::SeqReused => {
                    self.coverage.hit(Branch::ProposeSeqReused);
                    self.reply(route, seq, seq_reused)
                }
                // Held, or about to be, by another client: refuse by read.
                Projection::Owner(owner) if owner != client => {
                    if self.pending_read_count() >= self.config.pending_reads_max {
                        self.coverage.hit(Branch::ProposeOverloaded);
                        let body = ReplyBody::Error(ServiceError::Overloaded);
                        self.reply(route, seq, body);
                        return;
                    }
                    let refusal = Refusal {
                        route,
                        client,
                        seq,
                        lock,
                        serve_index: self.log.last_index(),
                    };
                    self.coverage.hit(Branch::ProposePreemptRefusedByRead);
                    self.start_read(now, ReadWaiter::Preempt(refusal));
                }
                Projection::Free if let Some(remaining) = self.lock_delay_remaining(&lock, now) => {
                    let body = self.lock_delayed(remaining);
                    self.reply(route, seq, body);
                }
                // Free, already its own, or a copy of this very request is in the log (that
                // copy decides the answer).
                Projection::Free | Projection::Owner(_) | Projection::InLog(_) => {
                    self.coverage.hit(Branch::ProposePreemptAppended);
                    self.append_exclusive_preempt(route, client, seq, lock);
                }
            },
            WriteKind::Acquire | WriteKind::Cancel => {
                let request = (kind, lock, claim);
                self.propose_queue_write(now, route, (client, seq), request, wait_ms);
            }
            WriteKind::Release if self.seq_reused_in_log(client, seq, &lock) => {
                self.coverage.hit(Branch::ProposeSeqReused);
                self.reply(route, seq, seq_reused);
            }
            WriteKind::Release => {
                self.coverage.hit(Branch::ProposeReleaseAppended);
                self.append_request(
                    route,
                    seq,
                    Command::Release {
                        client,
                        seq,
                        lock: lock.clone(),
                    },
                );
                // A lock with a queue goes to its head inside the release itself. (Only a
                // leader proposes: asserted on entry, and appending never changes the role.)
                if self.table.waiters(&lock).next().is_none() {
                    self.hand_over_to_waiter(&lock);
                }
            }
        }
    }

    /// A fresh client secret, from this server's seeded secret stream.
    fn draw_client_secret(&mut self) -> ClientSecret {
        let mut bytes = [0u8; CLIENT_SECRET_BYTES];
        for chunk in bytes.chunks_mut(8) {
            let word: u64 = self.secret_rng.random();
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        ClientSecret::from_bytes(bytes)
    }

    /// Leader: checks a write's credential against the applied registrations and, for a
    /// client whose registration is in the log but not yet applied (a new leader that has not
    /// committed its first entry), against that entry. Registrations that never committed
    /// issued no id anyone could know, so accepting their secret changes nothing.
    fn authenticate(
        &self,
        client: ClientId,
        secret: Option<ClientSecret>,
    ) -> Result<(), ServiceError> {
        if self.table.is_registered(client) {
            return self.table.authenticate(client, secret);
        }
        // Bounded by the uncommitted entries (`uncommitted_entries_max`) and the applied lag.
        let mut next_id = self.table.client_count();
        for (_, entry) in self.log.entries_after(self.table.applied_index()) {
            if let Command::Register { secret: issued, .. } = &entry.command {
                next_id += 1;
                if next_id == client.0 {
                    return if ClientSecret::proves(secret, *issued) {
                        Ok(())
                    } else {
                        Err(ServiceError::Unauthorized)
                    };
                }
            }
        }
        Err(ServiceError::UnknownClient { client })
    }

    /// Whether the log's unapplied part holds this client's `seq` with another write than a
    /// release of `lock`. A release must not be appended next to it: the first to apply would
    /// answer both. (A preempt learns the same from `projected_owner`, in the same scan.)
    fn seq_reused_in_log(&self, client: ClientId, seq: u64, lock: &str) -> bool {
        self.log
            .entries_after(self.table.applied_index())
            .filter_map(|(_, entry)| entry.command.client_write())
            .any(|(c, s, kind, l)| {
                (c, s) == (client, seq) && !(kind == WriteKind::Release && **l == *lock)
            })
    }

    /// Leader, right after appending a release of `lock`: if a preempt of `lock` is waiting to
    /// be refused by read, and the lock is free once the log applies, appends the earliest
    /// such preempt now, right behind the release.
    ///
    /// Why: a contender is almost always waiting in a read round when the holder releases. Left
    /// there, its preempt is appended only when that round ends, one replication round (and
    /// one fsync on every server) after the release. Appended now, the release and the grant
    /// share a round: one fsync per hand-off instead of two.
    ///
    /// Exactly-once holds as in `decide_refusal`, which makes the same move for a lock it finds
    /// free: the waiter was never answered, and it leaves the waiting lists as it joins the
    /// log, so only its entry will answer it.
    fn hand_over_to_waiter(&mut self, lock: &LockName) {
        // Confirmed refusals first: they arrived before any preempt still in a read round.
        // Bounded by the pending reads (`pending_reads_max`).
        let mut candidates: Vec<(ClientId, u64)> = self
            .refusals
            .iter()
            .filter(|refusal| &refusal.lock == lock)
            .map(|refusal| (refusal.client, refusal.seq))
            .collect();
        for batch in &self.read_batches {
            for waiter in &batch.waiters {
                if let ReadWaiter::Preempt(refusal) = waiter
                    && &refusal.lock == lock
                {
                    candidates.push((refusal.client, refusal.seq));
                }
            }
        }
        for (client, seq) in candidates {
            let settled = self
                .settled_answer(client, seq, (WriteKind::Preempt, Claim::EXCLUSIVE), lock)
                .is_some();
            if !settled {
                match self.projected_owner(client, seq, lock, Claim::EXCLUSIVE) {
                    // Freed by an expiry still in its lock-delay: nobody gets it yet.
                    Projection::Free
                        if self.lock_delay_remaining(lock, self.step_time).is_some() =>
                    {
                        return;
                    }
                    Projection::Free => {}
                    // A copy of this request is in the log already: that copy answers it.
                    Projection::InLog(_) | Projection::SeqReused => continue,
                    // Still held: the release was not the holder's.
                    Projection::Owner(_) => return,
                }
            }
            let refusal = self.take_waiting_preempt(client, seq);
            if settled {
                // Answered by the table already (a retry of a decided request): not a contender.
                self.decide_refusal(refusal);
                continue;
            }
            self.coverage.hit(Branch::HandOverBehindRelease);
            self.append_request(
                refusal.route,
                seq,
                Command::Preempt {
                    client,
                    seq,
                    lock: refusal.lock,
                    claim: Claim::EXCLUSIVE,
                },
            );
            return;
        }
    }

    /// Removes the waiting preempt (`client`, `seq`) from the confirmed refusals or the read
    /// rounds. It MUST be waiting in one of them.
    fn take_waiting_preempt(&mut self, client: ClientId, seq: u64) -> Refusal {
        let is_it = |refusal: &Refusal| (refusal.client, refusal.seq) == (client, seq);
        if let Some(position) = self.refusals.iter().position(is_it) {
            return self.refusals.remove(position);
        }
        for batch in &mut self.read_batches {
            let found = batch
                .waiters
                .iter()
                .position(|waiter| matches!(waiter, ReadWaiter::Preempt(r) if is_it(r)));
            if let Some(position) = found {
                let ReadWaiter::Preempt(refusal) = batch.waiters.remove(position) else {
                    unreachable!("matched a preempt just above");
                };
                return refusal;
            }
        }
        panic!(
            "{}: preempt ({client:?}, {seq}) is not waiting",
            self.config.id
        );
    }

    /// The answer a write already has, if any, with the index it reflects: its applied
    /// outcome (exactly-once retries, Raft thesis §6.3), a refusal by read, staleness, or a
    /// refusal of its seq reused for another write.
    fn settled_answer(
        &self,
        client: ClientId,
        seq: u64,
        (kind, claim): (WriteKind, Claim),
        lock: &str,
    ) -> Option<(ReplyBody, LogIndex)> {
        let applied = self.table.applied_index();
        match self.table.settled(client, seq, kind, lock, claim) {
            Some(Settled::Answered { outcome, index }) => {
                return Some((ReplyBody::Outcome(outcome), index));
            }
            Some(Settled::Stale) => {
                return Some((ReplyBody::Error(ServiceError::StaleRequest), applied));
            }
            Some(Settled::SeqReused) => {
                let body = ReplyBody::Error(ServiceError::SeqReused { seq });
                return Some((body, applied));
            }
            None => {}
        }
        let refused = self.refused.get(&client)?;
        if seq < refused.seq {
            // The client moved on past a refused request: this is an old copy.
            return Some((ReplyBody::Error(ServiceError::StaleRequest), applied));
        }
        if seq > refused.seq {
            return None;
        }
        // A refusal by read was of an exclusive preempt: a claim under its seq is another request.
        if kind != WriteKind::Preempt || *refused.lock != *lock || !claim.is_default() {
            let body = ReplyBody::Error(ServiceError::SeqReused { seq });
            return Some((body, applied));
        }
        let body = ReplyBody::Outcome(Outcome::HeldBy {
            owner: refused.owner,
        });
        Some((body, refused.index))
    }

    /// Leader: a preempt claiming shared mode or permits, authenticated, unsettled, of a live
    /// session and of this term. The refusal by read needs one projected owner, which a shared
    /// lock does not have, so the claim is appended and apply decides it; a copy already in
    /// the log is appended again and applies as a duplicate, with the same answer. A lock in
    /// its lock-delay (freed, or a unit of it freed, by an expiry) goes to nobody new.
    fn propose_claim(
        &mut self,
        now: Time,
        route: ReplyRoute,
        (client, seq): (ClientId, u64),
        lock: LockName,
        claim: Claim,
    ) {
        if self.projected_owner(client, seq, &lock, claim) == Projection::SeqReused {
            self.coverage.hit(Branch::ProposeSeqReused);
            self.reply(
                route,
                seq,
                ReplyBody::Error(ServiceError::SeqReused { seq }),
            );
            return;
        }
        if let Some(remaining) = self.lock_delay_remaining(&lock, now) {
            let body = self.lock_delayed(remaining);
            self.reply(route, seq, body);
            return;
        }
        self.coverage.hit(Branch::ProposePreemptAppended);
        let command = Command::Preempt {
            client,
            seq,
            lock,
            claim,
        };
        self.append_request(route, seq, command);
    }

    /// Who holds `lock` after every entry in the log applies, unless the preempt (`client`,
    /// `seq`, `lock`, `claim`) is itself in the unapplied part of the log, or its seq is there
    /// with another operation, lock or claim (a copy in another mode or with other permits is
    /// another request, whose answer is not this one's). Scans at most the uncommitted
    /// entries, which `uncommitted_entries_max` bounds.
    fn projected_owner(
        &self,
        client: ClientId,
        seq: u64,
        lock: &LockName,
        claim: Claim,
    ) -> Projection {
        let mut owner = self.table.holder(lock).map(|holder| holder.owner);
        for (index, entry) in self.log.entries_after(self.table.applied_index()) {
            match &entry.command {
                // A shared claim in the log counts as an owner too: conservative, since an
                // exclusive preempt behind it is then decided after a read or at apply.
                Command::Preempt {
                    client: c,
                    seq: s,
                    lock: l,
                    claim: in_log,
                } => {
                    if (*c, *s) == (client, seq) && l == lock && *in_log == claim {
                        return Projection::InLog(index);
                    }
                    if (*c, *s) == (client, seq) {
                        return Projection::SeqReused;
                    }
                    if l == lock && owner.is_none() {
                        owner = Some(*c);
                    }
                }
                Command::Release {
                    client: c,
                    seq: s,
                    lock: l,
                } => {
                    if (*c, *s) == (client, seq) {
                        return Projection::SeqReused;
                    }
                    if l == lock && owner == Some(*c) {
                        // With waiters, the release hands the lock to the head: conservatively
                        // the table's head (a queued acquire in the log may be it instead).
                        owner = self.table.waiters(lock).next().map(|waiter| waiter.client);
                    }
                }
                Command::Acquire {
                    client: c,
                    seq: s,
                    lock: l,
                    ..
                }
                | Command::Cancel {
                    client: c,
                    seq: s,
                    lock: l,
                } => {
                    if (*c, *s) == (client, seq) {
                        return Projection::SeqReused;
                    }
                    if l == lock
                        && owner.is_none()
                        && matches!(entry.command, Command::Acquire { .. })
                    {
                        owner = Some(*c);
                    }
                }
                Command::HandOver { lock: l } => {
                    if l == lock && owner.is_none() {
                        owner = self.table.waiters(lock).next().map(|waiter| waiter.client);
                    }
                }
                // An unapplied expire leaves the lock looking held: a preempt then waits for a
                // read, and is decided once the expire is applied (and lock-delay known).
                Command::Noop
                | Command::Register { .. }
                | Command::Expire { .. }
                | Command::MarkSilent { .. }
                | Command::Revive { .. }
                | Command::Timeout { .. } => {}
            }
        }
        owner.map_or(Projection::Free, Projection::Owner)
    }

    /// Leader: a confirmed refusal whose `serve_index` is applied. Looks again, because the log
    /// moved while leadership was confirmed: refuses only if the lock is still held by another
    /// client in the applied state, which is committed and so a linearizable answer.
    fn decide_refusal(&mut self, refusal: Refusal) {
        let Refusal {
            route,
            client,
            seq,
            lock,
            ..
        } = refusal;
        // Refusals by read are of exclusive preempts only: a claim is appended instead.
        let write = (WriteKind::Preempt, Claim::EXCLUSIVE);
        if let Some((body, index)) = self.settled_answer(client, seq, write, &lock) {
            self.coverage.hit(Branch::RefusalReplayed);
            self.reply_at(route, seq, body, index);
            return;
        }
        let holder = self.table.holder(&lock).map(|holder| holder.owner);
        match self.projected_owner(client, seq, &lock, Claim::EXCLUSIVE) {
            Projection::InLog(index) => {
                self.coverage.hit(Branch::RefusalCopyInLog);
                // A copy was appended meanwhile: its result is the answer.
                self.pending_replies
                    .entry(index)
                    .or_default()
                    .push((route, seq));
            }
            Projection::SeqReused => {
                // While this preempt waited, its client used the seq for another write, which
                // was appended: that entry's answer is not this request's.
                self.coverage.hit(Branch::RefusalSeqReused);
                let body = ReplyBody::Error(ServiceError::SeqReused { seq });
                self.reply(route, seq, body);
            }
            Projection::Free
                if let Some(remaining) = self.lock_delay_remaining(&lock, self.step_time) =>
            {
                let body = self.lock_delayed(remaining);
                self.reply(route, seq, body);
            }
            Projection::Free => {
                // The holder's release is in the log: queue right behind it, so the lock
                // changes hands in the release's own replication round.
                self.coverage.hit(Branch::RefusalFreeAppended);
                self.append_exclusive_preempt(route, client, seq, lock);
            }
            _ if holder.is_some_and(|owner| owner != client)
                && (self.refused.len() < REFUSED_CLIENTS_MAX
                    || self.refused.contains_key(&client)) =>
            {
                let owner = holder.expect("checked just above");
                let index = self.table.applied_index();
                let refused = RefusedByRead {
                    seq,
                    lock,
                    owner,
                    index,
                };
                self.refused.insert(client, refused);
                self.coverage.hit(Branch::RefusalHeld);
                self.reply(route, seq, ReplyBody::Outcome(Outcome::HeldBy { owner }));
            }
            Projection::Owner(owner) if owner != client && holder.is_none() => {
                // Free now, but an unapplied entry grants it to someone else: wait for it.
                self.coverage.hit(Branch::RefusalWaitsForUnappliedGrant);
                let serve_index = self.log.last_index();
                self.refusals.push(Refusal {
                    route,
                    client,
                    seq,
                    lock,
                    serve_index,
                });
            }
            _ => {
                self.coverage.hit(Branch::RefusalAppendedOwn);
                self.append_exclusive_preempt(route, client, seq, lock)
            }
        }
    }

    /// Leader: serves the confirmed refusals whose `serve_index` this server has applied.
    fn serve_refusals(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let applied = self.table.applied_index();
        if self.refusals.iter().all(|r| r.serve_index > applied) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.refusals)
            .into_iter()
            .partition(|r| r.serve_index <= applied);
        self.refusals = waiting;
        for refusal in ready {
            if self.role != Role::Leader {
                self.fail_read(ReadWaiter::Preempt(refusal));
            } else {
                self.decide_refusal(refusal);
            }
        }
    }

    /// Leader: appends a write and remembers where its answer goes.
    /// Appends a plain (exclusive) preempt: the leader's refusal-by-read paths only ever see
    /// exclusive claims, since a shared claim skips the read and is decided at apply.
    fn append_exclusive_preempt(
        &mut self,
        route: ReplyRoute,
        client: ClientId,
        seq: u64,
        lock: LockName,
    ) {
        let claim = Claim::EXCLUSIVE;
        let command = Command::Preempt {
            client,
            seq,
            lock,
            claim,
        };
        self.append_request(route, seq, command);
    }

    fn append_request(&mut self, route: ReplyRoute, seq: u64, command: Command) {
        self.append_request_with(route, seq, command, Promptness::Prompt);
    }

    /// `append_request` for an entry whose commit nobody waits for promptly (see
    /// `prompt_through`): its appends may wait to share a flush.
    fn append_request_with(
        &mut self,
        route: ReplyRoute,
        seq: u64,
        command: Command,
        promptness: Promptness,
    ) {
        if self.log.last_index() - self.commit_index >= self.config.uncommitted_entries_max {
            self.reply(route, seq, ReplyBody::Error(ServiceError::Overloaded));
            return;
        }
        let index = self.append_as_leader_with(command, promptness);
        self.pending_replies
            .entry(index)
            .or_default()
            .push((route, seq));
        self.advance_commit();
        if self.role == Role::Leader {
            for peer in self.peers() {
                if self.progress[&peer].next_index <= index {
                    self.send_append(peer);
                }
            }
        }
    }

    /// Answers from the state this replica has applied.
    fn reply(&mut self, route: ReplyRoute, seq: u64, body: ReplyBody) {
        self.reply_at(route, seq, body, self.table.applied_index());
    }

    /// Answers with the applied index `index` the answer reflects: for a replayed answer, the
    /// index of the original, so that a retry hears exactly what the first attempt would have.
    fn reply_at(&mut self, route: ReplyRoute, seq: u64, body: ReplyBody, index: LogIndex) {
        assert!(
            index <= self.table.applied_index(),
            "{}: an answer reflecting index {index}, beyond applied {}",
            self.config.id,
            self.table.applied_index()
        );
        let reply = ClientReply {
            seq,
            index,
            term: self.term,
            body,
        };
        match route {
            ReplyRoute::Direct(client) => self.out.push(ServerOutput::Reply { to: client, reply }),
            ReplyRoute::Via { server, client } => {
                self.send(server, PeerMessage::ForwardReply { client, reply })
            }
        }
    }

    // ----- linearizable reads (read index, Raft thesis §6.4) -----

    fn start_linearizable_check(
        &mut self,
        now: Time,
        client: ClientAddr,
        seq: u64,
        credential: Credential,
        lock: LockName,
    ) {
        if self.pending_read_count() >= self.config.pending_reads_max {
            self.reply(
                ReplyRoute::Direct(client),
                seq,
                ReplyBody::Error(ServiceError::Overloaded),
            );
            return;
        }
        if self.role == Role::Leader {
            let waiter = ReadWaiter::Local {
                client,
                seq,
                credential,
                lock,
            };
            self.start_read(now, waiter);
        } else if let Some(leader) = self.leader {
            self.coverage.hit(Branch::ReadForwardedToLeader);
            let id = self.next_read_id;
            self.next_read_id += 1;
            let read = ForwardedRead {
                client,
                seq,
                credential,
                lock,
            };
            self.forwarded_reads.insert(id, read);
            self.send(leader, PeerMessage::ReadIndexRequest { id });
        } else {
            self.reply(
                ReplyRoute::Direct(client),
                seq,
                ReplyBody::Error(ServiceError::Unavailable),
            );
        }
    }

    /// A local check is answered from this replica at once, unless the replica is behind what
    /// the client has already seen: then it waits (bounded in time) to catch up, so that the
    /// client's reads never go backwards.
    fn start_local_check(
        &mut self,
        now: Time,
        client: ClientAddr,
        request: &ClientRequest,
        credential: Credential,
        lock: LockName,
    ) {
        if self.table.applied_index() >= request.seen_index {
            self.coverage.hit(Branch::LocalCheckAnsweredAtOnce);
            self.answer_check(client, request.seq, credential, &lock);
        } else if self.pending_read_count() >= self.config.pending_reads_max {
            let error = ReplyBody::Error(ServiceError::Overloaded);
            self.reply(ReplyRoute::Direct(client), request.seq, error);
        } else {
            self.coverage.hit(Branch::LocalCheckWaited);
            self.confirmed_reads.push(ConfirmedRead {
                read_index: request.seen_index,
                client,
                seq: request.seq,
                credential,
                lock,
                expires_at: Some(now + self.config.election_timeout_max),
            });
        }
    }

    /// Counts the watch refusals among this step's outputs from `from` on (`node::watch`
    /// decides them; coverage is counted here, where the counters are).
    fn count_watch_refusals(&mut self, from: usize) {
        for output in &self.out[from..] {
            let ServerOutput::Watch {
                reply: WatchReply::Refused { refusal, .. },
                ..
            } = output
            else {
                continue;
            };
            self.coverage.hit(match refusal {
                WatchRefusal::Unauthorized => Branch::WatchRefusedUnauthorized,
                WatchRefusal::UnknownClient { .. } => Branch::WatchRefusedUnknownClient,
                WatchRefusal::BadTarget { .. } => Branch::WatchRefusedBadTarget,
                WatchRefusal::IdInUse => Branch::WatchRefusedIdInUse,
                WatchRefusal::TooManyWatches { .. } => Branch::WatchRefusedTooManyWatches,
            });
        }
    }

    /// Gives up on local checks whose replica did not catch up in time. Runs on every step;
    /// a server with waiting reads steps at least every election timeout (its timer).
    fn expire_local_checks(&mut self, now: Time) {
        if self
            .confirmed_reads
            .iter()
            .all(|read| read.expires_at.is_none_or(|at| now < at))
        {
            return;
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|read| read.expires_at.is_some_and(|at| now >= at));
        self.confirmed_reads = kept;
        for read in expired {
            self.coverage.hit(Branch::LocalCheckExpired);
            let error = ReplyBody::Error(ServiceError::Unavailable);
            self.reply(ReplyRoute::Direct(read.client), read.seq, error);
        }
    }

    fn pending_read_count(&self) -> usize {
        self.reads_awaiting_commit.len()
            + self
                .read_batches
                .iter()
                .map(|batch| batch.waiters.len())
                .sum::<usize>()
            + self.next_round_reads.len()
            + self.confirmed_reads.len()
            + self.forwarded_reads.len()
            + self.refusals.len()
            + self.sessions.keepalives.len()
    }

    /// Leader: the read index is the commit index, once an entry of this term is committed
    /// (before that the commit index may lag what earlier leaders acknowledged).
    fn start_read(&mut self, now: Time, waiter: ReadWaiter) {
        assert_eq!(self.role, Role::Leader);
        if self.log.term_at(self.commit_index) != Some(self.term) {
            self.coverage.hit(Branch::ReadAwaitingOwnTermCommit);
            if self.reads_awaiting_commit.len() >= self.config.pending_reads_max {
                self.fail_read(waiter);
            } else {
                self.reads_awaiting_commit.push(waiter);
            }
            return;
        }
        if let Some(batch) = self.read_batches.back_mut()
            && batch.started_at == now
            && batch.round == self.round
        {
            // Reads arriving together share one confirming round (a driver that steps a batch
            // of inputs at one `now` sends one round for all of them). A larger read index is
            // as good for the reads already waiting.
            batch.read_index = batch.read_index.max(self.commit_index);
            batch.waiters.push(waiter);
            self.coverage.hit(Branch::ReadJoinedRound);
            return;
        }
        if !self.read_batches.is_empty() {
            // A round is in flight, and its messages left before this read arrived, so it
            // cannot confirm it. Wait for the next round, which starts when the ones in flight
            // are confirmed: one round in flight at a time, however many reads arrive (under a
            // flood of refused preempts, a round per arrival was most of the leader's work).
            self.next_round_reads.push(waiter);
            self.coverage.hit(Branch::ReadNextRound);
            return;
        }
        self.start_read_round(now, vec![waiter]);
    }

    /// Leader: starts a confirming round for `waiters` at the commit index, now rather than at
    /// the next heartbeat.
    fn start_read_round(&mut self, now: Time, waiters: Vec<ReadWaiter>) {
        assert!(
            !waiters.is_empty(),
            "{}: an empty read round",
            self.config.id
        );
        self.coverage.hit(Branch::ReadStartedRound);
        self.round += 1;
        self.read_batches.push_back(ReadBatch {
            round: self.round,
            read_index: self.commit_index,
            waiters,
            started_at: now,
        });
        // Start the confirming round now rather than at the next heartbeat.
        self.broadcast_append(now);
        self.confirm_reads();
    }

    /// The highest round acknowledged by a majority (this server counts as acknowledging all).
    fn quorum_acked_round(&self) -> u64 {
        let mut rounds: Vec<u64> = self.progress.values().map(|p| p.acked_round).collect();
        rounds.push(self.round);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds[self.quorum_size() - 1]
    }

    fn confirm_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let confirmed_round = self.quorum_acked_round();
        while self
            .read_batches
            .front()
            .is_some_and(|batch| batch.round <= confirmed_round)
        {
            let batch = self.read_batches.pop_front().expect("checked non-empty");
            for waiter in batch.waiters {
                match waiter {
                    ReadWaiter::Local {
                        client,
                        seq,
                        credential,
                        lock,
                    } => self.confirmed_reads.push(ConfirmedRead {
                        read_index: batch.read_index,
                        client,
                        seq,
                        credential,
                        lock,
                        expires_at: None,
                    }),
                    ReadWaiter::Remote { server, id } => self.send(
                        server,
                        PeerMessage::ReadIndexResponse {
                            id,
                            index: Some(batch.read_index),
                        },
                    ),
                    ReadWaiter::Preempt(refusal) => self.refusals.push(Refusal {
                        serve_index: refusal.serve_index.max(batch.read_index),
                        ..refusal
                    }),
                    ReadWaiter::Keepalive(keepalive) => {
                        self.sessions.keepalives.push(KeepaliveWaiter {
                            serve_index: keepalive.serve_index.max(batch.read_index),
                            ..keepalive
                        })
                    }
                }
            }
        }
        if self.read_batches.is_empty() && !self.next_round_reads.is_empty() {
            let waiters = std::mem::take(&mut self.next_round_reads);
            // Its own `confirm_reads` serves what this call confirmed, so nothing is left here.
            self.start_read_round(self.step_time, waiters);
            return;
        }
        self.serve_confirmed_reads();
        self.serve_refusals();
        self.serve_keepalives();
    }

    fn on_read_index_response(&mut self, id: u64, index: Option<LogIndex>) {
        let Some(read) = self.forwarded_reads.remove(&id) else {
            return; // Already given up on (leader change) or a duplicate.
        };
        match index {
            Some(read_index) => {
                self.confirmed_reads.push(ConfirmedRead {
                    read_index,
                    client: read.client,
                    seq: read.seq,
                    credential: read.credential,
                    lock: read.lock,
                    expires_at: None,
                });
                self.serve_confirmed_reads();
            }
            None => self.reply(
                ReplyRoute::Direct(read.client),
                read.seq,
                ReplyBody::Error(ServiceError::Unavailable),
            ),
        }
    }

    fn serve_confirmed_reads(&mut self) {
        let applied = self.table.applied_index();
        if self
            .confirmed_reads
            .iter()
            .all(|read| read.read_index > applied)
        {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|r| r.read_index <= applied);
        self.confirmed_reads = waiting;
        for read in ready {
            self.answer_check(read.client, read.seq, read.credential, &read.lock);
        }
    }

    /// Answers a check from this replica, to a client that proves who it is. The replica has
    /// applied at least what the client has seen (its own registration included), so an id it
    /// does not know was never issued to this client.
    fn answer_check(&mut self, to: ClientAddr, seq: u64, credential: Credential, lock: &str) {
        let body = match self
            .table
            .authenticate(credential.client, credential.secret)
        {
            Ok(()) if self.table.session_expired(credential.client) => {
                ReplyBody::Error(ServiceError::SessionExpired {
                    client: credential.client,
                })
            }
            Ok(()) => ReplyBody::Outcome(self.table.check(lock)),
            Err(error) => ReplyBody::Error(error),
        };
        self.reply(ReplyRoute::Direct(to), seq, body);
    }

    fn fail_read(&mut self, waiter: ReadWaiter) {
        self.coverage.hit(Branch::ReadFailed);
        match waiter {
            ReadWaiter::Local { client, seq, .. } => self.reply(
                ReplyRoute::Direct(client),
                seq,
                ReplyBody::Error(ServiceError::Unavailable),
            ),
            ReadWaiter::Remote { server, id } => {
                self.send(server, PeerMessage::ReadIndexResponse { id, index: None })
            }
            ReadWaiter::Preempt(refusal) => self.reply(
                refusal.route,
                refusal.seq,
                ReplyBody::Error(ServiceError::Unavailable),
            ),
            ReadWaiter::Keepalive(keepalive) => self.reply(
                keepalive.route,
                keepalive.seq,
                ReplyBody::Error(ServiceError::Unavailable),
            ),
        }
    }

    // ----- timers and role changes -----

    fn on_election_timer(&mut self, now: Time) {
        match self.role {
            Role::Leader => {
                // Check-quorum: a leader that has not heard from a majority for a whole election
                // timeout steps down, so that it stops acknowledging anything.
                if self.has_quorum(self.recently_active.len() + 1) {
                    self.coverage.hit(Branch::ElectionCheckQuorumHeld);
                    self.recently_active.clear();
                    self.election_deadline = now + self.config.election_timeout_min;
                    self.set_timer(ServerTimer::Election, self.election_deadline);
                } else {
                    self.coverage.hit(Branch::ElectionCheckQuorumLost);
                    let term = self.term;
                    self.become_follower(now, term, None);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.repair_forbids_votes() {
                    // A log that may have lost acknowledged entries must not lead: wait for a
                    // leader to repair it.
                    self.coverage.hit(Branch::ElectionSkippedRecovering);
                    self.reset_election_timer(now);
                    return;
                }
                self.coverage.hit(Branch::ElectionTimeout);
                self.become_pre_candidate(now)
            }
        }
    }

    fn become_pre_candidate(&mut self, now: Time) {
        self.abandon_leadership_state();
        self.fail_forwarded_reads();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.config.id]);
        self.reset_election_timer(now);
        if self.has_quorum(self.votes.len()) {
            self.become_candidate(now);
            return;
        }
        let msg = PeerMessage::PreVote {
            term: self.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for peer in self.peers() {
            self.send(peer, msg.clone());
        }
    }

    fn become_candidate(&mut self, now: Time) {
        self.role = Role::Candidate;
        self.term += 1;
        self.voted_for = Some(self.config.id);
        self.persist_hard_state();
        self.votes = BTreeSet::from([self.config.id]);
        self.reset_election_timer(now);
        if self.has_quorum(self.votes.len()) {
            self.become_leader(now);
            return;
        }
        let msg = PeerMessage::RequestVote {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for peer in self.peers() {
            self.send(peer, msg.clone());
        }
    }

    fn become_leader(&mut self, now: Time) {
        assert_eq!(
            self.voted_for,
            Some(self.config.id),
            "{}: leader without its own vote",
            self.config.id
        );
        self.coverage.hit(Branch::LeaderElected);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.fail_forwarded_reads();
        self.round = 0;
        self.commit_index_at_election = self.commit_index;
        self.recently_active.clear();
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|peer| {
                (
                    peer,
                    Progress {
                        next_index,
                        match_index: 0,
                        acked_round: 0,
                    },
                )
            })
            .collect();
        // Raft §5.4.2: a no-op of the new term lets earlier entries commit and reads start.
        let noop_index = self.append_as_leader(Command::Noop);
        self.sessions_on_leadership(now, noop_index);
        self.election_deadline = now + self.config.election_timeout_min;
        self.set_timer(ServerTimer::Election, self.election_deadline);
        self.advance_commit();
        self.broadcast_append(now);
    }

    /// Adopts `term` (persisting it, with no vote, if it is newer) and follows `leader`.
    fn become_follower(&mut self, now: Time, term: Term, leader: Option<ServerId>) {
        assert!(
            term >= self.term,
            "{}: following an older term",
            self.config.id
        );
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        self.abandon_leadership_state();
        if self.leader != leader {
            self.fail_forwarded_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.heartbeat_deadline = None;
        self.reset_election_timer(now);
    }

    /// Drops the leader-only bookkeeping, telling every waiting client to retry.
    fn abandon_leadership_state(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        self.progress.clear();
        self.recently_active.clear();
        // Writes still pending may or may not commit later; their clients will retry and
        // deduplication gives them the real answer.
        self.pending_replies.clear();
        // Refusals by read are only ever remembered by the leader of their term: requests of
        // that term are refused by every later leader (the term rule), so this can go.
        self.refused.clear();
        let waiters: Vec<ReadWaiter> = std::mem::take(&mut self.reads_awaiting_commit)
            .into_iter()
            .chain(
                std::mem::take(&mut self.refusals)
                    .into_iter()
                    .map(ReadWaiter::Preempt),
            )
            .chain(
                std::mem::take(&mut self.read_batches)
                    .into_iter()
                    .flat_map(|b| b.waiters),
            )
            .chain(std::mem::take(&mut self.next_round_reads))
            .chain(
                self.sessions_on_abdication()
                    .into_iter()
                    .map(ReadWaiter::Keepalive),
            )
            .collect();
        self.queues_on_abdication();
        for waiter in waiters {
            self.fail_read(waiter);
        }
    }

    fn fail_forwarded_reads(&mut self) {
        for (_, read) in std::mem::take(&mut self.forwarded_reads) {
            self.reply(
                ReplyRoute::Direct(read.client),
                read.seq,
                ReplyBody::Error(ServiceError::Unavailable),
            );
        }
    }

    fn reset_election_timer(&mut self, now: Time) {
        let min = self.config.election_timeout_min;
        let max = self.config.election_timeout_max;
        let jitter_nanos = super::time::duration_nanos(max - min);
        let mut timeout = min + Duration::from_nanos(self.rng.random_range(0..=jitter_nanos));
        if self.buggify(Branch::BuggifySpuriousElectionTimer) {
            // Anywhere from one heartbeat to the configured minimum.
            let floor = self.config.heartbeat_interval.min(min);
            let spread = super::time::duration_nanos(min - floor);
            let rng = self.buggify_rng.as_mut().expect("buggify is on");
            timeout = floor + Duration::from_nanos(rng.random_range(0..=spread));
        }
        self.election_deadline = now + timeout;
        self.set_timer(ServerTimer::Election, self.election_deadline);
    }

    // ----- replication -----

    fn append_as_leader(&mut self, command: Command) -> LogIndex {
        self.append_as_leader_with(command, Promptness::Prompt)
    }

    fn append_as_leader_with(&mut self, command: Command, promptness: Promptness) -> LogIndex {
        let index = self.log.last_index() + 1;
        if promptness == Promptness::Prompt {
            self.prompt_through = index;
        }
        let entry = Entry {
            term: self.term,
            command,
        };
        self.log
            .truncate_and_append(index, std::slice::from_ref(&entry));
        self.note_appended(index, &entry.command, self.step_time);
        self.persist(PersistOp::Append {
            first_index: index,
            entries: vec![entry],
        });
        index
    }

    fn broadcast_append(&mut self, now: Time) {
        for peer in self.peers() {
            self.send_append(peer);
        }
        let at = now + self.config.heartbeat_interval;
        self.heartbeat_deadline = Some(at);
        self.set_timer(ServerTimer::Heartbeat, at);
    }

    fn send_append(&mut self, peer: ServerId) {
        let progress = self
            .progress
            .get_mut(&peer)
            .expect("leader tracks every peer");
        if progress.next_index <= self.log.base_index() {
            // Raft §7: the entries this follower needs are compacted away; send the snapshot,
            // optimistically assuming it arrives (as pipelined appends do).
            let snapshot = self
                .snapshot
                .clone()
                .expect("a compacted log has a snapshot");
            progress.next_index = snapshot.last_included_index + 1;
            let msg = PeerMessage::InstallSnapshot {
                term: self.term,
                snapshot,
                round: self.round,
            };
            self.send(peer, msg);
            return;
        }
        let prev_log_index = progress.next_index - 1;
        let prev_log_term = self
            .log
            .term_at(prev_log_index)
            .expect("next_index is within the log");
        let mut batch_max = self.config.append_entries_max;
        if self.buggify(Branch::BuggifyShortBatch) {
            let rng = self.buggify_rng.as_mut().expect("buggify is on");
            batch_max = rng.random_range(1..=batch_max);
        }
        let progress = self
            .progress
            .get_mut(&peer)
            .expect("leader tracks every peer");
        let entries = self.log.entries_from(progress.next_index, batch_max);
        progress.next_index += entries.len() as LogIndex;
        let urgent = self.counts_on(peer) && self.append_is_prompt(prev_log_index, &entries);
        let msg = PeerMessage::AppendEntries {
            term: self.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
            round: self.round,
            urgent,
        };
        self.send(peer, msg);
    }

    /// Whether `peer` is one of the followers this leader counts on to commit: the
    /// `quorum_size() - 1` most caught up (highest match index, then lowest id), which with
    /// the leader make a majority. Their appends are marked urgent; the others' may be made
    /// durable a moment later, sparing the shared disk flushes no commit waits for. A follower
    /// counted on that stops acknowledging falls behind in match index, and the next one to
    /// acknowledge takes its place, so commits wait at most one driver's holding window.
    fn counts_on(&self, peer: ServerId) -> bool {
        let theirs = self.progress[&peer].match_index;
        let ahead = self
            .progress
            .iter()
            .filter(|&(&id, other)| {
                other.match_index > theirs || (other.match_index == theirs && id < peer)
            })
            .count();
        ahead < self.quorum_size() - 1
    }

    /// Whether an append of `entries` after `prev_log_index` carries anything someone waits
    /// for promptly: an entry up to `prompt_through`, or a read round being confirmed. An
    /// append of queued acquires alone is not (`prompt_through`); heartbeats stay as they were.
    fn append_is_prompt(&self, prev_log_index: LogIndex, entries: &[Entry]) -> bool {
        entries.is_empty() || prev_log_index < self.prompt_through || !self.read_batches.is_empty()
    }

    /// Raft §5.3/§5.4.2: commit the highest index stored on a majority, but only by counting
    /// replicas of an entry from the current term.
    fn advance_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matches: Vec<LogIndex> = self.progress.values().map(|p| p.match_index).collect();
        // This server's own vote counts only for entries it has made durable (§10.2.1).
        matches.push(self.durable_last_index());
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let majority_index = matches[self.quorum_size() - 1];
        if majority_index > self.commit_index && self.log.term_at(majority_index) == Some(self.term)
        {
            self.commit_index = majority_index;
            self.apply_committed();
            if !self.reads_awaiting_commit.is_empty() {
                let waiters = std::mem::take(&mut self.reads_awaiting_commit);
                self.round += 1;
                self.read_batches.push_back(ReadBatch {
                    round: self.round,
                    read_index: self.commit_index,
                    waiters,
                    started_at: self.step_time,
                });
                // The new round goes out with the next AppendEntries to each peer.
                for peer in self.peers() {
                    self.send_append(peer);
                }
                self.confirm_reads();
            }
        }
    }

    fn apply_committed(&mut self) {
        while self.table.applied_index() < self.commit_index {
            let index = self.table.applied_index() + 1;
            let entry = self
                .log
                .entry(index)
                .expect("committed entries are in the log")
                .clone();
            let watched_before = WatchState::touched_views(&self.table, &entry.command);
            let result = self.table.apply(index, &entry.command);
            if matches!(result, ApplyResult::Rejected { .. }) {
                self.coverage.hit(Branch::ApplyRejected);
            }
            if matches!(result, ApplyResult::Expired { .. }) {
                self.coverage.hit(Branch::ApplyExpired);
            }
            self.on_session_entry_applied(&entry.command, self.step_time);
            let answer = self
                .pending_replies
                .remove(&index)
                .map(|routes| (routes, self.answer_for(index, &entry.command, result)));
            // `Applied` before the answers it justifies: a driver that stops between two
            // effects must never have answered for an entry it did not report applied.
            let client = entry.command.client_write().map(|(client, ..)| client);
            self.out.push(ServerOutput::Applied {
                index,
                entry: entry.clone(),
                result,
            });
            if let Some((routes, (Some(body), reply_index))) = answer {
                for (route, seq) in routes {
                    match client {
                        Some(client) => {
                            self.answer_or_park(route, (client, seq), body.clone(), reply_index)
                        }
                        None => self.reply_at(route, seq, body.clone(), reply_index),
                    }
                }
            }
            // After the entry's own answers: the waiters it decided (the new holder woken).
            self.on_queue_entry_applied(index, &entry.command, self.step_time);
            let table = &self.table;
            (self.watches).on_applied(index, &entry.command, watched_before, table, &mut self.out);
        }
        self.maybe_ready_sessions(self.step_time);
        self.maybe_ready_queues(self.step_time);
        self.serve_confirmed_reads();
        self.serve_refusals();
        self.serve_keepalives();
        self.prune_receipts();
        self.maybe_compact();
    }

    /// What the clients waiting on the entry applied at `index` hear, and the index it
    /// reflects: a replayed outcome reflects the index it was first decided at.
    fn answer_for(
        &self,
        index: LogIndex,
        command: &Command,
        result: ApplyResult,
    ) -> (Option<ReplyBody>, LogIndex) {
        let body = match (command, result) {
            (
                Command::Register {
                    nonce,
                    secret: Some(secret),
                    ..
                },
                ApplyResult::Registered { client },
            ) => ReplyBody::Welcome {
                nonce: *nonce,
                client,
                secret: *secret,
            },
            (
                Command::Preempt {
                    client, seq, lock, ..
                }
                | Command::Release { client, seq, lock }
                | Command::Acquire {
                    client, seq, lock, ..
                }
                | Command::Cancel { client, seq, lock },
                ApplyResult::Outcome {
                    outcome,
                    duplicate: true,
                },
            ) => {
                let (_, _, kind, _) = command.client_write().expect("matched as a client write");
                let claim = match command {
                    Command::Preempt { claim, .. } | Command::Acquire { claim, .. } => *claim,
                    _ => Claim::EXCLUSIVE,
                };
                return match self.table.settled(*client, *seq, kind, lock, claim) {
                    Some(Settled::Answered { index, .. }) => {
                        (Some(ReplyBody::Outcome(outcome)), index)
                    }
                    other => unreachable!(
                        "{}: a duplicate applied at {index} is not settled as answered: {other:?}",
                        self.config.id
                    ),
                };
            }
            (_, ApplyResult::Outcome { outcome, .. }) => ReplyBody::Outcome(outcome),
            (_, ApplyResult::Stale) => ReplyBody::Error(ServiceError::StaleRequest),
            (
                Command::Preempt { client, seq, .. }
                | Command::Release { client, seq, .. }
                | Command::Acquire { client, seq, .. }
                | Command::Cancel { client, seq, .. },
                ApplyResult::Rejected { rejection },
            ) => ReplyBody::Error(rejection.service_error(*client, *seq)),
            _ => return (None, index),
        };
        (Some(body), index)
    }

    // ----- helpers -----

    fn peers(&self) -> Vec<ServerId> {
        self.config
            .servers
            .iter()
            .copied()
            .filter(|&s| s != self.config.id)
            .collect()
    }

    fn quorum_size(&self) -> usize {
        self.config.servers.len() / 2 + 1
    }

    fn has_quorum(&self, count: usize) -> bool {
        count >= self.quorum_size()
    }

    fn send(&mut self, to: ServerId, msg: PeerMessage) {
        if self.buggify(Branch::BuggifyResent) {
            self.out.push(ServerOutput::Send {
                to,
                msg: msg.clone(),
            });
        }
        self.out.push(ServerOutput::Send { to, msg });
    }

    /// Whether to take the rare path `branch` names, drawn from the [`Buggify`] stream; always
    /// false, and drawing nothing, when it is off. Counts the branch when it fires.
    fn buggify(&mut self, branch: Branch) -> bool {
        let (Some(rng), Some(buggify)) = (self.buggify_rng.as_mut(), self.config.buggify) else {
            return false;
        };
        let fires = rng.random_bool(buggify.chance);
        if fires {
            self.coverage.hit(branch);
        }
        fires
    }

    fn persist(&mut self, op: PersistOp) {
        self.persist_count += 1;
        if let PersistOp::Append { first_index, .. } = op
            && self.config.durability_reported
        {
            self.unconfirmed_appends
                .push_back((self.persist_count, first_index));
        }
        self.out.push(ServerOutput::Persist(op));
    }

    /// The last index of this server's own log known durable: everything before the first
    /// entry an unreported append wrote (an append may rewrite a suffix).
    fn durable_last_index(&self) -> LogIndex {
        self.unconfirmed_appends
            .iter()
            .map(|&(_, first_index)| first_index - 1)
            .min()
            .map_or(self.log.last_index(), |index| {
                index.min(self.log.last_index())
            })
    }

    fn set_timer(&mut self, timer: ServerTimer, at: Time) {
        self.out.push(ServerOutput::SetTimer { timer, at });
    }

    fn persist_hard_state(&mut self) {
        self.persist(PersistOp::HardState {
            term: self.term,
            voted_for: self.voted_for,
            recovering: self.recovering.is_some(),
        });
    }

    // ----- repair of a damaged log (module docs) -----

    /// Starts repairing a damaged log: one term up, no vote, persisted before anything leaves.
    fn start_repair(&mut self) {
        assert_eq!(
            self.role,
            Role::Follower,
            "{}: repair starts",
            self.config.id
        );
        self.coverage.hit(Branch::RecoveryStarted);
        self.term += 1;
        self.voted_for = None;
        self.recovering = Some(self.term);
        self.persist_hard_state();
    }

    /// Whether this server must refuse votes and not stand: it is repairing its log, unless
    /// a test disabled the rule.
    fn repair_forbids_votes(&self) -> bool {
        self.recovering.is_some() && !self.config.unsafe_recovering_votes
    }

    /// Ends the repair once the commit index covers an entry of the repair's term or later:
    /// everything committed before it is then in this server's log (module docs).
    fn finish_repair_if_done(&mut self) {
        let Some(repair_term) = self.recovering else {
            return;
        };
        let committed_term = self
            .log
            .term_at(self.commit_index)
            .expect("the commit index is in the log or is its base");
        if committed_term < repair_term {
            return;
        }
        assert!(
            self.term >= repair_term,
            "{}: repaired by a leader of an older term",
            self.config.id
        );
        self.coverage.hit(Branch::RecoveryCompleted);
        self.recovering = None;
        self.persist_hard_state();
    }

    fn check_invariants(&self) {
        let id = self.config.id;
        self.watches.check_invariants(self.table.applied_index());
        assert!(
            !self.repair_forbids_votes() || self.role == Role::Follower,
            "{id}: repairing a damaged log, yet {:?}",
            self.role
        );
        assert!(
            self.recovering
                .is_none_or(|repair_term| repair_term <= self.term),
            "{id}: repairing from a term it has not reached"
        );
        assert_eq!(
            self.snapshot
                .as_ref()
                .map_or((0, 0), |s| (s.last_included_index, s.last_included_term)),
            (self.log.base_index(), self.log.base_term()),
            "{id}: the log's base is not the snapshot's last entry"
        );
        assert!(
            self.log.base_index() <= self.table.applied_index(),
            "{id}: compacted entries that were never applied"
        );
        assert!(
            self.commit_index <= self.log.last_index(),
            "{id}: commit index beyond the log"
        );
        assert!(
            self.role != Role::Leader || self.prompt_through <= self.log.last_index(),
            "{id}: a leader waits promptly for an entry beyond its log"
        );
        assert!(
            self.table.applied_index() <= self.commit_index,
            "{id}: applied beyond the commit index"
        );
        assert!(
            self.log.last_term() <= self.term,
            "{id}: log holds a term from the future"
        );
        match self.role {
            Role::Leader => {
                assert_eq!(
                    self.leader,
                    Some(id),
                    "{id}: leader that does not know it leads"
                );
                assert_eq!(
                    self.voted_for,
                    Some(id),
                    "{id}: leader without its own vote"
                );
                assert_eq!(
                    self.progress.len(),
                    self.config.servers.len() - 1,
                    "{id}: progress per peer"
                );
                // Raft §5.4.2: what a leader commits by counting replicas is of its own term.
                assert!(
                    self.commit_index <= self.commit_index_at_election
                        || self.log.term_at(self.commit_index) == Some(self.term),
                    "{id}: leader of term {} committed index {} of term {:?}",
                    self.term,
                    self.commit_index,
                    self.log.term_at(self.commit_index)
                );
                assert!(
                    self.next_round_reads.is_empty() || !self.read_batches.is_empty(),
                    "{id}: reads wait for a next round while no round is in flight"
                );
                for (peer, progress) in &self.progress {
                    assert!(
                        progress.match_index < progress.next_index,
                        "{id}: {peer} match >= next"
                    );
                    assert!(
                        progress.next_index <= self.log.last_index() + 1,
                        "{id}: {peer} next beyond log"
                    );
                }
            }
            Role::Candidate => assert_eq!(
                self.voted_for,
                Some(id),
                "{id}: candidate without its own vote"
            ),
            Role::Follower | Role::PreCandidate => {
                assert!(
                    self.progress.is_empty(),
                    "{id}: non-leader keeps leader progress"
                );
                assert!(
                    self.pending_replies.is_empty(),
                    "{id}: non-leader keeps pending writes"
                );
                assert!(
                    self.read_batches.is_empty() && self.next_round_reads.is_empty(),
                    "{id}: non-leader keeps reads waiting for a round"
                );
                assert!(
                    self.refusals.is_empty() && self.refused.is_empty(),
                    "{id}: non-leader keeps refusals"
                );
            }
        }
        assert!(
            self.pending_read_count() <= self.config.pending_reads_max * 2,
            "{id}: pending reads exceed their bound"
        );
        self.check_session_invariants();
        self.check_queue_state_invariants();
    }
}

/// Most clients a leader remembers a refusal by read for; past it, preempts of held locks go
/// through the log (correct, only slower).
const REFUSED_CLIENTS_MAX: usize = 65_536;

/// A preempt the leader refused with a confirmed read, remembered so that its copies get the
/// same answer (see `Server::refused`).
#[derive(Clone, Debug)]
struct RefusedByRead {
    seq: u64,
    lock: LockName,
    owner: ClientId,
    /// The applied index the refusal reflected.
    index: LogIndex,
}

/// Whether a leader's new entry is one whose commit someone waits for promptly (see
/// `Server::prompt_through`).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Promptness {
    Prompt,
    /// An acquire that queues behind another holder: only a later entry answers it.
    Queues,
}

/// Who will hold a lock once the log applies, as `Server::projected_owner` sees it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Projection {
    Free,
    Owner(ClientId),
    /// The request itself is in the log at this index.
    InLog(LogIndex),
    /// The request's (client, seq) is in the log with another operation or lock.
    SeqReused,
}

/// True for preempt and release requests, which go through the log.
fn is_write(request: &ClientRequest) -> bool {
    matches!(&request.body, RequestBody::Op { op, .. } if op.is_write())
}

impl Server {
    /// Why a request breaks a limit the node enforces itself (a lock name's length, a hello's
    /// TTL outside this server's bounds), with the coverage branch that names the problem.
    fn request_problem(&self, request: &ClientRequest) -> Option<(Branch, String)> {
        if let RequestBody::Hello { ttl_ms, .. } = &request.body {
            return sessions::bad_ttl(*ttl_ms, &self.config)
                .map(|reason| (Branch::HelloBadTtl, reason));
        }
        bad_lock_name(request)
            .map(|reason| (Branch::WriteBadLockName, reason))
            .or_else(|| queue::bad_wait(request).map(|reason| (Branch::QueueBadWait, reason)))
    }
}

/// Why a request's lock name breaks the protocol's limit, if it does. The wire codec refuses
/// these before they reach a server; this is the node's own guard.
fn bad_lock_name(request: &ClientRequest) -> Option<String> {
    let RequestBody::Op { op, .. } = &request.body else {
        return None;
    };
    let name = op.lock();
    if name.is_empty() {
        Some("the lock name is empty".to_string())
    } else if name.len() > LOCK_NAME_BYTES_MAX {
        Some(format!(
            "the lock name is {} bytes long; the limit is {LOCK_NAME_BYTES_MAX}",
            name.len()
        ))
    } else {
        None
    }
}

#[path = "server_sessions.rs"]
mod sessions;

#[path = "server_queue.rs"]
mod queue;

pub use sessions::{shrink, stretch};

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
