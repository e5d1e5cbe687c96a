//! The fair blocking acquire on the server: proposing acquires and cancels, parking the
//! answer of a queued acquire until its decision applies, timing waiters out, and handing a
//! lock freed by expiry to its queue's head once the lock-delay passed.
//!
//! What is replicated and what is not (docs/design.md, "Fair blocking acquire"):
//! - The queues, their order and every decision (grant, timeout, cancel, expiry) are in the
//!   log and the lock table. A grant happens only at apply, to the head of the queue.
//! - Parked answers and wait deadlines are the leader's volatile business, on its own clock.
//!   A new leader restarts every inherited wait at its readiness (never early), and the
//!   clients' retries (same seq) park their answers again.
//!
//! This is a child module of `server` so that it can keep the server's fields private; it must
//! never read a clock: `now` comes with every call.

use super::sessions::stretch;
use super::{Projection, Promptness, ReplyRoute, Role, Server};
use crate::node::coverage::Branch;
use crate::node::lock_table::{Decision, Woken, WriteKind};
use crate::node::messages::{
    ACQUIRE_WAIT_MS_MAX, Claim, ClientId, ClientRequest, Command, LockName, LogIndex, Operation,
    Outcome, QUEUE_WAITERS_PER_LOCK_MAX, ReplyBody, RequestBody, ServiceError,
};
use crate::node::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A queued acquire's answer, waiting at the leader for its decision to apply.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Parked {
    route: ReplyRoute,
    seq: u64,
}

/// When the leader times out one waiter, on its own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WaitDeadline {
    seq: u64,
    lock: LockName,
    at: Time,
    /// This leader appended the waiter's `Timeout`; it waits to apply.
    timeout_appended: bool,
}

/// The leader's volatile queue state. Empty on every other server.
#[derive(Clone, Debug, Default)]
pub(super) struct QueueState {
    /// Answers of queued acquires, by client (a client waits for at most one lock). Each is
    /// waiting in the table with the same seq: bounded by the waiters.
    parked: BTreeMap<ClientId, Parked>,
    /// Wait deadlines of the table's waiters, once `ready`.
    deadlines: BTreeMap<ClientId, WaitDeadline>,
    /// Locks whose `HandOver` this leader appended and has not applied yet.
    hand_overs_appended: BTreeSet<LockName>,
    /// This leader applied its own no-op: the table holds every committed waiter.
    ready: bool,
    /// When waits and free locks with waiters are next looked at.
    next_tick: Time,
}

/// Most `Timeout` and `HandOver` entries one look appends; the rest wait for the next one.
const QUEUE_ENTRIES_PER_TICK_MAX: usize = 256;

/// Which write of a client a (client, seq) in the unapplied log is, for an acquire or cancel
/// about to be appended.
enum InLog {
    /// This very request: its entry answers it.
    Same(LogIndex),
    /// The seq names another write: refused `seq_reused`.
    Other,
}

/// Why an acquire's wait is refused, if it is: over [`ACQUIRE_WAIT_MS_MAX`]. Checked with the
/// lock name, before anything is forwarded or appended, so an absurd wait never reaches the
/// log (the wire codec refuses it first; this is the node's own guard).
pub(super) fn bad_wait(request: &ClientRequest) -> Option<String> {
    let RequestBody::Op {
        op: Operation::Acquire { wait_ms, .. },
        ..
    } = &request.body
    else {
        return None;
    };
    (*wait_ms > ACQUIRE_WAIT_MS_MAX).then(|| {
        format!("the wait is {wait_ms} ms; an acquire waits at most {ACQUIRE_WAIT_MS_MAX} ms")
    })
}

impl Server {
    // ----- proposing -----

