//! The fenced resource: what a lock protects, and the checker that judges it.
//!
//! A lock is only worth what it protects. Clients that believe they hold a lock write to a
//! shared resource (a storage service, a file), and a lock service cannot stop a client from
//! believing too long: a process pause, a lease counted on a fast clock, a write delayed in the
//! network. Kleppmann's answer is fencing: each write carries the holder's fencing token, and
//! the resource remembers the highest token it accepted per lock and rejects any lower one.
//! Our tokens are the log index of the grant, strictly increasing per lock.
//!
//! [`FencedResource`] is that resource, as a storage service would implement it. The
//! [`FencedWrites`] checker judges it from the outside, so that a resource (or a protocol) that
//! lets a stale write through is caught:
//! - the resource never accepts a write whose token is lower than one it already accepted for
//!   that lock;
//! - every accepted write came from a client that the committed log granted that token to
//!   (one client, or several shared holders handed a lock together in one entry).
//!
//! Shared holders (docs/design.md, "Shared locks and semaphores") write with their own tokens
//! like anyone: a reader whose token is older than one already accepted is rejected, which is
//! the resource doing its job, not a violation.

use super::checkers::{FENCED_WRITES, Violation};
use crate::node::{ApplyResult, ClientId, Command, LockName, LogIndex, Outcome, Time};
use std::collections::BTreeMap;

/// A write that reached the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceWrite {
    /// The writer, by its cluster-assigned id.
    pub client: ClientId,
    pub lock: LockName,
    pub token: LogIndex,
    /// A scripted write's number, to report its verdict against its expectation.
    pub script: Option<usize>,
}

/// What the resource answered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WriteVerdict {
    Accepted,
    /// A write with this higher token was accepted for the lock before.
    Rejected {
        highest: LogIndex,
    },
}

/// The resource: the highest token accepted per lock.
#[derive(Clone, Debug, Default)]
pub struct FencedResource {
    highest: BTreeMap<LockName, LogIndex>,
    pub accepted: u64,
    pub rejected: u64,
}

impl FencedResource {
    /// Accepts `write` if its token is at least the highest accepted for its lock (the holder
    /// of that token may write many times), and rejects it otherwise.
    pub fn write(&mut self, write: &ResourceWrite) -> WriteVerdict {
        match self.highest.get(&write.lock) {
            Some(&highest) if write.token < highest => {
                self.rejected += 1;
                WriteVerdict::Rejected { highest }
            }
            _ => {
                self.highest.insert(write.lock.clone(), write.token);
                self.accepted += 1;
                WriteVerdict::Accepted
            }
        }
    }
}

/// The `fenced_writes` checker: see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct FencedWrites {
    /// (lock, token) -> the clients the committed log granted it to: one, or the shared
    /// holders one entry granted together (at most the holder bound). Grants below a lock's
    /// highest accepted token can never be accepted again, and are forgotten.
    grants: BTreeMap<(LockName, LogIndex), Vec<ClientId>>,
    /// Per lock, the highest token of an accepted write.
    highest_accepted: BTreeMap<LockName, LogIndex>,
}

impl FencedWrites {
    /// Feeds a committed entry, once per log index.
    pub fn observe_committed(&mut self, index: LogIndex, command: &Command, result: &ApplyResult) {
        if let (
            Command::Preempt { client, lock, .. } | Command::Acquire { client, lock, .. },
            ApplyResult::Outcome {
                outcome: Outcome::Granted { token },
                duplicate: false,
            },
        ) = (command, result)
        {
            // A preempt by the lock's own holder is granted again with its first token.
            if *token == index {
                self.record_grant(lock, *token, *client);
            }
        }
    }

    /// A grant to the head of a lock's queue, inside a release or a hand-over entry, as a
    /// server reported applying it.
    pub fn observe_woken(&mut self, woken: &crate::node::Woken) {
        if let crate::node::Decision::Granted { token } = woken.decision {
            self.record_grant(&woken.lock, token, woken.client);
        }
    }

    /// Every server reports the same grants: each client is listed once per token.
    fn record_grant(&mut self, lock: &LockName, token: LogIndex, client: ClientId) {
        let granted = self.grants.entry((lock.clone(), token)).or_default();
        if !granted.contains(&client) {
            granted.push(client);
        }
    }

