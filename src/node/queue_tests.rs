//! Stories about the fair blocking acquire: FIFO hand-over inside the release, timeouts the
//! leader commits, cancels, retries across failover, sessions that end while waiting, and
//! lock-delay. Each drives a few servers through the in-test `Network` of `server_tests` under
//! virtual time, and asserts on who hears what and what the log holds. docs/design.md ("Fair
//! blocking acquire") states the rules these stories check.

use super::*;
use crate::node::coverage::Branch;
use crate::node::{Claim, Decision, LockTable, QUEUE_WAITERS_PER_LOCK_MAX, Rejection, Woken};

/// Each story's clients connect from their own address, so that the answers say who was woken.
const HOLDER: ClientAddr = ClientAddr(101);
const FIRST: ClientAddr = ClientAddr(102);
const SECOND: ClientAddr = ClientAddr(103);

const LONG_WAIT_MS: u64 = 60_000;

fn acquire(name: &str, wait_ms: u64) -> Operation {
    Operation::Acquire {
        lock: lock(name),
        wait_ms,
        claim: Claim::EXCLUSIVE,
    }
}

fn cancel(name: &str) -> Operation {
    Operation::Cancel { lock: lock(name) }
}

/// Registers a client through `leader` (with a session of `ttl_ms`, if given); returns its id.
fn register_client(network: &mut Network, leader: ServerId, ttl_ms: Option<u64>) -> ClientId {
    let request = ClientRequest {
        body: RequestBody::Hello { nonce: 5, ttl_ms },
        ..hello(5)
    };
    network.welcome(leader, request)
}

/// `request` from `from` to server `id`, then every message it causes; returns every reply
/// sent meanwhile, to anyone.
fn send(
    network: &mut Network,
    id: ServerId,
    from: ClientAddr,
    request: ClientRequest,
) -> Vec<(ClientAddr, ReplyBody)> {
    let _ = network.step(id, from_client(from, request));
    let _ = network.deliver_all();
    take_replies(network)
}

fn take_replies(network: &mut Network) -> Vec<(ClientAddr, ReplyBody)> {
    std::mem::take(&mut network.replies)
        .into_iter()
        .map(|(to, reply)| (to, reply.body))
        .collect()
}

fn granted(token: LogIndex) -> ReplyBody {
    ReplyBody::Outcome(Outcome::Granted { token })
}

/// The index of the first entry in `server`'s log that `wanted` picks.
/// Three clients on a three-server cluster led by s1: the holder holds `a`; the first and the
/// second waiter queued behind it, in that order, and heard nothing yet.
fn two_waiters_on_a(network: &mut Network) -> (ClientId, ClientId, ClientId) {
    network.elect(S1);
    let holder = register_client(network, S1, None);
    let first = register_client(network, S1, None);
    let second = register_client(network, S1, None);
    let answers = send(network, S1, HOLDER, op(holder, 1, preempt("a")));
    assert!(matches!(
        answers[..],
        [(HOLDER, ReplyBody::Outcome(Outcome::Granted { .. }))]
    ));
    let answers = send(network, S1, FIRST, op(first, 1, acquire("a", LONG_WAIT_MS)));
    assert_eq!(
        answers,
        vec![],
        "a waiter hears nothing until it is decided"
    );
    let answers = send(
        network,
        S1,
        SECOND,
        op(second, 1, acquire("a", LONG_WAIT_MS)),
    );
    assert_eq!(answers, vec![]);
    let table = network.server(S1).lock_table();
    let queued: Vec<ClientId> = table.waiters("a").map(|waiter| waiter.client).collect();
    assert_eq!(
        queued,
        vec![first, second],
        "queued in the order their entries applied"
    );
    (holder, first, second)
}

// ----- hand-over -----

/// An acquire that may not wait is refused at its commit, so, unlike one that queues, its
/// client waits for that commit: its appends stay urgent.
#[test]
fn an_acquire_that_may_not_wait_stays_urgent_behind_a_holder() {
    let mut network = Network::new(3);
    network.elect(S1);
    let holder = register_client(&mut network, S1, None);
    let impatient = register_client(&mut network, S1, None);
    let _ = send(&mut network, S1, HOLDER, op(holder, 1, preempt("a")));
    let outputs = network.step(S1, from_client(FIRST, op(impatient, 1, acquire("a", 0))));
    assert!(
        urgency(&outputs).contains(&(S2, true)),
        "{:?}",
        urgency(&outputs)
    );
    assert_eq!(
        network.server(S1).prompt_through(),
        network.server(S1).log().last_index()
    );
    let _ = network.deliver_all();
    let answers = take_replies(&mut network);
    assert!(
        matches!(
            answers[..],
            [(FIRST, ReplyBody::Outcome(Outcome::HeldBy { .. }))]
        ),
        "{answers:?}"
    );
}