    /// Leader: an acquire or cancel that `propose_request` authenticated, found unsettled,
    /// of a live session and of this term. Appends it, unless its seq is in the log already,
    /// its lock is in its lock-delay (acquire), or its queue is full (acquire).
    pub(super) fn propose_queue_write(
        &mut self,
        now: Time,
        route: ReplyRoute,
        (client, seq): (ClientId, u64),
        (kind, lock, claim): (WriteKind, LockName, Claim),
        wait_ms: u64,
    ) {
        assert!(
            matches!(kind, WriteKind::Acquire | WriteKind::Cancel),
            "{}: {kind:?} is not a queue write",
            self.config.id
        );
        match self.queue_write_in_log(client, seq, (kind, claim), &lock) {
            Some(InLog::Same(index)) => {
                self.coverage.hit(Branch::QueueRetryFoundInLog);
                self.pending_replies
                    .entry(index)
                    .or_default()
                    .push((route, seq));
                return;
            }
            Some(InLog::Other) => {
                self.coverage.hit(Branch::QueueSeqReused);
                let body = ReplyBody::Error(ServiceError::SeqReused { seq });
                self.reply(route, seq, body);
                return;
            }
            None => {}
        }
        let mut promptness = Promptness::Prompt;
        let command = if kind == WriteKind::Acquire {
            let projection = self.projected_owner(client, seq, &lock, claim);
            let free = matches!(projection, Projection::Free);
            // Behind another holder, an exclusive acquire that may wait queues: nobody waits
            // for its commit. (One that may not wait is refused at its commit.)
            if matches!(projection, Projection::Owner(owner) if owner != client)
                && claim.is_default()
                && wait_ms > 0
            {
                promptness = Promptness::Queues;
            }
            // A shared claim may fit beside holders, so it is gated whenever the lock (or a
            // unit of it) is in its lock-delay, not only when the lock looks free.
            let gated = free || !claim.is_default();
            if gated && let Some(remaining) = self.lock_delay_remaining(&lock, now) {
                // As for a preempt: a lock freed by expiry goes to nobody new during its
                // delay. Its waiters keep their places; this client retries the same seq.
                self.coverage.hit(Branch::QueueLockDelayed);
                let body = self.lock_delayed(remaining);
                self.reply(route, seq, body);
                return;
            }
            if self.table.waiters(&lock).count() >= QUEUE_WAITERS_PER_LOCK_MAX
                && self.table.waiting_for(client) != Some(&lock)
            {
                self.coverage.hit(Branch::QueueFull);
                let waiters_max = QUEUE_WAITERS_PER_LOCK_MAX as u32;
                let body = ReplyBody::Error(ServiceError::QueueFull { waiters_max });
                self.reply(route, seq, body);
                return;
            }
            Command::Acquire {
                client,
                seq,
                lock,
                wait_ms,
                claim,
            }
        } else {
            Command::Cancel { client, seq, lock }
        };
        self.append_request_with(route, seq, command, promptness);
    }

    /// Whether the unapplied log holds (`client`, `seq`): as this very request, or as another.
    /// Scans at most the uncommitted entries, which `uncommitted_entries_max` bounds.
    /// A copy with another claim (mode or permits) is another request: answering it with that
    /// entry's outcome would tell a writer it holds a lock granted to a reader.
    fn queue_write_in_log(
        &self,
        client: ClientId,
        seq: u64,
        (kind, claim): (WriteKind, Claim),
        lock: &LockName,
    ) -> Option<InLog> {
        self.log
            .entries_after(self.table.applied_index())
            .find_map(|(index, entry)| {
                let (c, s, entry_kind, entry_lock) = entry.command.client_write()?;
                ((c, s) == (client, seq)).then(|| {
                    let same_claim = entry.command.claim_or_default() == claim;
                    if entry_kind == kind && entry_lock == lock && same_claim {
                        InLog::Same(index)
                    } else {
                        InLog::Other
                    }
                })
            })
    }

    // ----- answering -----

    /// Answers `body` to a write, unless it says `queued`: then the answer waits for the
    /// waiter's decision (parked, replacing an older copy's route). A `queued` record of a
    /// client no longer waiting is one whose session expired while it waited.
    pub(super) fn answer_or_park(
        &mut self,
        route: ReplyRoute,
        (client, seq): (ClientId, u64),
        body: ReplyBody,
        index: LogIndex,
    ) {
        if body != ReplyBody::Outcome(Outcome::Queued) {
            self.reply_at(route, seq, body, index);
        } else if self.table.waiting_for(client).is_none() {
            let body = ReplyBody::Error(ServiceError::SessionExpired { client });
            self.reply(route, seq, body);
        } else if self.role == Role::Leader {
            self.queues.parked.insert(client, Parked { route, seq });
        }
        // A follower never parks: it forwards writes, and only the leader answers them.
    }

