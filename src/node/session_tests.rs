//! Stories about sessions: keepalives, replicated expiry, silent marks and revives, leader
//! changes, lock-delay. Each drives a few servers through the in-test `Network` of
//! `server_tests` under virtual time, and asserts on what clients hear and what the log holds.
//! docs/design.md ("Sessions and leases") states the rules these stories check.

use super::*;
use crate::node::messages::{Claim, SilentSession};

/// The TTL most stories ask for.
const TTL_MS: u64 = 3_000;
/// The default drift bound of `ServerConfig`.
const DRIFT: f64 = 0.01;

fn hello_with_ttl(nonce: u64, ttl_ms: u64) -> ClientRequest {
    ClientRequest {
        body: RequestBody::Hello {
            nonce,
            ttl_ms: Some(ttl_ms),
        },
        ..hello(nonce)
    }
}

fn keepalive(client: ClientId, seq: u64) -> ClientRequest {
    ClientRequest {
        seq,
        seen_index: 0,
        term: 0,
        body: RequestBody::Keepalive {
            client,
            secret: known_secret(client),
        },
    }
}

/// Registers a client with a session of `ttl_ms` through `leader`; returns its id.
fn register_with_ttl(network: &mut Network, leader: ServerId, ttl_ms: u64) -> ClientId {
    network.welcome(leader, hello_with_ttl(77, ttl_ms))
}

fn bodies(replies: &[(ClientAddr, ClientReply)]) -> Vec<ReplyBody> {
    replies
        .iter()
        .map(|(_, reply)| reply.body.clone())
        .collect()
}

/// Where `client`'s expire sits in `server`'s log, if it is there.
fn expire_index(server: &Server, client: ClientId) -> Option<LogIndex> {
    find_entry(server, |command| command == &Command::Expire { client })
}

fn the_leader(network: &Network) -> ServerId {
    let leaders = network.leaders();
    let highest = leaders
        .iter()
        .map(|&(_, term)| term)
        .max()
        .expect("a leader");
    leaders
        .into_iter()
        .find(|&(_, term)| term == highest)
        .map(|(id, _)| id)
        .expect("a leader of the highest term")
}

fn stretched(ms_: u64) -> Duration {
    super::super::stretch(Duration::from_millis(ms_), DRIFT)
}

// ----- keepalives -----

/// The first promise: heartbeat load must not become the cost users complain about. A
/// keepalive is answered after a heartbeat round confirms the leader, with no log entry and no
/// write to disk.
#[test]
fn a_keepalive_costs_no_log_entry_and_no_fsync() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let last_before = network.server(S1).log().last_index();
    for seq in 1..=20 {
        let outputs = network.step(S1, from_client(CLIENT, keepalive(client, seq)));
        assert!(
            persisted(&outputs).is_empty(),
            "keepalive {seq} wrote nothing to disk at the leader"
        );
        assert!(
            replies(&outputs).is_empty(),
            "keepalive {seq} is not answered before its round is confirmed"
        );
        let trace = network.deliver_all();
        assert!(
            trace.iter().all(|envelope| matches!(
                &envelope.msg,
                PeerMessage::AppendEntries { entries, .. } if entries.is_empty()
            ) || matches!(
                &envelope.msg,
                PeerMessage::AppendResponse { .. }
            )),
            "only empty heartbeats and their answers travel: {trace:?}"
        );
        let answers = bodies(&std::mem::take(&mut network.replies));
        assert_eq!(
            answers,
            vec![ReplyBody::KeptAlive {
                ttl_ms: Some(TTL_MS)
            }]
        );
    }
    for server in [S1, S2, S3] {
        assert_eq!(
            network.server(server).log().last_index(),
            last_before,
            "{server}'s log did not grow from 20 keepalives"
        );
    }
}