/// An acquire that queues behind a holder is answered only by a later entry (the release that
/// hands it the lock), which commits it too. So its appends may wait to share a disk flush: the
/// leader marks them non-urgent for every follower and leaves `prompt_through` where it was,
/// which tells the driver its own sync may wait as well. The acquire of a free lock and the
/// release that hands over are answered at their commit, and stay urgent.
#[test]
fn the_appends_of_an_acquire_that_queues_may_wait_and_the_hand_over_does_not() {
    let mut network = Network::new(3);
    network.elect(S1);
    let holder = register_client(&mut network, S1, None);
    let waiter = register_client(&mut network, S1, None);

    let outputs = network.step(
        S1,
        from_client(HOLDER, op(holder, 1, acquire("a", LONG_WAIT_MS))),
    );
    assert!(
        urgency(&outputs).contains(&(S2, true)),
        "a free lock's acquire is urgent: {:?}",
        urgency(&outputs)
    );
    let last = network.server(S1).log().last_index();
    assert_eq!(network.server(S1).prompt_through(), last);
    let _ = network.deliver_all();
    let _ = take_replies(&mut network);

    let outputs = network.step(
        S1,
        from_client(FIRST, op(waiter, 1, acquire("a", LONG_WAIT_MS))),
    );
    assert_eq!(
        urgency(&outputs),
        vec![(S2, false), (S3, false)],
        "an acquire that queues may wait on every follower"
    );
    assert_eq!(network.server(S1).log().last_index(), last + 1);
    assert_eq!(
        network.server(S1).prompt_through(),
        last,
        "nobody waits promptly for the queued acquire"
    );
    let _ = network.deliver_all();
    assert_eq!(
        take_replies(&mut network),
        vec![],
        "the waiter hears nothing yet"
    );

    let outputs = network.step(S1, from_client(HOLDER, op(holder, 2, release("a"))));
    assert!(
        urgency(&outputs).contains(&(S2, true)),
        "the hand-over is urgent: {:?}",
        urgency(&outputs)
    );
    assert_eq!(network.server(S1).prompt_through(), last + 2);
    let _ = network.deliver_all();
    let answers = take_replies(&mut network);
    assert_eq!(
        answers,
        vec![
            (HOLDER, ReplyBody::Outcome(Outcome::Released)),
            (FIRST, granted(last + 2)),
        ],
        "the release committed the queued acquire with it"
    );
}

/// The first promise: a release hands the lock to the head of the queue in the same
/// log entry (one replication round per hand-off), and only the new holder is woken.
#[test]
fn a_release_hands_the_lock_to_the_head_in_its_own_entry_and_wakes_only_the_head() {
    let mut network = Network::new(3);
    let (holder, first, second) = two_waiters_on_a(&mut network);
    let answers = send(&mut network, S1, HOLDER, op(holder, 2, release("a")));
    let release_index = find_entry(network.server(S1), |command| {
        matches!(command, Command::Release { .. })
    })
    .expect("the release is in the log");
    assert_eq!(
        answers,
        vec![
            (HOLDER, ReplyBody::Outcome(Outcome::Released)),
            (FIRST, granted(release_index)),
        ],
        "the holder hears released, the head is granted with the release's index as its \
         token, the second waiter hears nothing"
    );
    assert_eq!(
        network.server(S1).log().last_index(),
        release_index,
        "no entry after the release: the hand-over is inside it"
    );
    for server in [S1, S2, S3] {
        network.heartbeat(S1);
        let table = network.server(server).lock_table();
        assert_eq!(
            table.holder("a").map(|holder| holder.owner),
            Some(first),
            "{server}"
        );
        let queued: Vec<ClientId> = table.waiters("a").map(|waiter| waiter.client).collect();
        assert_eq!(
            queued,
            vec![second],
            "{server}: the second waiter is the head now"
        );
    }
    // And on to the next, in order.
    let answers = send(&mut network, S1, FIRST, op(first, 2, release("a")));
    let token = network.server(S1).log().last_index();
    assert_eq!(
        answers,
        vec![
            (FIRST, ReplyBody::Outcome(Outcome::Released)),
            (SECOND, granted(token))
        ]
    );
}

