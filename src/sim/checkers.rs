//! The safety checkers that watch every simulation: election safety (at most one leader per
//! term), state machine safety (every server applies the same entry with the same result at each
//! index, and equal applied indexes give equal lock maps), mutual exclusion (checked against an
//! independent reference model of the locks, at commit time and again when clients learn their
//! outcomes) and convergence (live replicas end with the same lock map).
//!
//! The runner feeds them what the nodes report; they never look inside a node.
//!
//! What they must never do: panic on a violation. A violation is a value, [`Violation`], that the
//! runner puts in its report, with a message a human can read without the trace. Only misuse by
//! the simulator (feeding committed indexes out of order, index 0) panics, because that is a bug
//! in the simulator, not in the system under test. Nothing here iterates a hash map.

use crate::node::{
    ApplyResult, Claim, ClientId, ClientReply, ClientRequest, ClientSecret, Command, Decision,
    Entry, Holder, LOCK_NAME_BYTES_MAX, LockName, LockTable, LogIndex, Mode, Operation, Outcome,
    QUEUE_WAITERS_PER_LOCK_MAX, Rejection, ReplyBody, RequestBody, Role,
    SHARED_HOLDERS_PER_LOCK_MAX, ServerId, Term, Time, Woken,
};
use crate::sim::fairness::{ModelWaiter, QueueModel};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[path = "checkers_rogue_watches_modes.rs"]
mod checkers_rogue_watches_modes;

/// At most one leader per term (Raft §5.2).
pub const ELECTION_SAFETY: &str = "election_safety";
/// Every server applies the same entry with the same result at each index (Raft §5.4.3).
pub const STATE_MACHINE_SAFETY: &str = "state_machine_safety";
/// At most one client holds a lock at a time, and fencing tokens only grow.
pub const MUTUAL_EXCLUSION: &str = "mutual_exclusion";
/// Live replicas that applied everything hold the same lock map.
pub const CONVERGENCE: &str = "convergence";
/// Raft's leader completeness (§5.4): a leader's log holds every committed entry.
pub const LEADER_COMPLETENESS: &str = "leader_completeness";
/// A server casts at most one vote per term, across crashes and restarts.
pub const ONE_VOTE_PER_TERM: &str = "one_vote_per_term";
/// Rogue clients change no one else's locks, are never answered as if a request they cannot
/// make had succeeded, and never make a server stop.
pub const ROGUE_ISOLATION: &str = "rogue_isolation";
/// The fenced resource never accepts a write with a token lower than one it accepted for the
/// lock, and every accepted write came from the client granted its token (`sim::resource`).
pub const FENCED_WRITES: &str = "fenced_writes";
/// At no true instant do two clients both believe they hold the same lock, each by its own
/// clock and the client's lease rule (`sim::lease`).
pub const LEASE_SAFETY: &str = "lease_safety";
/// A session never expires before TTL after the send of its last acknowledged renewal, and a
/// silent one expires within the stated bound once faults stop (`sim::session_expiry`).
pub const SESSION_EXPIRY: &str = "session_expiry";

/// The checkers a scenario may name in `expect_violations`: every checker of the protocol's
/// safety and of the clients' history. Not the harness's own outcomes (`node_assertion`,
/// `simulation_bound`), which are never a scenario's point.
pub const EXPECTABLE: &[&str] = &[
    ELECTION_SAFETY,
    STATE_MACHINE_SAFETY,
    ONE_VOTE_PER_TERM,
    LEADER_COMPLETENESS,
    MUTUAL_EXCLUSION,
    CONVERGENCE,
    ROGUE_ISOLATION,
    FENCED_WRITES,
    LEASE_SAFETY,
    SESSION_EXPIRY,
    crate::sim::fairness::FIFO_FAIRNESS,
    crate::sim::fairness::NO_GRANT_AFTER_EXPIRY,
    crate::sim::fairness::WAITERS_DECIDED,
    crate::sim::watch::WATCH_STREAMS,
    crate::sim::linearizability::LINEARIZABILITY,
    crate::sim::linearizability::MONOTONIC_READS,
];

/// How many differing locks a convergence violation lists; the rest are only counted, so that a
/// report stays readable when a replica diverged wholesale.
pub const CONVERGENCE_DIFFERENCES_MAX: usize = 10;

/// A broken invariant, found at simulated time `at`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: Time,
    pub message: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, at: Time, message: String) -> Violation {
        debug_assert!(!message.is_empty(), "a violation needs a message");
        Violation {
            invariant,
            at,
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violated at {}: {}",
            self.invariant, self.at, self.message
        )
    }
}

/// Election safety: remembers the first leader seen in each term.
///
/// Calling contract: call [`ElectionSafety::observe`] after every server step with the server's
/// role and term after that step, and [`ElectionSafety::observe_vote`] with its vote.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    /// The first leader seen in each term, and when it was first seen.
    leaders: BTreeMap<Term, (ServerId, Time)>,
    /// Each server's vote in each term, and when it was first seen. A restarted server that
    /// forgot its vote shows up here as a second, different vote.
    votes: BTreeMap<(ServerId, Term), (ServerId, Time)>,
}

impl ElectionSafety {
    pub fn new() -> ElectionSafety {
        ElectionSafety::default()
    }

    pub fn observe(
        &mut self,
        now: Time,
        server: ServerId,
        role: Role,
        term: Term,
    ) -> Result<(), Violation> {
        if role != Role::Leader {
            return Ok(());
        }
        let (first, since) = *self.leaders.entry(term).or_insert((server, now));
        if first == server {
            return Ok(());
        }
        debug_assert!(since <= now, "election safety: time went backwards");
        Err(Violation::new(
            ELECTION_SAFETY,
            now,
            format!(
                "{first} and {server} were both leader in term {term}: {first} since {since}, \
                 {server} at {now}"
            ),
        ))
    }

    /// A server's vote after a step. Votes are durable: the same server must never vote for two
    /// candidates in one term, whatever crashes and restarts happen in between.
    pub fn observe_vote(
        &mut self,
        now: Time,
        server: ServerId,
        term: Term,
        voted_for: Option<ServerId>,
    ) -> Result<(), Violation> {
        let Some(candidate) = voted_for else {
            return Ok(());
        };
        let (first, since) = *self.votes.entry((server, term)).or_insert((candidate, now));
        if first == candidate {
            return Ok(());
        }
        Err(Violation::new(
            ONE_VOTE_PER_TERM,
            now,
            format!(
                "{server} voted for {first} in term {term} at {since}, and for {candidate} in the \
                 same term at {now} (a vote must survive restarts)"
            ),
        ))
    }

    /// How many terms had a leader (for statistics).
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}

/// The first application of one log index: it defines what is committed there.
#[derive(Clone, Debug)]
struct CommittedEntry {
    server: ServerId,
    entry: Entry,
    result: ApplyResult,
}

/// State machine safety: the first server to apply an index defines the committed entry there;
/// every later application must match it, entry and result.
///
/// Calling contract: call [`StateMachineSafety::observe_applied`] for every
/// `ServerOutput::Applied`, and [`StateMachineSafety::observe_lock_map`] whenever a server's
/// lock map is sampled.
#[derive(Clone, Debug, Default)]
pub struct StateMachineSafety {
    /// Indexed by log index (dense: position 0 is unused). Vectors rather than maps because
    /// this is on the simulator's hottest path and committed indexes form a prefix.
    committed: Vec<Option<CommittedEntry>>,
    committed_count: usize,
    /// The first lock map digest seen at each applied index, and which server had it.
    lock_map_digests: Vec<Option<(ServerId, u64)>>,
}

/// The slot for `index` in a dense per-index vector, growing it as needed.
fn slot_for<T: Clone>(slots: &mut Vec<Option<T>>, index: LogIndex) -> &mut Option<T> {
    let position = usize::try_from(index).expect("log indexes fit in memory");
    if slots.len() <= position {
        slots.resize(position + 1, None);
    }
    &mut slots[position]
}

impl StateMachineSafety {
    pub fn new() -> StateMachineSafety {
        StateMachineSafety::default()
    }

    /// Returns `Ok(true)` the first time `index` is applied anywhere: the runner then feeds it
    /// to [`MutualExclusion::observe_committed`].
    pub fn observe_applied(
        &mut self,
        now: Time,
        server: ServerId,
        index: LogIndex,
        entry: &Entry,
        result: &ApplyResult,
    ) -> Result<bool, Violation> {
        assert!(
            index >= 1,
            "state machine safety: {server} reported applying index 0"
        );
        let slot = slot_for(&mut self.committed, index);
        let Some(first) = slot else {
            *slot = Some(CommittedEntry {
                server,
                entry: entry.clone(),
                result: *result,
            });
            self.committed_count += 1;
            return Ok(true);
        };
        if first.entry != *entry {
            let message = format!(
                "index {index}: {} applied {}, but {server} applied {}",
                first.server,
                describe_entry(&first.entry),
                describe_entry(entry)
            );
            return Err(Violation::new(STATE_MACHINE_SAFETY, now, message));
        }
        if first.result != *result {
            let message = format!(
                "index {index}: {} and {server} applied the same entry ({}) with different \
                 results: {} got {}, {server} got {}",
                first.server,
                describe_entry(entry),
                first.server,
                describe_result(&first.result),
                describe_result(result)
            );
            return Err(Violation::new(STATE_MACHINE_SAFETY, now, message));
        }
        Ok(false)
    }

    /// Lock maps are a pure function of the applied prefix, so equal applied indexes must give
    /// equal digests.
    pub fn observe_lock_map(
        &mut self,
        now: Time,
        server: ServerId,
        applied_index: LogIndex,
        digest: u64,
    ) -> Result<(), Violation> {
        let (first_server, first_digest) =
            *slot_for(&mut self.lock_map_digests, applied_index).get_or_insert((server, digest));
        if first_digest == digest {
            return Ok(());
        }
        debug_assert_ne!(
            first_server, server,
            "one server reported two maps for one index"
        );
        let message = format!(
            "lock maps differ at applied index {applied_index}: {first_server} has digest \
             {first_digest:#018x}, {server} has digest {digest:#018x}"
        );
        Err(Violation::new(STATE_MACHINE_SAFETY, now, message))
    }

    /// Leader completeness (Raft §5.4): a new leader's log must hold every entry any server has
    /// applied, with the same term and command. Call when a server becomes leader.
    pub fn check_leader_completeness(
        &self,
        now: Time,
        leader: ServerId,
        term: Term,
        log: &crate::node::RaftLog,
    ) -> Result<(), Violation> {
        for (index, slot) in self.committed.iter().enumerate() {
            let Some(committed) = slot else {
                continue;
            };
            let index = index as LogIndex;
            // Entries compacted into the leader's snapshot are gone; its base keeps the term.
            if index < log.base_index() {
                continue;
            }
            if index == log.base_index() {
                if log.base_term() != committed.entry.term {
                    let message = format!(
                        "{leader} became leader of term {term} with a snapshot ending at index \
                         {index} of term {}, but {} applied an entry of term {} there",
                        log.base_term(),
                        committed.server,
                        committed.entry.term
                    );
                    return Err(Violation::new(LEADER_COMPLETENESS, now, message));
                }
                continue;
            }
            if log.entry(index) != Some(&committed.entry) {
                let has = log
                    .entry(index)
                    .map_or("nothing".to_string(), describe_entry);
                let message = format!(
                    "{leader} became leader of term {term} without committed index {index}: {} \
                     applied {} there, {leader}'s log has {has}",
                    committed.server,
                    describe_entry(&committed.entry)
                );
                return Err(Violation::new(LEADER_COMPLETENESS, now, message));
            }
        }
        Ok(())
    }

    /// The committed entry at `index` and its result, if any server applied it.
    pub fn committed(&self, index: LogIndex) -> Option<(&Entry, &ApplyResult)> {
        let position = usize::try_from(index).ok()?;
        self.committed
            .get(position)?
            .as_ref()
            .map(|committed| (&committed.entry, &committed.result))
    }

    pub fn committed_count(&self) -> usize {
        self.committed_count
    }
}

/// Which of the two lock-changing requests a commit or an acknowledgement is about.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum RequestKind {
    Preempt,
    Release,
    Acquire,
    Cancel,
}

impl RequestKind {
    fn name(self) -> &'static str {
        match self {
            RequestKind::Preempt => "preempt",
            RequestKind::Release => "release",
            RequestKind::Acquire => "acquire",
            RequestKind::Cancel => "cancel",
        }
    }
}

/// The first committed answer to one client request `(client, seq)`.
#[derive(Clone, Debug)]
struct CommittedRequest {
    index: LogIndex,
    kind: RequestKind,
    lock: LockName,
    /// Its claim: the same seq with another mode or other permits is another request.
    claim: Claim,
    outcome: Outcome,
}

/// One grant in the reference model's history of a lock, keyed by its token.
#[derive(Copy, Clone, Debug)]
struct Grant {
    owner: ClientId,
    /// Index of the committed release that ended this grant.
    released_at: Option<LogIndex>,
}

/// Mutual exclusion, checked against this checker's own reference model of the locks, which it
/// builds from the committed commands alone (never from a server's lock table).
///
/// Calling contract: feed every committed index exactly once, in increasing order, to
/// [`MutualExclusion::observe_committed`] (a simulator bug otherwise: it panics); feed every
/// outcome a client learned to [`MutualExclusion::observe_ack`].
#[derive(Clone, Debug, Default)]
pub struct MutualExclusion {
    /// The last committed index observed; 0 before the first.
    last_index: LogIndex,
    /// Reference model: who holds each lock now. Absent means free.
    holders: BTreeMap<LockName, Holder>,
    /// Every grant ever committed, per lock, by token.
    grants: BTreeMap<LockName, BTreeMap<LogIndex, Grant>>,
    /// The first committed outcome of every preempt and release, per `(client, seq)`.
    requests: BTreeMap<(ClientId, u64), CommittedRequest>,
    /// The last grant a client acknowledged, per lock, in acknowledgement order.
    acknowledged_grants: BTreeMap<LockName, Holder>,
    grants_acknowledged: usize,
    /// Preempts a client was told were refused (held by the named owner) with no committed
    /// entry: the leader refused them with a read. None of them may ever commit as anything
    /// else.
    refused_by_read: BTreeMap<(ClientId, u64), ClientId>,
    /// Registrations committed so far: client ids 1 to this were issued.
    registered_clients: u64,
    /// Clients registered with a session TTL, and whether an expire ended the session.
    sessions: BTreeMap<ClientId, bool>,
    /// Reference model of the blocking acquire's FIFO queues (`sim::fairness`).
    queues: QueueModel,
    /// Reference model of the locks held in shared mode: their holders, in grant order.
    /// `holders` has the exclusive ones; a lock is in one map or the other, never both.
    shared: BTreeMap<LockName, Vec<Holder>>,
    /// The permits declared for each lock in use (held or queued for).
    permits: BTreeMap<LockName, u32>,
    /// Locks a committed expire freed (wholly or a unit of), not granted since: the table
    /// leaves them to the leader's hand-over (lock-delay).
    freed_by_expiry: BTreeSet<LockName>,
    /// Every shared grant ever committed, per lock, by token and holder: readers handed a
    /// lock together share a token.
    shared_grants: BTreeMap<LockName, BTreeMap<(LogIndex, ClientId), Grant>>,
}

impl MutualExclusion {
    /// The locks the reference model has `client` holding now, in name order.
    pub fn locks_held_by(&self, client: ClientId) -> Vec<LockName> {
        let mut locks: Vec<LockName> = self
            .holders
            .iter()
            .filter(|(_, holder)| holder.owner == client)
            .map(|(lock, _)| lock.clone())
            .collect();
        locks.extend(
            self.shared
                .iter()
                .filter(|(_, holders)| holders.iter().any(|h| h.owner == client))
                .map(|(lock, _)| lock.clone()),
        );
        locks.sort();
        locks
    }

    pub fn new() -> MutualExclusion {
        MutualExclusion::default()
    }

