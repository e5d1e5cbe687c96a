//! Stories about shared (readers-writer) locks and semaphores: readers together, a writer that
//! waits only for the readers before it, a semaphore's permits, hand-over of a run of readers
//! in one entry, expiry of one holder, permits that disagree, and exactly-once retries.
//! docs/design.md ("Shared locks and semaphores") states the rules these stories check. Most
//! drive the replicated lock table directly, entry by entry, since that is where the rules
//! live; the last ones go through a leader, to show a claim on its way to the log.

use super::*;
use crate::node::{Claim, Decision, LockTable, Mode, PERMITS_MAX, Rejection, Settled, WriteKind};

const LONG_WAIT_MS: u64 = 60_000;

/// A lock table and the next index to apply at, for stories told entry by entry.
struct Story {
    table: LockTable,
    next: LogIndex,
}

impl Story {
    /// `clients` registered clients, `ClientId(1)` to `ClientId(clients)`, each with a session
    /// of 10 s (so that a story may expire one).
    fn with_clients(clients: u64) -> Story {
        let mut story = Story {
            table: LockTable::new(),
            next: 1,
        };
        for number in 1..=clients {
            let register = Command::Register {
                nonce: number,
                secret: None,
                ttl_ms: Some(10_000),
            };
            let registered = story.apply(&register);
            assert_eq!(
                registered,
                ApplyResult::Registered {
                    client: ClientId(number)
                }
            );
        }
        story
    }

    fn apply(&mut self, command: &Command) -> ApplyResult {
        let index = self.next;
        self.next += 1;
        self.table.apply(index, command)
    }

    /// Applies a client write and returns its outcome (panics on anything else).
    fn outcome(&mut self, command: &Command) -> Outcome {
        match self.apply(command) {
            ApplyResult::Outcome { outcome, .. } => outcome,
            other => panic!("an outcome expected for {command:?}, got {other:?}"),
        }
    }

    /// The index the next entry applies at: the token it would grant.
    fn next_index(&self) -> LogIndex {
        self.next
    }

    fn holders(&self, name: &str) -> Vec<ClientId> {
        self.table.holders(name).iter().map(|h| h.owner).collect()
    }

    fn waiters(&self, name: &str) -> Vec<ClientId> {
        self.table.waiters(name).map(|w| w.client).collect()
    }

    /// Who the entry applied last granted, in the order it granted them.
    fn granted_now(&self) -> Vec<ClientId> {
        self.table
            .last_woken()
            .iter()
            .filter(|woken| matches!(woken.decision, Decision::Granted { .. }))
            .map(|woken| woken.client)
            .collect()
    }
}

fn c(number: u64) -> ClientId {
    ClientId(number)
}

fn claim_preempt(client: u64, seq: u64, name: &str, claim: Claim) -> Command {
    Command::Preempt {
        client: c(client),
        seq,
        lock: lock(name),
        claim,
    }
}

fn claim_acquire(client: u64, seq: u64, name: &str, claim: Claim) -> Command {
    Command::Acquire {
        client: c(client),
        seq,
        lock: lock(name),
        wait_ms: LONG_WAIT_MS,
        claim,
    }
}

fn release_of(client: u64, seq: u64, name: &str) -> Command {
    Command::Release {
        client: c(client),
        seq,
        lock: lock(name),
    }
}

fn writer_acquire(client: u64, seq: u64, name: &str) -> Command {
    claim_acquire(client, seq, name, Claim::EXCLUSIVE)
}

fn reader_acquire(client: u64, seq: u64, name: &str) -> Command {
    claim_acquire(client, seq, name, Claim::SHARED)
}

// ----- readers and writers -----

#[test]
fn several_readers_hold_a_lock_together_each_with_the_token_of_its_own_grant() {
    let mut story = Story::with_clients(3);
    for reader in 1..=3 {
        let token = story.next_index();
        assert_eq!(
            story.outcome(&claim_preempt(reader, 1, "a", Claim::SHARED)),
            Outcome::Granted { token },
            "reader c{reader} is granted beside the others, with its entry's index"
        );
    }
    assert_eq!(story.holders("a"), vec![c(1), c(2), c(3)], "in grant order");
    assert_eq!(story.table.held_mode("a"), Some(Mode::Shared));
    assert_eq!(
        story.table.holder("a"),
        None,
        "no exclusive holder: `holder` keeps its old meaning"
    );
    assert_eq!(
        story.table.check("a"),
        Outcome::Shared {
            holders: 3,
            permits: None
        }
    );
}