/// An acquire of a free lock is granted at once, like a preempt; with `wait_ms` 0 an acquire
/// of a held lock is refused at once, like a preempt, and queues nobody.
#[test]
fn an_acquire_of_a_free_lock_is_granted_and_one_that_may_not_wait_is_refused() {
    let mut network = Network::new(3);
    network.elect(S1);
    let holder = register_client(&mut network, S1, None);
    let other = register_client(&mut network, S1, None);
    let answers = send(
        &mut network,
        S1,
        HOLDER,
        op(holder, 1, acquire("a", LONG_WAIT_MS)),
    );
    let token = network.server(S1).log().last_index();
    assert_eq!(answers, vec![(HOLDER, granted(token))]);
    let answers = send(&mut network, S1, FIRST, op(other, 1, acquire("a", 0)));
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Outcome(Outcome::HeldBy { owner: holder }))]
    );
    assert_eq!(network.server(S1).lock_table().waiters("a").count(), 0);
    // The holder acquiring again is idempotent: the same token.
    let answers = send(
        &mut network,
        S1,
        HOLDER,
        op(holder, 2, acquire("a", LONG_WAIT_MS)),
    );
    assert_eq!(answers, vec![(HOLDER, granted(token))]);
}

// ----- timeouts and cancels -----

/// Timeout is decided by the leader on its clock and committed: the waiter hears `timed_out`,
/// and a release after that grants it nothing, ever.
#[test]
fn a_timeout_is_committed_and_the_timed_out_waiter_is_never_granted_afterwards() {
    let mut network = Network::new(3);
    network.elect(S1);
    let holder = register_client(&mut network, S1, None);
    let waiter = register_client(&mut network, S1, None);
    let _ = send(&mut network, S1, HOLDER, op(holder, 1, preempt("a")));
    let asked_at = network.now;
    let _ = send(&mut network, S1, FIRST, op(waiter, 1, acquire("a", 1_000)));
    network.run_until(asked_at + Duration::from_millis(900));
    assert_eq!(
        take_replies(&mut network),
        vec![],
        "not before its wait ran out"
    );
    network.run_until(asked_at + Duration::from_millis(1_200));
    let answers = take_replies(&mut network);
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Outcome(Outcome::TimedOut))]
    );
    let timeout = find_entry(
        network.server(S1),
        |command| matches!(command, Command::Timeout { client, .. } if *client == waiter),
    );
    assert!(timeout.is_some(), "the timeout is a log entry");
    // The explorer's coverage names what happened: a timeout appended, a waiter timed out.
    let coverage = network.server(S1).coverage();
    assert_eq!(coverage.count(Branch::QueueTimeoutAppended), 1);
    assert_eq!(coverage.count(Branch::QueueWaiterTimedOut), 1);
    assert_eq!(coverage.count(Branch::QueueWaiterGranted), 0);
    let answers = send(&mut network, S1, HOLDER, op(holder, 2, release("a")));
    assert_eq!(
        answers,
        vec![(HOLDER, ReplyBody::Outcome(Outcome::Released))]
    );
    assert_eq!(network.server(S1).lock_table().check("a"), Outcome::Free);
    // A retry of the timed-out acquire hears the same decision, and takes no new place.
    let answers = send(&mut network, S1, FIRST, op(waiter, 1, acquire("a", 1_000)));
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Outcome(Outcome::TimedOut))]
    );
    assert_eq!(network.server(S1).lock_table().check("a"), Outcome::Free);
}

