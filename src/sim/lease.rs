//! The `lease_safety` checker: at no true instant do two clients both believe they hold the
//! same lock.
//!
//! Mutual exclusion as the lock table sees it (`mutual_exclusion`) is not what users rely on:
//! they act on what their *client* believes. A client believes it holds a lock from the moment
//! its grant is acknowledged until it sends the release, learns it does not hold it, or stops
//! believing in its session (its lease ran out by its own clock and the client's lease rule,
//! `node::client::LeaseRule`, or a server said `session_expired`). Without a session TTL a
//! client believes in its session for ever. A violation is two such beliefs overlapping in
//! true time. It must never happen while every node's clock rate stays within the drift bound
//! the clients and servers are configured with; with drift beyond the bound it can, which is
//! what fencing tokens are for (`sim::resource`).
//!
//! Beliefs only begin at an acknowledged grant, so two belief intervals overlap exactly when
//! one begins inside the other: the checker looks at every other believer of the lock at the
//! instant a grant is acknowledged, asking the driver whether each still believes in its
//! session then.

use super::checkers::{LEASE_SAFETY, Violation};
use crate::node::{Claim, LockName, LogIndex, Mode, Time};
use std::collections::BTreeMap;

/// See the module documentation. Clients are the scenario's 1-based numbers.
#[derive(Clone, Debug, Default)]
pub struct LeaseSafety {
    /// (lock, client) -> the token of the grant the client believes it holds.
    believers: BTreeMap<(LockName, u32), LogIndex>,
    /// (lock, client) -> the claim of that grant, for believers of shared grants (absent:
    /// exclusive). Readers may believe together, up to the lock's permits.
    shared_beliefs: BTreeMap<(LockName, u32), Claim>,
}

impl LeaseSafety {
    /// `client`'s grant of `lock` with `token` was acknowledged at true time `now`.
    /// `believes_in_session(c)` says whether client `c` believes, at this instant and by its
    /// own clock, that its session lives. Every other client still believing it holds `lock`
    /// is a violation.
    pub fn observe_grant(
        &mut self,
        now: Time,
        client: u32,
        lock: &LockName,
        token: LogIndex,
        believes_in_session: impl Fn(u32) -> bool,
    ) -> Result<(), Violation> {
        let claim = Claim::EXCLUSIVE;
        self.observe_claimed_grant(now, (client, claim), lock, token, believes_in_session)
    }

    /// [`LeaseSafety::observe_grant`] for a grant of `claim`: a shared believer conflicts
    /// with an exclusive one, and with more shared believers than the lock's permits (docs/
    /// design.md, "Shared locks and semaphores"). A client told again about the grant it
    /// believes in keeps the mode it was granted in (a holder is never upgraded).
    pub fn observe_claimed_grant(
        &mut self,
        now: Time,
        (client, claim): (u32, Claim),
        lock: &LockName,
        token: LogIndex,
        believes_in_session: impl Fn(u32) -> bool,
    ) -> Result<(), Violation> {
        let key = (lock.clone(), client);
        let claim = match (self.believers.get(&key), self.shared_beliefs.get(&key)) {
            (Some(believed), Some(shared)) if *believed == token => *shared,
            (Some(believed), None) if *believed == token => Claim::EXCLUSIVE,
            _ => claim,
        };
        let others: Vec<(u32, LogIndex)> = self
            .believers
            .range((lock.clone(), 0)..=(lock.clone(), u32::MAX))
            .filter(|((_, other), _)| *other != client)
            .map(|((_, other), token)| (*other, *token))
            .collect();
        let mut verdict = Ok(());
        let mut shared_believers = 1;
        let mut permits = claim.permits;
        for (other, other_token) in others {
            let other_claim = self.shared_beliefs.get(&(lock.clone(), other)).copied();
            if believes_in_session(other)
                && claim.mode == Mode::Shared
                && let Some(other_claim) = other_claim
            {
                // Readers believe together; how many may is checked below.
                shared_believers += 1;
                permits = permits.or(other_claim.permits);
                continue;
            }
            if believes_in_session(other) {
                if verdict.is_ok() {
                    verdict = Err(Violation {
                        invariant: LEASE_SAFETY,
                        at: now,
                        message: format!(
                            "c{client} was granted `{lock}` (token {token}) while c{other} \
                             still believed it held `{lock}` (token {other_token}) and that its \
                             session lived"
                        ),
                    });
                }
                continue;
            }
            // It stopped believing in its session: none of its grants count any more.
            self.forget_client(other);
        }
        let capacity = Claim::capacity(permits);
        if verdict.is_ok() && shared_believers > capacity {
            verdict = Err(Violation {
                invariant: LEASE_SAFETY,
                at: now,
                message: format!(
                    "c{client} was granted `{lock}` (token {token}) in shared mode while \
                     {} other clients still believed they held it shared, with {capacity} \
                     allowed",
                    shared_believers - 1
                ),
            });
        }
        // The grant is believed either way: a run that expects this violation goes on.
        self.believers.insert(key.clone(), token);
        if claim.mode == Mode::Shared {
            self.shared_beliefs.insert(key, claim);
        } else {
            self.shared_beliefs.remove(&key);
        }
        verdict
    }