    /// Every server, after applying the entry at `index`: reports the waiters it decided
    /// (`Woken`, informational, after `Applied`). The leader also answers their parked
    /// requests, the new holder only woken by a grant, and keeps its wait deadlines.
    pub(super) fn on_queue_entry_applied(&mut self, index: LogIndex, command: &Command, now: Time) {
        let woken: Vec<Woken> = self.table.last_woken().to_vec();
        for decided in &woken {
            self.out.push(super::ServerOutput::Woken {
                index,
                woken: decided.clone(),
            });
        }
        if self.role != Role::Leader {
            return;
        }
        for decided in &woken {
            self.coverage.hit(match decided.decision {
                Decision::Granted { .. } => Branch::QueueWaiterGranted,
                Decision::TimedOut => Branch::QueueWaiterTimedOut,
                Decision::Cancelled => Branch::QueueWaiterCancelled,
                Decision::SessionExpired => Branch::QueueWaiterExpired,
            });
        }
        // Every waiter leaves its queue through a decision the table wakes it with, its
        // timeout's included: this is where its deadline goes. (A timeout that applies to
        // nothing found its waiter decided earlier, and the deadline gone with it.)
        for decided in woken {
            if self
                .queues
                .deadlines
                .get(&decided.client)
                .is_some_and(|d| d.seq == decided.seq)
            {
                self.queues.deadlines.remove(&decided.client);
            }
            // The same entry may have parked the client's newer acquire: leave that one.
            let parked = self.queues.parked.get(&decided.client).copied();
            let Some(parked) = parked.filter(|parked| parked.seq == decided.seq) else {
                continue;
            };
            self.queues.parked.remove(&decided.client);
            let body = match decided.decision {
                Decision::Granted { token } => ReplyBody::Outcome(Outcome::Granted { token }),
                Decision::TimedOut => ReplyBody::Outcome(Outcome::TimedOut),
                Decision::Cancelled => ReplyBody::Outcome(Outcome::Cancelled),
                Decision::SessionExpired => ReplyBody::Error(ServiceError::SessionExpired {
                    client: decided.client,
                }),
            };
            self.reply_at(parked.route, parked.seq, body, index);
        }
        match command {
            Command::HandOver { lock } => {
                self.queues.hand_overs_appended.remove(lock);
            }
            // A new waiter (a duplicate entry of a waiting acquire keeps its first deadline).
            // The waiter must be this entry's: an acquire under an older seq applies to nothing
            // (stale) while the client waits on the same lock under a newer one, whose
            // deadline stays (explorer seed 324037).
            Command::Acquire {
                client,
                seq,
                lock,
                wait_ms,
                ..
            } if self.queues.ready
                && self
                    .table
                    .waiter_of(*client)
                    .is_some_and(|(waits_for, waiter)| waits_for == lock && waiter.seq == *seq)
                && self
                    .queues
                    .deadlines
                    .get(client)
                    .is_none_or(|d| d.seq != *seq) =>
            {
                let at = now + stretch(Duration::from_millis(*wait_ms), self.drift());
                let deadline = WaitDeadline {
                    seq: *seq,
                    lock: lock.clone(),
                    at,
                    timeout_appended: false,
                };
                self.queues.deadlines.insert(*client, deadline);
            }
            // An expiry frees locks that may have waiters: look at once, not a heartbeat later.
            Command::Expire { .. } => self.queues.next_tick = now,
            _ => {}
        }
    }

    fn drift(&self) -> f64 {
        self.config.max_clock_drift
    }

    // ----- leadership -----

    /// Leadership lost: parked answers are dropped (their clients retry the same seq and find
    /// their place at the next leader), and deadlines are forgotten. A new leader starts from
    /// what this left (the invariants hold every non-leader to it): nothing tracked until its
    /// own no-op is applied.
    pub(super) fn queues_on_abdication(&mut self) {
        self.queues = QueueState::default();
    }

    /// Leader, after applying, once its sessions are ready (its no-op applied): every
    /// inherited waiter's wait restarts now. Never early: the waiter enqueued before now.
    pub(super) fn maybe_ready_queues(&mut self, now: Time) {
        if self.role != Role::Leader || self.queues.ready || !self.sessions_ready() {
            return;
        }
        self.queues.ready = true;
        self.queues.next_tick = now;
        if !self.table.queues().is_empty() {
            self.coverage.hit(Branch::QueueWaitsRestarted);
        }
        let drift = self.drift();
        for (lock, queue) in self.table.queues() {
            for waiter in queue {
                let at = now + stretch(Duration::from_millis(waiter.wait_ms), drift);
                let deadline = WaitDeadline {
                    seq: waiter.seq,
                    lock: lock.clone(),
                    at,
                    timeout_appended: false,
                };
                self.queues.deadlines.insert(waiter.client, deadline);
            }
        }
    }

    // ----- the leader's look: timeouts and hand-overs after expiry -----