/// A leader pairs its tracked deadlines with the table after every step, 64 of them per step
/// once it tracks more, in a window that wraps around: the check costs the same whatever the
/// number of sessions. With 200 sessions, keepalives are answered as ever; a deadline tracked
/// for a client with no live session, planted after the last of them, is still caught within a
/// few steps.
#[test]
#[should_panic(expected = "which has no live session")]
fn among_many_sessions_a_deadline_tracked_for_no_live_session_is_still_caught() {
    let mut network = Network::new(3);
    network.elect(S1);
    let clients: Vec<ClientId> = (0..200)
        .map(|nonce| {
            let replies = network.client(S1, hello_with_ttl(1_000 + nonce, TTL_MS));
            match bodies(&replies)[..] {
                [ReplyBody::Welcome { client, .. }] => client,
                ref other => panic!("a welcome expected, got {other:?}"),
            }
        })
        .collect();
    for (seq, client) in (1..).zip(clients.iter().step_by(20)) {
        network.step(S1, from_client(CLIENT, keepalive(*client, seq)));
        network.deliver_all();
    }
    let answers = bodies(&std::mem::take(&mut network.replies));
    assert_eq!(
        answers.len(),
        10,
        "every keepalive among 200 sessions answered"
    );
    let now = network.now;
    network.server_mut(S1).track_session_unchecked(
        ClientId(1_000_000),
        Duration::from_millis(TTL_MS),
        now,
    );
    for seq in 100..110 {
        network.step(S1, from_client(CLIENT, keepalive(clients[0], seq)));
        network.deliver_all();
    }
}

/// A keepalive must only be acknowledged by a leader that still leads after it received it.
/// s1, cut off, still believes it leads; a keepalive that reaches it starts a round nobody
/// answers, and when s1 learns of the new leader it answers `unavailable`, never `kept_alive`.
#[test]
fn a_deposed_leader_never_acknowledges_a_keepalive() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    network.isolate(S1);
    network.run_until(network.now + Duration::from_millis(400));
    let new_leader = the_leader(&network);
    assert_ne!(new_leader, S1, "s2 or s3 took over");
    // s1 may still believe it leads (check-quorum has not fired yet) or may have stepped
    // down; either way it must not acknowledge.
    let outputs = network.step(S1, from_client(CLIENT, keepalive(client, 1)));
    let _ = network.deliver_all();
    network.heal();
    network.run_until(network.now + Duration::from_millis(500));
    let heard: Vec<ReplyBody> = replies(&outputs)
        .into_iter()
        .chain(std::mem::take(&mut network.replies))
        .filter(|(to, reply)| *to == CLIENT && reply.seq == 1)
        .map(|(_, reply)| reply.body)
        .collect();
    assert!(
        !heard.contains(&ReplyBody::KeptAlive {
            ttl_ms: Some(TTL_MS)
        }),
        "a deposed leader acknowledged a keepalive: {heard:?}"
    );
    assert_eq!(network.server(S1).role(), Role::Follower);
    // The client's retry to the real leader is acknowledged.
    let answers = bodies(&network.client(new_leader, keepalive(client, 2)));
    assert_eq!(
        answers,
        vec![ReplyBody::KeptAlive {
            ttl_ms: Some(TTL_MS)
        }]
    );
}

// ----- expiry -----

/// A client that stops renewing loses its session by a replicated decision: the leader appends
/// an expire once the TTL (stretched for drift) has passed on its clock, and every replica,
/// applying it, frees the client's locks and records which.
#[test]
fn a_dead_sessions_expiry_is_a_replicated_entry_that_frees_its_locks() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let registered_at = network.now;
    for (seq, name) in [(1, "a"), (2, "b")] {
        let answers = network.client(S1, op(client, seq, preempt(name)));
        assert!(matches!(
            answers[..],
            [(
                _,
                ClientReply {
                    body: ReplyBody::Outcome(Outcome::Granted { .. }),
                    ..
                }
            )]
        ));
    }
    let last_write = network.now;
    // The client dies here. Nothing expires before TTL × (1 + drift) after its last write.
    let end = registered_at + Duration::from_secs(10);
    let expired_at = run_until_true(&mut network, end, 10, |network| {
        expire_index(network.server(S1), client).is_some()
    })
    .expect("the session expires");
    assert!(
        expired_at >= last_write + stretched(TTL_MS),
        "expired at {expired_at}, before the TTL after the last renewal at {last_write}"
    );
    assert!(
        expired_at <= last_write + stretched(TTL_MS) + Duration::from_millis(100),
        "expired at {expired_at}: the heartbeat after the deadline should have done it"
    );
    network.run_until(network.now + Duration::from_millis(200));
    for server in [S1, S2, S3] {
        let table = network.server(server).lock_table();
        assert_eq!(table.holder("a"), None, "{server} freed a");
        assert_eq!(table.holder("b"), None, "{server} freed b");
        let session = table.session(client).expect("a session with a TTL");
        let expired = session.expired.as_ref().expect("expired on every replica");
        assert_eq!(expired.released, vec![lock("a"), lock("b")]);
        assert_eq!(
            expired.index,
            expire_index(network.server(server), client).unwrap()
        );
    }
    assert_eq!(
        count_entries(network.server(S1), |c| matches!(
            c,
            Command::MarkSilent { .. }
        )),
        1,
        "the leader marked the silent session once, at half its TTL"
    );
}