/// A waiter's cancel (a new request) ends its wait: the acquire hears `cancelled`, so does the
/// cancel, and the lock goes to the next waiter, not to it.
#[test]
fn a_cancel_ends_the_wait_and_the_lock_goes_to_the_next_waiter() {
    let mut network = Network::new(3);
    let (holder, first, second) = two_waiters_on_a(&mut network);
    let answers = send(&mut network, S1, FIRST, op(first, 2, cancel("a")));
    assert_eq!(
        answers,
        vec![
            (FIRST, ReplyBody::Outcome(Outcome::Cancelled)),
            (FIRST, ReplyBody::Outcome(Outcome::Cancelled)),
        ],
        "the parked acquire and the cancel both hear it"
    );
    let answers = send(&mut network, S1, FIRST, op(first, 3, cancel("a")));
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Outcome(Outcome::NotWaiting))]
    );
    let answers = send(&mut network, S1, HOLDER, op(holder, 2, release("a")));
    let token = network.server(S1).log().last_index();
    assert_eq!(
        answers,
        vec![
            (HOLDER, ReplyBody::Outcome(Outcome::Released)),
            (SECOND, granted(token))
        ]
    );
    let holder_now = network.server(S1).lock_table().holder("a").map(|h| h.owner);
    assert_eq!(holder_now, Some(second));
}

// ----- exactly-once -----

/// A retried acquire (same client and seq) after a failover finds its place: no second place,
/// no second entry, and the FIFO order the log recorded survives the leader's crash.
#[test]
fn a_retried_acquire_after_failover_finds_its_place_and_never_gets_a_second_one() {
    let mut network = Network::new(3);
    let (holder, first, second) = two_waiters_on_a(&mut network);
    network.heartbeat(S1);
    network.isolate(S1);
    network.elect(S2);
    let term = network.server(S2).term();
    // The waiters' answers died with s1's memory: they retry, the second one first.
    let retry = |client, wait_ms| in_term(term, op(client, 1, acquire("a", wait_ms)));
    assert_eq!(
        send(&mut network, S2, SECOND, retry(second, LONG_WAIT_MS)),
        vec![]
    );
    assert_eq!(
        send(&mut network, S2, FIRST, retry(first, LONG_WAIT_MS)),
        vec![]
    );
    let acquires = |client: ClientId| {
        count_entries(
            network.server(S2),
            |command| matches!(command, Command::Acquire { client: c, .. } if *c == client),
        )
    };
    assert_eq!(
        (acquires(first), acquires(second)),
        (1, 1),
        "no second entry"
    );
    let release = in_term(term, op(holder, 2, release("a")));
    let answers = send(&mut network, S2, HOLDER, release);
    let token = network.server(S2).log().last_index();
    assert_eq!(
        answers,
        vec![
            (HOLDER, ReplyBody::Outcome(Outcome::Released)),
            (FIRST, granted(token))
        ],
        "the first waiter is still first, though it retried last"
    );
    // A retry of a decided acquire hears its grant at once.
    assert_eq!(
        send(&mut network, S2, FIRST, retry(first, LONG_WAIT_MS)),
        vec![(FIRST, granted(token))]
    );
    let queued: Vec<ClientId> = network
        .server(S2)
        .lock_table()
        .waiters("a")
        .map(|w| w.client)
        .collect();
    assert_eq!(queued, vec![second]);
    // Coverage names the takeover that restarted inherited waits, and only that one: s1 came
    // to power over an empty table. (Mutant: `!` deleted from the emptiness test in
    // `maybe_ready_queues`.)
    let restarted = |server| {
        network
            .server(server)
            .coverage()
            .count(Branch::QueueWaitsRestarted)
    };
    assert_eq!((restarted(S1), restarted(S2)), (0, 1));
    // s1, back in touch, steps down, and keeps nothing of the waits it led: the answers it
    // parked and the deadlines it kept are the new leader's business now (its invariants
    // check that a follower holds neither). (Mutant: `queues_on_abdication` made `()`.)
    network.heal();
    network.heartbeat(S2);
    assert_eq!(network.server(S1).role(), Role::Follower);
    assert_eq!(network.server(S1).term(), term);
}

