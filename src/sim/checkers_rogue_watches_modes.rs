//! `rogue_isolation` for watches: what a rogue's `watch` and `unwatch` lines may get, and what
//! honest watchers may never get because of them (docs/design.md, "Watches"; README, "Rogue
//! clients"). The rules for modes and permits live with the rest of the checker, in
//! `checkers.rs` (a committed claim must be one its client sent, mode and permits included;
//! permits out of bounds never reach the log); their tests are here, with the watches'.
//!
//! - A watch under an id no hello issued is refused `unknown_client`; under an issued id that
//!   is not the rogue's own (no secret, or a wrong one) it is refused `unauthorized`, or
//!   `unknown_client` by a server that has not applied that hello yet. Either way it is never
//!   started, and no event ever comes for it.
//! - Under its own identity, a bad target (an empty name, a name or prefix over the limit) is
//!   refused `bad_target`; a good one is never refused `unauthorized`.
//! - Honest watchers in the simulator never stop a watch, so an honest stream that ends
//!   `stopped` was stopped by someone else's `unwatch`. That their streams lose or repeat no
//!   event is `watch_streams`' job, which stays on in runs with rogues.

use super::{Credential, ROGUE_ISOLATION, RogueIsolation, Violation};
use crate::node::watch::{
    WATCH_PREFIX_BYTES_MAX, WatchCancel, WatchRefusal, WatchReply, WatchTarget,
};
use crate::node::{ClientId, ClientSecret, LOCK_NAME_BYTES_MAX, Time};

/// A rogue watch, by (rogue, server, connection, watch id): a connection is per server.
pub type RogueWatchKey = (u32, u32, u32, u64);

/// A rogue's watch start, as the checker judges its answer.
#[derive(Copy, Clone, Debug)]
struct WatchStart {
    credential: Credential,
    client: ClientId,
    /// The target is one a server must accept.
    target_ok: bool,
}

/// What the checker knows of one rogue watch id on one connection.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct RogueWatchSlot {
    /// The last start not yet answered (servers answer a start in the step that takes it).
    pending: Option<WatchStart>,
    /// A start of its own was answered with a start: events may come.
    live: bool,
}

/// Whether a server must accept `target` (`node::watch`'s rule, restated).
fn target_ok(target: &WatchTarget) -> bool {
    match target {
        WatchTarget::Lock(name) => !name.is_empty() && name.len() <= LOCK_NAME_BYTES_MAX,
        WatchTarget::Prefix(prefix) => prefix.len() <= WATCH_PREFIX_BYTES_MAX,
    }
}

impl RogueIsolation {
    /// Rogue `key.0` sent a `watch` with this credential and target.
    pub fn observe_rogue_watch_start(
        &mut self,
        key: RogueWatchKey,
        client: ClientId,
        secret: Option<ClientSecret>,
        target: &WatchTarget,
    ) {
        let owned = (self.rogue_credentials.get(&key.0)).is_some_and(|identities| {
            (identities.iter()).any(|(id, issued)| *id == client && Some(*issued) == secret)
        });
        let credential = match (owned, secret) {
            (true, _) => Credential::Own,
            (false, None) => Credential::Missing,
            (false, Some(_)) => Credential::Wrong,
        };
        let start = WatchStart {
            credential,
            client,
            target_ok: target_ok(target),
        };
        self.rogue_watches.entry(key).or_default().pending = Some(start);
    }