/// After its expire, a client id is refused `session_expired` for everything: it must say
/// hello again, and its new id takes the lock with a larger fencing token.
#[test]
fn after_expiry_the_client_hears_session_expired_and_must_say_hello_again() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let granted = network.client(S1, op(client, 1, preempt("a")));
    let ReplyBody::Outcome(Outcome::Granted { token: first_token }) = granted[0].1.body else {
        panic!("granted expected: {granted:?}")
    };
    let end = network.now + Duration::from_secs(10);
    run_until_true(&mut network, end, 50, |network| {
        network.server(S1).lock_table().session_expired(client)
    })
    .expect("the session expires");
    // One more heartbeat carries the commit of the expire to the followers.
    network.run_until(network.now + Duration::from_millis(100));
    let expired = ReplyBody::Error(ServiceError::SessionExpired { client });
    assert_eq!(
        bodies(&network.client(S1, keepalive(client, 2))),
        vec![expired.clone()]
    );
    assert_eq!(
        bodies(&network.client(S1, op(client, 3, release("a")))),
        vec![expired.clone()]
    );
    assert_eq!(
        bodies(&network.client(S2, op(client, 4, check("a", Consistency::Local)))),
        vec![expired],
        "a follower answers checks from its replica, and knows too"
    );
    assert_eq!(
        bodies(&network.client(S1, op(client, 1, preempt("a")))),
        vec![ReplyBody::Outcome(Outcome::Granted { token: first_token })],
        "a retry of a write that took effect still hears what it did"
    );
    let again = register_with_ttl(&mut network, S1, TTL_MS);
    assert_ne!(again, client);
    let answers = network.client(S1, op(again, 1, preempt("a")));
    let ReplyBody::Outcome(Outcome::Granted { token }) = answers[0].1.body else {
        panic!("granted expected: {answers:?}")
    };
    assert!(
        token > first_token,
        "fencing token {token} after {first_token}"
    );
}

/// A session without a TTL never expires, as before sessions existed: scripts that take a
/// lock with one command and release it with another rely on it.
#[test]
fn a_session_without_a_ttl_never_expires() {
    let mut network = Network::new(3);
    network.elect(S1);
    let answers = network.client(S1, hello(5));
    let ReplyBody::Welcome { client, .. } = answers[0].1.body else {
        panic!("welcome expected")
    };
    let _ = network.client(S1, op(client, 1, preempt("a")));
    network.run_until(network.now + Duration::from_secs(20));
    assert!(network.server(S1).lock_table().session(client).is_none());
    assert_eq!(
        network.server(S1).lock_table().holder("a").map(|h| h.owner),
        Some(client)
    );
    assert_eq!(
        count_entries(network.server(S1), |c| {
            matches!(
                c,
                Command::Expire { .. } | Command::MarkSilent { .. } | Command::Revive { .. }
            )
        }),
        0,
        "no session entry at all"
    );
}

/// A hello asking for a TTL outside the server's bounds is refused, naming them.
#[test]
fn a_ttl_outside_the_servers_bounds_is_refused_naming_them() {
    let mut network = Network::new(3);
    network.elect(S1);
    for ttl_ms in [0, 999, 3_600_001] {
        let answers = bodies(&network.client(S2, hello_with_ttl(1, ttl_ms)));
        let [ReplyBody::Error(ServiceError::BadRequest { reason })] = &answers[..] else {
            panic!("bad_request expected for {ttl_ms}: {answers:?}")
        };
        assert!(reason.contains("1000 to 3600000"), "{reason}");
    }
    assert_eq!(network.server(S1).lock_table().client_count(), 0);
}