    /// Judges a write the resource accepted at `now`.
    pub fn observe_accepted(&mut self, now: Time, write: &ResourceWrite) -> Result<(), Violation> {
        let lock = &write.lock;
        if let Some(&highest) = self.highest_accepted.get(lock)
            && write.token < highest
        {
            return Err(Violation {
                invariant: FENCED_WRITES,
                at: now,
                message: format!(
                    "the resource accepted {}'s write to `{lock}` with token {} after it had \
                     accepted token {highest}",
                    write.client, write.token
                ),
            });
        }
        match self.grants.get(&(lock.clone(), write.token)) {
            Some(granted) if granted.contains(&write.client) => {}
            Some(granted) => {
                let names: Vec<String> = granted.iter().map(ToString::to_string).collect();
                return Err(Violation {
                    invariant: FENCED_WRITES,
                    at: now,
                    message: format!(
                        "the resource accepted {}'s write to `{lock}` with token {}, which the \
                         log granted to {}",
                        write.client,
                        write.token,
                        names.join(" and ")
                    ),
                });
            }
            None => {
                return Err(Violation {
                    invariant: FENCED_WRITES,
                    at: now,
                    message: format!(
                        "the resource accepted {}'s write to `{lock}` with token {}, which no \
                         committed grant of `{lock}` issued",
                        write.client, write.token
                    ),
                });
            }
        }
        self.highest_accepted.insert(lock.clone(), write.token);
        // Tokens below the highest accepted one can never be accepted again: forget them.
        let stale: Vec<(LockName, LogIndex)> = self
            .grants
            .range((lock.clone(), 0)..(lock.clone(), write.token))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.grants.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Claim;

    fn grant(checker: &mut FencedWrites, client: u64, lock: &str, token: LogIndex) {
        let command = Command::Preempt {
            client: ClientId(client),
            seq: 1,
            lock: LockName::from(lock),
            claim: Claim::EXCLUSIVE,
        };
        let result = ApplyResult::Outcome {
            outcome: Outcome::Granted { token },
            duplicate: false,
        };
        checker.observe_committed(token, &command, &result);
    }

    fn write(client: u64, lock: &str, token: LogIndex) -> ResourceWrite {
        ResourceWrite {
            client: ClientId(client),
            lock: LockName::from(lock),
            token,
            script: None,
        }
    }

    #[test]
    fn the_resource_turns_away_a_write_older_than_one_it_accepted() {
        let mut resource = FencedResource::default();
        assert_eq!(resource.write(&write(1, "a", 5)), WriteVerdict::Accepted);
        assert_eq!(resource.write(&write(1, "a", 5)), WriteVerdict::Accepted);
        assert_eq!(resource.write(&write(2, "a", 9)), WriteVerdict::Accepted);
        assert_eq!(
            resource.write(&write(1, "a", 5)),
            WriteVerdict::Rejected { highest: 9 },
            "the paused holder's late write"
        );
        assert_eq!(resource.write(&write(1, "b", 3)), WriteVerdict::Accepted);
        assert_eq!((resource.accepted, resource.rejected), (4, 1));
    }

    #[test]
    fn honest_holders_writing_in_token_order_pass() {
        let mut checker = FencedWrites::default();
        grant(&mut checker, 1, "a", 5);
        checker
            .observe_accepted(Time::ZERO, &write(1, "a", 5))
            .unwrap();
        grant(&mut checker, 2, "a", 9);
        checker
            .observe_accepted(Time::ZERO, &write(2, "a", 9))
            .unwrap();
        checker
            .observe_accepted(Time::ZERO, &write(2, "a", 9))
            .unwrap();
    }

    #[test]
    fn a_resource_that_lets_a_lower_token_through_is_caught() {
        let mut checker = FencedWrites::default();
        grant(&mut checker, 1, "a", 5);
        grant(&mut checker, 2, "a", 9);
        checker
            .observe_accepted(Time::ZERO, &write(2, "a", 9))
            .unwrap();
        let violation = checker
            .observe_accepted(Time::ZERO, &write(1, "a", 5))
            .expect_err("a token going backwards");
        assert_eq!(violation.invariant, FENCED_WRITES);
        assert!(violation.message.contains("after it had accepted token 9"));
    }

    #[test]
    fn a_write_with_someone_elses_token_or_a_token_never_granted_is_caught() {
        let mut checker = FencedWrites::default();
        grant(&mut checker, 1, "a", 5);
        let forged = checker
            .observe_accepted(Time::ZERO, &write(2, "a", 5))
            .expect_err("client 2 wrote with client 1's token");
        assert!(forged.message.contains("which the log granted to"));
        let invented = checker
            .observe_accepted(Time::ZERO, &write(1, "a", 7))
            .expect_err("no grant issued token 7");
        assert!(invented.message.contains("no committed grant"));
    }
}