/// A stale acquire of the lock a client waits for (an older seq, as a rogue or a confused
/// client sends it) is refused `stale` once the newer one applied. Sent while the newer one is
/// still in the log, it is appended behind it and applies as stale: the wait it does not own
/// keeps its place and its own deadline, and the stale one's shorter wait never times the real
/// waiter out. (Explorer seed 324037, replayed by tests/scenarios.rs. Mutant: `waits_for ==
/// lock && waiter.seq == *seq` in `on_queue_entry_applied` made `||`, which let the stale seq
/// replace the deadline.)
#[test]
fn a_stale_acquire_of_the_awaited_lock_leaves_the_wait_and_its_deadline_alone() {
    let mut network = Network::new(3);
    let (_, first, second) = two_waiters_on_a(&mut network);
    let appended = network.server(S1).log().last_index();
    let newer = op(first, 3, acquire("a", 3_000));
    let stale = op(first, 2, acquire("a", 1_000));
    let asked_at = network.now;
    let _ = network.step(S1, from_client(FIRST, newer));
    let _ = network.step(S1, from_client(FIRST, stale));
    assert_eq!(
        network.server(S1).log().last_index(),
        appended + 2,
        "both in the log before either applies"
    );
    let _ = network.deliver_all();
    let answers = take_replies(&mut network);
    assert!(
        answers.iter().all(|(to, _)| *to == FIRST),
        "nobody else is woken: {answers:?}"
    );
    let waiters = |network: &Network| -> Vec<(ClientId, u64)> {
        let table = network.server(S1).lock_table();
        table.waiters("a").map(|w| (w.client, w.seq)).collect()
    };
    assert_eq!(waiters(&network), vec![(second, 1), (first, 3)]);

    // Past the stale acquire's second the real wait goes on, and it ends at its own three.
    network.run_until(asked_at + Duration::from_millis(2_000));
    assert_eq!(waiters(&network), vec![(second, 1), (first, 3)]);
    let early = take_replies(&mut network);
    assert!(early.is_empty(), "no waiter was timed out: {early:?}");
    network.run_until(asked_at + Duration::from_millis(3_300));
    assert_eq!(
        take_replies(&mut network),
        vec![(FIRST, ReplyBody::Outcome(Outcome::TimedOut))]
    );
    assert_eq!(waiters(&network), vec![(second, 1)]);

    // Once the newer one applied, the stale seq is refused before the log.
    let answers = send(&mut network, S1, FIRST, op(first, 2, acquire("a", 1_000)));
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Error(ServiceError::StaleRequest))]
    );
}

// ----- sessions and lock-delay -----

/// A waiter whose session expires is removed from every queue and hears `session_expired`; a
/// later release grants it nothing (Jepsen's etcd finding must not happen here).
#[test]
fn a_waiter_whose_session_expires_leaves_the_queue_and_is_never_granted() {
    let mut network = Network::new(3);
    network.elect(S1);
    let holder = register_client(&mut network, S1, None);
    let waiter = register_client(&mut network, S1, Some(3_000));
    let _ = send(&mut network, S1, HOLDER, op(holder, 1, preempt("a")));
    let _ = send(
        &mut network,
        S1,
        FIRST,
        op(waiter, 1, acquire("a", LONG_WAIT_MS)),
    );
    let end = network.now + Duration::from_secs(10);
    let expired = run_until_true(&mut network, end, 100, |network| {
        network.server(S1).lock_table().session_expired(waiter)
    });
    assert!(expired.is_some(), "the silent waiter's session expires");
    let answers = take_replies(&mut network);
    assert_eq!(
        answers,
        vec![(
            FIRST,
            ReplyBody::Error(ServiceError::SessionExpired { client: waiter })
        )]
    );
    network.heartbeat(S1);
    for server in [S1, S2, S3] {
        let table = network.server(server).lock_table();
        assert_eq!(table.waiting_for(waiter), None, "{server}");
        assert_eq!(table.queues().len(), 0, "{server}");
    }
    let answers = send(&mut network, S1, HOLDER, op(holder, 2, release("a")));
    assert_eq!(
        answers,
        vec![(HOLDER, ReplyBody::Outcome(Outcome::Released))]
    );
    assert_eq!(network.server(S1).lock_table().check("a"), Outcome::Free);
}