/// A keepalive is answered once its round is confirmed and the log it arrived behind is
/// applied; a write appended after it and applied before its round confirms does not hold it
/// back. Here the round's own heartbeats are lost, and the round is confirmed by the answers to
/// the next write's append, in the same step that applies that write: the keepalive, waiting
/// for less than what is applied, is answered there. (Mutant: `k.serve_index > applied` in
/// `serve_keepalives`'s early return made `<`, which skipped every keepalive already served
/// by the applied log until one arrived that was not.)
#[test]
fn a_keepalive_confirmed_after_a_later_write_applied_is_answered_at_once() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let writer = register_with_ttl(&mut network, S1, TTL_MS);
    let outputs = network.step(S1, from_client(CLIENT, keepalive(client, 1)));
    assert!(replies(&outputs).is_empty(), "waits for its round");
    let heartbeats = std::mem::take(&mut network.in_flight);
    assert!(
        heartbeats.len() == 2
            && heartbeats.iter().all(|envelope| matches!(
                &envelope.msg,
                PeerMessage::AppendEntries { entries, .. } if entries.is_empty()
            )),
        "the round's heartbeats, lost here: {heartbeats:?}"
    );
    let write = op(writer, 1, preempt("a"));
    let replies = network.client(S1, write);
    let mut answers = bodies(&replies);
    answers.sort_by_key(|body| matches!(body, ReplyBody::KeptAlive { .. }));
    let grant = network.server(S1).log().last_index();
    assert_eq!(network.server(S1).lock_table().applied_index(), grant);
    assert_eq!(
        answers,
        vec![
            ReplyBody::Outcome(Outcome::Granted { token: grant }),
            ReplyBody::KeptAlive {
                ttl_ms: Some(TTL_MS)
            },
        ]
    );
}

/// Read rounds push the leader's heartbeat timer back, so a flood of keepalives keeps it from
/// ever firing. Deadlines are looked at on every step of the leader, not only on that timer:
/// a dead client's session expires on time while a live one renews every 30 ms.
#[test]
fn a_flood_of_keepalives_does_not_starve_expiry() {
    let mut network = Network::new(3);
    network.elect(S1);
    let dead = register_with_ttl(&mut network, S1, TTL_MS);
    let last_renewal = network.now;
    let live = register_with_ttl(&mut network, S1, TTL_MS);
    let mut seq = 0;
    let end = last_renewal + Duration::from_secs(5);
    while network.now < end && !network.server(S1).lock_table().session_expired(dead) {
        seq += 1;
        let answers = bodies(&network.client(S1, keepalive(live, seq)));
        assert_eq!(
            answers,
            vec![ReplyBody::KeptAlive {
                ttl_ms: Some(TTL_MS)
            }]
        );
        network.run_until(network.now + Duration::from_millis(30));
    }
    let expired_at = network.now;
    assert!(
        network.server(S1).lock_table().session_expired(dead),
        "the dead session never expired under {seq} keepalives"
    );
    assert!(expired_at <= last_renewal + stretched(TTL_MS) + Duration::from_millis(100));
    assert!(!network.server(S1).lock_table().session_expired(live));
}

// ----- leader changes -----

/// A new leader must not expire a session before its client could have stopped renewing it.
/// The keepalive acknowledged just before the old leader died arrived before the new leader
/// took over, so counting the TTL from the takeover is safe; the session must not expire
/// before TTL after that keepalive's send.
#[test]
fn a_new_leader_never_expires_a_session_early() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    network.run_until(network.now + Duration::from_millis(1_000));
    let sent_at = network.now;
    let answers = bodies(&network.client(S1, keepalive(client, 1)));
    assert_eq!(
        answers,
        vec![ReplyBody::KeptAlive {
            ttl_ms: Some(TTL_MS)
        }]
    );
    // The leader dies right after acknowledging it.
    network.isolate(S1);
    let end = sent_at + Duration::from_secs(10);
    let mut earliest_deadline = None;
    let expired_at = run_until_true(&mut network, end, 10, |network| {
        for (leader, _) in network.leaders() {
            if leader != S1
                && let Some(deadline) = network.server(leader).session_deadline(client)
            {
                earliest_deadline.get_or_insert(deadline);
            }
        }
        [S2, S3]
            .iter()
            .any(|&s| expire_index(network.server(s), client).is_some())
    })
    .expect("the session expires under the new leader");
    let deadline = earliest_deadline.expect("the new leader tracked the session");
    assert!(
        deadline >= sent_at + stretched(TTL_MS),
        "the new leader's deadline {deadline} is before TTL after the send at {sent_at}"
    );
    assert!(
        expired_at >= sent_at + stretched(TTL_MS),
        "expired at {expired_at}, before TTL after the last acknowledged keepalive at {sent_at}"
    );
}

