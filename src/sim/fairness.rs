//! The reference model of the blocking acquire's FIFO queues, and the two checkers that judge
//! the cluster's queue decisions against it (docs/design.md, "Fair blocking acquire"):
//! - `fifo_fairness`: grants go to waiters in the order their `Acquire` entries committed,
//!   with no waiter skipped;
//! - `no_grant_after_expiry`: no grant to a session already expired, or to a waiter already
//!   timed out or cancelled.
//!
//! The model is built from committed commands alone, by `MutualExclusion`, which owns the lock
//! holders; it never reads a server's lock table. Every server reports the waiters each entry
//! decided (`ServerOutput::Woken`); each report must be one the model decided at that index.

use super::checkers::Violation;
use crate::node::{ClientId, Decision, LockName, LogIndex, Mode, Time, Woken};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Grants go to waiters in the order their enqueue entries committed, none skipped.
pub const FIFO_FAIRNESS: &str = "fifo_fairness";
/// No grant to a session already expired or a waiter already timed out or cancelled.
pub const NO_GRANT_AFTER_EXPIRY: &str = "no_grant_after_expiry";
/// Once the run settles (faults healed, clients idle), every waiter was granted, timed out,
/// cancelled or expired: none is left in a queue.
pub const WAITERS_DECIDED: &str = "waiters_decided";

/// One waiter in the model: the acquire `(client, seq)` and the index it committed at.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ModelWaiter {
    pub client: ClientId,
    pub seq: u64,
    pub enqueued_at: LogIndex,
    /// The mode it will hold the lock in: a run of shared heads is granted together.
    pub mode: Mode,
}

/// The model's queues and the decisions it made.
///
/// Calling contract: `MutualExclusion` changes it as it models each committed entry, in log
/// order; the cluster feeds every server's `Woken` report to [`QueueModel::observe_woken`]
/// after that index was committed (the first `Applied` of it anywhere comes first).
#[derive(Clone, Debug, Default)]
pub struct QueueModel {
    queues: BTreeMap<LockName, VecDeque<ModelWaiter>>,
    /// The lock each waiting client waits for.
    waiting: BTreeMap<ClientId, LockName>,
    /// The decisions the model made at each index. Every report must be among them.
    decided: BTreeMap<LogIndex, Vec<Woken>>,
    /// Acquires that left their queue without a grant: none of them may ever be granted.
    ended: BTreeMap<(ClientId, u64), (LogIndex, Decision)>,
    /// Clients whose session expired.
    expired: BTreeSet<ClientId>,
}

impl QueueModel {
    pub fn head(&self, lock: &str) -> Option<ModelWaiter> {
        self.queues
            .get(lock)
            .and_then(|queue| queue.front())
            .copied()
    }

    pub fn len(&self, lock: &str) -> usize {
        self.queues.get(lock).map_or(0, VecDeque::len)
    }

    /// Whether any client ever waited in a queue (runs without acquires judge nothing here).
    pub fn ever_used(&self) -> bool {
        !self.waiting.is_empty() || !self.decided.is_empty()
    }

    /// How many clients wait, in all queues.
    pub fn waiter_count(&self) -> usize {
        self.waiting.len()
    }

    /// Every waiter, for the liveness report: (lock, waiter), in lock then queue order.
    pub fn waiters(&self) -> Vec<(LockName, ModelWaiter)> {
        self.queues
            .iter()
            .flat_map(|(lock, queue)| queue.iter().map(move |w| (lock.clone(), *w)))
            .collect()
    }

    pub fn enqueue(&mut self, lock: &LockName, waiter: ModelWaiter) {
        assert!(
            self.waiting.insert(waiter.client, lock.clone()).is_none(),
            "queue model: {} enqueued while waiting",
            waiter.client
        );
        self.queues
            .entry(lock.clone())
            .or_default()
            .push_back(waiter);
    }