#[test]
fn a_writer_is_refused_by_readers_and_a_reader_by_a_writer() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&claim_preempt(1, 1, "a", Claim::SHARED));
    assert_eq!(
        story.outcome(&claim_preempt(2, 1, "a", Claim::EXCLUSIVE)),
        Outcome::HeldBy { owner: c(1) },
        "a writer does not share with a reader"
    );
    let _ = story.outcome(&release_of(1, 2, "a"));
    let _ = story.outcome(&claim_preempt(2, 2, "a", Claim::EXCLUSIVE));
    assert_eq!(
        story.outcome(&claim_preempt(3, 1, "a", Claim::SHARED)),
        Outcome::HeldBy { owner: c(2) },
        "a reader does not share with a writer"
    );
}

/// The issue's promise: a writer waiting behind readers is not starved. The readers that
/// arrive after it queue behind it instead of joining the readers that hold the lock.
#[test]
fn a_writer_waits_only_for_the_readers_before_it_and_later_readers_wait_behind_it() {
    let mut story = Story::with_clients(5);
    let _ = story.outcome(&reader_acquire(1, 1, "a"));
    let _ = story.outcome(&reader_acquire(2, 1, "a"));
    assert_eq!(story.outcome(&writer_acquire(3, 1, "a")), Outcome::Queued);
    assert_eq!(
        story.outcome(&reader_acquire(4, 1, "a")),
        Outcome::Queued,
        "the lock has room for a reader, but a writer is waiting: c4 queues behind it"
    );
    assert_eq!(
        story.outcome(&claim_preempt(5, 1, "a", Claim::SHARED)),
        Outcome::HeldBy { owner: c(1) },
        "a shared preempt does not barge past the waiting writer either"
    );
    assert_eq!(story.waiters("a"), vec![c(3), c(4)]);

    let _ = story.outcome(&release_of(1, 2, "a"));
    assert_eq!(
        story.granted_now(),
        vec![],
        "c2 still reads: the writer waits"
    );
    let release_index = story.next_index();
    let _ = story.outcome(&release_of(2, 2, "a"));
    assert_eq!(
        story.granted_now(),
        vec![c(3)],
        "the last reader's release hands the lock to the writer alone, in its own entry"
    );
    assert_eq!(
        story.table.holder("a").map(|h| (h.owner, h.token)),
        Some((c(3), release_index))
    );
    let _ = story.outcome(&release_of(3, 2, "a"));
    assert_eq!(story.granted_now(), vec![c(4)], "then the reader behind it");
    assert_eq!(story.waiters("a"), vec![]);
}

#[test]
fn consecutive_readers_at_the_head_are_granted_together_in_one_entry() {
    let mut story = Story::with_clients(5);
    let _ = story.outcome(&writer_acquire(1, 1, "a"));
    let _ = story.outcome(&reader_acquire(2, 1, "a"));
    let _ = story.outcome(&reader_acquire(3, 1, "a"));
    let _ = story.outcome(&writer_acquire(4, 1, "a"));
    let _ = story.outcome(&reader_acquire(5, 1, "a"));
    let release_index = story.next_index();
    let _ = story.outcome(&release_of(1, 2, "a"));
    assert_eq!(
        story.granted_now(),
        vec![c(2), c(3)],
        "the run of readers at the head, up to the next writer"
    );
    for holder in story.table.holders("a") {
        assert_eq!(holder.token, release_index, "both granted by the release");
    }
    assert_eq!(
        story.waiters("a"),
        vec![c(4), c(5)],
        "c5 stays behind the writer: FIFO is never broken to fill a unit"
    );
}

// ----- semaphores -----

#[test]
fn a_semaphore_of_three_holds_three_and_the_fourth_waits_for_a_permit() {
    let mut story = Story::with_clients(4);
    for holder in 1..=3 {
        assert!(matches!(
            story.outcome(&claim_acquire(holder, 1, "pool", Claim::semaphore(3))),
            Outcome::Granted { .. }
        ));
    }
    assert_eq!(
        story.outcome(&claim_acquire(4, 1, "pool", Claim::semaphore(3))),
        Outcome::Queued,
        "three permits, three holders: the fourth waits"
    );
    assert_eq!(
        story.table.check("pool"),
        Outcome::Shared {
            holders: 3,
            permits: Some(3)
        }
    );
    let release_index = story.next_index();
    let _ = story.outcome(&release_of(2, 2, "pool"));
    assert_eq!(
        story.granted_now(),
        vec![c(4)],
        "one permit back, one granted"
    );
    assert_eq!(story.holders("pool"), vec![c(1), c(3), c(4)]);
    assert_eq!(story.table.holders("pool")[2].token, release_index);
}