/// A renewal of a session marked silent must be committed as a revive before it is
/// acknowledged: otherwise a later leader, seeing only the mark, would count the deadline
/// from before the renewal and expire the session early.
#[test]
fn a_renewal_after_a_silent_mark_is_revived_through_the_log_so_the_next_leader_does_not_trust_the_mark()
 {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let end = network.now + Duration::from_secs(5);
    run_until_true(&mut network, end, 10, |network| {
        count_entries(network.server(S1), |c| {
            matches!(c, Command::MarkSilent { .. })
        }) == 1
    })
    .expect("half a TTL of silence marks the session");
    let sent_at = network.now;
    let outputs = network.step(S1, from_client(CLIENT, keepalive(client, 1)));
    assert!(replies(&outputs).is_empty());
    let _ = network.deliver_all();
    assert_eq!(
        bodies(&std::mem::take(&mut network.replies)),
        vec![ReplyBody::KeptAlive {
            ttl_ms: Some(TTL_MS)
        }]
    );
    assert_eq!(
        count_entries(network.server(S2), |c| *c == Command::Revive { client }),
        1,
        "the revive reached a majority before the answer left"
    );
    assert!(
        network
            .server(S1)
            .lock_table()
            .session(client)
            .unwrap()
            .silent
            .is_none(),
        "applied, the revive lifts the mark"
    );
    network.isolate(S1);
    let end = sent_at + Duration::from_secs(10);
    let expired_at = run_until_true(&mut network, end, 10, |network| {
        [S2, S3]
            .iter()
            .any(|&s| expire_index(network.server(s), client).is_some())
    })
    .expect("the session expires eventually");
    assert!(
        expired_at >= sent_at + stretched(TTL_MS),
        "expired at {expired_at}, before TTL after the revived keepalive at {sent_at}"
    );
}

/// etcd restarts every lease's TTL at every leader change, so under a flapping leader a lease
/// never expires. Here the leader changes every 2 s, less than the 3 s TTL, and the dead
/// client's session still expires within the stated bound: TTL × (1 + drift) plus a
/// heartbeat, after its last renewal, because the first leader's silent mark (at half the
/// TTL) tells every later leader how long the session had been silent.
#[test]
fn under_a_leader_that_changes_every_two_seconds_a_dead_session_still_expires_on_time() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = register_with_ttl(&mut network, S1, TTL_MS);
    let last_renewal = network.now;
    let bound = last_renewal + stretched(TTL_MS) + Duration::from_millis(600);
    let mut changes = 0;
    let mut expired_at = None;
    'flapping: for _ in 0..10 {
        let change_at = network.now + Duration::from_millis(2_000);
        if let Some(at) = run_until_true(&mut network, change_at, 10, |network| {
            network
                .servers
                .values()
                .any(|server| server.lock_table().session_expired(client))
        }) {
            expired_at = Some(at);
            break 'flapping;
        }
        let old = the_leader(&network);
        network.isolate(old);
        network.run_until(network.now + Duration::from_millis(400));
        network.heal();
        let new = the_leader(&network);
        assert_ne!(new, old, "the leader changed");
        changes += 1;
    }
    let expired_at = expired_at.expect("the session expired despite the flapping leader");
    assert!(changes >= 1, "the leader changed before the expiry");
    assert!(
        expired_at >= last_renewal + stretched(TTL_MS),
        "expired at {expired_at}, before its TTL"
    );
    assert!(
        expired_at <= bound,
        "expired at {expired_at}, after the bound {bound} ({changes} leader changes)"
    );
}

// ----- lock-delay -----