    /// Removes `client`'s waiter with `decision` at `index`; returns its lock and seq. The
    /// head, for a grant; any position otherwise.
    pub fn decide(
        &mut self,
        client: ClientId,
        decision: Decision,
        index: LogIndex,
    ) -> Option<(LockName, u64)> {
        let lock = self.waiting.remove(&client)?;
        let queue = self
            .queues
            .get_mut(&lock)
            .expect("a waiting client's lock has a queue");
        let position = queue
            .iter()
            .position(|waiter| waiter.client == client)
            .expect("a waiting client is in its queue");
        let waiter = queue.remove(position).expect("found just above");
        if queue.is_empty() {
            self.queues.remove(&lock);
        }
        if !matches!(decision, Decision::Granted { .. }) {
            self.ended.insert((client, waiter.seq), (index, decision));
        }
        if decision == Decision::SessionExpired {
            self.expired.insert(client);
        }
        self.decided.entry(index).or_default().push(Woken {
            client,
            seq: waiter.seq,
            lock: lock.clone(),
            decision,
        });
        Some((lock, waiter.seq))
    }

    /// A session ended (whether or not it waited): none of its acquires may be granted after.
    pub fn note_expired(&mut self, client: ClientId) {
        self.expired.insert(client);
    }

    /// The lock `client` waits for, with its acquire's seq.
    pub fn waiting_for(&self, client: ClientId) -> Option<(LockName, u64)> {
        let lock = self.waiting.get(&client)?;
        let seq = self.queues[lock]
            .iter()
            .find(|waiter| waiter.client == client)
            .expect("indexed waiter is queued")
            .seq;
        Some((lock.clone(), seq))
    }

    /// One server's report that the entry at `index` decided `woken`.
    pub fn observe_woken(
        &self,
        now: Time,
        index: LogIndex,
        woken: &Woken,
    ) -> Result<(), Violation> {
        let Woken {
            client,
            seq,
            lock,
            decision,
        } = woken;
        if let Decision::Granted { token } = decision {
            if let Some((ended_at, why)) = self.ended.get(&(*client, *seq))
                && *ended_at < index
            {
                let message = format!(
                    "index {index} granted lock `{lock}` (token {token}) to {client} seq {seq}, \
                     whose wait already ended at index {ended_at} ({why:?})"
                );
                return Err(Violation::new(NO_GRANT_AFTER_EXPIRY, now, message));
            }
            if self.expired.contains(client) && !self.is_decided(index, woken) {
                let message = format!(
                    "index {index} granted lock `{lock}` (token {token}) to {client} seq {seq}, \
                     whose session had already expired"
                );
                return Err(Violation::new(NO_GRANT_AFTER_EXPIRY, now, message));
            }
        }
        if self.is_decided(index, woken) {
            return Ok(());
        }
        let expected = self.decided.get(&index).map_or_else(
            || "no decision".to_string(),
            |decisions| describe(decisions),
        );
        let message = format!(
            "index {index} decided {decision:?} for {client} seq {seq} waiting on lock `{lock}`, \
             but by the committed order of the queue the model decided {expected}"
        );
        Err(Violation::new(FIFO_FAIRNESS, now, message))
    }

    /// The liveness half, at the end of a settled run: no waiter is left.
    pub fn check_all_decided(&self, now: Time) -> Result<(), Violation> {
        let left = self.waiters();
        let Some((lock, first)) = left.first() else {
            return Ok(());
        };
        let message = format!(
            "{} waiter(s) still queued after the run settled, first {} seq {} on lock `{lock}` \
             (enqueued at index {}): every waiter must be granted, time out or be cancelled",
            left.len(),
            first.client,
            first.seq,
            first.enqueued_at
        );
        Err(Violation::new(WAITERS_DECIDED, now, message))
    }

    fn is_decided(&self, index: LogIndex, woken: &Woken) -> bool {
        self.decided
            .get(&index)
            .is_some_and(|decisions| decisions.contains(woken))
    }
}