#[test]
fn an_exclusive_claim_on_a_semaphore_waits_for_every_permit() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&claim_acquire(1, 1, "pool", Claim::semaphore(2)));
    let drain = Claim {
        mode: Mode::Exclusive,
        permits: Some(2),
    };
    assert_eq!(
        story.outcome(&claim_acquire(2, 1, "pool", drain)),
        Outcome::Queued
    );
    let _ = story.outcome(&release_of(1, 2, "pool"));
    assert_eq!(
        story.granted_now(),
        vec![c(2)],
        "granted once the last permit is back"
    );
    assert_eq!(story.table.held_mode("pool"), Some(Mode::Exclusive));
    assert_eq!(
        story.outcome(&claim_preempt(3, 1, "pool", Claim::semaphore(2))),
        Outcome::HeldBy { owner: c(2) },
        "it holds all of them"
    );
}

#[test]
fn a_release_by_one_reader_leaves_the_others_holding() {
    let mut story = Story::with_clients(3);
    let first_token = story.next_index();
    let _ = story.outcome(&claim_preempt(1, 1, "a", Claim::SHARED));
    let _ = story.outcome(&claim_preempt(2, 1, "a", Claim::SHARED));
    assert_eq!(
        story.outcome(&release_of(3, 1, "a")),
        Outcome::NotOwner,
        "a client that holds nothing releases nothing"
    );
    assert_eq!(story.outcome(&release_of(2, 2, "a")), Outcome::Released);
    assert_eq!(
        story.table.holders("a"),
        vec![Holder {
            owner: c(1),
            token: first_token
        }],
        "c1 keeps its grant and its token"
    );
    assert_eq!(story.outcome(&release_of(2, 3, "a")), Outcome::NotOwner);
    let _ = story.outcome(&release_of(1, 2, "a"));
    assert_eq!(story.table.check("a"), Outcome::Free);
}

// ----- sessions -----

#[test]
fn the_expiry_of_one_reader_frees_its_unit_under_lock_delay_and_a_hand_over_grants_it() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&claim_acquire(1, 1, "pool", Claim::semaphore(2)));
    let _ = story.outcome(&claim_acquire(2, 1, "pool", Claim::semaphore(2)));
    let _ = story.outcome(&claim_acquire(3, 1, "pool", Claim::semaphore(2)));
    let expire_index = story.next_index();
    assert_eq!(
        story.apply(&Command::Expire { client: c(1) }),
        ApplyResult::Expired {
            client: c(1),
            released: 1
        }
    );
    assert_eq!(story.holders("pool"), vec![c(2)], "c2 keeps its permit");
    assert_eq!(
        story.granted_now(),
        vec![],
        "the freed permit is not granted inside the expire: lock-delay is the leader's"
    );
    assert_eq!(
        story.table.freed_by_expiry().get("pool"),
        Some(&expire_index),
        "listed, so that the leader gates it"
    );
    assert!(
        story.table.head_fits("pool"),
        "the leader's cue for a hand-over"
    );
    let _ = story.apply(&Command::HandOver { lock: lock("pool") });
    assert_eq!(story.granted_now(), vec![c(3)]);
    assert_eq!(story.table.freed_by_expiry().get("pool"), None);
}

#[test]
fn a_reader_waiting_behind_a_writer_whose_session_expires_is_granted_at_once() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&reader_acquire(1, 1, "a"));
    let _ = story.outcome(&writer_acquire(2, 1, "a"));
    let _ = story.outcome(&reader_acquire(3, 1, "a"));
    let _ = story.apply(&Command::Expire { client: c(2) });
    assert_eq!(
        story.granted_now(),
        vec![c(3)],
        "with the writer gone from the queue, the reader fits beside c1: nothing the \
         expired session held is freed, so no lock-delay applies"
    );
    assert_eq!(story.holders("a"), vec![c(1), c(3)]);
}

// ----- permits that disagree -----