/// A holder's expiry frees the lock but keeps its queue: the head is granted only once the
/// lock-delay passed, by a hand-over entry the leader appends, and no newcomer jumps ahead.
#[test]
fn the_holders_expiry_hands_the_lock_to_the_head_only_after_the_lock_delay() {
    let disks = (0..3).map(|_| DurableState::default()).collect();
    let mut network = Network::from_disks(disks, |config| {
        config.lock_delay = Duration::from_secs(2);
    });
    network.elect(S1);
    let holder = register_client(&mut network, S1, Some(3_000));
    let waiter = register_client(&mut network, S1, None);
    let latecomer = register_client(&mut network, S1, None);
    let _ = send(&mut network, S1, HOLDER, op(holder, 1, preempt("a")));
    let _ = send(
        &mut network,
        S1,
        FIRST,
        op(waiter, 1, acquire("a", LONG_WAIT_MS)),
    );
    let end = network.now + Duration::from_secs(5);
    let expired_at = run_until_true(&mut network, end, 50, |network| {
        network.server(S1).lock_table().session_expired(holder)
    })
    .expect("the holder's session expires");
    assert_eq!(
        take_replies(&mut network),
        vec![],
        "nobody is granted at the expiry"
    );
    let answers = send(
        &mut network,
        S1,
        SECOND,
        op(latecomer, 1, acquire("a", LONG_WAIT_MS)),
    );
    assert!(
        matches!(
            answers[..],
            [(SECOND, ReplyBody::Error(ServiceError::LockDelayed { .. }))]
        ),
        "a newcomer waits out the delay like a preempt: {answers:?}"
    );
    network.run_until(expired_at + Duration::from_millis(1_900));
    assert_eq!(
        take_replies(&mut network),
        vec![],
        "still within the lock-delay"
    );
    network.run_until(expired_at + Duration::from_millis(2_300));
    let hand_over = find_entry(network.server(S1), |command| {
        matches!(command, Command::HandOver { .. })
    })
    .expect("the leader appended the hand-over");
    assert_eq!(
        take_replies(&mut network),
        vec![(FIRST, granted(hand_over))]
    );

    // The same lock, freed by a second expiry, is handed over again: a hand-over, once
    // applied, no longer counts as one in flight. (Mutant: the `HandOver` arm of
    // `on_queue_entry_applied` deleted, which kept `a` marked as handed over for good.)
    let second_holder = register_client(&mut network, S1, Some(3_000));
    let answers = send(&mut network, S1, FIRST, op(waiter, 2, release("a")));
    assert_eq!(
        answers,
        vec![(FIRST, ReplyBody::Outcome(Outcome::Released))]
    );
    let answers = send(&mut network, S1, HOLDER, op(second_holder, 1, preempt("a")));
    assert!(
        matches!(
            answers[..],
            [(HOLDER, ReplyBody::Outcome(Outcome::Granted { .. }))]
        ),
        "{answers:?}"
    );
    let retry = op(latecomer, 1, acquire("a", LONG_WAIT_MS));
    assert_eq!(send(&mut network, S1, SECOND, retry), vec![], "it waits");
    let end = network.now + Duration::from_secs(5);
    let expired_at = run_until_true(&mut network, end, 50, |network| {
        network
            .server(S1)
            .lock_table()
            .session_expired(second_holder)
    })
    .expect("the second holder's session expires");
    network.run_until(expired_at + Duration::from_millis(2_300));
    let second_hand_over = network.server(S1).log().last_index();
    assert!(matches!(
        network
            .server(S1)
            .log()
            .entry(second_hand_over)
            .map(|e| &e.command),
        Some(Command::HandOver { .. })
    ));
    assert_eq!(
        take_replies(&mut network),
        vec![(SECOND, granted(second_hand_over))]
    );
}

/// Without a lock-delay, a holder's expiry leaves its lock free with a line: the leader looks
/// at its queues in the very step that applies the expiry, not at its next tick, and appends
/// the hand-over to the head at once. (Mutant: the `Command::Expire` arm of
/// `on_queue_entry_applied` deleted, which left the freed lock idle until the next tick.)
#[test]
fn without_a_lock_delay_the_hand_over_follows_the_expiry_in_the_same_step() {
    let disks = (0..3).map(|_| DurableState::default()).collect();
    let mut network = Network::from_disks(disks, |config| {
        assert!(config.lock_delay.is_zero(), "no lock-delay by default");
    });
    network.elect(S1);
    let holder = register_client(&mut network, S1, Some(3_000));
    let waiter = register_client(&mut network, S1, None);
    let _ = send(&mut network, S1, HOLDER, op(holder, 1, preempt("a")));
    let answers = send(
        &mut network,
        S1,
        FIRST,
        op(waiter, 1, acquire("a", LONG_WAIT_MS)),
    );
    assert_eq!(answers, vec![], "the waiter queues");
    // One millisecond at a time, so that the check below sees the step of the expiry.
    let end = network.now + Duration::from_secs(5);
    let _ = run_until_true(&mut network, end, 1, |network| {
        network.server(S1).lock_table().session_expired(holder)
    })
    .expect("the holder's session expires");
    let hand_over = find_entry(network.server(S1), |command| {
        matches!(command, Command::HandOver { .. })
    })
    .expect("the hand-over is appended in the step that applied the expiry");
    let expire = find_entry(network.server(S1), |command| {
        command == &Command::Expire { client: holder }
    })
    .expect("the expire");
    assert_eq!(hand_over, expire + 1, "nothing between them");
    network.heartbeat(S1);
    assert_eq!(
        take_replies(&mut network),
        vec![(FIRST, granted(hand_over))]
    );
}