    pub fn observe_committed(
        &mut self,
        now: Time,
        index: LogIndex,
        command: &Command,
        result: &ApplyResult,
    ) -> Result<(), Violation> {
        assert!(
            index > self.last_index,
            "mutual exclusion: committed index {index} fed after index {}",
            self.last_index
        );
        self.last_index = index;
        let plain = Claim::EXCLUSIVE;
        let (client, seq, lock, kind, (wait_ms, claim)) = match command {
            Command::Preempt {
                client,
                seq,
                lock,
                claim,
            } => (*client, *seq, lock, RequestKind::Preempt, (0, *claim)),
            Command::Release { client, seq, lock } => {
                (*client, *seq, lock, RequestKind::Release, (0, plain))
            }
            Command::Acquire {
                client,
                seq,
                lock,
                wait_ms,
                claim,
            } => (
                *client,
                *seq,
                lock,
                RequestKind::Acquire,
                (*wait_ms, *claim),
            ),
            Command::Cancel { client, seq, lock } => {
                (*client, *seq, lock, RequestKind::Cancel, (0, plain))
            }
            Command::Timeout { client, seq, lock } => {
                return self.check_timeout(now, index, (*client, *seq, lock), result);
            }
            Command::HandOver { lock } => {
                self.model_hand_over(lock, index);
                self.forget_permits_if_unused(lock);
                return check_bookkeeping(now, index, command, result);
            }
            Command::Register { ttl_ms, .. } => {
                self.registered_clients += 1;
                let client = ClientId(self.registered_clients);
                if ttl_ms.is_some() {
                    self.sessions.insert(client, false);
                }
                let expected = ApplyResult::Registered { client };
                if *result != expected {
                    return Err(mismatched_result(now, index, command, result));
                }
                return Ok(());
            }
            Command::Expire { client } => return self.check_expire(now, index, *client, result),
            Command::Noop | Command::MarkSilent { .. } | Command::Revive { .. } => {
                return check_bookkeeping(now, index, command, result);
            }
        };
        let request = Request {
            index,
            client,
            seq,
            lock,
            kind,
            wait_ms,
            claim,
        };
        let queue_full = self.queue_full(&request)
            && !self.requests.contains_key(&(client, seq))
            && *result
                == (ApplyResult::Rejected {
                    rejection: Rejection::QueueFull,
                });
        if queue_full {
            return Ok(());
        }
        if let Some(rejection) = self.expected_rejection(&request) {
            // Whatever the log holds, apply refuses it, the same way everywhere.
            if *result != (ApplyResult::Rejected { rejection }) {
                let message = format!(
                    "index {index}: {} must be rejected ({}), yet it produced {}",
                    describe_command(command),
                    rejection.name(),
                    describe_result(result)
                );
                return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
            }
            return Ok(());
        }
        match *result {
            ApplyResult::Rejected { rejection } => {
                let message = format!(
                    "index {index}: {} was rejected ({}), but nothing about it is \
                     wrong",
                    describe_command(command),
                    rejection.name()
                );
                Err(Violation::new(MUTUAL_EXCLUSION, now, message))
            }
            // A stale request had no effect anywhere.
            ApplyResult::Stale => Ok(()),
            ApplyResult::Outcome {
                outcome,
                duplicate: true,
            } => self.check_duplicate(now, &request, outcome),
            ApplyResult::Outcome {
                outcome,
                duplicate: false,
            } => self.check_fresh(now, &request, outcome),
            ApplyResult::Nothing | ApplyResult::Registered { .. } | ApplyResult::Expired { .. } => {
                Err(mismatched_result(now, index, command, result))
            }
        }
    }

    /// The rejection the model expects for a write, judged independently of the lock table:
    /// an id no committed registration issued, a bad lock name, or a seq whose first commit
    /// was another operation or lock and is still the client's latest.
    fn expected_rejection(&self, request: &Request<'_>) -> Option<Rejection> {
        if request.client.0 == 0 || request.client.0 > self.registered_clients {
            return Some(Rejection::UnknownClient);
        }
        if request.lock.is_empty() || request.lock.len() > LOCK_NAME_BYTES_MAX {
            return Some(Rejection::BadLockName);
        }
        if !request.claim.permits_are_valid() {
            return Some(Rejection::BadPermits);
        }
        if self.sessions.get(&request.client) == Some(&true) {
            return Some(Rejection::SessionExpired);
        }
        let first = self.requests.get(&(request.client, request.seq))?;
        // Nothing is newer than seq u64::MAX, which a hostile client may well use.
        let newer_exists = request.seq.checked_add(1).is_some_and(|next| {
            self.requests
                .range((request.client, next)..=(request.client, u64::MAX))
                .next()
                .is_some()
        });
        let same = first.kind == request.kind
            && first.lock == *request.lock
            && first.claim == request.claim;
        (!same && !newer_exists).then_some(Rejection::SeqReused)
    }

    /// An acquire that would join a queue already at its bound is refused, changing nothing
    /// (and unlike the rejections above, only for a request not settled before).
    fn queue_full(&self, request: &Request<'_>) -> bool {
        let holders = self.model_holders(request.lock);
        let held_by_other =
            !holders.is_empty() && holders.iter().all(|holder| holder.owner != request.client);
        request.kind == RequestKind::Acquire
            && request.wait_ms > 0
            && held_by_other
            && self.queues.len(request.lock) >= QUEUE_WAITERS_PER_LOCK_MAX
    }