#[test]
fn permits_that_disagree_with_the_name_in_use_are_refused_until_the_name_is_free() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&claim_preempt(1, 1, "pool", Claim::semaphore(3)));
    assert_eq!(
        story.outcome(&claim_preempt(2, 1, "pool", Claim::semaphore(5))),
        Outcome::PermitsMismatch { permits: Some(3) },
        "the first N stands while the name is in use"
    );
    assert_eq!(
        story.outcome(&claim_preempt(2, 2, "pool", Claim::SHARED)),
        Outcome::Granted { token: 6 },
        "a claim naming no permits accepts the declared ones"
    );
    let _ = story.outcome(&claim_preempt(3, 1, "plain", Claim::EXCLUSIVE));
    assert_eq!(
        story.outcome(&claim_acquire(2, 3, "plain", Claim::semaphore(2))),
        Outcome::PermitsMismatch { permits: None },
        "a plain lock in use declared no permits: an acquire naming some is refused, not queued"
    );
    assert_eq!(story.waiters("plain"), vec![]);
    let _ = story.outcome(&release_of(1, 2, "pool"));
    let _ = story.outcome(&release_of(2, 4, "pool"));
    assert_eq!(
        story.table.declared_permits("pool"),
        None,
        "free: forgotten"
    );
    assert!(matches!(
        story.outcome(&claim_preempt(2, 5, "pool", Claim::semaphore(5))),
        Outcome::Granted { .. }
    ));
    assert_eq!(story.table.declared_permits("pool"), Some(5));
}

#[test]
fn permits_out_of_range_are_rejected_at_apply_and_change_nothing() {
    let mut story = Story::with_clients(1);
    for permits in [0, PERMITS_MAX + 1] {
        let claim = Claim::semaphore(permits);
        assert_eq!(
            story.apply(&claim_preempt(1, 1, "pool", claim)),
            ApplyResult::Rejected {
                rejection: Rejection::BadPermits
            },
            "permits {permits}"
        );
    }
    assert_eq!(story.table.check("pool"), Outcome::Free);
    assert_eq!(
        story
            .table
            .settled(c(1), 1, WriteKind::Preempt, "pool", Claim::EXCLUSIVE),
        None,
        "a rejected entry records no answer"
    );
}

// ----- exactly-once -----

#[test]
fn a_retried_shared_claim_is_answered_from_its_record_and_never_holds_twice() {
    let mut story = Story::with_clients(2);
    let token = story.next_index();
    let claim = claim_preempt(1, 1, "a", Claim::SHARED);
    assert_eq!(story.outcome(&claim), Outcome::Granted { token });
    assert_eq!(
        story.apply(&claim),
        ApplyResult::Outcome {
            outcome: Outcome::Granted { token },
            duplicate: true
        },
        "a copy of the same (client, seq) applies as a duplicate"
    );
    assert_eq!(
        story.outcome(&claim_preempt(1, 2, "a", Claim::EXCLUSIVE)),
        Outcome::Granted { token },
        "a new claim by a holder answers its grant: no second holding, no upgrade"
    );
    assert_eq!(story.holders("a"), vec![c(1)]);
    assert_eq!(story.table.held_mode("a"), Some(Mode::Shared));

    let _ = story.outcome(&writer_acquire(2, 1, "a"));
    let queued_again = story.apply(&writer_acquire(2, 1, "a"));
    assert_eq!(
        queued_again,
        ApplyResult::Outcome {
            outcome: Outcome::Queued,
            duplicate: true
        },
        "a retried acquire finds its place"
    );
    assert_eq!(story.waiters("a"), vec![c(2)], "one place, not two");
}

#[test]
fn a_retry_naming_another_mode_or_other_permits_is_a_reused_seq_and_changes_nothing() {
    // Exactly-once covers the claim: seq 1 was a reader's preempt, so an exclusive "retry" of
    // it is another request under an old seq, and hearing "granted" would make the client
    // believe it writes alone.
    let mut story = Story::with_clients(2);
    let token = story.next_index();
    assert_eq!(
        story.outcome(&claim_preempt(1, 1, "a", Claim::SHARED)),
        Outcome::Granted { token }
    );
    for other in [Claim::EXCLUSIVE, Claim::semaphore(2)] {
        assert_eq!(
            story.apply(&claim_preempt(1, 1, "a", other)),
            ApplyResult::Rejected {
                rejection: Rejection::SeqReused
            },
            "{other:?} under the seq of a shared claim"
        );
        assert_eq!(
            story.table.settled(c(1), 1, WriteKind::Preempt, "a", other),
            Some(Settled::SeqReused)
        );
    }
    assert_eq!(
        story
            .table
            .settled(c(1), 1, WriteKind::Preempt, "a", Claim::SHARED),
        Some(Settled::Answered {
            outcome: Outcome::Granted { token },
            index: token
        }),
        "the same claim is still a retry"
    );
    // An acquire of a semaphore, retried as a preempt-like claim of other permits.
    let _ = story.outcome(&claim_acquire(2, 1, "pool", Claim::semaphore(3)));
    assert_eq!(
        story.apply(&claim_acquire(2, 1, "pool", Claim::semaphore(4))),
        ApplyResult::Rejected {
            rejection: Rejection::SeqReused
        }
    );
    assert_eq!(story.holders("a"), vec![c(1)]);
    assert_eq!(story.table.held_mode("a"), Some(Mode::Shared));
    assert_eq!(story.holders("pool"), vec![c(2)]);
}

