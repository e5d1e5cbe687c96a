//! The replicated state machine: the lock map (lock name -> owner and fencing token), the
//! per-client deduplication table, and the client id allocator.
//!
//! Every server applies the same committed commands in the same order, so every replica's table
//! is a pure function of the applied log prefix. It must never read anything but its input:
//! no time, no randomness, no server-local state.

use super::messages::{ApplyResult, ClientId, Command, LockName, LogIndex, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who holds a lock, and the fencing token of that grant.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Holder {
    pub owner: ClientId,
    /// Log index of the grant.
    pub token: LogIndex,
}

/// The last request applied for one client. Clients run one operation at a time, so the last
/// one is all that deduplication needs (Raft thesis §6.3).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Session {
    pub last_seq: u64,
    pub last_outcome: Outcome,
}

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<LockName, Holder>,
    sessions: BTreeMap<ClientId, Session>,
    /// The highest client id handed out so far; ids start at 1.
    last_client_id: u64,
    applied_index: LogIndex,
    /// Order-independent digest of `locks`, kept up to date on every change so that replicas can
    /// be compared in O(1).
    locks_digest: u64,
}

impl LockTable {
    pub fn new() -> LockTable {
        LockTable::default()
    }

    /// Applies the committed command at `index`.
    ///
    /// Contract: `index` MUST be exactly one past the last applied index. Applying out of order
    /// is a bug in the caller and panics.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> ApplyResult {
        assert_eq!(
            index,
            self.applied_index + 1,
            "lock table: applying index {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
        let result = match command {
            Command::Noop => ApplyResult::Nothing,
            Command::Register { .. } => {
                self.last_client_id += 1;
                ApplyResult::Registered {
                    client: ClientId(self.last_client_id),
                }
            }
            Command::Preempt { client, seq, lock } => {
                self.deduplicated(*client, *seq, |table| table.preempt(*client, lock, index))
            }
            Command::Release { client, seq, lock } => {
                self.deduplicated(*client, *seq, |table| table.release(*client, lock))
            }
        };
        let touched = match command {
            Command::Preempt { lock, .. } | Command::Release { lock, .. } => Some(lock),
            Command::Noop | Command::Register { .. } => None,
        };
        self.check_invariants(touched);
        result
    }

    /// Runs `decide` only for a request newer than the client's last applied one, and remembers
    /// its outcome; a retry of the last request gets that same outcome back.
    fn deduplicated(
        &mut self,
        client: ClientId,
        seq: u64,
        decide: impl FnOnce(&mut LockTable) -> Outcome,
    ) -> ApplyResult {
        if let Some(session) = self.sessions.get(&client) {
            if seq == session.last_seq {
                return ApplyResult::Outcome {
                    outcome: session.last_outcome,
                    duplicate: true,
                };
            }
            if seq < session.last_seq {
                return ApplyResult::Stale;
            }
        }
        let outcome = decide(self);
        self.sessions.insert(
            client,
            Session {
                last_seq: seq,
                last_outcome: outcome,
            },
        );
        ApplyResult::Outcome {
            outcome,
            duplicate: false,
        }
    }

    fn preempt(&mut self, client: ClientId, lock: &LockName, index: LogIndex) -> Outcome {
        match self.locks.get(lock) {
            // Preempting a lock you hold is idempotent: same token.
            Some(holder) if holder.owner == client => Outcome::Granted {
                token: holder.token,
            },
            Some(holder) => Outcome::HeldBy {
                owner: holder.owner,
            },
            None => {
                let holder = Holder {
                    owner: client,
                    token: index,
                };
                self.locks_digest ^= holder_digest(lock, &holder);
                self.locks.insert(lock.clone(), holder);
                Outcome::Granted { token: index }
            }
        }
    }

    fn release(&mut self, client: ClientId, lock: &LockName) -> Outcome {
        match self.locks.get(lock) {
            Some(holder) if holder.owner == client => {
                self.locks_digest ^= holder_digest(lock, holder);
                self.locks.remove(lock);
                Outcome::Released
            }
            _ => Outcome::NotOwner,
        }
    }

    /// Answers a check from this replica's applied state.
    pub fn check(&self, lock: &str) -> Outcome {
        match self.locks.get(lock) {
            Some(holder) => Outcome::Owner {
                owner: holder.owner,
                token: holder.token,
            },
            None => Outcome::Free,
        }
    }