    /// A watch line from server `key.1` to rogue `key.0`'s connection `key.2`, for watch
    /// `key.3`.
    pub fn observe_rogue_watch_reply(
        &mut self,
        now: Time,
        key: RogueWatchKey,
        reply: &WatchReply,
    ) -> Result<(), Violation> {
        let (rogue, server, connection, id) = key;
        let issued = |client: ClientId| client.0 >= 1 && client.0 <= self.registered_clients;
        let slot = self.rogue_watches.entry(key).or_default();
        let here = format!("s{server} told r{rogue}'s connection {connection} of watch {id}");
        let problem = match reply {
            WatchReply::Refused { refusal, .. } => match slot.pending.take() {
                None => Some(format!("{here}: refused {refusal:?}, but it started none")),
                Some(start) => refusal_problem(start, refusal, issued(start.client))
                    .map(|problem| format!("{here}: {problem}")),
            },
            WatchReply::Current { .. } | WatchReply::Resumed { .. } => {
                let started = match slot.pending.take() {
                    Some(start) if start.credential == Credential::Own && start.target_ok => None,
                    Some(start) => Some(format!(
                        "{here}: it started a watch {}; it must be refused",
                        describe_start(start, issued(start.client))
                    )),
                    None => Some(format!("{here}: it started a watch nobody asked for")),
                };
                slot.live = started.is_none();
                started
            }
            WatchReply::Event { event, .. } if !slot.live => Some(format!(
                "{here}: an event at index {}, for a watch that was never started",
                event.index
            )),
            WatchReply::Event { .. } => None,
            WatchReply::Cancelled { .. } => {
                slot.live = false;
                None
            }
        };
        match problem {
            None => Ok(()),
            Some(message) => Err(Violation::new(ROGUE_ISOLATION, now, message)),
        }
    }

    /// A watch line to an honest watcher. Honest watchers in the simulator never `unwatch`
    /// (they stop by closing their connection), so a `stopped` end is someone else's doing.
    pub fn observe_honest_watch_reply(
        &self,
        now: Time,
        reply: &WatchReply,
    ) -> Result<(), Violation> {
        match reply {
            WatchReply::Cancelled {
                id,
                reason: WatchCancel::Stopped,
            } => {
                let message = format!(
                    "an honest watcher's watch {id} ended `stopped`, but it never sent an \
                     unwatch: another connection's unwatch ended it"
                );
                Err(Violation::new(ROGUE_ISOLATION, now, message))
            }
            _ => Ok(()),
        }
    }
}

fn describe_start(start: WatchStart, issued: bool) -> String {
    match (start.credential, issued) {
        (Credential::Own, _) if !start.target_ok => {
            format!("as {}, its own identity, of a bad target", start.client)
        }
        (Credential::Own, _) => format!("as {}, its own identity", start.client),
        (_, false) => format!("as {}, which no hello issued", start.client),
        (Credential::Missing, true) => format!("as {} with no secret", start.client),
        (_, true) => format!("as {} with a wrong secret", start.client),
    }
}