// ----- the lock table alone: bounds and totality -----

fn register_command(client: u64) -> Command {
    Command::Register {
        nonce: client,
        secret: Some(secret_for(ClientId(client))),
        ttl_ms: None,
    }
}

fn acquire_command(client: u64, seq: u64, wait_ms: u64) -> Command {
    Command::Acquire {
        client: ClientId(client),
        seq,
        lock: lock("a"),
        wait_ms,
        claim: Claim::EXCLUSIVE,
    }
}

/// The queue is bounded: the waiter past `QUEUE_WAITERS_PER_LOCK_MAX` is refused `queue_full`
/// and nothing changes; once one waiter leaves, the next acquire queues.
#[test]
fn a_full_queue_refuses_the_next_waiter_with_a_typed_refusal() {
    let mut table = LockTable::new();
    let clients = QUEUE_WAITERS_PER_LOCK_MAX as u64 + 2;
    for client in 1..=clients {
        assert_eq!(
            table.apply(client, &register_command(client)),
            ApplyResult::Registered {
                client: ClientId(client)
            }
        );
    }
    let mut index = clients;
    let mut apply = |table: &mut LockTable, command: Command| {
        index += 1;
        table.apply(index, &command)
    };
    let _ = apply(&mut table, acquire_command(1, 1, 0));
    for client in 2..clients {
        let result = apply(&mut table, acquire_command(client, 1, LONG_WAIT_MS));
        let queued = ApplyResult::Outcome {
            outcome: Outcome::Queued,
            duplicate: false,
        };
        assert_eq!(result, queued, "client#{client}");
    }
    assert_eq!(table.waiters("a").count(), QUEUE_WAITERS_PER_LOCK_MAX);
    let refused = apply(&mut table, acquire_command(clients, 1, LONG_WAIT_MS));
    assert_eq!(
        refused,
        ApplyResult::Rejected {
            rejection: Rejection::QueueFull
        }
    );
    assert_eq!(
        Rejection::QueueFull.service_error(ClientId(clients), 1),
        ServiceError::QueueFull {
            waiters_max: QUEUE_WAITERS_PER_LOCK_MAX as u32
        }
    );
    assert_eq!(table.waiting_for(ClientId(clients)), None);
    // An acquire that will not wait (`wait` 0, a try like preempt) joins no queue, so a full
    // one does not refuse it: it hears who holds the lock. (Mutant: `wait_ms > 0` in
    // `queue_is_full_for` made `>=`.)
    let try_once = apply(&mut table, acquire_command(clients, 2, 0));
    assert_eq!(
        try_once,
        ApplyResult::Outcome {
            outcome: Outcome::HeldBy { owner: ClientId(1) },
            duplicate: false,
        }
    );
    // Nor does it refuse the holder itself, which needs no place in the line: it already has
    // the lock. (Mutant: `!holders.is_empty() && ...` in `queue_is_full_for` made `||`.)
    let holder_again = apply(&mut table, acquire_command(1, 2, LONG_WAIT_MS));
    assert!(
        matches!(holder_again, ApplyResult::Outcome { .. }),
        "{holder_again:?}"
    );
    assert_eq!(table.waiting_for(ClientId(1)), None);
    let cancel = Command::Cancel {
        client: ClientId(2),
        seq: 2,
        lock: lock("a"),
    };
    let _ = apply(&mut table, cancel);
    let result = apply(&mut table, acquire_command(clients, 3, LONG_WAIT_MS));
    assert!(matches!(
        result,
        ApplyResult::Outcome {
            outcome: Outcome::Queued,
            ..
        }
    ));
}