    /// `client` no longer believes it holds `lock`: it sent the release, or an answer told it
    /// someone else holds it or that it was not the owner.
    pub fn forget(&mut self, client: u32, lock: &LockName) {
        self.shared_beliefs.remove(&(lock.clone(), client));
        self.believers.remove(&(lock.clone(), client));
    }

    /// `client` no longer believes in its session, so in none of its locks.
    pub fn forget_client(&mut self, client: u32) {
        self.believers
            .retain(|(_, believer), _| *believer != client);
        self.shared_beliefs
            .retain(|(_, believer), _| *believer != client);
    }

    /// The token of the grant of `lock` that `client` believes it holds, if it believes so
    /// (its session aside, which the driver asks the client about).
    pub fn token_of(&self, client: u32, lock: &LockName) -> Option<LogIndex> {
        self.believers.get(&(lock.clone(), client)).copied()
    }

    /// How many (client, lock) beliefs are held now.
    pub fn beliefs(&self) -> usize {
        self.believers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> LockName {
        LockName::from("a")
    }

    #[test]
    fn readers_believe_together_but_a_writer_among_them_is_caught() {
        let mut checker = LeaseSafety::default();
        for (reader, token) in [(1, 5), (2, 6)] {
            checker
                .observe_claimed_grant(Time::ZERO, (reader, Claim::SHARED), &lock(), token, |_| {
                    true
                })
                .expect("readers share");
        }
        let violation = checker
            .observe_claimed_grant(Time::ZERO, (3, Claim::EXCLUSIVE), &lock(), 9, |_| true)
            .expect_err("a writer while readers believe");
        assert!(
            violation.message.contains("still believed"),
            "{violation:?}"
        );
    }

    #[test]
    fn one_believer_more_than_the_permits_is_caught() {
        let mut checker = LeaseSafety::default();
        let permit = Claim::semaphore(2);
        for (client, token) in [(1, 5), (2, 6)] {
            checker
                .observe_claimed_grant(Time::ZERO, (client, permit), &lock(), token, |_| true)
                .expect("two permits");
        }
        let violation = checker
            .observe_claimed_grant(Time::ZERO, (3, permit), &lock(), 7, |_| true)
            .expect_err("a third holder of two permits");
        assert!(violation.message.contains("2 allowed"), "{violation:?}");
        checker.forget(1, &lock());
        checker.forget(3, &lock());
        checker
            .observe_claimed_grant(Time::ZERO, (4, permit), &lock(), 8, |client| client != 2)
            .expect("c2's lease ran out: one believer");
    }

    #[test]
    fn a_hand_over_after_the_release_is_sent_is_safe() {
        let mut checker = LeaseSafety::default();
        checker
            .observe_grant(Time::ZERO, 1, &lock(), 5, |_| true)
            .unwrap();
        checker.forget(1, &lock());
        checker
            .observe_grant(Time::ZERO, 2, &lock(), 9, |_| true)
            .unwrap();
        assert_eq!(checker.beliefs(), 1);
    }

    #[test]
    fn a_grant_while_the_previous_holder_still_believes_in_its_lease_is_caught() {
        let mut checker = LeaseSafety::default();
        checker
            .observe_grant(Time::ZERO, 1, &lock(), 5, |_| true)
            .unwrap();
        let violation = checker
            .observe_grant(Time::ZERO, 2, &lock(), 9, |_| true)
            .expect_err("c1 still believes");
        assert_eq!(violation.invariant, LEASE_SAFETY);
        assert!(
            violation.message.contains("c1 still believed"),
            "{violation:?}"
        );
    }

    #[test]
    fn a_holder_whose_lease_ran_out_by_its_own_clock_no_longer_counts() {
        let mut checker = LeaseSafety::default();
        checker
            .observe_grant(Time::ZERO, 1, &lock(), 5, |_| true)
            .unwrap();
        checker
            .observe_grant(Time::ZERO, 2, &lock(), 9, |client| client != 1)
            .unwrap();
        assert_eq!(checker.beliefs(), 1, "c1's belief is gone with its session");
    }

    #[test]
    fn the_same_client_granted_again_is_not_two_believers() {
        let mut checker = LeaseSafety::default();
        checker
            .observe_grant(Time::ZERO, 1, &lock(), 5, |_| true)
            .unwrap();
        checker
            .observe_grant(Time::ZERO, 1, &lock(), 5, |_| true)
            .unwrap();
    }
}