    /// A request applied for the first time: its outcome must agree with the model, which then
    /// takes its effect.
    fn check_fresh(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        if let Some(first) = self.requests.get(&(request.client, request.seq)) {
            // Exactly-once: a retry must be answered from the session, flagged duplicate.
            let message = format!(
                "{} seq {} was applied twice as new: at index {} ({}) and at index {} ({})",
                request.client,
                request.seq,
                first.index,
                describe_outcome(&first.outcome),
                request.index,
                describe_outcome(&outcome)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        if let Some(&owner) = self.refused_by_read.get(&(request.client, request.seq))
            && outcome != (Outcome::HeldBy { owner })
        {
            let message = format!(
                "{} seq {} (preempt of lock `{}`) was acknowledged as held by {owner} without a \
                 log entry, yet index {} applied it as {}",
                request.client,
                request.seq,
                request.lock,
                request.index,
                describe_outcome(&outcome)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        // A client runs one operation at a time: any newer write ends its wait.
        let abandoned = self.queues.waiting_for(request.client);
        if let Some((left, _)) = &abandoned {
            let _ = self
                .queues
                .decide(request.client, Decision::Cancelled, request.index);
            self.after_waiter_left(left, request.index);
        }
        match request.kind {
            // Hand-over first, as the table does: whether the claim leaves the plain path
            // depends on who holds the lock after it.
            RequestKind::Preempt | RequestKind::Acquire => {
                self.model_hand_over(request.lock, request.index);
                if self.claims_shared(request) {
                    self.check_claim(now, request, outcome)?
                } else if request.kind == RequestKind::Preempt {
                    self.check_preempt(now, request, outcome)?
                } else {
                    self.check_acquire(now, request, outcome)?
                }
            }
            RequestKind::Release => {
                self.check_release(now, request, outcome)?;
                // Only a release that released hands over: one refused `not_owner` of a lock
                // freed by expiry leaves its queue to the leader's hand-over (lock-delay).
                if outcome == Outcome::Released {
                    self.model_hand_over(request.lock, request.index);
                }
            }
            RequestKind::Cancel => {
                let expected = match abandoned {
                    Some((lock, _)) if lock == *request.lock => Outcome::Cancelled,
                    _ => Outcome::NotWaiting,
                };
                if outcome != expected {
                    let message = format!(
                        "cancel of lock `{}` by {} at index {} answered {}, but the reference \
                         model's queues say {}",
                        request.lock,
                        request.client,
                        request.index,
                        describe_outcome(&outcome),
                        describe_outcome(&expected)
                    );
                    return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
                }
            }
        }
        let committed = CommittedRequest {
            index: request.index,
            kind: request.kind,
            lock: request.lock.clone(),
            claim: request.claim,
            outcome,
        };
        self.requests
            .insert((request.client, request.seq), committed);
        self.forget_permits_if_unused(request.lock);
        Ok(())
    }

    fn check_preempt(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let Request {
            index,
            client,
            lock,
            ..
        } = *request;
        let holder = self.holders.get(lock).copied();
        let problem = match (outcome, holder) {
            (Outcome::Granted { token }, None) if token == index => {
                self.record_grant(lock, client, token);
                return Ok(());
            }
            (Outcome::Granted { token }, None) => format!(
                "lock `{lock}` granted to {client} at index {index} with token {token}: a new \
                 grant's fencing token must be its log index"
            ),
            // Preempting a lock you hold is idempotent: it must return the same token.
            (Outcome::Granted { token }, Some(held)) if held.owner == client => {
                if token == held.token {
                    return Ok(());
                }
                format!(
                    "lock `{lock}` re-granted to its holder {client} at index {index} with token \
                     {token}, but its grant has token {}",
                    held.token
                )
            }
            (Outcome::Granted { .. }, Some(held)) => format!(
                "lock `{lock}` granted to {client} at index {index} while {} holds it since \
                 index {} with no committed release",
                held.owner, held.token
            ),
            (Outcome::HeldBy { owner }, Some(held)) if owner == held.owner && owner != client => {
                return Ok(());
            }
            (Outcome::HeldBy { owner }, _) => format!(
                "preempt of lock `{lock}` by {client} at index {index} answered held by {owner}, \
                 but the reference model has it {}",
                describe_model_holder(holder.as_ref())
            ),
            (other, _) => format!(
                "preempt of lock `{lock}` by {client} at index {index} answered {}, which is not \
                 an answer to preempt",
                describe_outcome(&other)
            ),
        };
        Err(Violation::new(MUTUAL_EXCLUSION, now, problem))
    }

    /// A new acquire: granted like a preempt when free or already the caller's, refused like
    /// one when held and `wait_ms` is 0, queued at the tail otherwise.
    fn check_acquire(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let holder = self.holders.get(request.lock).copied();
        let queues_it = request.wait_ms > 0 && holder.is_some_and(|h| h.owner != request.client);
        if !queues_it {
            return self.check_preempt(now, request, outcome);
        }
        if outcome != Outcome::Queued {
            let message = format!(
                "acquire of lock `{}` by {} at index {} (wait {} ms) answered {}, but the \
                 reference model has the lock {}: it must queue",
                request.lock,
                request.client,
                request.index,
                request.wait_ms,
                describe_outcome(&outcome),
                describe_model_holder(holder.as_ref())
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        let waiter = ModelWaiter {
            client: request.client,
            seq: request.seq,
            enqueued_at: request.index,
            mode: Mode::Exclusive,
        };
        self.queues.enqueue(request.lock, waiter);
        Ok(())
    }

    /// Waiters from the head of `lock`'s queue are granted while the head fits, with `index`
    /// as their token: an exclusive head alone once the lock is free, a run of shared heads
    /// up to the capacity.
    fn model_hand_over(&mut self, lock: &LockName, index: LogIndex) {
        // Each grant takes at least one unit of a capacity of at most the holder bound.
        for _ in 0..=SHARED_HOLDERS_PER_LOCK_MAX {
            let Some(head) = self.queues.head(lock) else {
                return;
            };
            if !self.fits(lock, head.mode) {
                return;
            }
            let granted = Outcome::Granted { token: index };
            let decided =
                self.queues
                    .decide(head.client, Decision::Granted { token: index }, index);
            assert!(decided.is_some(), "mutual exclusion: the head is waiting");
            self.record_grant_in(lock, head.client, index, head.mode);
            if let Some(request) = self.requests.get_mut(&(head.client, head.seq)) {
                request.outcome = granted;
            }
        }
    }

    /// A waiter left `lock`'s queue ungranted: the table grants what now fits, unless the lock
    /// waits for the leader's hand-over after an expiry.
    fn after_waiter_left(&mut self, lock: &LockName, index: LogIndex) {
        if !self.freed_by_expiry.contains(lock) {
            self.model_hand_over(lock, index);
        }
        self.forget_permits_if_unused(lock);
    }

    /// The leader's timeout of (`client`, `seq`) on `lock`: removes a waiter still queued
    /// (`timed_out`); applies to nothing otherwise.
    fn check_timeout(
        &mut self,
        now: Time,
        index: LogIndex,
        (client, seq, lock): (ClientId, u64, &LockName),
        result: &ApplyResult,
    ) -> Result<(), Violation> {
        let queued = self.queues.waiting_for(client) == Some((lock.clone(), seq));
        let expected = if queued {
            let _ = self.queues.decide(client, Decision::TimedOut, index);
            self.after_waiter_left(lock, index);
            if let Some(request) = self.requests.get_mut(&(client, seq)) {
                request.outcome = Outcome::TimedOut;
            }
            ApplyResult::Outcome {
                outcome: Outcome::TimedOut,
                duplicate: false,
            }
        } else {
            ApplyResult::Nothing
        };
        if *result == expected {
            return Ok(());
        }
        let message = format!(
            "index {index}: timeout of {client} seq {seq} on lock `{lock}` produced {}, but the \
             reference model expected {}",
            describe_result(result),
            describe_result(&expected)
        );
        Err(Violation::new(MUTUAL_EXCLUSION, now, message))
    }

    /// One server's report of a waiter the entry at `index` decided: `fifo_fairness` and
    /// `no_grant_after_expiry` judge it against the model.
    pub fn observe_woken(
        &self,
        now: Time,
        index: LogIndex,
        woken: &Woken,
    ) -> Result<(), Violation> {
        self.queues.observe_woken(now, index, woken)
    }

    /// The model's waiters still queued, for the liveness phase: every waiter must have been
    /// granted, timed out or cancelled by then.
    pub fn waiters(&self) -> Vec<(LockName, ModelWaiter)> {
        self.queues.waiters()
    }

    /// Whether any client ever waited in a queue.
    pub fn queues_used(&self) -> bool {
        self.queues.ever_used()
    }

    /// The liveness half of the queue checkers: see [`QueueModel::check_all_decided`].
    pub fn check_all_decided(&self, now: Time) -> Result<(), Violation> {
        self.queues.check_all_decided(now)
    }

    /// The model takes a new exclusive grant: `client` holds `lock` with fencing token `token`.
    fn record_grant(&mut self, lock: &LockName, client: ClientId, token: LogIndex) {
        self.record_grant_in(lock, client, token, Mode::Exclusive);
    }

    /// The model takes a new grant in `mode`. The model grants only what fits.
    fn record_grant_in(&mut self, lock: &LockName, client: ClientId, token: LogIndex, mode: Mode) {
        assert!(
            self.fits(lock, mode),
            "mutual exclusion: granting `{lock}` in {} mode, which does not fit",
            mode.name()
        );
        let holder = Holder {
            owner: client,
            token,
        };
        match mode {
            Mode::Exclusive => {
                self.holders.insert(lock.clone(), holder);
            }
            Mode::Shared => self.shared.entry(lock.clone()).or_default().push(holder),
        }
        self.freed_by_expiry.remove(lock);
        let grant = Grant {
            owner: client,
            released_at: None,
        };
        if mode == Mode::Shared {
            let previous = self
                .shared_grants
                .entry(lock.clone())
                .or_default()
                .insert((token, client), grant);
            assert!(
                previous.is_none(),
                "mutual exclusion: {client} granted `{lock}` twice with token {token}"
            );
            return;
        }
        let previous = self
            .grants
            .entry(lock.clone())
            .or_default()
            .insert(token, grant);
        // Tokens are log indexes, which the runner feeds in increasing order.
        assert!(
            previous.is_none(),
            "mutual exclusion: two grants of `{lock}` with token {token}"
        );
    }

    fn check_release(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let Request {
            index,
            client,
            lock,
            ..
        } = *request;
        if self.shared.contains_key(lock) {
            return self.check_shared_release(now, request, outcome);
        }
        let holder = self.holders.get(lock).copied();
        let holds = holder.is_some_and(|held| held.owner == client);
        let problem = match outcome {
            Outcome::Released if holds => {
                let held = self
                    .holders
                    .remove(lock)
                    .expect("the model holder was just read");
                let grant = self
                    .grants
                    .get_mut(lock)
                    .and_then(|grants| grants.get_mut(&held.token));
                let grant = grant.expect("mutual exclusion: a held lock without its grant record");
                assert_eq!(
                    grant.owner, client,
                    "mutual exclusion: grant record owner drifted"
                );
                grant.released_at = Some(index);
                return Ok(());
            }
            Outcome::NotOwner if !holds => return Ok(()),
            Outcome::Released | Outcome::NotOwner => format!(
                "release of lock `{lock}` by {client} at index {index} answered {}, but the \
                 reference model has it {}",
                describe_outcome(&outcome),
                describe_model_holder(holder.as_ref())
            ),
            other => format!(
                "release of lock `{lock}` by {client} at index {index} answered {}, which is not \
                 an answer to release",
                describe_outcome(&other)
            ),
        };
        Err(Violation::new(MUTUAL_EXCLUSION, now, problem))
    }

    /// An expire of a live session releases every lock the model has its client holding, and
    /// says how many; an expire of anything else changes nothing.
    fn check_expire(
        &mut self,
        now: Time,
        index: LogIndex,
        client: ClientId,
        result: &ApplyResult,
    ) -> Result<(), Violation> {
        if self.sessions.get(&client) != Some(&false) {
            if *result == ApplyResult::Nothing {
                return Ok(());
            }
            let message = format!(
                "index {index}: expire of {client}, which has no live session, produced {}",
                describe_result(result)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        self.sessions.insert(client, true);
        self.queues.note_expired(client);
        if let Some((left, _)) = self.queues.decide(client, Decision::SessionExpired, index) {
            self.after_waiter_left(&left, index);
        }
        let held = self.locks_held_by(client);
        for lock in &held {
            if let Some(holder) = self.holders.remove(lock) {
                if let Some(grant) = self
                    .grants
                    .get_mut(lock)
                    .and_then(|grants| grants.get_mut(&holder.token))
                {
                    grant.released_at = Some(index);
                }
            } else {
                self.remove_shared_holder(lock, client, index);
            }
            self.freed_by_expiry.insert(lock.clone());
            self.forget_permits_if_unused(lock);
        }
        let expected = ApplyResult::Expired {
            client,
            released: u32::try_from(held.len()).unwrap_or(u32::MAX),
        };
        if *result == expected {
            return Ok(());
        }
        let message = format!(
            "index {index}: expire of {client} produced {}, but the reference model has it \
             release {} lock(s)",
            describe_result(result),
            held.len()
        );
        Err(Violation::new(MUTUAL_EXCLUSION, now, message))
    }

    /// A retry answered from the session must get exactly the outcome first committed.
    fn check_duplicate(
        &self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let Request {
            index,
            client,
            seq,
            lock,
            kind,
            ..
        } = *request;
        let Some(first) = self.requests.get(&(client, seq)) else {
            let message = format!(
                "index {index} answered {} {seq} ({} of lock `{lock}`) as a duplicate, but that \
                 request was never committed before",
                client,
                kind.name()
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        };
        if first.kind == kind && first.lock == *lock && first.outcome == outcome {
            return Ok(());
        }
        let message = format!(
            "index {index} answered the retry of {client} seq {seq} ({} of lock `{lock}`) with \
             {}, but its first commit at index {} ({} of lock `{}`) answered {}",
            kind.name(),
            describe_outcome(&outcome),
            first.index,
            first.kind.name(),
            first.lock,
            describe_outcome(&first.outcome)
        );
        Err(Violation::new(MUTUAL_EXCLUSION, now, message))
    }

    /// A client learned the outcome of request `(client, seq)`.
    pub fn observe_ack(
        &mut self,
        now: Time,
        client: ClientId,
        seq: u64,
        op: &Operation,
        outcome: &Outcome,
    ) -> Result<(), Violation> {
        let (kind, lock) = match op {
            Operation::Preempt { lock, .. } => (RequestKind::Preempt, lock),
            Operation::Release { lock } => (RequestKind::Release, lock),
            Operation::Acquire { lock, .. } => (RequestKind::Acquire, lock),
            Operation::Cancel { lock } => (RequestKind::Cancel, lock),
            // Checks are reads, not in the log: the linearizability checker owns them.
            Operation::Check { .. } => return Ok(()),
        };
        let acked = format!("{client} seq {seq} ({} of lock `{lock}`)", kind.name());
        if let (RequestKind::Preempt, Outcome::HeldBy { owner }, None) =
            (kind, outcome, self.requests.get(&(client, seq)))
        {
            // A refusal by read: the leader answered from committed state without a log entry.
            // The owner it names must have been granted the lock (linearizability checks when),
            // and the request must never commit as anything else (`check_fresh`).
            let granted_to_owner = self
                .grants
                .get(lock)
                .is_some_and(|grants| grants.values().any(|grant| grant.owner == *owner));
            if *owner == client {
                let message = format!(
                    "{acked} was refused without a log entry as held by {owner}, its own client: \
                     a preempt of a lock its client holds is granted again"
                );
                return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
            }
            if !granted_to_owner {
                let message = format!(
                    "{acked} was refused without a log entry as held by {owner}, but no \
                     committed entry ever granted lock `{lock}` to {owner}"
                );
                return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
            }
            self.refused_by_read.insert((client, seq), *owner);
            return Ok(());
        }
        let Some(committed) = self.requests.get(&(client, seq)) else {
            let message = format!(
                "{acked} was acknowledged as {} before it was committed",
                describe_outcome(outcome)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        };
        if committed.kind != kind || committed.lock != *lock || committed.outcome != *outcome {
            let message = format!(
                "{acked} was acknowledged as {}, but index {} committed {} of lock `{}` as {}",
                describe_outcome(outcome),
                committed.index,
                committed.kind.name(),
                committed.lock,
                describe_outcome(&committed.outcome)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        if let Outcome::Granted { token } = *outcome {
            self.check_acknowledged_grant(now, client, lock, token)?;
            self.grants_acknowledged += 1;
        }
        Ok(())
    }

    /// Acknowledged grants of one lock, in acknowledgement order: tokens grow from owner to
    /// owner, and each new owner comes after a committed release by the previous one.
    fn check_acknowledged_grant(
        &mut self,
        now: Time,
        client: ClientId,
        lock: &LockName,
        token: LogIndex,
    ) -> Result<(), Violation> {
        if self
            .shared_grants
            .get(lock)
            .is_some_and(|grants| grants.contains_key(&(token, client)))
        {
            return self.check_acknowledged_shared_grant(now, client, lock, token);
        }
        let grant = self.grants.get(lock).and_then(|grants| grants.get(&token));
        // Pair assertion with the commit-time check: the acked grant is one the model made.
        assert!(
            grant.is_some_and(|grant| grant.owner == client),
            "mutual exclusion: acknowledged grant of `{lock}` token {token} is not in the model"
        );
        let acknowledged = Holder {
            owner: client,
            token,
        };
        let previous = self.acknowledged_grants.insert(lock.clone(), acknowledged);
        let Some(previous) = previous else {
            return Ok(());
        };
        // The same owner may be told about the same grant again (an idempotent re-preempt).
        if previous == acknowledged {
            return Ok(());
        }
        let problem = if token <= previous.token {
            format!(
                "fencing token of lock `{lock}` went backwards: {client} was acknowledged token \
                 {token} after {} was acknowledged token {}",
                previous.owner, previous.token
            )
        } else {
            let ended = self
                .grants
                .get(lock)
                .and_then(|grants| grants.get(&previous.token));
            match ended.and_then(|grant| grant.released_at) {
                // Equal when a release handed the lock over inside its own entry: the
                // release applies first, then the grant, at the one index.
                Some(released_at) if released_at <= token => return Ok(()),
                _ => format!(
                    "lock `{lock}` acknowledged to {client} with token {token} while {}'s grant \
                     (token {}) had no committed release before index {token}",
                    previous.owner, previous.token
                ),
            }
        };
        Err(Violation::new(MUTUAL_EXCLUSION, now, problem))
    }

    /// The log index at which request `(client, seq)` first committed, if it did.
    pub fn committed_index(&self, client: ClientId, seq: u64) -> Option<LogIndex> {
        self.requests
            .get(&(client, seq))
            .map(|request| request.index)
    }

    /// How many grants clients acknowledged (for statistics).
    pub fn grants_acknowledged(&self) -> usize {
        self.grants_acknowledged
    }
}

/// Shared locks and semaphores in the reference model (docs/design.md, "Shared locks and
/// semaphores"): mutual exclusion becomes "never more holders than the mode or permits allow".
/// The model decides every claim by the one capacity rule, on its own state, and the cluster's
/// outcome must be that decision.
impl MutualExclusion {
    /// Whether `request` leaves the plain exclusive path: it claims shared mode or permits, or
    /// its lock is held shared or declared a semaphore. A run without modes never does, so its
    /// checks and messages are those from before modes.
    fn claims_shared(&self, request: &Request<'_>) -> bool {
        !request.claim.is_default()
            || self.shared.contains_key(request.lock)
            || self.permits.contains_key(request.lock)
    }

    /// The claim a committed grant of `lock` to `client` with `token` holds the lock in: the
    /// mode it was granted in (a claim answered with a grant the client already had keeps
    /// that grant's mode, whatever it asked), with the lock's declared permits.
    pub fn granted_claim(&self, lock: &str, client: ClientId, token: LogIndex) -> Claim {
        let shared = self
            .shared_grants
            .get(lock)
            .is_some_and(|grants| grants.contains_key(&(token, client)));
        if !shared {
            return Claim::EXCLUSIVE;
        }
        Claim {
            mode: Mode::Shared,
            permits: self.permits.get(lock).copied(),
        }
    }

    /// Every holder of `lock` in the model, in grant order.
    fn model_holders(&self, lock: &str) -> Vec<Holder> {
        match self.holders.get(lock) {
            Some(holder) => vec![*holder],
            None => self.shared.get(lock).cloned().unwrap_or_default(),
        }
    }

    /// How many units `lock` has: its declared permits, or the holder bound.
    fn capacity(&self, lock: &str) -> u32 {
        Claim::capacity(self.permits.get(lock).copied())
    }

    /// Whether a holder in `mode` fits beside `lock`'s holders.
    fn fits(&self, lock: &str, mode: Mode) -> bool {
        if self.holders.contains_key(lock) {
            return false;
        }
        let shared = self.shared.get(lock).map_or(0, Vec::len);
        match mode {
            Mode::Exclusive => shared == 0,
            Mode::Shared => shared < self.capacity(lock) as usize,
        }
    }

    fn forget_permits_if_unused(&mut self, lock: &str) {
        let in_use = self.holders.contains_key(lock)
            || self.shared.contains_key(lock)
            || self.queues.len(lock) > 0;
        if !in_use {
            self.permits.remove(lock);
        }
    }

    /// What the model decides for a new claim, and what it would take effect as.
    fn decide_claim(&self, request: &Request<'_>) -> Outcome {
        let Request {
            client,
            lock,
            claim,
            index,
            ..
        } = *request;
        let holders = self.model_holders(lock);
        if let Some(own) = holders.iter().find(|h| h.owner == client) {
            return Outcome::Granted { token: own.token };
        }
        let in_use = !holders.is_empty() || self.queues.len(lock) > 0;
        if let Some(permits) = claim.permits
            && in_use
            && self.permits.get(lock) != Some(&permits)
        {
            return Outcome::PermitsMismatch {
                permits: self.permits.get(lock).copied(),
            };
        }
        if self.queues.len(lock) > 0 || !self.fits(lock, claim.mode) {
            let owner = holders.first().map(|holder| holder.owner).expect(
                "mutual exclusion: hand-over ran first, so a claim that waits waits for holders",
            );
            return if request.kind == RequestKind::Acquire && request.wait_ms > 0 {
                Outcome::Queued
            } else {
                Outcome::HeldBy { owner }
            };
        }
        Outcome::Granted { token: index }
    }

    /// A new preempt or acquire off the plain exclusive path: the outcome must be the model's
    /// decision, which the model then takes.
    fn check_claim(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let expected = self.decide_claim(request);
        if outcome != expected {
            return Err(self.claim_violation(now, request, outcome, expected));
        }
        let Request {
            client,
            lock,
            claim,
            index,
            ..
        } = *request;
        match expected {
            Outcome::Granted { token } if token == index => {
                if !self.shared.contains_key(lock)
                    && !self.holders.contains_key(lock)
                    && self.queues.len(lock) == 0
                    && let Some(permits) = claim.permits
                {
                    self.permits.insert(lock.clone(), permits);
                }
                self.record_grant_in(lock, client, index, claim.mode);
            }
            // Queued only behind holders: the name is in use, its permits already declared.
            Outcome::Queued => {
                let waiter = ModelWaiter {
                    client,
                    seq: request.seq,
                    enqueued_at: index,
                    mode: claim.mode,
                };
                self.queues.enqueue(lock, waiter);
            }
            _ => {}
        }
        Ok(())
    }

    /// Words a claim's wrong outcome: above all, a grant beyond what the mode or permits
    /// allow.
    fn claim_violation(
        &self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
        expected: Outcome,
    ) -> Violation {
        let Request {
            client,
            lock,
            claim,
            index,
            ..
        } = *request;
        let holders = self.model_holders(lock);
        let listed: Vec<String> = holders
            .iter()
            .map(|h| format!("{} (token {})", h.owner, h.token))
            .collect();
        let held = if self.holders.contains_key(lock) {
            format!("held exclusively by {}", listed.join(", "))
        } else if holders.is_empty() {
            "free".to_string()
        } else {
            format!(
                "held shared by {} of {} allowed: {}",
                holders.len(),
                self.capacity(lock),
                listed.join(", ")
            )
        };
        let mode = match claim.mode {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        };
        let beyond_capacity = matches!(outcome, Outcome::Granted { .. })
            && matches!(expected, Outcome::HeldBy { .. } | Outcome::Queued);
        let message = if beyond_capacity {
            format!(
                "lock `{lock}` granted to {client} in {mode} mode at index {index} while the \
                 reference model has it {held}, queue of {}: more holders than the mode or \
                 permits allow",
                self.queues.len(lock)
            )
        } else {
            format!(
                "{mode} {} of lock `{lock}` by {client} at index {index} answered {}, but the \
                 reference model has it {held} and expects {}",
                request.kind.name(),
                describe_outcome(&outcome),
                describe_outcome(&expected)
            )
        };
        Violation::new(MUTUAL_EXCLUSION, now, message)
    }

    /// A release of a lock held shared: releases the client's holding if it has one.
    fn check_shared_release(
        &mut self,
        now: Time,
        request: &Request<'_>,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        let Request {
            index,
            client,
            lock,
            ..
        } = *request;
        let holds = self.model_holders(lock).iter().any(|h| h.owner == client);
        let expected = if holds {
            Outcome::Released
        } else {
            Outcome::NotOwner
        };
        if outcome != expected {
            let message = format!(
                "release of lock `{lock}` by {client} at index {index} answered {}, but the \
                 reference model has {} shared holders and expects {}",
                describe_outcome(&outcome),
                self.model_holders(lock).len(),
                describe_outcome(&expected)
            );
            return Err(Violation::new(MUTUAL_EXCLUSION, now, message));
        }
        if holds {
            self.remove_shared_holder(lock, client, index);
        }
        Ok(())
    }

    /// Ends `client`'s shared grant of `lock` at `index`. It MUST hold it.
    fn remove_shared_holder(&mut self, lock: &LockName, client: ClientId, index: LogIndex) {
        let holders = self
            .shared
            .get_mut(lock)
            .expect("mutual exclusion: a shared holder's lock is held shared");
        let position = holders
            .iter()
            .position(|h| h.owner == client)
            .expect("mutual exclusion: the client holds the lock");
        let holder = holders.remove(position);
        if holders.is_empty() {
            self.shared.remove(lock);
        }
        let grant = self
            .shared_grants
            .get_mut(lock)
            .and_then(|grants| grants.get_mut(&(holder.token, client)))
            .expect("mutual exclusion: a shared holding without its grant record");
        grant.released_at = Some(index);
    }

    /// An acknowledged shared grant: readers may overlap one another, but not a writer. The
    /// latest exclusive grant acknowledged before it must have a committed release at or
    /// before its token (fencing: its token is above the writer's).
    fn check_acknowledged_shared_grant(
        &mut self,
        now: Time,
        client: ClientId,
        lock: &LockName,
        token: LogIndex,
    ) -> Result<(), Violation> {
        let Some(writer) = self.acknowledged_grants.get(lock).copied() else {
            return Ok(());
        };
        let released_at = self
            .grants
            .get(lock)
            .and_then(|grants| grants.get(&writer.token))
            .and_then(|grant| grant.released_at);
        match released_at {
            Some(released_at) if released_at <= token && writer.token < token => Ok(()),
            _ => {
                let message = format!(
                    "lock `{lock}` acknowledged to {client} in shared mode with token {token} \
                     while {}'s exclusive grant (token {}) had no committed release before it",
                    writer.owner, writer.token
                );
                Err(Violation::new(MUTUAL_EXCLUSION, now, message))
            }
        }
    }
}

/// One committed lock request, as `observe_committed` unpacked it.
#[derive(Copy, Clone, Debug)]
struct Request<'a> {
    index: LogIndex,
    client: ClientId,
    seq: u64,
    lock: &'a LockName,
    kind: RequestKind,
    /// An acquire's wait; 0 for every other kind.
    wait_ms: u64,
    /// A preempt's or acquire's claim; exclusive with no permits for every other kind.
    claim: Claim,
}

/// Noops and session marks touch no lock; they only need the matching kind of result.
/// (Registrations are judged in `observe_committed`, which numbers the clients.)
fn check_bookkeeping(
    now: Time,
    index: LogIndex,
    command: &Command,
    result: &ApplyResult,
) -> Result<(), Violation> {
    match (command, result) {
        (Command::Noop, ApplyResult::Nothing) => Ok(()),
        (
            Command::MarkSilent { .. } | Command::Revive { .. } | Command::HandOver { .. },
            ApplyResult::Nothing,
        ) => Ok(()),
        _ => Err(mismatched_result(now, index, command, result)),
    }
}

fn mismatched_result(
    now: Time,
    index: LogIndex,
    command: &Command,
    result: &ApplyResult,
) -> Violation {
    let message = format!(
        "index {index}: {} produced {}, which is not a result of that command",
        describe_command(command),
        describe_result(result)
    );
    Violation::new(MUTUAL_EXCLUSION, now, message)
}

/// How a rogue's request proved who it is.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Credential {
    /// A hello: it claims no one.
    Hello,
    /// An id and secret that a welcome gave this very rogue.
    Own,
    /// An id with no secret.
    Missing,
    /// An id with a secret that is not the one this rogue was given for it.
    Wrong,
}

/// What the checker keeps of one rogue request: enough to judge its answers.
#[derive(Clone, Debug)]
struct RogueRequest {
    credential: Credential,
    client: ClientId,
    seq: u64,
    /// The operation's name, and its lock when the name is within the limit; a malformed
    /// name is not kept (it may be long), only the fact.
    op: &'static str,
    write: Option<RequestKind>,
    lock: Option<LockName>,
    /// An acquire whose wait is over [`crate::node::ACQUIRE_WAIT_MS_MAX`]: refused before the
    /// log, whoever sends it.
    wait_over_bound: bool,
    /// A preempt's or acquire's claim.
    claim: Option<ClaimKey>,
}

impl RogueRequest {
    fn describe(&self, rogue: u32, connection: u32) -> String {
        let lock = match &self.lock {
            Some(lock) => format!("`{lock}`"),
            None => "a malformed lock name".to_string(),
        };
        let who = match self.credential {
            Credential::Hello => return format!("r{rogue}'s hello (connection {connection})"),
            Credential::Own => format!("as {}, its own identity", self.client),
            Credential::Missing => format!("as {} with no secret", self.client),
            Credential::Wrong => format!("as {} with a wrong secret", self.client),
        };
        format!(
            "r{rogue}'s {} of {lock} seq {} {who} (connection {connection})",
            self.op, self.seq
        )
    }
}

/// Rogue isolation: a rogue client, which sends hostile requests straight to servers, changes
/// no other client's lock, is never answered with an outcome where it must be refused, and
/// learns no cached answer for another operation under a reused seq.
///
/// It tracks the writes sent by whoever holds their credential (honest clients, and rogues
/// under identities their own welcomes gave them): every write that commits with an effect must
/// be one of them, so a forged or altered request that reaches the lock table is caught even
/// if its answer is lost. Answers to rogues are judged against what each request could prove.
///
/// Calling contract: feed every write an honest client sends
/// ([`RogueIsolation::observe_honest_request`]), every welcome a rogue receives, every rogue
/// request when it is sent and every answer when it arrives (each request has its own
/// connection number), and every committed index exactly once, in increasing order.
#[derive(Clone, Debug, Default)]
pub struct RogueIsolation {
    /// Writes sent with a credential their sender holds, with their claim (a preempt's or
    /// acquire's mode and permits are part of what was sent).
    authentic_writes: BTreeSet<(ClientId, u64, RequestKind, LockName, Option<ClaimKey>)>,
    /// The identities each rogue's welcomes gave it.
    rogue_credentials: BTreeMap<u32, Vec<(ClientId, ClientSecret)>>,
    /// Every rogue request, by (rogue, connection).
    rogue_requests: BTreeMap<(u32, u32), RogueRequest>,
    /// The first write committed with an effect per (client, seq), its claim, and its index.
    first_commits: BTreeMap<(ClientId, u64), FirstCommit>,
    /// Rogue watches (`checkers_rogue_watches_modes.rs`).
    rogue_watches: BTreeMap<
        checkers_rogue_watches_modes::RogueWatchKey,
        checkers_rogue_watches_modes::RogueWatchSlot,
    >,
    registered_clients: u64,
    last_index: LogIndex,
}

impl RogueIsolation {
    pub fn new() -> RogueIsolation {
        RogueIsolation::default()
    }

    /// An honest client sent `request` (carrying its own secret, which is not looked at).
    pub fn observe_honest_request(&mut self, request: &ClientRequest) {
        if let RequestBody::Op { client, op, .. } = &request.body
            && let Some(kind) = write_kind(op)
        {
            let key = (*client, request.seq, kind, op.lock().clone(), claim_key(op));
            self.authentic_writes.insert(key);
        }
    }

    /// Rogue `rogue` received a welcome: from now on it holds this identity.
    pub fn observe_rogue_welcome(&mut self, rogue: u32, client: ClientId, secret: ClientSecret) {
        let identities = self.rogue_credentials.entry(rogue).or_default();
        if !identities.iter().any(|(id, _)| *id == client) {
            identities.push((client, secret));
        }
    }

    /// Rogue `rogue` sent `request` on `connection`, which no earlier request used.
    pub fn observe_rogue_request(&mut self, rogue: u32, connection: u32, request: &ClientRequest) {
        let entry = match &request.body {
            RequestBody::Hello { .. } | RequestBody::Keepalive { .. } => RogueRequest {
                credential: Credential::Hello,
                client: ClientId(0),
                seq: request.seq,
                op: "hello",
                write: None,
                lock: None,
                wait_over_bound: false,
                claim: None,
            },
            RequestBody::Op { client, secret, op } => {
                let owned = self
                    .rogue_credentials
                    .get(&rogue)
                    .is_some_and(|identities| {
                        identities
                            .iter()
                            .any(|(id, issued)| id == client && Some(*issued) == *secret)
                    });
                let credential = match (owned, secret) {
                    (true, _) => Credential::Own,
                    (false, None) => Credential::Missing,
                    (false, Some(_)) => Credential::Wrong,
                };
                let name = op.lock();
                let well_formed = !name.is_empty() && name.len() <= LOCK_NAME_BYTES_MAX;
                let write = write_kind(op);
                if let (Credential::Own, true, Some(kind)) = (credential, well_formed, write) {
                    let key = (*client, request.seq, kind, name.clone(), claim_key(op));
                    self.authentic_writes.insert(key);
                }
                RogueRequest {
                    credential,
                    client: *client,
                    seq: request.seq,
                    op: op.kind_name(),
                    write,
                    lock: well_formed.then(|| name.clone()),
                    wait_over_bound: wait_over_bound(op),
                    claim: claim_key(op),
                }
            }
        };
        let previous = self.rogue_requests.insert((rogue, connection), entry);
        assert!(
            previous.is_none(),
            "rogue isolation: r{rogue} reused connection {connection} (a simulator bug)"
        );
    }

    /// Rogue `rogue` received `reply` on `connection`.
    pub fn observe_rogue_reply(
        &self,
        now: Time,
        rogue: u32,
        connection: u32,
        reply: &ClientReply,
    ) -> Result<(), Violation> {
        let sent = self
            .rogue_requests
            .get(&(rogue, connection))
            .unwrap_or_else(|| {
                panic!(
                    "rogue isolation: r{rogue} answered on connection {connection}, never opened"
                )
            });
        let outcome = match (&reply.body, sent.credential) {
            (ReplyBody::Error(_), _) => return Ok(()),
            (ReplyBody::Welcome { .. }, Credential::Hello) => return Ok(()),
            (ReplyBody::Welcome { client, .. }, _) => {
                let message = format!(
                    "{} was answered with a welcome (as {client})",
                    sent.describe(rogue, connection)
                );
                return Err(Violation::new(ROGUE_ISOLATION, now, message));
            }
            (ReplyBody::Outcome(outcome), _) => *outcome,
            // Rogues send no keepalives; a keepalive answer names no lock.
            (ReplyBody::KeptAlive { .. }, _) => return Ok(()),
        };
        let request = sent.describe(rogue, connection);
        let answered = describe_outcome(&outcome);
        let problem = match sent.credential {
            Credential::Hello => Some("a hello is answered with a welcome or an error".to_string()),
            Credential::Missing | Credential::Wrong if !self.is_issued(sent.client) => {
                Some(format!(
                    "no hello issued {} then, so it must be refused (unknown_client)",
                    sent.client
                ))
            }
            Credential::Missing | Credential::Wrong => Some(format!(
                "it cannot prove it is {}, so it must be refused (unauthorized)",
                sent.client
            )),
            Credential::Own if sent.lock.is_none() => {
                Some("its lock name breaks the limit, so it must be refused (bad_request)".into())
            }
            Credential::Own if sent.wait_over_bound => Some(
                "its wait is over the one-hour bound, so it must be refused (bad_request)".into(),
            ),
            Credential::Own if sent.claim.is_some_and(|claim| !claim.permits_are_valid()) => {
                Some(format!(
                    "its permits are outside 1 to {}, so it must be refused (bad_request)",
                    crate::node::PERMITS_MAX
                ))
            }
            Credential::Own => self.own_outcome_problem(sent, &outcome, reply.index),
        };
        match problem {
            None => Ok(()),
            Some(problem) => {
                let message = format!("{request} was answered {answered}: {problem}");
                Err(Violation::new(ROGUE_ISOLATION, now, message))
            }
        }
    }

    /// What is wrong with `outcome`, answered at log index `answered_at`, as the answer to a
    /// rogue's request under its own identity: an answer of another operation's kind, or the
    /// cached answer of another write that used the same seq first.
    fn own_outcome_problem(
        &self,
        sent: &RogueRequest,
        outcome: &Outcome,
        answered_at: LogIndex,
    ) -> Option<String> {
        let fits = matches!(
            (sent.op, outcome),
            (
                "preempt",
                Outcome::Granted { .. } | Outcome::HeldBy { .. } | Outcome::PermitsMismatch { .. }
            ) | ("release", Outcome::Released | Outcome::NotOwner)
                | (
                    "check",
                    Outcome::Free | Outcome::Owner { .. } | Outcome::Shared { .. }
                )
                | (
                    "acquire",
                    Outcome::Granted { .. }
                        | Outcome::HeldBy { .. }
                        | Outcome::TimedOut
                        | Outcome::Cancelled
                        | Outcome::PermitsMismatch { .. }
                )
                | ("cancel", Outcome::Cancelled | Outcome::NotWaiting)
        );
        if !fits {
            return Some(format!("that is no answer to a {}", sent.op));
        }
        let (kind, lock) = (sent.write?, sent.lock.as_ref()?);
        match self.first_commits.get(&(sent.client, sent.seq)) {
            // A refusal by read reflecting a state before the other write was committed: the
            // replayed answer of this very request, refused then, before the seq was reused
            // (a leader that slept through the reuse answers a retry from its cache, with the
            // original answer and index, as the protocol says a replay must).
            Some((_, _, _, index))
                if matches!(outcome, Outcome::HeldBy { .. }) && answered_at < *index =>
            {
                None
            }
            Some((first_kind, first_lock, first_claim, index))
                if (first_kind, first_lock, first_claim) != (&kind, lock, &sent.claim) =>
            {
                let claim = first_claim.map_or(String::new(), |claim| claim.describe());
                Some(format!(
                    "seq {} was first committed at index {index} as a {} of `{first_lock}`{claim}, \
                     so this other write must be refused (seq_reused), not given its answer",
                    sent.seq,
                    first_kind.name()
                ))
            }
            Some(_) => None,
            // A preempt refused by a leader's read has no entry; anything else does.
            None if matches!(outcome, Outcome::HeldBy { .. }) => None,
            None => Some("no entry for its seq was committed, yet it has an outcome".into()),
        }
    }

    fn is_issued(&self, client: ClientId) -> bool {
        client.0 >= 1 && client.0 <= self.registered_clients
    }

    /// The entry committed at `index`. A write that took effect must have been sent by
    /// someone holding its client's credential.
    pub fn observe_committed(
        &mut self,
        now: Time,
        index: LogIndex,
        command: &Command,
        result: &ApplyResult,
    ) -> Result<(), Violation> {
        assert!(
            index > self.last_index,
            "rogue isolation: committed index {index} fed after index {}",
            self.last_index
        );
        self.last_index = index;
        let (client, seq, lock, kind) = match command {
            Command::Register { .. } => {
                self.registered_clients += 1;
                return Ok(());
            }
            Command::Noop
            | Command::Expire { .. }
            | Command::MarkSilent { .. }
            | Command::Revive { .. }
            | Command::Timeout { .. }
            | Command::HandOver { .. } => return Ok(()),
            Command::Preempt {
                client, seq, lock, ..
            } => (*client, *seq, lock, RequestKind::Preempt),
            Command::Release { client, seq, lock } => (*client, *seq, lock, RequestKind::Release),
            Command::Acquire {
                client, seq, lock, ..
            } => (*client, *seq, lock, RequestKind::Acquire),
            Command::Cancel { client, seq, lock } => (*client, *seq, lock, RequestKind::Cancel),
        };
        if let Command::Acquire { wait_ms, .. } = command
            && *wait_ms > crate::node::ACQUIRE_WAIT_MS_MAX
        {
            // Whoever sent it, servers refuse such a wait before the log.
            let message = format!(
                "index {index} committed {} with a wait of {wait_ms} ms, over the bound of {} \
                 ms that servers check before the log",
                describe_command(command),
                crate::node::ACQUIRE_WAIT_MS_MAX
            );
            return Err(Violation::new(ROGUE_ISOLATION, now, message));
        }
        let claim = command_claim_key(command);
        if claim.is_some_and(|claim| !claim.permits_are_valid()) {
            // Whoever sent it, servers refuse such permits before the log.
            let message = format!(
                "index {index} committed {}, with permits outside 1 to {} that servers check \
                 before the log",
                describe_command(command),
                crate::node::PERMITS_MAX
            );
            return Err(Violation::new(ROGUE_ISOLATION, now, message));
        }
        let ApplyResult::Outcome { outcome, duplicate } = result else {
            // Rejected or stale: no effect on any lock.
            return Ok(());
        };
        if !duplicate {
            self.first_commits
                .entry((client, seq))
                .or_insert_with(|| (kind, lock.clone(), claim, index));
        }
        if self
            .authentic_writes
            .contains(&(client, seq, kind, lock.clone(), claim))
        {
            return Ok(());
        }
        let sent_claims: Vec<String> = (self.authentic_writes)
            .range((client, seq, kind, lock.clone(), None)..)
            .take_while(|(c, s, k, l, _)| (*c, *s, *k, l) == (client, seq, kind, lock))
            .map(|(_, _, _, _, claim)| claim.map_or("no claim".into(), |claim| claim.describe()))
            .collect();
        if !sent_claims.is_empty() {
            let message = format!(
                "index {index} committed {} as {}, but {client} sent that seq with{}: someone \
                 else changed its mode or permits",
                describe_command(command),
                describe_outcome(outcome),
                sent_claims.join(" or")
            );
            return Err(Violation::new(ROGUE_ISOLATION, now, message));
        }
        let message = format!(
            "index {index} committed {} as {}, but nobody holding {client}'s secret sent that \
             request: someone else acted as {client}",
            describe_command(command),
            describe_outcome(outcome)
        );
        Err(Violation::new(ROGUE_ISOLATION, now, message))
    }
}

/// The first write committed with an effect under a (client, seq): its kind, lock, claim
/// and index.
type FirstCommit = (RequestKind, LockName, Option<ClaimKey>, LogIndex);

/// A preempt's or acquire's claim as the checker compares it (`Claim` has no order).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct ClaimKey {
    shared: bool,
    permits: Option<u32>,
}

impl ClaimKey {
    fn of(claim: &Claim) -> ClaimKey {
        ClaimKey {
            shared: claim.mode == crate::node::Mode::Shared,
            permits: claim.permits,
        }
    }

    fn permits_are_valid(self) -> bool {
        self.permits
            .is_none_or(|permits| (1..=crate::node::PERMITS_MAX).contains(&permits))
    }

    /// " (shared, 3 permits)".
    fn describe(self) -> String {
        let mode = if self.shared { "shared" } else { "exclusive" };
        match self.permits {
            Some(permits) => format!(" ({mode}, {permits} permits)"),
            None => format!(" ({mode})"),
        }
    }
}

fn claim_key(op: &Operation) -> Option<ClaimKey> {
    match op {
        Operation::Preempt { claim, .. } | Operation::Acquire { claim, .. } => {
            Some(ClaimKey::of(claim))
        }
        _ => None,
    }
}

fn command_claim_key(command: &Command) -> Option<ClaimKey> {
    match command {
        Command::Preempt { claim, .. } | Command::Acquire { claim, .. } => {
            Some(ClaimKey::of(claim))
        }
        _ => None,
    }
}

fn wait_over_bound(op: &Operation) -> bool {
    matches!(op, Operation::Acquire { wait_ms, .. } if *wait_ms > crate::node::ACQUIRE_WAIT_MS_MAX)
}

fn write_kind(op: &Operation) -> Option<RequestKind> {
    match op {
        Operation::Preempt { .. } => Some(RequestKind::Preempt),
        Operation::Release { .. } => Some(RequestKind::Release),
        Operation::Acquire { .. } => Some(RequestKind::Acquire),
        Operation::Cancel { .. } => Some(RequestKind::Cancel),
        Operation::Check { .. } => None,
    }
}

/// Convergence: every given live replica holds the same lock map. Call it only on replicas that
/// should have caught up; the message shows their applied indexes in case they have not.
pub fn check_convergence(now: Time, replicas: &[(ServerId, &LockTable)]) -> Result<(), Violation> {
    let Some(((_, reference), others)) = replicas.split_first() else {
        return Ok(());
    };
    if others
        .iter()
        .all(|(_, table)| table.locks() == reference.locks())
    {
        return Ok(());
    }
    let names: BTreeSet<&LockName> = replicas
        .iter()
        .flat_map(|(_, table)| table.locks().keys())
        .collect();
    let differing: Vec<&LockName> = names
        .into_iter()
        .filter(|name| {
            let expected = reference.locks().get(*name);
            others
                .iter()
                .any(|(_, table)| table.locks().get(*name) != expected)
        })
        .collect();
    assert!(
        !differing.is_empty(),
        "convergence: unequal maps with no differing lock"
    );
    let listed: Vec<String> = differing
        .iter()
        .take(CONVERGENCE_DIFFERENCES_MAX)
        .map(|name| describe_lock_across(name, replicas))
        .collect();
    let mut message = format!(
        "replicas hold different lock maps ({} locks differ): {}",
        differing.len(),
        listed.join("; ")
    );
    if differing.len() > CONVERGENCE_DIFFERENCES_MAX {
        let unlisted = differing.len() - CONVERGENCE_DIFFERENCES_MAX;
        message.push_str(&format!("; and {unlisted} more"));
    }
    let applied: Vec<String> = replicas
        .iter()
        .map(|(server, table)| format!("{server} at {}", table.applied_index()))
        .collect();
    message.push_str(&format!(" (applied indexes: {})", applied.join(", ")));
    Err(Violation::new(CONVERGENCE, now, message))
}

/// "lock `w3`: s1 has client#2 (token 40), s4 has free".
fn describe_lock_across(name: &LockName, replicas: &[(ServerId, &LockTable)]) -> String {
    let holders: Vec<String> = replicas
        .iter()
        .map(|(server, table)| {
            let holder = table.locks().get(name);
            let held = holder.map_or("free".to_string(), |held| {
                format!("{} (token {})", held.owner, held.token)
            });
            format!("{server} has {held}")
        })
        .collect();
    format!("lock `{name}`: {}", holders.join(", "))
}

/// "held by client#1 since index 4" or "free", for the reference model's view of a lock.
fn describe_model_holder(holder: Option<&Holder>) -> String {
    match holder {
        Some(held) => format!("held by {} since index {}", held.owner, held.token),
        None => "free".to_string(),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Granted { token } => format!("granted (token {token})"),
        Outcome::HeldBy { owner } => format!("held by {owner}"),
        Outcome::Released => "released".to_string(),
        Outcome::NotOwner => "not owner".to_string(),
        Outcome::Free => "free".to_string(),
        Outcome::Owner { owner, token } => format!("owned by {owner} (token {token})"),
        Outcome::Queued => "queued".to_string(),
        Outcome::TimedOut => "timed out".to_string(),
        Outcome::Cancelled => "cancelled".to_string(),
        Outcome::NotWaiting => "not waiting".to_string(),
        Outcome::PermitsMismatch {
            permits: Some(permits),
        } => {
            format!("permits mismatch (in use with {permits} permits)")
        }
        Outcome::PermitsMismatch { permits: None } => {
            "permits mismatch (in use as a plain lock)".to_string()
        }
        Outcome::Shared { holders, .. } => format!("held shared by {holders}"),
    }
}

fn describe_result(result: &ApplyResult) -> String {
    match result {
        ApplyResult::Nothing => "nothing".to_string(),
        ApplyResult::Registered { client } => format!("registered {client}"),
        ApplyResult::Outcome {
            outcome,
            duplicate: false,
        } => describe_outcome(outcome),
        ApplyResult::Outcome {
            outcome,
            duplicate: true,
        } => {
            format!("{} (duplicate)", describe_outcome(outcome))
        }
        ApplyResult::Stale => "stale (no effect)".to_string(),
        ApplyResult::Rejected { rejection } => {
            format!("rejected ({}, no effect)", rejection.name())
        }
        ApplyResult::Expired { client, released } => {
            format!("expired {client}, releasing {released} lock(s)")
        }
    }
}

/// A claim as a message suffix: nothing for a plain exclusive one, so old messages read as
/// before.
fn describe_claim(claim: &Claim) -> String {
    match (claim.mode, claim.permits) {
        (Mode::Exclusive, None) => String::new(),
        (Mode::Shared, None) => " shared".to_string(),
        (mode, Some(permits)) => format!(" {} of {permits} permits", mode.name()),
    }
}

fn describe_command(command: &Command) -> String {
    match command {
        Command::Noop => "noop".to_string(),
        Command::Register { nonce, .. } => format!("register (nonce {nonce})"),
        Command::Preempt {
            client,
            seq,
            lock,
            claim,
        } => format!(
            "preempt `{lock}` by {client} seq {seq}{}",
            describe_claim(claim)
        ),
        Command::Release { client, seq, lock } => format!("release `{lock}` by {client} seq {seq}"),
        Command::Expire { client } => format!("expire {client}"),
        Command::MarkSilent { sessions } => format!("mark {} session(s) silent", sessions.len()),
        Command::Revive { client } => format!("revive {client}"),
        Command::Acquire {
            client,
            seq,
            lock,
            wait_ms,
            claim,
        } => format!(
            "acquire `{lock}` by {client} seq {seq} (wait {wait_ms} ms){}",
            describe_claim(claim)
        ),
        Command::Cancel { client, seq, lock } => format!("cancel `{lock}` by {client} seq {seq}"),
        Command::Timeout { client, seq, lock } => {
            format!("timeout of {client} seq {seq} on `{lock}`")
        }
        Command::HandOver { lock } => format!("hand `{lock}` to its queue's head"),
    }
}

fn describe_entry(entry: &Entry) -> String {
    format!(
        "{} in term {}",
        describe_command(&entry.command),
        entry.term
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: ServerId = ServerId(1);
    const S2: ServerId = ServerId(2);
    const S3: ServerId = ServerId(3);
    pub(super) const C1: ClientId = ClientId(1);
    const C2: ClientId = ClientId(2);

    fn at(millis: u64) -> Time {
        Time::from_nanos(millis * 1_000_000)
    }

    pub(super) fn lock(name: &str) -> LockName {
        LockName::from(name)
    }

    fn preempt(client: ClientId, seq: u64, name: &str) -> Command {
        Command::Preempt {
            client,
            seq,
            lock: lock(name),
            claim: Claim::EXCLUSIVE,
        }
    }

    fn release(client: ClientId, seq: u64, name: &str) -> Command {
        Command::Release {
            client,
            seq,
            lock: lock(name),
        }
    }

    pub(super) fn fresh(outcome: Outcome) -> ApplyResult {
        ApplyResult::Outcome {
            outcome,
            duplicate: false,
        }
    }

    fn duplicate(outcome: Outcome) -> ApplyResult {
        ApplyResult::Outcome {
            outcome,
            duplicate: true,
        }
    }

    pub(super) fn granted(token: LogIndex) -> Outcome {
        Outcome::Granted { token }
    }

    fn held_by(owner: ClientId) -> Outcome {
        Outcome::HeldBy { owner }
    }

    fn preempt_op(name: &str) -> Operation {
        Operation::Preempt {
            lock: lock(name),
            claim: Claim::EXCLUSIVE,
        }
    }

    fn release_op(name: &str) -> Operation {
        Operation::Release { lock: lock(name) }
    }

    /// A mutual exclusion checker that has seen client#1 and client#2 register at indexes 1, 2.
    fn two_registered_clients() -> MutualExclusion {
        let mut checker = MutualExclusion::new();
        commit(
            &mut checker,
            1,
            Command::Register {
                nonce: 1,
                secret: None,
                ttl_ms: None,
            },
            ApplyResult::Registered { client: C1 },
        );
        commit(
            &mut checker,
            2,
            Command::Register {
                nonce: 2,
                secret: None,
                ttl_ms: None,
            },
            ApplyResult::Registered { client: C2 },
        );
        checker
    }

    /// Commits `command` at `index` (at `index` milliseconds) and expects the checker to accept
    /// `result`.
    fn commit(
        checker: &mut MutualExclusion,
        index: LogIndex,
        command: Command,
        result: ApplyResult,
    ) {
        let verdict = checker.observe_committed(at(index), index, &command, &result);
        assert_eq!(verdict, Ok(()), "commit at index {index}");
    }

    /// What the checker says about committing `command` at `index` with `result`.
    fn try_commit(
        checker: &mut MutualExclusion,
        index: LogIndex,
        command: Command,
        result: ApplyResult,
    ) -> Result<(), Violation> {
        checker.observe_committed(at(index), index, &command, &result)
    }

    /// What the checker says about `client` learning `outcome` for request `seq` at `millis`.
    fn ack(
        checker: &mut MutualExclusion,
        millis: u64,
        (client, seq): (ClientId, u64),
        op: Operation,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        checker.observe_ack(at(millis), client, seq, &op, &outcome)
    }

    fn expect_violation<T: fmt::Debug>(
        verdict: Result<T, Violation>,
        invariant: &str,
        fragments: &[&str],
    ) -> Violation {
        let violation = verdict.expect_err("expected a violation");
        assert_eq!(violation.invariant, invariant, "{violation}");
        for fragment in fragments {
            assert!(
                violation.message.contains(fragment),
                "{fragment:?} not in: {violation}"
            );
        }
        violation
    }

    // The blocking acquire: the model keeps the queues and judges the cluster's decisions.

    fn acquire(client: ClientId, seq: u64, wait_ms: u64) -> Command {
        Command::Acquire {
            client,
            seq,
            lock: lock("a"),
            wait_ms,
            claim: Claim::EXCLUSIVE,
        }
    }

    // ----- shared locks and semaphores -----

    fn claim(client: ClientId, seq: u64, claim: Claim) -> Command {
        Command::Preempt {
            client,
            seq,
            lock: lock("a"),
            claim,
        }
    }

    /// A checker that has seen clients 1 to 3 register at indexes 1 to 3.
    fn three_registered_clients() -> MutualExclusion {
        let mut checker = two_registered_clients();
        let register = Command::Register {
            nonce: 3,
            secret: None,
            ttl_ms: None,
        };
        let registered = ApplyResult::Registered {
            client: ClientId(3),
        };
        commit(&mut checker, 3, register, registered);
        checker
    }

    fn assert_too_many_holders(verdict: Result<(), Violation>) {
        let violation = verdict.expect_err("a grant beyond the mode or permits");
        assert_eq!(violation.invariant, MUTUAL_EXCLUSION);
        assert!(
            violation
                .message
                .contains("more holders than the mode or permits allow"),
            "{violation:?}"
        );
    }

    #[test]
    fn readers_together_pass_and_a_third_reader_of_a_semaphore_of_two_is_caught() {
        let mut checker = three_registered_clients();
        let permit = Claim::semaphore(2);
        commit(&mut checker, 4, claim(C1, 1, permit), fresh(granted(4)));
        commit(&mut checker, 5, claim(C2, 1, permit), fresh(granted(5)));
        assert_too_many_holders(try_commit(
            &mut checker,
            6,
            claim(ClientId(3), 1, permit),
            fresh(granted(6)),
        ));
    }

    #[test]
    fn a_second_writer_beside_a_writer_that_chose_a_mode_is_caught() {
        let mut checker = two_registered_clients();
        let writer = Claim {
            mode: Mode::Exclusive,
            permits: Some(4),
        };
        commit(&mut checker, 3, claim(C1, 1, writer), fresh(granted(3)));
        assert_too_many_holders(try_commit(
            &mut checker,
            4,
            claim(C2, 1, writer),
            fresh(granted(4)),
        ));
    }

    #[test]
    fn a_writer_granted_beside_a_reader_is_caught_and_the_refusal_passes() {
        let mut checker = two_registered_clients();
        commit(
            &mut checker,
            3,
            claim(C1, 1, Claim::SHARED),
            fresh(granted(3)),
        );
        let mut refused = checker.clone();
        commit(
            &mut refused,
            4,
            claim(C2, 1, Claim::EXCLUSIVE),
            fresh(held_by(C1)),
        );
        assert_too_many_holders(try_commit(
            &mut checker,
            4,
            claim(C2, 1, Claim::EXCLUSIVE),
            fresh(granted(4)),
        ));
    }

    #[test]
    fn a_reader_granted_past_a_waiting_writer_is_caught() {
        let mut checker = three_registered_clients();
        commit(
            &mut checker,
            4,
            claim(C1, 1, Claim::SHARED),
            fresh(granted(4)),
        );
        let writer_waits = Command::Acquire {
            client: C2,
            seq: 1,
            lock: lock("a"),
            wait_ms: 1_000,
            claim: Claim::EXCLUSIVE,
        };
        commit(&mut checker, 5, writer_waits, fresh(Outcome::Queued));
        assert_too_many_holders(try_commit(
            &mut checker,
            6,
            claim(ClientId(3), 1, Claim::SHARED),
            fresh(granted(6)),
        ));
    }

    /// A holder that claims again in another mode keeps the mode it has: lease_safety asks the
    /// model which mode a grant holds (explorer seeds 1638 and 1906 found the checker taking
    /// the asked mode instead).
    #[test]
    fn a_grant_answered_again_to_an_exclusive_claim_keeps_its_shared_mode() {
        let mut checker = two_registered_clients();
        commit(
            &mut checker,
            3,
            claim(C1, 1, Claim::semaphore(2)),
            fresh(granted(3)),
        );
        commit(
            &mut checker,
            4,
            claim(C1, 2, Claim::EXCLUSIVE),
            fresh(granted(3)),
        );
        assert_eq!(checker.granted_claim("a", C1, 3), Claim::semaphore(2));
        commit(
            &mut checker,
            5,
            claim(C2, 1, Claim::EXCLUSIVE),
            fresh(held_by(C1)),
        );
        commit(
            &mut checker,
            6,
            release(C1, 3, "a"),
            fresh(Outcome::Released),
        );
        commit(
            &mut checker,
            7,
            claim(C2, 2, Claim::EXCLUSIVE),
            fresh(granted(7)),
        );
        assert_eq!(checker.granted_claim("a", C2, 7), Claim::EXCLUSIVE);
    }

    #[test]
    fn permits_that_disagree_must_be_refused() {
        let mut checker = two_registered_clients();
        commit(
            &mut checker,
            3,
            claim(C1, 1, Claim::semaphore(3)),
            fresh(granted(3)),
        );
        let violation = try_commit(
            &mut checker,
            4,
            claim(C2, 1, Claim::semaphore(5)),
            fresh(granted(4)),
        )
        .expect_err("5 permits named while 3 are declared");
        assert!(
            violation.message.contains("permits mismatch"),
            "{violation:?}"
        );
    }

    /// c1 holds a; c2 then c3 queue for it. A cluster whose release hands a to c3 (LIFO) is
    /// caught by `fifo_fairness`; a cluster that acknowledges a grant to a waiter after its
    /// committed timeout is caught by `mutual_exclusion`; the right report passes.
    #[test]
    fn a_hand_over_to_the_tail_breaks_fifo_fairness() {
        let mut checker = two_registered_clients();
        let c3 = ClientId(3);
        let register = Command::Register {
            nonce: 3,
            secret: None,
            ttl_ms: None,
        };
        commit(
            &mut checker,
            3,
            register,
            ApplyResult::Registered { client: c3 },
        );
        commit(&mut checker, 4, preempt(C1, 1, "a"), fresh(granted(4)));
        commit(
            &mut checker,
            5,
            acquire(C2, 1, 5_000),
            fresh(Outcome::Queued),
        );
        commit(
            &mut checker,
            6,
            acquire(c3, 1, 5_000),
            fresh(Outcome::Queued),
        );
        commit(
            &mut checker,
            7,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        let to_the_tail = Woken {
            client: c3,
            seq: 1,
            lock: lock("a"),
            decision: Decision::Granted { token: 7 },
        };
        let verdict = checker.observe_woken(at(7), 7, &to_the_tail);
        expect_violation(verdict, crate::sim::fairness::FIFO_FAIRNESS, &["client#3"]);
        let to_the_head = Woken {
            client: C2,
            ..to_the_tail
        };
        assert_eq!(checker.observe_woken(at(7), 7, &to_the_head), Ok(()));
        let acquire_op = Operation::Acquire {
            lock: lock("a"),
            wait_ms: 5_000,
            claim: Claim::EXCLUSIVE,
        };
        assert_eq!(
            ack(&mut checker, 8, (C2, 1), acquire_op.clone(), granted(7)),
            Ok(())
        );
        // c3 times out at 8 (committed); a later grant acknowledged to it is a lie.
        let timeout = Command::Timeout {
            client: c3,
            seq: 1,
            lock: lock("a"),
        };
        commit(&mut checker, 8, timeout, fresh(Outcome::TimedOut));
        let verdict = ack(&mut checker, 9, (c3, 1), acquire_op, granted(9));
        expect_violation(verdict, MUTUAL_EXCLUSION, &["timed out"]);
        assert!(checker.waiters().is_empty());
    }

    /// A waiter whose session the committed log expired is never granted: a report that it
    /// was breaks `no_grant_after_expiry`.
    #[test]
    fn a_grant_to_a_waiter_whose_session_expired_breaks_no_grant_after_expiry() {
        let mut checker = MutualExclusion::new();
        for (index, client, ttl_ms) in [(1, C1, None), (2, C2, Some(3_000))] {
            let register = Command::Register {
                nonce: index,
                secret: None,
                ttl_ms,
            };
            commit(
                &mut checker,
                index,
                register,
                ApplyResult::Registered { client },
            );
        }
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(
            &mut checker,
            4,
            acquire(C2, 1, 60_000),
            fresh(Outcome::Queued),
        );
        let expired = ApplyResult::Expired {
            client: C2,
            released: 0,
        };
        commit(&mut checker, 5, Command::Expire { client: C2 }, expired);
        commit(
            &mut checker,
            6,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        let granted_anyway = Woken {
            client: C2,
            seq: 1,
            lock: lock("a"),
            decision: Decision::Granted { token: 6 },
        };
        let verdict = checker.observe_woken(at(6), 6, &granted_anyway);
        expect_violation(
            verdict,
            crate::sim::fairness::NO_GRANT_AFTER_EXPIRY,
            &["client#2", "ended at index 5"],
        );
    }

    // Mutual exclusion, rejections: the model decides on its own which writes apply must
    // refuse (apply is total, docs/design.md), and fails a run whose table decides otherwise.

    fn rejected(rejection: Rejection) -> ApplyResult {
        ApplyResult::Rejected { rejection }
    }

    #[test]
    fn a_write_by_a_client_never_registered_that_applies_breaks_mutual_exclusion() {
        let mut checker = two_registered_clients();
        expect_violation(
            try_commit(
                &mut checker,
                3,
                preempt(ClientId(999), 1, "a"),
                fresh(granted(3)),
            ),
            MUTUAL_EXCLUSION,
            &["index 3", "must be rejected (unknown_client)", "granted"],
        );
        let mut checker = two_registered_clients();
        commit(
            &mut checker,
            3,
            preempt(ClientId(999), 1, "a"),
            rejected(Rejection::UnknownClient),
        );
    }

    #[test]
    fn a_good_write_rejected_at_apply_breaks_mutual_exclusion() {
        let mut checker = two_registered_clients();
        expect_violation(
            try_commit(
                &mut checker,
                3,
                preempt(C1, 1, "a"),
                rejected(Rejection::UnknownClient),
            ),
            MUTUAL_EXCLUSION,
            &["was rejected (unknown_client)", "nothing about it is wrong"],
        );
    }

    #[test]
    fn a_reused_seq_answered_from_the_cache_breaks_mutual_exclusion() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 10, "a"), fresh(granted(3)));
        // The same seq, for a release: the table must refuse it, not replay `granted`.
        expect_violation(
            try_commit(&mut checker, 4, release(C1, 10, "a"), duplicate(granted(3))),
            MUTUAL_EXCLUSION,
            &["must be rejected (seq_reused)"],
        );
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 10, "a"), fresh(granted(3)));
        commit(
            &mut checker,
            4,
            release(C1, 10, "a"),
            rejected(Rejection::SeqReused),
        );
        // A later request makes seq 10 merely stale, whatever it names.
        commit(
            &mut checker,
            5,
            release(C1, 11, "a"),
            fresh(Outcome::Released),
        );
        commit(&mut checker, 6, preempt(C1, 10, "b"), ApplyResult::Stale);
    }

    /// A claim is part of the request: seq 10 sent again as a shared claim of the same lock
    /// is another request, which apply must refuse, not answer from the cache (and refusing
    /// it is right, not a false rejection).
    #[test]
    fn a_seq_reused_with_another_claim_must_be_rejected_and_may_be() {
        let shared = |seq| Command::Preempt {
            client: C1,
            seq,
            lock: lock("a"),
            claim: Claim::SHARED,
        };
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 10, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(&mut checker, 4, shared(10), duplicate(granted(3))),
            MUTUAL_EXCLUSION,
            &["must be rejected (seq_reused)"],
        );
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 10, "a"), fresh(granted(3)));
        commit(&mut checker, 4, shared(10), rejected(Rejection::SeqReused));
        commit(&mut checker, 5, preempt(C1, 10, "a"), duplicate(granted(3)));
    }

    #[test]
    fn an_overlong_lock_name_that_applies_breaks_mutual_exclusion() {
        let mut checker = two_registered_clients();
        let long = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
        expect_violation(
            try_commit(&mut checker, 3, preempt(C1, 1, &long), fresh(granted(3))),
            MUTUAL_EXCLUSION,
            &["must be rejected (bad_lock_name)"],
        );
    }

    /// The limit is inclusive: a name of exactly `LOCK_NAME_BYTES_MAX` bytes is a lock like
    /// any other, and granting it is no violation.
    #[test]
    fn a_lock_name_of_exactly_the_limit_that_applies_is_fine() {
        let mut checker = two_registered_clients();
        let longest = "x".repeat(LOCK_NAME_BYTES_MAX);
        commit(&mut checker, 3, preempt(C1, 1, &longest), fresh(granted(3)));
    }

    // Election safety (Raft §5.2): at most one leader per term.

    /// What a failing run prints: the invariant, when, and what happened.
    #[test]
    fn a_violation_displays_its_invariant_time_and_message() {
        let violation = Violation::new(CONVERGENCE, at(1_500), "s2 lags".to_string());
        assert_eq!(
            violation.to_string(),
            "convergence violated at 1500.000ms: s2 lags"
        );
    }

    #[test]
    fn two_leaders_in_one_term_break_election_safety() {
        let mut checker = ElectionSafety::new();
        assert_eq!(checker.observe(at(10), S1, Role::Leader, 3), Ok(()));
        assert_eq!(checker.observe(at(11), S2, Role::Follower, 3), Ok(()));
        let violation = expect_violation(
            checker.observe(at(12), S2, Role::Leader, 3),
            ELECTION_SAFETY,
            &["s1 and s2 were both leader in term 3", "s1 since 10.000ms"],
        );
        assert_eq!(violation.at, at(12));
    }

    #[test]
    fn one_leader_seen_repeatedly_and_new_leaders_in_later_terms_are_fine() {
        let mut checker = ElectionSafety::new();
        assert_eq!(checker.observe(at(10), S1, Role::Leader, 1), Ok(()));
        assert_eq!(checker.observe(at(20), S1, Role::Leader, 1), Ok(()));
        assert_eq!(checker.observe(at(30), S2, Role::Candidate, 2), Ok(()));
        assert_eq!(checker.observe(at(40), S2, Role::Leader, 2), Ok(()));
        // An old leader that has not heard of term 2 yet still leads term 1: legitimate.
        assert_eq!(checker.observe(at(41), S1, Role::Leader, 1), Ok(()));
        assert_eq!(checker.observe(at(50), S3, Role::Leader, 3), Ok(()));
        assert_eq!(checker.terms_with_leader(), 3);
    }

    // One vote per term, across restarts (Raft figure 2: votedFor is persistent).

    #[test]
    fn a_server_that_votes_again_in_a_term_after_a_restart_is_caught() {
        let mut checker = ElectionSafety::new();
        assert_eq!(checker.observe_vote(at(10), S3, 4, Some(S1)), Ok(()));
        assert_eq!(
            checker.observe_vote(at(11), S3, 4, Some(S1)),
            Ok(()),
            "the same vote again"
        );
        // Restarted without its vote: no vote, then a vote for someone else, same term.
        assert_eq!(checker.observe_vote(at(20), S3, 4, None), Ok(()));
        expect_violation(
            checker.observe_vote(at(21), S3, 4, Some(S2)),
            ONE_VOTE_PER_TERM,
            &["s3 voted for s1 in term 4", "for s2 in the same term"],
        );
        assert_eq!(
            checker.observe_vote(at(30), S3, 5, Some(S2)),
            Ok(()),
            "a new term, a new vote"
        );
    }

    // Leader completeness (Raft §5.4): every committed entry is in every later leader's log.

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut checker = StateMachineSafety::new();
        let old = Entry {
            term: 1,
            command: preempt(C1, 1, "a"),
        };
        assert_eq!(
            checker.observe_applied(at(5), S1, 1, &old, &fresh(granted(1))),
            Ok(true)
        );
        let mut complete = crate::node::RaftLog::new();
        complete.truncate_and_append(
            1,
            &[
                old.clone(),
                Entry {
                    term: 2,
                    command: Command::Noop,
                },
            ],
        );
        assert_eq!(
            checker.check_leader_completeness(at(6), S2, 2, &complete),
            Ok(())
        );
        let mut overwritten = crate::node::RaftLog::new();
        overwritten.truncate_and_append(
            1,
            &[Entry {
                term: 2,
                command: Command::Noop,
            }],
        );
        expect_violation(
            checker.check_leader_completeness(at(7), S3, 3, &overwritten),
            LEADER_COMPLETENESS,
            &["s3 became leader of term 3 without committed index 1"],
        );
        let empty = crate::node::RaftLog::new();
        expect_violation(
            checker.check_leader_completeness(at(8), S3, 3, &empty),
            LEADER_COMPLETENESS,
            &["log has nothing"],
        );
    }

    /// Raft §7 meets §5.4: entries compacted into a new leader's snapshot are not in its log,
    /// but the snapshot's last position is: its term must be the term of the entry applied
    /// there.
    #[test]
    fn a_leader_whose_snapshot_ends_in_another_term_than_the_committed_entry_is_caught() {
        let mut checker = StateMachineSafety::new();
        let committed =
            [preempt(C1, 1, "a"), preempt(C2, 1, "b")].map(|command| Entry { term: 1, command });
        for (index, entry) in (1..).zip(&committed) {
            let verdict = checker.observe_applied(at(5), S1, index, entry, &fresh(granted(index)));
            assert_eq!(verdict, Ok(true));
        }
        assert_eq!(checker.committed_count(), 2);
        let mut compacted = crate::node::RaftLog::new();
        compacted.truncate_and_append(1, &committed);
        compacted.compact_to(1, 1);
        assert_eq!(
            checker.check_leader_completeness(at(6), S2, 2, &compacted),
            Ok(())
        );
        let other_term = crate::node::RaftLog::rebased(2, 2, crate::node::RaftLog::new());
        expect_violation(
            checker.check_leader_completeness(at(7), S3, 3, &other_term),
            LEADER_COMPLETENESS,
            &[
                "s3 became leader of term 3 with a snapshot ending at index 2 of term 2, but s1 \
                 applied an entry of term 1 there",
            ],
        );
    }

    // State machine safety (Raft §5.4.3): the same entry and result at every index, everywhere.

    #[test]
    fn two_servers_applying_different_commands_at_one_index_is_a_violation() {
        let mut checker = StateMachineSafety::new();
        let first = Entry {
            term: 2,
            command: preempt(C1, 1, "a"),
        };
        let second = Entry {
            term: 3,
            command: preempt(C2, 1, "a"),
        };
        let result = fresh(granted(7));
        assert_eq!(
            checker.observe_applied(at(5), S1, 7, &first, &result),
            Ok(true)
        );
        expect_violation(
            checker.observe_applied(at(6), S2, 7, &second, &result),
            STATE_MACHINE_SAFETY,
            &[
                "index 7",
                "s1 applied preempt `a` by client#1 seq 1 in term 2",
                "s2 applied preempt `a` by client#2 seq 1 in term 3",
            ],
        );
        assert_eq!(checker.committed(7), Some((&first, &result)));
    }

    #[test]
    fn a_second_server_applying_the_same_entry_is_not_new() {
        let mut checker = StateMachineSafety::new();
        let entry = Entry {
            term: 2,
            command: preempt(C1, 1, "a"),
        };
        let result = fresh(granted(7));
        assert_eq!(
            checker.observe_applied(at(5), S1, 7, &entry, &result),
            Ok(true)
        );
        assert_eq!(
            checker.observe_applied(at(6), S2, 7, &entry, &result),
            Ok(false)
        );
        assert_eq!(
            checker.observe_applied(at(7), S3, 7, &entry, &result),
            Ok(false)
        );
        assert_eq!(checker.committed_count(), 1);
        assert_eq!(checker.committed(8), None);
    }

    #[test]
    fn the_same_entry_with_a_different_result_is_a_violation() {
        let mut checker = StateMachineSafety::new();
        let entry = Entry {
            term: 2,
            command: preempt(C2, 1, "a"),
        };
        let refused = fresh(held_by(C1));
        assert_eq!(
            checker.observe_applied(at(5), S1, 7, &entry, &refused),
            Ok(true)
        );
        expect_violation(
            checker.observe_applied(at(6), S2, 7, &entry, &fresh(granted(7))),
            STATE_MACHINE_SAFETY,
            &[
                "index 7",
                "s1 got held by client#1",
                "s2 got granted (token 7)",
            ],
        );
    }

    #[test]
    fn different_lock_maps_at_one_applied_index_are_a_violation() {
        let mut checker = StateMachineSafety::new();
        assert_eq!(checker.observe_lock_map(at(1), S1, 9, 0xabc), Ok(()));
        assert_eq!(checker.observe_lock_map(at(2), S2, 9, 0xabc), Ok(()));
        assert_eq!(checker.observe_lock_map(at(3), S2, 10, 0xdef), Ok(()));
        expect_violation(
            checker.observe_lock_map(at(4), S3, 9, 0x123),
            STATE_MACHINE_SAFETY,
            &[
                "applied index 9",
                "s1 has digest 0x0000000000000abc",
                "s3 has digest",
            ],
        );
    }

    // Mutual exclusion at commit time, against the reference model.

    #[test]
    fn granting_a_held_lock_without_a_committed_release_is_the_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(&mut checker, 4, Command::Noop, ApplyResult::Nothing);
        expect_violation(
            try_commit(&mut checker, 5, preempt(C2, 1, "a"), fresh(granted(5))),
            MUTUAL_EXCLUSION,
            &[
                "lock `a` granted to client#2 at index 5",
                "while client#1 holds it since index 3 with no committed release",
            ],
        );
    }

    #[test]
    fn granting_a_lock_after_its_holder_released_it_is_fine() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        // client#2 asks while client#1 holds it: refused, naming the holder.
        commit(&mut checker, 4, preempt(C2, 1, "a"), fresh(held_by(C1)));
        commit(
            &mut checker,
            5,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        commit(&mut checker, 6, preempt(C2, 2, "a"), fresh(granted(6)));
        // client#2 preempting again while holding it gets its own token back.
        commit(&mut checker, 7, preempt(C2, 3, "a"), fresh(granted(6)));
        // A retry of client#1's release is answered from its session; a stale copy does nothing.
        commit(
            &mut checker,
            8,
            release(C1, 2, "a"),
            duplicate(Outcome::Released),
        );
        commit(&mut checker, 9, preempt(C1, 1, "a"), ApplyResult::Stale);
        // Releasing a free lock is refused, harmlessly.
        commit(
            &mut checker,
            10,
            release(C1, 3, "b"),
            fresh(Outcome::NotOwner),
        );
    }

    #[test]
    fn a_fresh_grant_whose_token_is_not_its_index_is_a_violation() {
        let mut checker = two_registered_clients();
        expect_violation(
            try_commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(2))),
            MUTUAL_EXCLUSION,
            &["lock `a` granted to client#1 at index 3 with token 2"],
        );
    }

    #[test]
    fn a_re_grant_to_the_holder_with_a_new_token_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(&mut checker, 4, preempt(C1, 2, "a"), fresh(granted(4))),
            MUTUAL_EXCLUSION,
            &["re-granted to its holder client#1 at index 4 with token 4"],
        );
    }

    #[test]
    fn a_release_by_someone_who_does_not_hold_the_lock_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(
                &mut checker,
                4,
                release(C2, 1, "a"),
                fresh(Outcome::Released),
            ),
            MUTUAL_EXCLUSION,
            &[
                "release of lock `a` by client#2 at index 4 answered released",
                "held by client#1",
            ],
        );
    }

    #[test]
    fn refusing_the_holders_release_or_naming_a_holder_of_a_free_lock_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(
                &mut checker,
                4,
                release(C1, 2, "a"),
                fresh(Outcome::NotOwner),
            ),
            MUTUAL_EXCLUSION,
            &["answered not owner", "held by client#1 since index 3"],
        );
        let mut checker = two_registered_clients();
        expect_violation(
            try_commit(&mut checker, 3, preempt(C2, 1, "b"), fresh(held_by(C1))),
            MUTUAL_EXCLUSION,
            &["answered held by client#1, but the reference model has it free"],
        );
    }

    /// A committed preempt of a held lock is refused naming its holder, and only a preempt by
    /// someone else: the holder's own preempt is granted again.
    #[test]
    fn a_refusal_naming_another_than_the_holder_or_the_holder_itself_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(&mut checker, 4, preempt(C2, 1, "a"), fresh(held_by(C1)));
        expect_violation(
            try_commit(
                &mut checker,
                5,
                preempt(C2, 2, "a"),
                fresh(held_by(ClientId(3))),
            ),
            MUTUAL_EXCLUSION,
            &[
                "preempt of lock `a` by client#2 at index 5 answered held by client#3, but the \
               reference model has it held by client#1 since index 3",
            ],
        );
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(&mut checker, 4, preempt(C1, 2, "a"), fresh(held_by(C1))),
            MUTUAL_EXCLUSION,
            &["preempt of lock `a` by client#1 at index 4 answered held by client#1"],
        );
    }

    #[test]
    fn a_retry_answered_differently_from_its_first_commit_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(&mut checker, 4, preempt(C1, 1, "a"), duplicate(granted(4))),
            MUTUAL_EXCLUSION,
            &[
                "retry of client#1 seq 1",
                "granted (token 4)",
                "index 3",
                "granted (token 3)",
            ],
        );
        // Applying the retry as new instead of answering it from the session breaks
        // exactly-once.
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            try_commit(&mut checker, 4, preempt(C1, 1, "a"), fresh(granted(3))),
            MUTUAL_EXCLUSION,
            &["client#1 seq 1 was applied twice as new"],
        );
    }

    #[test]
    #[should_panic(expected = "committed index 3 fed after index 3")]
    fn feeding_a_committed_index_twice_is_a_simulator_bug_and_panics() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, Command::Noop, ApplyResult::Nothing);
        let _ = try_commit(&mut checker, 3, Command::Noop, ApplyResult::Nothing);
    }

    // Mutual exclusion as clients learn it.

    #[test]
    fn an_acknowledgement_of_a_request_that_was_never_committed_is_a_violation() {
        let mut checker = two_registered_clients();
        expect_violation(
            ack(&mut checker, 3, (C1, 1), preempt_op("a"), granted(3)),
            MUTUAL_EXCLUSION,
            &[
                "client#1 seq 1 (preempt of lock `a`) was acknowledged as granted (token 3) \
               before it was committed",
            ],
        );
    }

    /// A leader may refuse a preempt with a read, leaving no entry. That refusal is final: the
    /// request committing later as a grant would give the client a lock it was told it lost.
    #[test]
    fn a_preempt_refused_by_read_that_later_commits_as_granted_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        ack(&mut checker, 4, (C2, 1), preempt_op("a"), held_by(C1))
            .expect("a refusal naming the holder is a fine answer without an entry");
        commit(
            &mut checker,
            4,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        expect_violation(
            try_commit(&mut checker, 5, preempt(C2, 1, "a"), fresh(granted(5))),
            MUTUAL_EXCLUSION,
            &[
                "client#2 seq 1 (preempt of lock `a`) was acknowledged as held by client#1 \
                 without a log entry, yet index 5 applied it as granted (token 5)",
            ],
        );
    }

    #[test]
    fn a_refusal_by_read_naming_someone_never_granted_the_lock_is_a_violation() {
        let mut checker = two_registered_clients();
        expect_violation(
            ack(&mut checker, 3, (C2, 1), preempt_op("a"), held_by(C1)),
            MUTUAL_EXCLUSION,
            &[
                "refused without a log entry as held by client#1, but no committed entry ever \
               granted lock `a` to client#1",
            ],
        );
    }

    /// A client holding a lock that preempts it again is granted it again (its own token), so
    /// a refusal by read naming the asking client itself is wrong even though it was granted.
    #[test]
    fn a_refusal_by_read_naming_the_asking_client_itself_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            ack(&mut checker, 4, (C1, 2), preempt_op("a"), held_by(C1)),
            MUTUAL_EXCLUSION,
            &[
                "client#1 seq 2 (preempt of lock `a`) was refused without a log entry as held by \
               client#1, its own client",
            ],
        );
        // Naming the holder, for another client, is a refusal like any other.
        assert_eq!(
            ack(&mut checker, 5, (C2, 1), preempt_op("a"), held_by(C1)),
            Ok(())
        );
    }

    #[test]
    fn an_acknowledgement_that_differs_from_the_committed_outcome_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(&mut checker, 4, preempt(C2, 1, "a"), fresh(held_by(C1)));
        expect_violation(
            ack(&mut checker, 5, (C2, 1), preempt_op("a"), granted(4)),
            MUTUAL_EXCLUSION,
            &[
                "acknowledged as granted (token 4)",
                "index 4 committed preempt",
                "held by client#1",
            ],
        );
        assert_eq!(checker.grants_acknowledged(), 0);
    }

    /// An acknowledgement must match its committed request in operation and lock too, not
    /// only in outcome: the same answer for another lock is another request's answer.
    #[test]
    fn an_acknowledgement_with_the_committed_outcome_but_another_lock_is_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        expect_violation(
            ack(&mut checker, 4, (C1, 1), preempt_op("b"), granted(3)),
            MUTUAL_EXCLUSION,
            &[
                "client#1 seq 1 (preempt of lock `b`) was acknowledged as granted (token 3), but \
               index 3 committed preempt of lock `a` as granted (token 3)",
            ],
        );
        assert_eq!(checker.grants_acknowledged(), 0);
    }

    #[test]
    fn acknowledged_grants_whose_tokens_go_backwards_across_owners_are_a_violation() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(
            &mut checker,
            4,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        commit(&mut checker, 5, preempt(C2, 1, "a"), fresh(granted(5)));
        // client#2 hears of its grant first; client#1's older grant is acknowledged after it.
        assert_eq!(
            ack(&mut checker, 6, (C2, 1), preempt_op("a"), granted(5)),
            Ok(())
        );
        expect_violation(
            ack(&mut checker, 7, (C1, 1), preempt_op("a"), granted(3)),
            MUTUAL_EXCLUSION,
            &[
                "fencing token of lock `a` went backwards: client#1 was acknowledged token 3",
                "after client#2 was acknowledged token 5",
            ],
        );
    }

    #[test]
    fn an_honest_history_of_grants_releases_and_checks_passes_every_acknowledgement() {
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        assert_eq!(
            ack(&mut checker, 4, (C1, 1), preempt_op("a"), granted(3)),
            Ok(())
        );
        // client#1 preempts again while holding it: the same token, acknowledged again.
        commit(&mut checker, 5, preempt(C1, 2, "a"), fresh(granted(3)));
        assert_eq!(
            ack(&mut checker, 6, (C1, 2), preempt_op("a"), granted(3)),
            Ok(())
        );
        // client#1's release commits but its answer is lost: the grant still ended.
        commit(
            &mut checker,
            7,
            release(C1, 3, "a"),
            fresh(Outcome::Released),
        );
        commit(&mut checker, 9, preempt(C2, 1, "a"), fresh(granted(9)));
        assert_eq!(
            ack(&mut checker, 10, (C2, 1), preempt_op("a"), granted(9)),
            Ok(())
        );
        commit(
            &mut checker,
            11,
            release(C2, 2, "a"),
            fresh(Outcome::Released),
        );
        let released = ack(
            &mut checker,
            12,
            (C2, 2),
            release_op("a"),
            Outcome::Released,
        );
        assert_eq!(released, Ok(()));
        // Checks belong to the linearizability checker; this one lets them through.
        let check = Operation::Check {
            lock: lock("a"),
            consistency: Default::default(),
        };
        assert_eq!(
            ack(
                &mut checker,
                13,
                (C1, 4),
                check,
                Outcome::Owner {
                    owner: C2,
                    token: 9
                }
            ),
            Ok(())
        );
        assert_eq!(checker.grants_acknowledged(), 3);
    }

    #[test]
    fn a_grant_acknowledged_while_the_previous_grant_was_never_released_is_a_violation() {
        // The commit-time check would have caught this history first; the acknowledgement check
        // is its pair and must catch it on its own too.
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        assert_eq!(
            ack(&mut checker, 4, (C1, 1), preempt_op("a"), granted(3)),
            Ok(())
        );
        checker.holders.clear();
        commit(&mut checker, 5, preempt(C2, 1, "a"), fresh(granted(5)));
        expect_violation(
            ack(&mut checker, 6, (C2, 1), preempt_op("a"), granted(5)),
            MUTUAL_EXCLUSION,
            &[
                "lock `a` acknowledged to client#2 with token 5 while client#1's grant (token 3)",
                "no committed release before index 5",
            ],
        );
    }

    #[test]
    fn a_grant_acknowledged_before_the_previous_owners_release_committed_is_a_violation() {
        // The pair of the commit-time check again, on its own: here client#1's release is
        // committed, but only after the grant to client#2 (the model is bent by hand to let
        // that history through commit time).
        let mut checker = two_registered_clients();
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        assert_eq!(
            ack(&mut checker, 4, (C1, 1), preempt_op("a"), granted(3)),
            Ok(())
        );
        let first = checker
            .holders
            .remove(&lock("a"))
            .expect("client#1 holds `a`");
        commit(&mut checker, 5, preempt(C2, 1, "a"), fresh(granted(5)));
        checker.holders.insert(lock("a"), first);
        commit(
            &mut checker,
            6,
            release(C1, 2, "a"),
            fresh(Outcome::Released),
        );
        expect_violation(
            ack(&mut checker, 7, (C2, 1), preempt_op("a"), granted(5)),
            MUTUAL_EXCLUSION,
            &[
                "lock `a` acknowledged to client#2 with token 5 while client#1's grant (token 3) \
               had no committed release before index 5",
            ],
        );
    }

    /// The acknowledged-writes check finds a write's entry through this index: the first
    /// commit of the request, which a retry committed again does not move.
    #[test]
    fn a_requests_committed_index_is_its_first_commit() {
        let mut checker = two_registered_clients();
        assert_eq!(checker.committed_index(C1, 1), None);
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(&mut checker, 4, preempt(C1, 1, "a"), duplicate(granted(3)));
        assert_eq!(checker.committed_index(C1, 1), Some(3));
        assert_eq!(checker.committed_index(C2, 1), None);
    }

    #[test]
    fn lockstep_s_own_lock_table_agrees_with_the_reference_model() {
        // Pair check: the commit-time model and the replicated lock table decide alike.
        let commands = [
            Command::Register {
                nonce: 1,
                secret: None,
                ttl_ms: None,
            },
            Command::Register {
                nonce: 2,
                secret: None,
                ttl_ms: None,
            },
            preempt(C1, 1, "a"),
            preempt(C2, 1, "a"),
            release(C2, 2, "a"),
            preempt(C2, 3, "a"),
            release(C1, 2, "a"),
            release(C1, 2, "a"),
            preempt(C2, 4, "a"),
            preempt(C1, 1, "b"),
            preempt(C1, 3, "b"),
        ];
        let mut table = LockTable::new();
        let mut checker = MutualExclusion::new();
        for (position, command) in commands.into_iter().enumerate() {
            let index = position as LogIndex + 1;
            let result = table.apply(index, &command);
            commit(&mut checker, index, command, result);
        }
        assert_eq!(
            table.holder("a").map(|held| (held.owner, held.token)),
            Some((C2, 9))
        );
        assert_eq!(
            table.holder("b").map(|held| (held.owner, held.token)),
            Some((C1, 11))
        );
    }

    // Convergence.

    /// A lock table where client#1 and client#2 registered, then `commands` were applied.
    fn table_after(commands: &[Command]) -> LockTable {
        let mut table = LockTable::new();
        let registrations = [
            Command::Register {
                nonce: 1,
                secret: None,
                ttl_ms: None,
            },
            Command::Register {
                nonce: 2,
                secret: None,
                ttl_ms: None,
            },
        ];
        for (position, command) in registrations.iter().chain(commands).enumerate() {
            let _ = table.apply(position as LogIndex + 1, command);
        }
        table
    }

    #[test]
    fn replicas_with_different_lock_maps_do_not_converge() {
        let ahead = table_after(&[preempt(C2, 1, "w3"), preempt(C1, 1, "w1")]);
        let behind = table_after(&[Command::Noop, preempt(C1, 1, "w1")]);
        expect_violation(
            check_convergence(at(100), &[(S1, &ahead), (S2, &ahead), (S3, &behind)]),
            CONVERGENCE,
            &[
                "1 locks differ",
                "lock `w3`: s1 has client#2 (token 3), s2 has client#2 (token 3), s3 has free",
                "applied indexes: s1 at 4, s2 at 4, s3 at 4",
            ],
        );
    }

    #[test]
    fn replicas_with_equal_lock_maps_converge_and_trivial_clusters_always_do() {
        let left = table_after(&[
            preempt(C1, 1, "a"),
            release(C1, 2, "a"),
            preempt(C2, 1, "b"),
        ]);
        let right = table_after(&[Command::Noop, Command::Noop, preempt(C2, 1, "b")]);
        assert_eq!(
            check_convergence(at(100), &[(S1, &left), (S2, &right)]),
            Ok(())
        );
        assert_eq!(check_convergence(at(100), &[(S1, &left)]), Ok(()));
        assert_eq!(check_convergence(at(100), &[]), Ok(()));
    }

    #[test]
    fn a_wholesale_divergence_lists_only_the_first_differences() {
        let grants: Vec<Command> = (1..=12)
            .map(|seq| preempt(C1, seq, &format!("lock{seq:02}")))
            .collect();
        let full = table_after(&grants);
        let empty = table_after(&[]);
        let violation = expect_violation(
            check_convergence(at(100), &[(S1, &full), (S2, &empty)]),
            CONVERGENCE,
            &[
                "12 locks differ",
                "lock `lock10`: s1 has client#1 (token 12), s2 has free",
            ],
        );
        assert!(violation.message.contains("; and 2 more"), "{violation}");
        assert!(!violation.message.contains("lock `lock11`"), "{violation}");
    }

    #[test]
    fn a_divergence_of_exactly_the_listed_number_of_locks_lists_them_all_and_no_more() {
        let grants: Vec<Command> = (1..=CONVERGENCE_DIFFERENCES_MAX as u64)
            .map(|seq| preempt(C1, seq, &format!("lock{seq:02}")))
            .collect();
        let full = table_after(&grants);
        let empty = table_after(&[]);
        let violation = expect_violation(
            check_convergence(at(100), &[(S1, &full), (S2, &empty)]),
            CONVERGENCE,
            &[
                "10 locks differ",
                "lock `lock10`: s1 has client#1 (token 12), s2 has free",
            ],
        );
        assert!(!violation.message.contains("more"), "{violation}");
    }

    #[test]
    fn a_write_at_seq_u64_max_reused_for_another_lock_must_be_rejected_without_overflow() {
        let mut checker = two_registered_clients();
        commit(
            &mut checker,
            3,
            preempt(C1, u64::MAX, "a"),
            fresh(granted(3)),
        );
        let rejected = ApplyResult::Rejected {
            rejection: Rejection::SeqReused,
        };
        commit(&mut checker, 4, preempt(C1, u64::MAX, "b"), rejected);
        expect_violation(
            try_commit(
                &mut checker,
                5,
                release(C1, u64::MAX, "a"),
                fresh(Outcome::Released),
            ),
            MUTUAL_EXCLUSION,
            &["must be rejected (seq_reused)"],
        );
    }

    // Mutual exclusion, sessions: an expire ends a live session, frees exactly its client's
    // locks, and says how many; an expire of anything else changes nothing.

    /// client#1 registered with a session (TTL 1 s) at index 1 and holding `a` (index 3);
    /// client#2 registered without one at index 2 and holding `b` (index 4).
    fn a_session_holder_and_a_plain_one() -> MutualExclusion {
        let mut checker = MutualExclusion::new();
        let register = |nonce, ttl_ms| Command::Register {
            nonce,
            secret: None,
            ttl_ms,
        };
        commit(
            &mut checker,
            1,
            register(1, Some(1_000)),
            ApplyResult::Registered { client: C1 },
        );
        commit(
            &mut checker,
            2,
            register(2, None),
            ApplyResult::Registered { client: C2 },
        );
        commit(&mut checker, 3, preempt(C1, 1, "a"), fresh(granted(3)));
        commit(&mut checker, 4, preempt(C2, 1, "b"), fresh(granted(4)));
        checker
    }

    fn expired(client: ClientId, released: u32) -> ApplyResult {
        ApplyResult::Expired { client, released }
    }

    #[test]
    fn an_expire_frees_exactly_its_clients_locks_and_ends_its_session() {
        let mut checker = a_session_holder_and_a_plain_one();
        commit(
            &mut checker,
            5,
            Command::Expire { client: C1 },
            expired(C1, 1),
        );
        assert_eq!(checker.locks_held_by(C1), Vec::<LockName>::new());
        assert_eq!(checker.locks_held_by(C2), vec![lock("b")]);
        // `a` is free now: client#2 may have it, and its own `b` stays its own.
        commit(&mut checker, 6, preempt(C2, 2, "a"), fresh(granted(6)));
        commit(&mut checker, 7, preempt(C2, 3, "b"), fresh(granted(4)));
        // A second expire of the ended session changes nothing.
        commit(
            &mut checker,
            8,
            Command::Expire { client: C1 },
            ApplyResult::Nothing,
        );
        // The expired client's writes are refused at apply, everywhere.
        expect_violation(
            try_commit(&mut checker, 9, preempt(C1, 2, "c"), fresh(granted(9))),
            MUTUAL_EXCLUSION,
            &["must be rejected (session_expired)"],
        );
    }

    /// Session marks (a silent session noted, a renewal of one) change no lock: they apply as
    /// nothing, and a result of another kind is a violation.
    #[test]
    fn session_marks_apply_as_nothing_and_anything_else_is_a_violation() {
        let mut checker = a_session_holder_and_a_plain_one();
        let silent = Command::MarkSilent {
            sessions: Vec::new(),
        };
        commit(&mut checker, 5, silent, ApplyResult::Nothing);
        commit(
            &mut checker,
            6,
            Command::Revive { client: C1 },
            ApplyResult::Nothing,
        );
        assert_eq!(checker.locks_held_by(C1), vec![lock("a")]);
        expect_violation(
            try_commit(
                &mut checker,
                7,
                Command::Revive { client: C1 },
                expired(C1, 1),
            ),
            MUTUAL_EXCLUSION,
            &[
                "index 7: revive client#1 produced expired client#1, releasing 1 lock(s), which \
               is not a result of that command",
            ],
        );
    }

    #[test]
    fn an_expire_that_miscounts_or_keeps_the_session_is_a_violation() {
        let mut checker = a_session_holder_and_a_plain_one();
        expect_violation(
            try_commit(
                &mut checker,
                5,
                Command::Expire { client: C1 },
                expired(C1, 0),
            ),
            MUTUAL_EXCLUSION,
            &[
                "index 5: expire of client#1 produced expired client#1, releasing 0 lock(s)",
                "the reference model has it release 1 lock(s)",
            ],
        );
        let mut checker = a_session_holder_and_a_plain_one();
        expect_violation(
            try_commit(
                &mut checker,
                5,
                Command::Expire { client: C1 },
                ApplyResult::Nothing,
            ),
            MUTUAL_EXCLUSION,
            &["expire of client#1 produced"],
        );
    }

    #[test]
    fn an_expire_of_a_client_without_a_live_session_that_releases_is_a_violation() {
        let mut checker = a_session_holder_and_a_plain_one();
        expect_violation(
            try_commit(
                &mut checker,
                5,
                Command::Expire { client: C2 },
                expired(C2, 1),
            ),
            MUTUAL_EXCLUSION,
            &["index 5: expire of client#2, which has no live session, produced"],
        );
        // Answered with nothing, it is fine, and client#2 still holds `b`.
        let mut checker = a_session_holder_and_a_plain_one();
        commit(
            &mut checker,
            5,
            Command::Expire { client: C2 },
            ApplyResult::Nothing,
        );
        expect_violation(
            try_commit(&mut checker, 6, preempt(C1, 2, "b"), fresh(granted(6))),
            MUTUAL_EXCLUSION,
            &["lock `b` granted to client#1 at index 6"],
        );
    }

    // Rogue isolation: rogues change no one else's locks and are never answered as if a
    // request they cannot make had succeeded.

    pub(super) const R1: u32 = 1;
    pub(super) const SECRET_ONE: ClientSecret = ClientSecret::from_bytes([1; 16]);
    pub(super) const SECRET_TWO: ClientSecret = ClientSecret::from_bytes([2; 16]);
    /// The rogue's own identity: client#3.
    pub(super) const C3: ClientId = ClientId(3);

    pub(super) fn request(
        client: ClientId,
        secret: Option<ClientSecret>,
        seq: u64,
        op: Operation,
    ) -> ClientRequest {
        ClientRequest {
            seq,
            seen_index: 0,
            term: 1,
            body: RequestBody::Op { client, secret, op },
        }
    }

    pub(super) fn reply(seq: u64, body: ReplyBody) -> ClientReply {
        ClientReply {
            seq,
            index: 5,
            term: 1,
            body,
        }
    }

    /// Three registrations committed (client#1 and #2 honest, client#3 the rogue's), c1's
    /// preempt of `a` seq 1 sent and committed as granted at index 4.
    pub(super) fn isolation_with_a_rogue() -> RogueIsolation {
        let mut checker = RogueIsolation::new();
        for index in 1..=3 {
            let register = Command::Register {
                nonce: index,
                secret: None,
                ttl_ms: None,
            };
            let registered = ApplyResult::Registered {
                client: ClientId(index),
            };
            assert_eq!(
                checker.observe_committed(at(index), index, &register, &registered),
                Ok(())
            );
        }
        checker.observe_rogue_welcome(R1, C3, SECRET_ONE);
        checker.observe_honest_request(&request(C1, Some(SECRET_TWO), 1, preempt_op("a")));
        let verdict = checker.observe_committed(at(4), 4, &preempt(C1, 1, "a"), &fresh(granted(4)));
        assert_eq!(verdict, Ok(()), "c1 sent what committed");
        checker
    }

    #[test]
    fn a_committed_release_of_an_honest_lock_that_its_client_never_sent_is_caught() {
        let mut checker = isolation_with_a_rogue();
        // The rogue sent it as client#1 without the secret; a server let it through.
        checker.observe_rogue_request(R1, 0, &request(C1, None, 2, release_op("a")));
        let verdict =
            checker.observe_committed(at(6), 5, &release(C1, 2, "a"), &fresh(Outcome::Released));
        expect_violation(
            verdict,
            ROGUE_ISOLATION,
            &[
                "index 5",
                "release `a` by client#1 seq 2",
                "someone else acted as client#1",
            ],
        );
    }

    #[test]
    fn a_committed_write_with_an_honest_seq_but_another_lock_is_caught() {
        let mut checker = isolation_with_a_rogue();
        let verdict = checker.observe_committed(at(6), 5, &preempt(C1, 1, "b"), &fresh(granted(5)));
        expect_violation(verdict, ROGUE_ISOLATION, &["preempt `b` by client#1 seq 1"]);
        // Rejected or stale entries change nothing: no violation, whoever sent them.
        let mut checker = isolation_with_a_rogue();
        let rejected = ApplyResult::Rejected {
            rejection: Rejection::SeqReused,
        };
        assert_eq!(
            checker.observe_committed(at(6), 5, &preempt(C1, 1, "b"), &rejected),
            Ok(())
        );
        assert_eq!(
            checker.observe_committed(at(6), 6, &release(C2, 9, "a"), &ApplyResult::Stale),
            Ok(())
        );
    }

    #[test]
    fn the_rogue_acting_under_its_own_identity_may_change_its_own_locks() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 1, preempt_op("r1.a")));
        let verdict =
            checker.observe_committed(at(6), 5, &preempt(C3, 1, "r1.a"), &fresh(granted(5)));
        assert_eq!(verdict, Ok(()));
        let answer = reply(1, ReplyBody::Outcome(granted(5)));
        assert_eq!(checker.observe_rogue_reply(at(7), R1, 0, &answer), Ok(()));
        // Errors are always acceptable answers.
        let error = reply(1, ReplyBody::Error(crate::node::ServiceError::Overloaded));
        assert_eq!(checker.observe_rogue_reply(at(8), R1, 0, &error), Ok(()));
    }

    /// A rogue may say hello more than once: every identity it was welcomed with is its own.
    #[test]
    fn a_rogue_welcomed_twice_acts_under_both_identities() {
        let mut checker = isolation_with_a_rogue();
        let register = Command::Register {
            nonce: 4,
            secret: None,
            ttl_ms: None,
        };
        let c4 = ClientId(4);
        let registered = ApplyResult::Registered { client: c4 };
        assert_eq!(
            checker.observe_committed(at(5), 5, &register, &registered),
            Ok(())
        );
        checker.observe_rogue_welcome(R1, c4, SECRET_TWO);
        checker.observe_rogue_request(R1, 0, &request(c4, Some(SECRET_TWO), 1, preempt_op("r1.b")));
        let verdict =
            checker.observe_committed(at(6), 6, &preempt(c4, 1, "r1.b"), &fresh(granted(6)));
        assert_eq!(verdict, Ok(()));
        let answer = reply(1, ReplyBody::Outcome(granted(6)));
        assert_eq!(checker.observe_rogue_reply(at(7), R1, 0, &answer), Ok(()));
        checker.observe_rogue_request(R1, 1, &request(C3, Some(SECRET_ONE), 1, preempt_op("r1.a")));
        let verdict =
            checker.observe_committed(at(8), 7, &preempt(C3, 1, "r1.a"), &fresh(granted(7)));
        assert_eq!(verdict, Ok(()));
    }

    /// Under its own identity a rogue is a client like any other: its preempt of a lock held
    /// by someone else may be refused by the leader's read, with no entry for its seq. Any
    /// other outcome with no committed entry behind it is a violation.
    #[test]
    fn the_rogues_own_preempt_may_be_refused_by_read_but_nothing_else_goes_without_an_entry() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 1, preempt_op("a")));
        let refused = reply(1, ReplyBody::Outcome(held_by(C1)));
        assert_eq!(checker.observe_rogue_reply(at(7), R1, 0, &refused), Ok(()));
        checker.observe_rogue_request(R1, 1, &request(C3, Some(SECRET_ONE), 2, release_op("a")));
        let not_owner = reply(2, ReplyBody::Outcome(Outcome::NotOwner));
        expect_violation(
            checker.observe_rogue_reply(at(8), R1, 1, &not_owner),
            ROGUE_ISOLATION,
            &["no entry for its seq was committed, yet it has an outcome"],
        );
    }

    /// The blocking acquire under the rogue's own identity: its answers fit an acquire, and an
    /// absurd wait must be refused before the log, in its answer and in the log alike.
    #[test]
    fn the_rogues_absurd_wait_must_be_refused_and_never_reach_the_log() {
        let mut checker = isolation_with_a_rogue();
        let acquire = |wait_ms| Operation::Acquire {
            lock: lock("r1.a"),
            wait_ms,
            claim: Claim::EXCLUSIVE,
        };
        let bound = crate::node::ACQUIRE_WAIT_MS_MAX;
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 1, acquire(500)));
        let command = Command::Acquire {
            client: C3,
            seq: 1,
            lock: lock("r1.a"),
            wait_ms: 500,
            claim: Claim::EXCLUSIVE,
        };
        let verdict = checker.observe_committed(at(6), 5, &command, &fresh(granted(5)));
        assert_eq!(verdict, Ok(()), "its own acquire with a wait in bounds");
        let answer = reply(1, ReplyBody::Outcome(granted(5)));
        assert_eq!(checker.observe_rogue_reply(at(7), R1, 0, &answer), Ok(()));

        checker.observe_rogue_request(R1, 1, &request(C3, Some(SECRET_ONE), 2, acquire(u64::MAX)));
        let refused = reply(2, ReplyBody::Outcome(Outcome::TimedOut));
        expect_violation(
            checker.observe_rogue_reply(at(8), R1, 1, &refused),
            ROGUE_ISOLATION,
            &["r1's acquire of `r1.a` seq 2", "over the one-hour bound"],
        );
        let absurd = Command::Acquire {
            client: C3,
            seq: 2,
            lock: lock("r1.a"),
            wait_ms: bound + 1,
            claim: Claim::EXCLUSIVE,
        };
        let rejected = ApplyResult::Rejected {
            rejection: Rejection::SeqReused,
        };
        expect_violation(
            checker.observe_committed(at(9), 6, &absurd, &rejected),
            ROGUE_ISOLATION,
            &["index 6", "wait of 3600001 ms"],
        );
    }

    #[test]
    fn a_forged_request_answered_with_an_outcome_is_caught_with_or_without_a_secret() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_rogue_request(R1, 0, &request(C1, None, 1, preempt_op("a")));
        checker.observe_rogue_request(R1, 1, &request(C2, Some(SECRET_ONE), 1, release_op("a")));
        let check = Operation::Check {
            lock: lock("a"),
            consistency: crate::node::Consistency::Linearizable,
        };
        checker.observe_rogue_request(R1, 2, &request(C2, Some(SECRET_TWO), 7, check));
        let granted_again = reply(1, ReplyBody::Outcome(granted(4)));
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 0, &granted_again),
            ROGUE_ISOLATION,
            &[
                "as client#1 with no secret",
                "must be refused (unauthorized)",
            ],
        );
        let released = reply(1, ReplyBody::Outcome(Outcome::Released));
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 1, &released),
            ROGUE_ISOLATION,
            &["as client#2 with a wrong secret", "unauthorized"],
        );
        let owner = reply(
            7,
            ReplyBody::Outcome(Outcome::Owner {
                owner: C1,
                token: 4,
            }),
        );
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 2, &owner),
            ROGUE_ISOLATION,
            &["check of `a`", "unauthorized"],
        );
    }

    #[test]
    fn an_id_no_hello_issued_answered_with_an_outcome_is_caught() {
        let mut checker = isolation_with_a_rogue();
        let ghost = ClientId(999_999);
        checker.observe_rogue_request(R1, 0, &request(ghost, None, 2, preempt_op("ghost")));
        let answer = reply(2, ReplyBody::Outcome(granted(5)));
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 0, &answer),
            ROGUE_ISOLATION,
            &["client#999999", "no hello issued", "unknown_client"],
        );
    }

    #[test]
    fn a_reused_seq_answered_with_another_writes_cached_outcome_is_caught() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 4, preempt_op("r1.a")));
        let first =
            checker.observe_committed(at(6), 5, &preempt(C3, 4, "r1.a"), &fresh(granted(5)));
        assert_eq!(first, Ok(()));
        // The same seq, now for a release of the same lock, then a preempt of another lock.
        checker.observe_rogue_request(R1, 1, &request(C3, Some(SECRET_ONE), 4, release_op("r1.a")));
        checker.observe_rogue_request(R1, 2, &request(C3, Some(SECRET_ONE), 4, preempt_op("r1.b")));
        let cached = reply(4, ReplyBody::Outcome(granted(5)));
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 1, &cached),
            ROGUE_ISOLATION,
            &["that is no answer to a release"],
        );
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 2, &cached),
            ROGUE_ISOLATION,
            &[
                "seq 4 was first committed at index 5 as a preempt of `r1.a`",
                "seq_reused",
            ],
        );
        // The original request's retry may hear its own answer again.
        assert_eq!(checker.observe_rogue_reply(at(8), R1, 0, &cached), Ok(()));
    }

    /// Found by the explorer once servers could be paused: a leader that slept through the
    /// commit of a release under seq 4 answers a retry of the preempt it had refused by read
    /// under that seq from its cache, with the original answer and its index. That answer
    /// reflects the state before the reuse, so it is no violation; the same refusal answered
    /// at or after the reuse's index is one.
    #[test]
    fn a_refusal_replayed_from_before_its_seq_was_reused_is_no_violation() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 4, preempt_op("r1.a")));
        checker.observe_rogue_request(R1, 1, &request(C3, Some(SECRET_ONE), 4, release_op("r1.a")));
        let not_owner = fresh(Outcome::NotOwner);
        let committed = checker.observe_committed(at(6), 9, &release(C3, 4, "r1.a"), &not_owner);
        assert_eq!(committed, Ok(()));
        checker.observe_rogue_request(R1, 2, &request(C3, Some(SECRET_ONE), 4, preempt_op("r1.a")));
        let refusal = |index| ClientReply {
            index,
            ..reply(4, ReplyBody::Outcome(Outcome::HeldBy { owner: C1 }))
        };
        assert_eq!(
            checker.observe_rogue_reply(at(8), R1, 2, &refusal(5)),
            Ok(())
        );
        expect_violation(
            checker.observe_rogue_reply(at(8), R1, 2, &refusal(9)),
            ROGUE_ISOLATION,
            &[
                "seq 4 was first committed at index 9 as a release",
                "seq_reused",
            ],
        );
    }

    #[test]
    fn a_malformed_lock_name_or_a_misplaced_welcome_answered_as_success_is_caught() {
        let mut checker = isolation_with_a_rogue();
        let long = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
        checker.observe_rogue_request(R1, 0, &request(C3, Some(SECRET_ONE), 9, preempt_op(&long)));
        let answer = reply(9, ReplyBody::Outcome(granted(5)));
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 0, &answer),
            ROGUE_ISOLATION,
            &["a malformed lock name", "bad_request"],
        );
        checker.observe_rogue_request(R1, 1, &request(C1, None, 3, release_op("a")));
        let welcome = ReplyBody::Welcome {
            nonce: 1,
            client: C1,
            secret: SECRET_TWO,
        };
        expect_violation(
            checker.observe_rogue_reply(at(7), R1, 1, &reply(3, welcome)),
            ROGUE_ISOLATION,
            &["answered with a welcome"],
        );
    }

    #[test]
    #[should_panic(expected = "never opened")]
    fn an_answer_on_a_connection_never_opened_is_a_simulator_bug() {
        let checker = isolation_with_a_rogue();
        let _ = checker.observe_rogue_reply(
            at(7),
            R1,
            42,
            &reply(1, ReplyBody::Outcome(Outcome::Free)),
        );
    }
}