    pub fn holder(&self, lock: &str) -> Option<Holder> {
        self.locks.get(lock).copied()
    }

    /// The outcome already decided for `(client, seq)`, if that was the client's last request.
    pub fn cached_outcome(&self, client: ClientId, seq: u64) -> Option<Outcome> {
        self.sessions
            .get(&client)
            .filter(|session| session.last_seq == seq)
            .map(|session| session.last_outcome)
    }

    /// True if the client already had a newer request applied than `seq`.
    pub fn is_stale(&self, client: ClientId, seq: u64) -> bool {
        self.sessions
            .get(&client)
            .is_some_and(|session| seq < session.last_seq)
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// All held locks, in name order.
    pub fn locks(&self) -> &BTreeMap<LockName, Holder> {
        &self.locks
    }

    /// Digest of the lock map alone (not sessions): equal maps have equal digests.
    pub fn locks_digest(&self) -> u64 {
        self.locks_digest
    }

    pub fn client_count(&self) -> u64 {
        self.last_client_id
    }

    /// Checks the one lock a command touched (checking every lock on every apply would make
    /// applying O(locks)), plus the table-wide digest in debug builds.
    fn check_invariants(&self, touched: Option<&LockName>) {
        if let Some((lock, holder)) = touched.and_then(|lock| self.locks.get_key_value(lock)) {
            assert!(
                holder.token <= self.applied_index,
                "lock table: {lock} has token {} beyond applied index {}",
                holder.token,
                self.applied_index
            );
            assert!(
                holder.owner.0 >= 1 && holder.owner.0 <= self.last_client_id,
                "lock table: {lock} is owned by unregistered {}",
                holder.owner
            );
        }
        debug_assert_eq!(
            self.locks_digest,
            self.locks
                .iter()
                .fold(0, |acc, (lock, holder)| acc ^ holder_digest(lock, holder)),
            "lock table: incremental digest drifted from the map"
        );
    }
}

/// A stable 64-bit hash of one map entry (FNV-1a, then a SplitMix64 finaliser). Stable across
/// runs and platforms, unlike `std`'s randomly keyed hasher.
fn holder_digest(lock: &str, holder: &Holder) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = lock
        .bytes()
        .chain(holder.owner.0.to_le_bytes())
        .chain(holder.token.to_le_bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(name: &str) -> LockName {
        LockName::from(name)
    }

    fn preempt(client: u64, seq: u64, name: &str) -> Command {
        Command::Preempt {
            client: ClientId(client),
            seq,
            lock: lock(name),
        }
    }

    fn release(client: u64, seq: u64, name: &str) -> Command {
        Command::Release {
            client: ClientId(client),
            seq,
            lock: lock(name),
        }
    }

    fn outcome(result: ApplyResult) -> Outcome {
        match result {
            ApplyResult::Outcome { outcome, .. } => outcome,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    /// Two registered clients, c1 = client#1 and c2 = client#2, at indexes 1 and 2.
    fn table_with_two_clients() -> LockTable {
        let mut table = LockTable::new();
        assert_eq!(
            table.apply(1, &Command::Register { nonce: 7 }),
            ApplyResult::Registered {
                client: ClientId(1)
            }
        );
        assert_eq!(
            table.apply(2, &Command::Register { nonce: 7 }),
            ApplyResult::Registered {
                client: ClientId(2)
            }
        );
        table
    }

    #[test]
    fn preempt_grants_a_free_lock_with_its_log_index_as_token_and_refuses_others() {
        let mut table = table_with_two_clients();
        assert_eq!(
            outcome(table.apply(3, &preempt(1, 1, "a"))),
            Outcome::Granted { token: 3 }
        );
        assert_eq!(
            outcome(table.apply(4, &preempt(2, 1, "a"))),
            Outcome::HeldBy { owner: ClientId(1) }
        );
        // c1 preempting again (a new request) succeeds idempotently with the same token.
        assert_eq!(
            outcome(table.apply(5, &preempt(1, 2, "a"))),
            Outcome::Granted { token: 3 }
        );
        assert_eq!(
            table.check("a"),
            Outcome::Owner {
                owner: ClientId(1),
                token: 3
            }
        );
        assert_eq!(table.check("b"), Outcome::Free);
    }

    /// Leaders refuse most preempts of held locks with a read, so the log rarely carries one
    /// and the simulator rarely applies one; this table is where that branch is pinned down:
    /// however many preempts of a held lock are applied, at whatever index, none is granted.
    #[test]
    fn a_held_lock_refuses_every_other_preempt_whatever_its_index() {
        let mut table = table_with_two_clients();
        assert_eq!(
            outcome(table.apply(3, &preempt(1, 1, "a"))),
            Outcome::Granted { token: 3 }
        );
        let digest = table.locks_digest();
        for (seq, index) in (4..=67).enumerate() {
            assert_eq!(
                outcome(table.apply(index, &preempt(2, seq as u64 + 1, "a"))),
                Outcome::HeldBy { owner: ClientId(1) },
                "preempt applied at index {index}"
            );
        }
        assert_eq!(table.locks_digest(), digest, "the lock map never changed");
        assert_eq!(
            table.check("a"),
            Outcome::Owner {
                owner: ClientId(1),
                token: 3
            }
        );
    }

    #[test]
    fn only_the_owner_can_release_and_the_next_grant_gets_a_larger_token() {
        let mut table = table_with_two_clients();
        assert_eq!(
            outcome(table.apply(3, &preempt(1, 1, "a"))),
            Outcome::Granted { token: 3 }
        );
        assert_eq!(
            outcome(table.apply(4, &release(2, 1, "a"))),
            Outcome::NotOwner
        );
        assert_eq!(
            outcome(table.apply(5, &release(1, 2, "a"))),
            Outcome::Released
        );
        assert_eq!(
            outcome(table.apply(6, &release(1, 3, "a"))),
            Outcome::NotOwner
        );
        assert_eq!(
            outcome(table.apply(7, &preempt(2, 2, "a"))),
            Outcome::Granted { token: 7 }
        );
    }

    #[test]
    fn a_retried_request_gets_the_original_answer_and_applies_once() {
        let mut table = table_with_two_clients();
        assert_eq!(
            outcome(table.apply(3, &preempt(1, 1, "a"))),
            Outcome::Granted { token: 3 }
        );
        assert_eq!(
            outcome(table.apply(4, &release(1, 2, "a"))),
            Outcome::Released
        );
        // The release's retry arrives again: same answer, flagged duplicate, nothing changes.
        let retried = table.apply(5, &release(1, 2, "a"));
        assert_eq!(
            retried,
            ApplyResult::Outcome {
                outcome: Outcome::Released,
                duplicate: true
            }
        );
        // A late copy of the first preempt is older than the last applied request: no effect.
        assert_eq!(table.apply(6, &preempt(1, 1, "a")), ApplyResult::Stale);
        assert_eq!(table.check("a"), Outcome::Free);
        assert_eq!(
            table.cached_outcome(ClientId(1), 2),
            Some(Outcome::Released)
        );
        assert!(table.is_stale(ClientId(1), 1));
    }

    #[test]
    fn equal_lock_maps_have_equal_digests_whatever_the_history() {
        let mut left = table_with_two_clients();
        let mut right = table_with_two_clients();
        assert_eq!(
            outcome(left.apply(3, &preempt(1, 1, "a"))),
            Outcome::Granted { token: 3 }
        );
        assert_eq!(
            outcome(left.apply(4, &release(1, 2, "a"))),
            Outcome::Released
        );
        assert_eq!(left.apply(3 + 2, &Command::Noop), ApplyResult::Nothing);
        assert_eq!(right.apply(3, &Command::Noop), ApplyResult::Nothing);
        assert_eq!(right.apply(4, &Command::Noop), ApplyResult::Nothing);
        assert_eq!(right.apply(5, &Command::Noop), ApplyResult::Nothing);
        assert_eq!(left.locks_digest(), right.locks_digest());
        assert_eq!(
            outcome(right.apply(6, &preempt(2, 1, "a"))),
            Outcome::Granted { token: 6 }
        );
        assert_ne!(left.locks_digest(), right.locks_digest());
    }

    #[test]
    #[should_panic(expected = "applying index 5 after 2")]
    fn applying_out_of_order_is_a_bug_and_panics() {
        let mut table = table_with_two_clients();
        let _ = table.apply(5, &Command::Noop);
    }
}