/// Apply is total: a timeout of a waiter that is not queued (never was, or was granted), a
/// hand-over of a held lock or of a lock without waiters, all apply to nothing, the same way
/// everywhere.
#[test]
fn odd_queue_entries_apply_to_nothing() {
    let mut table = LockTable::new();
    for client in 1..=2 {
        let _ = table.apply(client, &register_command(client));
    }
    let timeout = |client, seq| Command::Timeout {
        client: ClientId(client),
        seq,
        lock: lock("a"),
    };
    let hand_over = Command::HandOver { lock: lock("a") };
    assert_eq!(table.apply(3, &timeout(1, 1)), ApplyResult::Nothing);
    assert_eq!(table.apply(4, &timeout(99, 1)), ApplyResult::Nothing);
    assert_eq!(table.apply(5, &hand_over), ApplyResult::Nothing);
    let _ = table.apply(6, &acquire_command(1, 1, 0));
    let _ = table.apply(7, &acquire_command(2, 1, LONG_WAIT_MS));
    assert_eq!(
        table.apply(8, &hand_over),
        ApplyResult::Nothing,
        "held: no hand-over"
    );
    assert_eq!(
        table.apply(9, &timeout(2, 7)),
        ApplyResult::Nothing,
        "another seq"
    );
    assert_eq!(table.last_woken(), &[]);
    assert_eq!(
        table.apply(10, &timeout(2, 1)),
        ApplyResult::Outcome {
            outcome: Outcome::TimedOut,
            duplicate: false
        }
    );
    assert_eq!(
        table.apply(11, &timeout(2, 1)),
        ApplyResult::Nothing,
        "already decided"
    );
    assert_eq!(table.holder("a").map(|h| h.owner), Some(ClientId(1)));
}

/// An expiry leaves its locks' queues waiting for the hand-over; a preempt applied meanwhile
/// (a leader that did not gate it) does not jump the queue: the head is granted first.
#[test]
fn nobody_jumps_the_queue_of_a_lock_freed_by_expiry() {
    let mut table = LockTable::new();
    let with_ttl = Command::Register {
        nonce: 1,
        secret: Some(secret_for(ClientId(1))),
        ttl_ms: Some(3_000),
    };
    let _ = table.apply(1, &with_ttl);
    let _ = table.apply(2, &register_command(2));
    let _ = table.apply(3, &register_command(3));
    let _ = table.apply(4, &acquire_command(1, 1, 0));
    let _ = table.apply(5, &acquire_command(2, 1, LONG_WAIT_MS));
    let expire = Command::Expire {
        client: ClientId(1),
    };
    assert!(matches!(
        table.apply(6, &expire),
        ApplyResult::Expired { released: 1, .. }
    ));
    assert_eq!(table.check("a"), Outcome::Free);
    assert_eq!(
        table.waiters("a").count(),
        1,
        "the queue waits for the hand-over"
    );
    let jumper = Command::Preempt {
        client: ClientId(3),
        seq: 1,
        lock: lock("a"),
        claim: Claim::EXCLUSIVE,
    };
    assert_eq!(
        table.apply(7, &jumper),
        ApplyResult::Outcome {
            outcome: Outcome::HeldBy { owner: ClientId(2) },
            duplicate: false
        }
    );
    assert_eq!(
        table.last_woken(),
        &[Woken {
            client: ClientId(2),
            seq: 1,
            lock: lock("a"),
            decision: Decision::Granted { token: 7 },
        }]
    );
}

/// A client runs one operation at a time: a new acquire of the same lock, under a newer seq,
/// means it gave up the old wait. The old one is decided `cancelled` and the new one goes to
/// the tail, behind those who came in between.
#[test]
fn a_newer_acquire_of_the_same_lock_takes_a_new_place_at_the_tail() {
    let mut table = LockTable::new();
    for client in 1..=3 {
        let _ = table.apply(client, &register_command(client));
    }
    let _ = table.apply(4, &acquire_command(1, 1, 0));
    let _ = table.apply(5, &acquire_command(2, 1, LONG_WAIT_MS));
    let _ = table.apply(6, &acquire_command(3, 1, LONG_WAIT_MS));
    let again = table.apply(7, &acquire_command(2, 2, LONG_WAIT_MS));
    assert!(matches!(
        again,
        ApplyResult::Outcome {
            outcome: Outcome::Queued,
            ..
        }
    ));
    assert_eq!(
        table.last_woken(),
        &[Woken {
            client: ClientId(2),
            seq: 1,
            lock: lock("a"),
            decision: Decision::Cancelled,
        }]
    );
    let order: Vec<(ClientId, u64)> = table.waiters("a").map(|w| (w.client, w.seq)).collect();
    assert_eq!(order, vec![(ClientId(3), 1), (ClientId(2), 2)]);
}