/// Chubby's and Consul's lock-delay: a lock freed by an expiry, not by a release, is granted
/// to nobody for `lock_delay`; a lock released explicitly changes hands at once.
#[test]
fn lock_delay_holds_back_a_lock_freed_by_expiry_and_then_lets_it_go() {
    let disks = (0..3).map(|_| DurableState::default()).collect();
    let mut network = Network::from_disks(disks, |config| {
        config.lock_delay = Duration::from_secs(2);
    });
    network.elect(S1);
    let dead = register_with_ttl(&mut network, S1, TTL_MS);
    let waiter = register_with_ttl(&mut network, S1, 60_000);
    let _ = network.client(S1, op(dead, 1, preempt("a")));
    let _ = network.client(S1, op(dead, 2, preempt("b")));
    let _ = network.client(S1, op(dead, 3, release("b")));
    let answers = bodies(&network.client(S1, op(waiter, 1, preempt("b"))));
    assert!(
        matches!(answers[..], [ReplyBody::Outcome(Outcome::Granted { .. })]),
        "a released lock is granted at once: {answers:?}"
    );
    let end = network.now + Duration::from_secs(10);
    let expired_at = run_until_true(&mut network, end, 10, |network| {
        network.server(S1).lock_table().session_expired(dead)
    })
    .expect("the holder's session expires");
    let answers = bodies(&network.client(S1, op(waiter, 2, preempt("a"))));
    let [ReplyBody::Error(ServiceError::LockDelayed { retry_after_ms })] = answers[..] else {
        panic!("lock_delayed expected: {answers:?}")
    };
    assert!(
        retry_after_ms > 1_500 && retry_after_ms <= 2_020,
        "{retry_after_ms}"
    );
    network.run_until(expired_at + Duration::from_millis(1_000));
    let answers = bodies(&network.client(S1, op(waiter, 2, preempt("a"))));
    assert!(
        matches!(
            answers[..],
            [ReplyBody::Error(ServiceError::LockDelayed { .. })]
        ),
        "still delayed halfway: {answers:?}"
    );
    network.run_until(expired_at + stretched(2_000) + Duration::from_millis(10));
    let answers = bodies(&network.client(S1, op(waiter, 2, preempt("a"))));
    assert!(
        matches!(answers[..], [ReplyBody::Outcome(Outcome::Granted { .. })]),
        "granted once the delay is over: {answers:?}"
    );
}

// ----- apply is total -----

/// Session entries no leader would append (an expire of a client never registered, of one
/// without a TTL, twice; marks and revives of strangers) apply to the same no-op everywhere.
#[test]
fn odd_session_entries_apply_to_a_deterministic_no_op() {
    let mut table = crate::node::LockTable::new();
    let with_ttl = Command::Register {
        nonce: 1,
        secret: Some(secret_for(ClientId(1))),
        ttl_ms: Some(TTL_MS),
    };
    let without_ttl = Command::Register {
        nonce: 2,
        secret: Some(secret_for(ClientId(2))),
        ttl_ms: None,
    };
    assert!(matches!(
        table.apply(1, &with_ttl),
        ApplyResult::Registered { .. }
    ));
    assert!(matches!(
        table.apply(2, &without_ttl),
        ApplyResult::Registered { .. }
    ));
    let grant = |client, seq| Command::Preempt {
        client: ClientId(client),
        seq,
        lock: lock(if client == 1 { "a" } else { "b" }),
        claim: Claim::EXCLUSIVE,
    };
    assert!(matches!(
        table.apply(3, &grant(1, 1)),
        ApplyResult::Outcome { .. }
    ));
    assert!(matches!(
        table.apply(4, &grant(2, 1)),
        ApplyResult::Outcome { .. }
    ));
    let odd = [
        Command::Expire {
            client: ClientId(0),
        },
        Command::Expire {
            client: ClientId(99),
        },
        Command::Expire {
            client: ClientId(2),
        },
        Command::MarkSilent {
            sessions: vec![
                SilentSession {
                    client: ClientId(99),
                    silent_ms: 5,
                },
                SilentSession {
                    client: ClientId(2),
                    silent_ms: u64::MAX,
                },
            ],
        },
        Command::Revive {
            client: ClientId(99),
        },
        Command::Revive {
            client: ClientId(2),
        },
    ];
    for (offset, command) in odd.iter().enumerate() {
        let index = 5 + offset as LogIndex;
        assert_eq!(
            table.apply(index, command),
            ApplyResult::Nothing,
            "{command:?}"
        );
    }
    assert_eq!(table.holder("b").map(|h| h.owner), Some(ClientId(2)));
    assert_eq!(
        table.apply(
            11,
            &Command::Expire {
                client: ClientId(1)
            }
        ),
        ApplyResult::Expired {
            client: ClientId(1),
            released: 1
        }
    );
    assert_eq!(
        table.apply(
            12,
            &Command::Expire {
                client: ClientId(1)
            }
        ),
        ApplyResult::Nothing,
        "a second expire of the same session changes nothing"
    );
    assert_eq!(
        table.apply(13, &grant(1, 2)),
        ApplyResult::Rejected {
            rejection: crate::node::messages::Rejection::SessionExpired
        },
        "an expired client is granted nothing, whatever a leader appended"
    );
    assert_eq!(table.holder("a"), None);
    assert_eq!(table.freed_by_expiry().get("a"), Some(&11));
}