/// What is wrong with refusing `start` as `refusal`, if anything. `issued`: a hello issued the
/// start's client id (as far as the committed log shows).
fn refusal_problem(start: WatchStart, refusal: &WatchRefusal, issued: bool) -> Option<String> {
    let fits = match (start.credential, refusal) {
        // A server checks the credential first, and one that has not applied the rogue's own
        // hello yet does not know it.
        (Credential::Own | Credential::Hello, WatchRefusal::UnknownClient { client }) => {
            *client == start.client
        }
        (Credential::Own | Credential::Hello, WatchRefusal::Unauthorized) => false,
        (Credential::Own | Credential::Hello, WatchRefusal::BadTarget { .. }) => !start.target_ok,
        (Credential::Own | Credential::Hello, _) => start.target_ok,
        (_, WatchRefusal::UnknownClient { client }) => *client == start.client,
        (_, WatchRefusal::Unauthorized) => issued,
        (_, _) => false,
    };
    let expected = match (start.credential, issued) {
        (Credential::Own | Credential::Hello, _) if !start.target_ok => {
            "bad_target (or unknown_client from a server behind)"
        }
        (Credential::Own | Credential::Hello, _) => "no credential refusal",
        (_, false) => "unknown_client",
        (_, true) => "unauthorized (or unknown_client from a server behind)",
    };
    (!fits).then(|| {
        format!(
            "its watch {} was refused {refusal:?}; it must get {expected}",
            describe_start(start, issued)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        C1, C3, R1, SECRET_ONE, SECRET_TWO, fresh, granted, isolation_with_a_rogue, reply, request,
    };
    use super::*;
    use crate::node::watch::{Change, LockChange, WatchEvent};
    use crate::node::{ApplyResult, Claim, Command, Mode, Operation, Outcome, ReplyBody};
    use std::sync::Arc;

    fn at(ms: u64) -> Time {
        Time::from_nanos(ms * 1_000_000)
    }

    fn lock(name: &str) -> WatchTarget {
        WatchTarget::Lock(Arc::from(name))
    }

    fn current(id: u64) -> WatchReply {
        WatchReply::Current {
            id,
            index: 4,
            state: Vec::new(),
            compacted: None,
        }
    }

    fn event(id: u64, index: u64) -> WatchReply {
        let change = LockChange {
            lock: Arc::from("a"),
            change: Change::Released { owner: C1 },
        };
        WatchReply::Event {
            id,
            event: WatchEvent {
                index,
                changes: vec![change],
            },
        }
    }

    fn refused(id: u64, refusal: WatchRefusal) -> WatchReply {
        WatchReply::Refused { id, refusal }
    }

    fn expect_violation(verdict: Result<(), Violation>, parts: &[&str]) {
        let violation = verdict.expect_err("a violation");
        assert_eq!(violation.invariant, ROGUE_ISOLATION);
        for part in parts {
            assert!(
                violation.message.contains(part),
                "{part:?} not in {violation}"
            );
        }
    }

    #[test]
    fn a_forged_watch_refused_unauthorized_is_fine_and_a_started_one_is_caught() {
        let mut checker = isolation_with_a_rogue();
        let key = (R1, 2, 7, 1);
        checker.observe_rogue_watch_start(key, C1, Some(SECRET_TWO), &lock("a"));
        let verdict =
            checker.observe_rogue_watch_reply(at(1), key, &refused(1, WatchRefusal::Unauthorized));
        assert_eq!(verdict, Ok(()));
        // A server that let it through, and streamed to it.
        checker.observe_rogue_watch_start(key, C1, None, &lock("a"));
        expect_violation(
            checker.observe_rogue_watch_reply(at(2), key, &current(1)),
            &[
                "r1's connection 7",
                "as client#1 with no secret",
                "must be refused",
            ],
        );
        expect_violation(
            checker.observe_rogue_watch_reply(at(3), key, &event(1, 5)),
            &["an event at index 5", "never started"],
        );
    }

    #[test]
    fn a_watch_under_an_id_no_hello_issued_must_be_refused_unknown_client() {
        let mut checker = isolation_with_a_rogue();
        let stranger = ClientId(70);
        let key = (R1, 1, 3, 2);
        checker.observe_rogue_watch_start(key, stranger, None, &lock("a"));
        let unknown = WatchRefusal::UnknownClient { client: stranger };
        assert_eq!(
            checker.observe_rogue_watch_reply(at(1), key, &refused(2, unknown)),
            Ok(())
        );
        checker.observe_rogue_watch_start(key, stranger, Some(SECRET_ONE), &lock("a"));
        expect_violation(
            checker.observe_rogue_watch_reply(at(2), key, &refused(2, WatchRefusal::Unauthorized)),
            &["which no hello issued", "must get unknown_client"],
        );
        // A forged but well-formed watch is never refused for its target.
        checker.observe_rogue_watch_start(key, C1, None, &lock("a"));
        let bad = WatchRefusal::BadTarget { reason: "x".into() };
        expect_violation(
            checker.observe_rogue_watch_reply(at(3), key, &refused(2, bad)),
            &["must get unauthorized"],
        );
    }

    #[test]
    fn its_own_watches_stream_but_a_bad_target_must_be_refused_bad_target() {
        let mut checker = isolation_with_a_rogue();
        let key = (R1, 1, u32::MAX, 1);
        checker.observe_rogue_watch_start(key, C3, Some(SECRET_ONE), &lock("a"));
        assert_eq!(
            checker.observe_rogue_watch_reply(at(1), key, &current(1)),
            Ok(())
        );
        assert_eq!(
            checker.observe_rogue_watch_reply(at(2), key, &event(1, 5)),
            Ok(())
        );
        // The same id again while it lives: id_in_use, and the live watch goes on.
        checker.observe_rogue_watch_start(key, C3, Some(SECRET_ONE), &lock("a"));
        let in_use = refused(1, WatchRefusal::IdInUse);
        assert_eq!(
            checker.observe_rogue_watch_reply(at(3), key, &in_use),
            Ok(())
        );
        assert_eq!(
            checker.observe_rogue_watch_reply(at(4), key, &event(1, 6)),
            Ok(())
        );
        let empty = WatchTarget::Lock(Arc::from(""));
        let other = (R1, 1, u32::MAX, 2);
        checker.observe_rogue_watch_start(other, C3, Some(SECRET_ONE), &empty);
        let bad = WatchRefusal::BadTarget {
            reason: "empty".into(),
        };
        assert_eq!(
            checker.observe_rogue_watch_reply(at(5), other, &refused(2, bad)),
            Ok(())
        );
        checker.observe_rogue_watch_start(other, C3, Some(SECRET_ONE), &empty);
        expect_violation(
            checker.observe_rogue_watch_reply(at(6), other, &current(2)),
            &["of a bad target", "must be refused"],
        );
        let long = WatchTarget::Prefix("p".repeat(LOCK_NAME_BYTES_MAX + 1));
        checker.observe_rogue_watch_start(other, C3, Some(SECRET_ONE), &long);
        expect_violation(
            checker.observe_rogue_watch_reply(at(7), other, &refused(2, WatchRefusal::IdInUse)),
            &["must get bad_target"],
        );
        checker.observe_rogue_watch_start(other, C3, Some(SECRET_ONE), &lock("a"));
        expect_violation(
            checker.observe_rogue_watch_reply(
                at(8),
                other,
                &refused(2, WatchRefusal::Unauthorized),
            ),
            &["its own identity", "refused Unauthorized"],
        );
    }

    #[test]
    fn an_honest_watch_ended_stopped_is_caught_and_other_ends_are_not() {
        let checker = isolation_with_a_rogue();
        let stopped = WatchReply::Cancelled {
            id: 1,
            reason: WatchCancel::Stopped,
        };
        expect_violation(
            checker.observe_honest_watch_reply(at(1), &stopped),
            &["never sent an unwatch", "another connection's unwatch"],
        );
        let behind = WatchReply::Cancelled {
            id: 1,
            reason: WatchCancel::FellBehind { kept_after: 9 },
        };
        assert_eq!(checker.observe_honest_watch_reply(at(2), &behind), Ok(()));
        assert_eq!(
            checker.observe_honest_watch_reply(at(3), &event(1, 9)),
            Ok(())
        );
    }

    // ----- modes and permits -----

    fn claim_command(client: ClientId, seq: u64, name: &str, claim: Claim) -> Command {
        Command::Preempt {
            client,
            seq,
            lock: Arc::from(name),
            claim,
        }
    }

    fn claim_op(name: &str, claim: Claim) -> Operation {
        Operation::Preempt {
            lock: Arc::from(name),
            claim,
        }
    }

    /// c1 sent a shared claim of `s` declaring 3 permits; the rogue resent its seq as c1,
    /// without the secret, naming 5. Had a server let it through, the semaphore would have
    /// been declared 5 by someone who is not c1.
    #[test]
    fn a_committed_claim_whose_permits_its_client_never_sent_is_caught() {
        let mut checker = isolation_with_a_rogue();
        checker.observe_honest_request(&request(
            C1,
            Some(SECRET_TWO),
            2,
            claim_op("s", Claim::semaphore(3)),
        ));
        checker.observe_rogue_request(
            R1,
            0,
            &request(C1, None, 2, claim_op("s", Claim::semaphore(5))),
        );
        let forged = claim_command(C1, 2, "s", Claim::semaphore(5));
        expect_violation(
            checker.observe_committed(at(6), 5, &forged, &fresh(granted(5))),
            &[
                "preempt `s` by client#1 seq 2",
                "seq 2 shared of 5 permits",
                "sent that seq with (shared, 3 permits)",
                "changed its mode or permits",
            ],
        );
        // What c1 did send commits without a word.
        let mut checker = isolation_with_a_rogue();
        checker.observe_honest_request(&request(
            C1,
            Some(SECRET_TWO),
            2,
            claim_op("s", Claim::semaphore(3)),
        ));
        let sent = claim_command(C1, 2, "s", Claim::semaphore(3));
        assert_eq!(
            checker.observe_committed(at(6), 5, &sent, &fresh(granted(5))),
            Ok(())
        );
    }

    /// A forged shared claim that became a holder: c2 sent nothing, yet a shared grant to it
    /// committed. And a holder's exclusive claim turned shared is caught like a permits change.
    #[test]
    fn a_forged_shared_claim_that_became_a_holder_is_caught() {
        let mut checker = isolation_with_a_rogue();
        let c2 = ClientId(2);
        checker.observe_rogue_request(R1, 0, &request(c2, None, 4, claim_op("a", Claim::SHARED)));
        expect_violation(
            checker.observe_committed(
                at(6),
                5,
                &claim_command(c2, 4, "a", Claim::SHARED),
                &fresh(granted(5)),
            ),
            &[
                "preempt `a` by client#2 seq 4 shared",
                "someone else acted as client#2",
            ],
        );
        // c1's preempt of `a` seq 1 was exclusive: the same seq committed shared is not it.
        let mut checker = isolation_with_a_rogue();
        let shared = claim_command(C1, 1, "a", Claim::SHARED);
        expect_violation(
            checker.observe_committed(at(6), 5, &shared, &fresh(granted(5))),
            &[
                "sent that seq with (exclusive)",
                "changed its mode or permits",
            ],
        );
    }

    #[test]
    fn permits_out_of_bounds_must_be_refused_before_the_log_and_never_commit() {
        let mut checker = isolation_with_a_rogue();
        let zero = Claim {
            mode: Mode::Shared,
            permits: Some(0),
        };
        checker.observe_rogue_request(
            R1,
            0,
            &request(C3, Some(SECRET_ONE), 1, claim_op("r1.s", zero)),
        );
        expect_violation(
            checker.observe_rogue_reply(at(6), R1, 0, &reply(1, ReplyBody::Outcome(granted(5)))),
            &["its permits are outside 1 to 64", "bad_request"],
        );
        let refused = reply(
            1,
            ReplyBody::Error(crate::node::ServiceError::BadRequest {
                reason: "permits".into(),
            }),
        );
        assert_eq!(checker.observe_rogue_reply(at(7), R1, 0, &refused), Ok(()));
        let over = Claim::semaphore(u32::MAX);
        let rejected = ApplyResult::Rejected {
            rejection: crate::node::Rejection::BadPermits,
        };
        expect_violation(
            checker.observe_committed(at(8), 5, &claim_command(C3, 2, "r1.s", over), &rejected),
            &[
                "index 5 committed preempt `r1.s`",
                "permits outside 1 to 64",
            ],
        );
    }

    /// Its own semaphore `r1.s` of 2 permits: a claim naming 3 is answered permits_mismatch,
    /// which fits a preempt; the seq of its 2-permit claim reused with 3 permits must be
    /// refused seq_reused, not given the first claim's grant.
    #[test]
    fn its_own_claims_may_mismatch_but_a_seq_reused_with_other_permits_is_refused() {
        let mut checker = isolation_with_a_rogue();
        let two = Claim::semaphore(2);
        checker.observe_rogue_request(
            R1,
            0,
            &request(C3, Some(SECRET_ONE), 1, claim_op("r1.s", two)),
        );
        let first = claim_command(C3, 1, "r1.s", two);
        assert_eq!(
            checker.observe_committed(at(6), 5, &first, &fresh(granted(5))),
            Ok(())
        );
        checker.observe_rogue_request(
            R1,
            1,
            &request(
                C3,
                Some(SECRET_ONE),
                2,
                claim_op("r1.s", Claim::semaphore(3)),
            ),
        );
        let mismatch = Outcome::PermitsMismatch { permits: Some(2) };
        let second = claim_command(C3, 2, "r1.s", Claim::semaphore(3));
        assert_eq!(
            checker.observe_committed(at(7), 6, &second, &fresh(mismatch)),
            Ok(())
        );
        let answer = reply(2, ReplyBody::Outcome(mismatch));
        assert_eq!(checker.observe_rogue_reply(at(8), R1, 1, &answer), Ok(()));
        checker.observe_rogue_request(
            R1,
            2,
            &request(
                C3,
                Some(SECRET_ONE),
                1,
                claim_op("r1.s", Claim::semaphore(3)),
            ),
        );
        expect_violation(
            checker.observe_rogue_reply(at(9), R1, 2, &reply(1, ReplyBody::Outcome(granted(5)))),
            &[
                "seq 1 was first committed at index 5 as a preempt of `r1.s` (shared, 2 permits)",
                "seq_reused",
            ],
        );
    }
}