fn describe(decisions: &[Woken]) -> String {
    let parts: Vec<String> = decisions
        .iter()
        .map(|w| {
            let decision = match w.decision {
                Decision::Granted { token } => format!("granted (token {token})"),
                Decision::TimedOut => "timed_out".to_string(),
                Decision::Cancelled => "cancelled".to_string(),
                Decision::SessionExpired => "session_expired".to_string(),
            };
            format!("{decision} for {} seq {} on `{}`", w.client, w.seq, w.lock)
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(client: u64, seq: u64, enqueued_at: LogIndex) -> ModelWaiter {
        ModelWaiter {
            client: ClientId(client),
            seq,
            enqueued_at,
            mode: Mode::Exclusive,
        }
    }

    fn granted(client: u64, seq: u64, token: LogIndex) -> Woken {
        Woken {
            client: ClientId(client),
            seq,
            lock: LockName::from("a"),
            decision: Decision::Granted { token },
        }
    }

    /// Two waiters queued in commit order c2 then c3; the release at 10 must wake c2. A
    /// cluster that wakes c3 (LIFO) is caught, and the right report passes.
    #[test]
    fn fifo_fairness_catches_a_grant_to_the_tail_instead_of_the_head() {
        let mut model = QueueModel::default();
        let lock = LockName::from("a");
        model.enqueue(&lock, waiter(2, 1, 5));
        model.enqueue(&lock, waiter(3, 1, 6));
        let (decided_lock, seq) = model
            .decide(ClientId(2), Decision::Granted { token: 10 }, 10)
            .expect("c2 waits");
        assert_eq!((decided_lock, seq), (lock.clone(), 1));
        let at = Time::from_nanos(1_000_000);
        let violation = model
            .observe_woken(at, 10, &granted(3, 1, 10))
            .expect_err("the tail was granted before the head");
        assert_eq!(violation.invariant, FIFO_FAIRNESS);
        assert!(
            violation.message.contains("client#3"),
            "{}",
            violation.message
        );
        assert_eq!(model.observe_woken(at, 10, &granted(2, 1, 10)), Ok(()));
        assert_eq!(model.head("a"), Some(waiter(3, 1, 6)));
    }

    /// A waiter timed out at index 8 is granted at index 9 by a faulty cluster: caught. So is
    /// a grant to a client whose session the model saw expire.
    #[test]
    fn no_grant_after_expiry_catches_grants_to_timed_out_waiters_and_expired_sessions() {
        let mut model = QueueModel::default();
        let lock = LockName::from("a");
        model.enqueue(&lock, waiter(2, 4, 5));
        model.enqueue(&lock, waiter(3, 7, 6));
        assert!(model.decide(ClientId(2), Decision::TimedOut, 8).is_some());
        assert!(
            model
                .decide(ClientId(3), Decision::SessionExpired, 9)
                .is_some()
        );
        let at = Time::from_nanos(1_000_000);
        let late = model
            .observe_woken(at, 9, &granted(2, 4, 9))
            .expect_err("granted after its timeout");
        assert_eq!(late.invariant, NO_GRANT_AFTER_EXPIRY);
        let expired = model
            .observe_woken(at, 12, &granted(3, 7, 12))
            .expect_err("granted after its session expired");
        assert_eq!(expired.invariant, NO_GRANT_AFTER_EXPIRY);
        assert_eq!(model.waiter_count(), 0);
    }

    /// A waiter nobody decided by the end of a settled run is a liveness failure.
    #[test]
    fn waiters_decided_catches_a_waiter_left_in_its_queue() {
        let mut model = QueueModel::default();
        let at = Time::from_nanos(1_000_000);
        assert_eq!(model.check_all_decided(at), Ok(()));
        model.enqueue(&LockName::from("a"), waiter(4, 2, 9));
        let violation = model.check_all_decided(at).expect_err("c4 still waits");
        assert_eq!(violation.invariant, WAITERS_DECIDED);
        assert!(
            violation.message.contains("client#4 seq 2"),
            "{}",
            violation.message
        );
    }
}