    /// Leader, at every step but at most once per heartbeat interval (or at once after an
    /// expiry applied): appends a `Timeout` for every waiter past its deadline, and a
    /// `HandOver` for every free lock with waiters whose lock-delay passed.
    pub(super) fn tick_queues(&mut self, now: Time) {
        if self.role != Role::Leader || !self.queues.ready || now < self.queues.next_tick {
            return;
        }
        self.queues.next_tick = now + self.config.heartbeat_interval;
        let due: Vec<(ClientId, u64, LockName)> = self
            .queues
            .deadlines
            .iter()
            .filter(|(_, d)| !d.timeout_appended && now >= d.at)
            .map(|(&client, d)| (client, d.seq, d.lock.clone()))
            .take(QUEUE_ENTRIES_PER_TICK_MAX)
            .collect();
        for (client, seq, lock) in due {
            if self
                .append_session_entry(Command::Timeout { client, seq, lock })
                .is_none()
            {
                return;
            }
            self.coverage.hit(Branch::QueueTimeoutAppended);
            // A cluster of one applies the timeout as it appends it, which drops the deadline.
            if let Some(deadline) = self.queues.deadlines.get_mut(&client) {
                deadline.timeout_appended = true;
            }
        }
        let free_with_waiters: Vec<LockName> = self
            .table
            .queues()
            .keys()
            .filter(|lock| self.table.head_fits(lock))
            .filter(|lock| !self.queues.hand_overs_appended.contains(*lock))
            .filter(|lock| self.lock_delay_remaining(lock, now).is_none())
            .take(QUEUE_ENTRIES_PER_TICK_MAX)
            .cloned()
            .collect();
        for lock in free_with_waiters {
            let command = Command::HandOver { lock: lock.clone() };
            if self.append_session_entry(command).is_none() {
                return;
            }
            self.coverage.hit(Branch::QueueHandOverAppended);
            if self.table.head_fits(&lock) {
                self.queues.hand_overs_appended.insert(lock);
            }
        }
    }

    pub(super) fn check_queue_state_invariants(&self) {
        let id = self.config.id;
        if self.role != Role::Leader {
            assert!(
                self.queues.parked.is_empty() && self.queues.deadlines.is_empty(),
                "{id}: a non-leader keeps parked acquires or wait deadlines"
            );
            assert!(
                !self.queues.ready && self.queues.hand_overs_appended.is_empty(),
                "{id}: a non-leader keeps its queues ready or hand-overs in flight"
            );
        }
        // Pair assertion with `answer_or_park`: a parked answer belongs to a waiter in the
        // table, with the same seq.
        for (client, parked) in &self.queues.parked {
            let waiter_seq = self.table.waiter_of(*client).map(|(_, waiter)| waiter.seq);
            assert_eq!(
                waiter_seq,
                Some(parked.seq),
                "{id}: parks an answer for {client}, which is not waiting with that seq"
            );
        }
        for (client, deadline) in &self.queues.deadlines {
            assert!(
                deadline.timeout_appended
                    || self.table.waiting_for(*client) == Some(&deadline.lock),
                "{id}: keeps a wait deadline for {client}, which does not wait"
            );
        }
    }
}

#[cfg(test)]
mod invariant_tests {
    use super::*;
    use crate::node::{DurableState, ServerConfig, ServerId, ServerInput, ServerTimer};

    /// The queue state is the leader's alone, and every step checks it: a wait deadline kept
    /// by a follower cannot be made by any input, so the story plants one in a follower's
    /// private state, and its next step, whatever it is, panics naming the broken rule.
    /// (Mutant: `Server::check_queue_state_invariants` made `()`.)
    #[test]
    #[should_panic(expected = "s2: a non-leader keeps parked acquires or wait deadlines")]
    fn a_follower_planted_with_a_wait_deadline_panics_at_its_next_step() {
        let servers = vec![ServerId(1), ServerId(2), ServerId(3)];
        let config = ServerConfig::new(ServerId(2), servers);
        let (mut follower, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
        let planted = WaitDeadline {
            seq: 1,
            lock: "a".into(),
            at: Time::ZERO,
            timeout_appended: false,
        };
        follower.queues.deadlines.insert(ClientId(9), planted);
        let _ = follower.step(Time::ZERO, ServerInput::Timer(ServerTimer::Heartbeat));
    }
}

#[cfg(test)]
mod wait_bound_tests {
    use super::*;
    use crate::node::ClientSecret;

    fn acquire(wait_ms: u64) -> ClientRequest {
        ClientRequest {
            seq: 3,
            seen_index: 0,
            term: 1,
            body: RequestBody::Op {
                client: ClientId(7),
                secret: Some(ClientSecret::from_bytes([7; 16])),
                op: Operation::Acquire {
                    lock: "a".into(),
                    wait_ms,
                    claim: Claim::EXCLUSIVE,
                },
            },
        }
    }

    #[test]
    fn a_wait_up_to_an_hour_passes_and_one_millisecond_more_is_refused_naming_the_bound() {
        assert_eq!(bad_wait(&acquire(0)), None);
        assert_eq!(bad_wait(&acquire(ACQUIRE_WAIT_MS_MAX)), None);
        let refused = bad_wait(&acquire(ACQUIRE_WAIT_MS_MAX + 1)).expect("over the bound");
        assert!(refused.contains("at most 3600000 ms"), "{refused}");
        assert!(bad_wait(&acquire(u64::MAX)).is_some());
    }
}