#[test]
fn a_table_with_shared_holders_survives_a_snapshot_and_one_without_them_serializes_as_before() {
    let mut story = Story::with_clients(3);
    let _ = story.outcome(&claim_preempt(1, 1, "plain", Claim::EXCLUSIVE));
    let plain = serde_json::to_string(&story.table).expect("serializes");
    assert!(
        !plain.contains("shared_holders") && !plain.contains("permits") && !plain.contains("mode"),
        "no trace of modes in a table that never used them: {plain}"
    );
    let _ = story.outcome(&claim_acquire(2, 1, "pool", Claim::semaphore(1)));
    let _ = story.outcome(&claim_acquire(3, 1, "pool", Claim::semaphore(1)));
    let text = serde_json::to_string(&story.table).expect("serializes");
    let back: LockTable = serde_json::from_str(&text).expect("reads back");
    assert_eq!(back, story.table);
    assert_eq!(back.locks_digest(), story.table.locks_digest());
}

#[test]
fn an_old_log_entry_without_a_claim_reads_as_exclusive_and_an_exclusive_one_writes_as_before() {
    let old = r#"{"preempt":{"client":1,"seq":4,"lock":"a"}}"#;
    let command: Command = serde_json::from_str(old).expect("an old entry reads");
    assert_eq!(command, claim_preempt(1, 4, "a", Claim::EXCLUSIVE));
    assert_eq!(serde_json::to_string(&command).expect("writes"), old);
    let shared =
        serde_json::to_string(&claim_preempt(1, 4, "a", Claim::semaphore(3))).expect("writes");
    assert_eq!(
        shared,
        r#"{"preempt":{"client":1,"seq":4,"lock":"a","claim":{"mode":"shared","permits":3}}}"#
    );
}

// ----- through a leader -----

#[test]
fn two_readers_preempting_through_the_leader_both_hold_the_lock_on_every_server() {
    let mut network = Network::new(3);
    network.elect(S1);
    let first = register_through(&mut network);
    let second = register_through(&mut network);
    for (client, from) in [(first, ClientAddr(201)), (second, ClientAddr(202))] {
        let shared = Operation::Preempt {
            lock: lock("a"),
            claim: Claim::SHARED,
        };
        let _ = network.step(S1, from_client(from, op(client, 1, shared)));
        let _ = network.deliver_all();
        let replies = std::mem::take(&mut network.replies);
        assert!(
            matches!(
                &replies[..],
                [(to, reply)] if *to == from
                    && matches!(reply.body, ReplyBody::Outcome(Outcome::Granted { .. }))
            ),
            "{client} granted, not refused by a read: {replies:?}"
        );
    }
    network.heartbeat(S1);
    for server in [S1, S2, S3] {
        let holders: Vec<ClientId> = network
            .server(server)
            .lock_table()
            .holders("a")
            .iter()
            .map(|h| h.owner)
            .collect();
        assert_eq!(holders, vec![first, second], "{server}");
    }
}

#[test]
fn the_leader_refuses_permits_out_of_range_before_the_log() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_through(&mut network);
    let last_before = network.server(S1).log().last_index();
    let bad = Operation::Acquire {
        lock: lock("pool"),
        wait_ms: 0,
        claim: Claim::semaphore(0),
    };
    let _ = network.step(S1, from_client(ClientAddr(201), op(client, 1, bad)));
    let replies = std::mem::take(&mut network.replies);
    assert!(
        matches!(
            &replies[..],
            [(_, reply)] if matches!(&reply.body,
                ReplyBody::Error(ServiceError::BadRequest { reason }) if reason.contains("permits"))
        ),
        "{replies:?}"
    );
    assert_eq!(
        network.server(S1).log().last_index(),
        last_before,
        "nothing appended"
    );
}

/// Registers a client through s1, the leader; returns its id.
fn register_through(network: &mut Network) -> ClientId {
    let _ = network.step(S1, from_client(ClientAddr(200), hello(9)));
    let _ = network.deliver_all();
    let replies = std::mem::take(&mut network.replies);
    match &replies[..] {
        [(_, reply)] => match reply.body {
            ReplyBody::Welcome { client, .. } => {
                remember_welcome(reply);
                client
            }
            ref other => panic!("a welcome expected, got {other:?}"),
        },
        other => panic!("one reply expected, got {other:?}"),
    }
}
