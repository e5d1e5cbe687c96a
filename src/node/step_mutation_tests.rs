//! Stories that kill mutants of `src/node` which survived every other test in the third
//! mutation session (docs/mutation-testing.md). They drive servers only through
//! `Server::new`/`Server::step` and read only their outputs and public observers (role, term,
//! log, coverage, pending requests), so that they hold whatever the lock table's inside
//! becomes. Each cites the rule it pins and the mutant it was written for.

use super::*;
use crate::node::coverage::Branch;
use crate::node::messages::{Claim, SilentSession};

/// A follower of three (s2) that follows s1 in term 1 since `contact_ms`, its log empty.
fn follower_hearing_s1_at(contact_ms: u64) -> Server {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(contact_ms), peer(S1, append(1, (0, 0), Vec::new(), 0)));
    assert_eq!(
        (follower.role(), follower.term(), follower.leader()),
        (Role::Follower, 1, Some(S1))
    );
    follower
}

fn pre_vote_granted(outputs: &[ServerOutput]) -> Option<bool> {
    sent(outputs).into_iter().find_map(|(_, msg)| match msg {
        PeerMessage::PreVoteResponse { granted, .. } => Some(granted),
        _ => None,
    })
}

/// An entry of term 1 registering `id` with its test secret, and a session of `ttl_ms` if any.
fn registration(id: ClientId, ttl_ms: Option<u64>) -> Entry {
    in_term_1(Command::Register {
        nonce: 9,
        secret: Some(secret_for(id)),
        ttl_ms,
    })
}

/// A silent mark of `client`, silent for 1.5 s.
fn silent_for_1_5_s(client: ClientId) -> Command {
    Command::MarkSilent {
        sessions: vec![SilentSession {
            client,
            silent_ms: 1_500,
        }],
    }
}

/// Term 1's first entries: `dying` registers with a one-second session, then each of
/// `others` without one, and `dying` takes `a`.
fn dying_holds_a_among(dying: ClientId, others: &[ClientId]) -> Vec<Entry> {
    let mut entries = vec![noop(1), registration(dying, Some(1_000))];
    entries.extend(others.iter().map(|&other| registration(other, None)));
    entries.push(in_term_1(exclusive_preempt(dying, "a")));
    entries
}

fn in_term_1(command: Command) -> Entry {
    Entry { term: 1, command }
}

fn exclusive_preempt(client: ClientId, name: &str) -> Command {
    Command::Preempt {
        client,
        seq: 1,
        lock: lock(name),
        claim: Claim::EXCLUSIVE,
    }
}

/// An exclusive acquire under seq 1 that waits a minute.
fn long_acquire(client: ClientId, name: &str) -> Command {
    Command::Acquire {
        client,
        seq: 1,
        lock: lock(name),
        wait_ms: 60_000,
        claim: Claim::EXCLUSIVE,
    }
}

/// s2, which received `entries` from s1 in term 1 at 10 ms with `commit` of them committed,
/// then won the election of term 2 at 1 s: its no-op appended, not yet committed.
fn leader_in_term_2_over(entries: Vec<Entry>, commit: LogIndex) -> Server {
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, commit)));
    let _ = win_election(&mut server, ms(1_000), 3);
    server
}

/// `client`'s preempt of `a`, at the leader at 1 s: neither appended nor answered (it waits
/// for a read), because the projected owner is someone else.
fn assert_a_preempt_waits_for_a_read(leader: &mut Server, client: ClientId, why: &str) {
    let last = leader.log().last_index();
    let request = in_term(2, op(client, 1, preempt("a")));
    let outputs = leader.step(ms(1_000), from_client(CLIENT, request));
    assert!(persisted(&outputs).is_empty(), "{why}: {outputs:?}");
    assert!(replies(&outputs).is_empty(), "{why}: {outputs:?}");
    assert_eq!(leader.log().last_index(), last, "{why}");
}

/// Only the cluster's own peers speak Raft to a server: a message that names a sender outside
/// the configuration, or the server itself, is bad input from the transport and is dropped,
/// however high a term it carries. (Mutant: `from == id || !servers.contains(&from)` in
/// `on_peer_message` made `&&`.)
#[test]
fn a_vote_request_from_outside_the_cluster_or_from_itself_is_dropped() {
    let mut server = boot(S2, 3);
    for stranger in [ServerId(9), S2] {
        let outputs = server.step(ms(10), peer(stranger, request_vote(5, 7, 5)));
        assert!(sent(&outputs).is_empty(), "{stranger}: {outputs:?}");
        assert!(persisted(&outputs).is_empty(), "{stranger}: {outputs:?}");
        assert_eq!((server.term(), server.voted_for()), (0, None));
    }
}

/// Leader stickiness (thesis §4.2.3), at its boundary: a follower believes its leader alive
/// for strictly less than the minimum election timeout (150 ms) after last hearing from it.
/// At 159.999999 ms after contact at 10 ms it refuses a pre-vote; at 160 ms exactly the lease
/// is over and it grants one. (Mutant: `now < at + election_timeout_min` in
/// `in_leader_lease` made `<=`.)
#[test]
fn the_leader_lease_ends_exactly_one_minimum_election_timeout_after_contact() {
    let mut follower = follower_hearing_s1_at(10);
    let lease_end = ms(160);
    let just_before = Time::from_nanos(lease_end.as_nanos() - 1);
    let outputs = follower.step(just_before, peer(S3, pre_vote(2, 0, 0)));
    assert_eq!(pre_vote_granted(&outputs), Some(false));
    let outputs = follower.step(lease_end, peer(S3, pre_vote(2, 0, 0)));
    assert_eq!(pre_vote_granted(&outputs), Some(true));
    let coverage = follower.coverage();
    assert_eq!(coverage.count(Branch::PreVoteRefusedLeaderLease), 1);
    assert_eq!(coverage.count(Branch::PreVoteGranted), 1);
}

/// `pending_request_count` is what a driver reports as requests in flight (and what
/// `pending_reads_max` bounds): a local check waiting at a follower for its replica to reach
/// what its client has seen is one of them until it is answered. (Mutant: `+` before
/// `confirmed_reads.len()` in `pending_read_count` made `*`.)
#[test]
fn a_local_check_waiting_for_its_replica_counts_as_a_pending_request() {
    let owner = ClientId(1);
    let mut follower = boot(S2, 3);
    let _ = follower.step(
        ms(10),
        peer(S1, append(1, (0, 0), register_and_grant_a(owner), 3)),
    );
    assert_eq!(follower.pending_request_count(), 0);
    let mut ahead = op(owner, 2, check("a", Consistency::Local));
    ahead.seen_index = 4;
    assert!(replies(&follower.step(ms(20), from_client(CLIENT, ahead))).is_empty());
    assert_eq!(follower.pending_request_count(), 1);
    // Entry 4 arrives and commits: the check is answered, and no longer pending.
    let outputs = follower.step(ms(30), peer(S1, append(1, (3, 1), noops(&[1]), 4)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(2, Outcome::Owner { owner, token: 3 }))]
    );
    assert_eq!(follower.pending_request_count(), 0);
}

/// The seed design's fixed leader (`initial_leader`) is for a first boot only: on an empty
/// disk the named server starts as the term-1 leader at once, and the others follow it. A
/// server whose disk holds a later term, even with an empty log (it voted, nothing more),
/// must not fall back to term 1: it boots as an ordinary follower of its own term. (Mutants
/// in `Server::build`'s `first_boot`: `durable.log.last_index() == 0` made `!=`, the `!`
/// before `durable.recovering` deleted, and the first `&&` made `||`.)
#[test]
fn only_an_empty_disk_boots_straight_into_the_initial_leaders_term() {
    let with_initial_leader = |id| ServerConfig {
        initial_leader: Some(S1),
        ..config(id, 3)
    };
    let (leader, _) = Server::new(with_initial_leader(S1), DurableState::default(), 1, ms(0));
    assert_eq!((leader.role(), leader.term()), (Role::Leader, 1));
    let (follower, _) = Server::new(with_initial_leader(S2), DurableState::default(), 2, ms(0));
    assert_eq!(
        (follower.role(), follower.term(), follower.leader()),
        (Role::Follower, 1, Some(S1))
    );

    let voted_in_term_2 = disk(2, Some(S3), &[]);
    let (restarted, _) = Server::new(with_initial_leader(S1), voted_in_term_2, 1, ms(0));
    assert_eq!(
        (restarted.role(), restarted.term(), restarted.voted_for()),
        (Role::Follower, 2, Some(S3))
    );
}

/// s1, the term-1 leader of three built from `tune`d configuration, elected at 300 ms with its
/// no-op (index 1) committed.
fn tuned_leader_of_three(tune: impl Fn(&mut ServerConfig)) -> Server {
    let mut config = config(S1, 3);
    tune(&mut config);
    let (mut leader, _) = Server::new(config, DurableState::default(), 1, Time::ZERO);
    let now = ms(FIRST_ELECTION_MS);
    let _ = win_election(&mut leader, now, 3);
    let _ = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    assert_eq!(leader.commit_index(), 1);
    leader
}

/// Backpressure counts the entries appended but not yet committed, whatever the log's length:
/// with `uncommitted_entries_max` 2 and three entries committed, two writes wait in the log
/// and the third is refused `overloaded`. (Mutant: `last_index - commit_index` in
/// `append_request` made `+`, which refused the first write of a log that had committed
/// anything; made `/` in `append_request_with`, which divided instead of counting.)
#[test]
fn the_uncommitted_bound_counts_only_the_entries_past_the_commit_index() {
    let mut leader = tuned_leader_of_three(|config| config.uncommitted_entries_max = 2);
    let now = ms(FIRST_ELECTION_MS + 1);
    let client = register(&mut leader, now);
    // A second registration, so that the log's length over its commit index (5 / 3) is not
    // the count past it (2).
    let _ = register(&mut leader, now);
    assert_eq!(leader.commit_index(), 3);
    for (seq, name) in [(1, "a"), (2, "b")] {
        let outputs = leader.step(now, from_client(CLIENT, op(client, seq, preempt(name))));
        assert!(replies(&outputs).is_empty(), "{name} waits in the log");
    }
    assert_eq!(leader.log().last_index(), 5);
    let outputs = leader.step(now, from_client(CLIENT, op(client, 3, preempt("c"))));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(3, ServiceError::Overloaded))]
    );
}

/// The snapshots one AppendEntries of `count` no-ops (term 1) after `prev` leads `follower`
/// to take, the leader's commit index at the end of them.
fn snapshots_taken(follower: &mut Server, now: Time, prev: LogIndex, count: usize) -> usize {
    let entries = noops(&vec![1; count]);
    let commit = prev + count as LogIndex;
    let prev_term = if prev == 0 { 0 } else { 1 };
    let outputs = follower.step(now, peer(S1, append(1, (prev, prev_term), entries, commit)));
    outputs
        .iter()
        .filter(|output| matches!(output, ServerOutput::PersistSnapshot(_)))
        .count()
}

/// Compaction (thesis §5.1) waits for `snapshot_entries_min` applied entries past the last
/// snapshot, not past the start of the log: with a minimum of 3, a follower snapshots at 3,
/// not at 4 or 5, and again at 6. (Mutant: `applied - base_index` in `maybe_compact` made
/// `+`, which snapshotted after every entry once the first snapshot was taken.)
#[test]
fn after_a_snapshot_the_next_waits_for_the_minimum_of_new_entries() {
    let mut config = config(S2, 3);
    config.snapshot_entries_min = Some(3);
    let (mut follower, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), Vec::new(), 0)));
    let taken: Vec<usize> = (0..6)
        .map(|prev| snapshots_taken(&mut follower, ms(20 + prev), prev, 1))
        .collect();
    assert_eq!(taken, vec![0, 0, 1, 0, 0, 1]);
    assert_eq!(follower.log().base_index(), 6);
}

// ----- the log and the messages, through their public API -----

/// `RaftLog::len` counts the entries held, not the ones compacted into the snapshot; and
/// `entries_after` numbers what it yields by log index, before and after compaction (the
/// leader's scans of the unapplied log report these indexes to clients). (Mutants:
/// `RaftLog::len` made `1`; `base_index + skip` in `entries_after` made `*`.)
#[test]
fn the_log_counts_what_it_holds_and_numbers_what_it_yields_by_index() {
    let mut log = RaftLog::new();
    log.truncate_and_append(1, &noops(&[1, 1, 2, 2, 2]));
    assert_eq!(log.len(), 5);
    let indexes = |log: &RaftLog, after| log.entries_after(after).map(|(i, _)| i).collect();
    let after_two: Vec<LogIndex> = indexes(&log, 2);
    assert_eq!(after_two, vec![3, 4, 5]);
    log.compact_to(2, 1);
    assert_eq!(log.len(), 3);
    let after_three: Vec<LogIndex> = indexes(&log, 3);
    assert_eq!(after_three, vec![4, 5]);
}

/// A client secret is a credential: debug output (logs, traces, panics) never shows it, and a
/// server id prints as the operator names it. (Mutants: both `fmt::Debug` impls made to write
/// nothing.)
#[test]
fn debug_output_redacts_secrets_and_names_servers() {
    let secret = ClientSecret::from_bytes([0xab; 16]);
    assert_eq!(format!("{secret:?}"), "ClientSecret(<redacted>)");
    assert_eq!(format!("{:?}", S3), "s3");
    assert_eq!(format!("{:?}", vec![S1, S2]), "[s1, s2]");
}

/// Time bounds under clock drift (docs/design.md, "Sessions and leases"): waiting `stretch`ed
/// time on a clock within 1% lasts at least the duration; a silence measured on such a clock
/// is at least its `shrink`. (Mutants: `*` in `stretch` made `/`; `1.0 + drift` in `shrink`
/// made `-`.)
#[test]
fn drift_stretches_waits_and_shrinks_measured_silences() {
    let second = Duration::from_secs(1);
    assert_eq!(
        super::super::stretch(second, 0.01),
        Duration::from_millis(1_010)
    );
    let shrunk = super::super::shrink(Duration::from_millis(1_010), 0.01);
    assert_eq!(shrunk, second);
    assert!(super::super::shrink(second, 0.01) < second);
}

// ----- replication -----

/// The AppendEntries `outputs` send to `to`, as (prev_log_index, number of entries).
fn appends_to(to: ServerId, outputs: &[ServerOutput]) -> Vec<(LogIndex, usize)> {
    let pick = |(peer, msg): (ServerId, PeerMessage)| match msg {
        PeerMessage::AppendEntries {
            prev_log_index,
            entries,
            ..
        } if peer == to => Some((prev_log_index, entries.len())),
        _ => None,
    };
    sent(outputs).into_iter().filter_map(pick).collect()
}

/// Raft §5.3 with pipelined appends: answers may arrive out of order. A refusal that arrives
/// late moves s2's `next_index` back, and the leader resends from there; a success for more
/// entries that arrives after it moves `next_index` past everything s2 acknowledged, so the
/// leader does not send those entries a third time. (Mutant: `match_index + 1` in
/// `on_append_success` made `- 1`.)
#[test]
fn a_success_after_a_stale_refusal_moves_next_index_past_what_the_follower_holds() {
    let mut leader = tuned_leader_of_three(|config| config.append_entries_max = 1);
    let now = ms(FIRST_ELECTION_MS + 1);
    for nonce in [1, 2, 3] {
        let outputs = leader.step(now, from_client(CLIENT, hello(nonce)));
        assert_eq!(appends_to(S2, &outputs), vec![(nonce, 1)], "pipelined");
    }
    let outputs = leader.step(now, peer(S2, append_refused(1, 2, None)));
    assert_eq!(appends_to(S2, &outputs), vec![(1, 1)], "entry 2 again");
    let outputs = leader.step(now, peer(S2, append_ok(1, 4, 0)));
    assert_eq!(leader.commit_index(), 4);
    assert_eq!(replies(&outputs).len(), 3, "three welcomes");
    assert!(appends_to(S2, &outputs).is_empty(), "{outputs:?}");
}

/// How many `PersistSnapshot` outputs the batch holds.
fn snapshots_in(outputs: &[ServerOutput]) -> usize {
    outputs
        .iter()
        .filter(|output| matches!(output, ServerOutput::PersistSnapshot(_)))
        .count()
}

/// BUGGIFY's odd snapshot (simulator only) snapshots applied state no snapshot holds yet. A
/// heartbeat whose commit index the follower cannot use yet (it names entries the follower
/// does not hold) applies nothing, and takes no second snapshot of the same index. (Mutant:
/// `applied > base_index` in `maybe_compact` made `>=`.)
#[test]
fn an_odd_snapshot_is_never_taken_twice_of_the_same_index() {
    let mut config = config(S2, 3);
    config.buggify = Some(crate::node::server::Buggify {
        seed: 7,
        chance: 1.0,
    });
    let (mut follower, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
    let outputs = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1, 1, 1]), 3)));
    assert_eq!(
        snapshots_in(&outputs),
        1,
        "at chance 1 the odd snapshot is taken"
    );
    assert_eq!(follower.log().base_index(), 3);
    let outputs = follower.step(ms(20), peer(S1, append(1, (3, 1), Vec::new(), 5)));
    assert_eq!(
        follower.commit_index(),
        3,
        "entries 4 and 5 are not here yet"
    );
    assert_eq!(snapshots_in(&outputs), 0, "{outputs:?}");
}

// ----- preempts refused by read -----

/// s1 leading three with `holder` holding `b` (index 4) and an unapplied grant of `a` to
/// `holder` (index 5); `contender`'s preempt of `a` was refused by read and its round is
/// confirmed, so it waits, in the leader's confirmed refusals, for index 5 to apply.
fn leader_with_a_confirmed_refusal() -> (Server, ClientId, ClientId) {
    const CONTENDER: ClientAddr = ClientAddr(9);
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let holder = register(&mut leader, now);
    let contender = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 1, preempt("b"))));
    let _ = commit_through(&mut leader, 4, now);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 2, preempt("a"))));
    assert_eq!(leader.log().last_index(), 5);
    let later = ms(FIRST_ELECTION_MS + 2);
    let outputs = leader.step(
        later,
        from_client(CONTENDER, op(contender, 1, preempt("a"))),
    );
    assert!(persisted(&outputs).is_empty(), "refused by read");
    let round = append_rounds(&outputs)[0].1;
    let outputs = leader.step(later, peer(S2, append_ok(1, 4, round)));
    assert!(replies(&outputs).is_empty(), "index 5 decides: {outputs:?}");
    (leader, holder, contender)
}

/// A confirmed refusal waiting for the grant ahead of it to apply is a request in flight
/// (`pending_request_count`, which `pending_reads_max` bounds too). And a release of another
/// lock hands nothing to it: only the waiters of the lock released are candidates. (Mutants:
/// `+` before `refusals.len()` in `pending_read_count` made `*`; `&refusal.lock == lock` in
/// `hand_over_to_waiter` made `!=`, which appended the contender's preempt of `a` behind a
/// release of `b`.)
#[test]
fn a_confirmed_refusal_counts_as_pending_and_a_release_of_another_lock_leaves_it_waiting() {
    let (mut leader, holder, _) = leader_with_a_confirmed_refusal();
    assert_eq!(
        leader.pending_request_count(),
        2,
        "the holder's preempt of `a` and the contender's refusal"
    );
    let now = ms(FIRST_ELECTION_MS + 3);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 3, release("b"))));
    assert_eq!(
        leader.log().last_index(),
        6,
        "the release, and nothing behind it"
    );
    assert_eq!(leader.coverage().count(Branch::HandOverBehindRelease), 0);
    let outputs = commit_through(&mut leader, 6, now);
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(2, Outcome::Granted { token: 5 })),
            (CLIENT, outcome(3, Outcome::Released)),
            (ClientAddr(9), outcome(1, Outcome::HeldBy { owner: holder })),
        ]
    );
    assert_eq!(leader.pending_request_count(), 0);
}

// ----- sessions -----

/// Registers, through `leader`, a client with a session of `ttl_ms`, committing it by s2's
/// acknowledgement at `now`; returns its id.
fn register_with_ttl_at(leader: &mut Server, now: Time, ttl_ms: u64) -> ClientId {
    let hello = ClientRequest {
        body: RequestBody::Hello {
            nonce: 5,
            ttl_ms: Some(ttl_ms),
        },
        ..hello(5)
    };
    let _ = leader.step(now, from_client(CLIENT, hello));
    let index = leader.log().last_index();
    match replies(&commit_through(leader, index, now))[..] {
        [
            (
                _,
                ClientReply {
                    body: ReplyBody::Welcome { client, .. },
                    ..
                },
            ),
        ] => client,
        ref other => panic!("one welcome expected, got {other:?}"),
    }
}

fn keepalive_of(client: ClientId, seq: u64) -> ClientRequest {
    ClientRequest {
        seq,
        seen_index: 0,
        term: 1,
        body: RequestBody::Keepalive {
            client,
            secret: known_secret(client),
        },
    }
}

/// A session marked silent is revived through the log before a renewal is acknowledged; two
/// keepalives confirmed by the same round share one revive: the second finds the first's
/// revive in the unapplied log and waits for it. (Mutants: `pending_revive` made `None`, and
/// its `entry.command == Command::Revive { client }` made `!=`: both appended a revive per
/// keepalive.)
#[test]
fn keepalives_confirmed_together_share_one_revive() {
    let mut network = Network::new(3);
    network.elect(S1);
    let hello = ClientRequest {
        body: RequestBody::Hello {
            nonce: 77,
            ttl_ms: Some(3_000),
        },
        ..hello(77)
    };
    let client = match network.client(S1, hello)[..] {
        [
            (
                _,
                ClientReply {
                    body: ReplyBody::Welcome { client, .. },
                    ..
                },
            ),
        ] => client,
        ref other => panic!("one welcome expected, got {other:?}"),
    };
    let end = network.now + Duration::from_secs(5);
    run_until_true(&mut network, end, 10, |network| {
        let table = network.server(S1).lock_table();
        table.session(client).is_some_and(|s| s.silent.is_some())
    })
    .expect("half a TTL of silence marks the session");
    let _ = network.step(S1, from_client(CLIENT, keepalive_of(client, 1)));
    let _ = network.step(S1, from_client(CLIENT_AGAIN, keepalive_of(client, 2)));
    let _ = network.deliver_all();
    let answers: Vec<ReplyBody> = std::mem::take(&mut network.replies)
        .into_iter()
        .map(|(_, reply)| reply.body)
        .collect();
    let kept_alive = ReplyBody::KeptAlive {
        ttl_ms: Some(3_000),
    };
    assert_eq!(answers, vec![kept_alive.clone(), kept_alive]);
    let revives = count_entries(network.server(S1), |c| *c == Command::Revive { client });
    assert_eq!(revives, 1);
}

/// Session entries respect the bound on uncommitted entries like client writes: with
/// `uncommitted_entries_max` 2 and two writes waiting uncommitted, an expire that falls due is
/// deferred (the next heartbeat tries again), not appended past the bound. (Mutant:
/// `last_index - commit_index` in `append_session_entry` made `/`.)
#[test]
fn an_expire_due_while_the_uncommitted_entries_are_at_their_bound_is_deferred() {
    let mut leader = tuned_leader_of_three(|config| config.uncommitted_entries_max = 2);
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let writer = register(&mut leader, now);
    assert_eq!(leader.commit_index(), 3);
    for (seq, name) in [(1, "a"), (2, "b")] {
        let _ = leader.step(now, from_client(CLIENT, op(writer, seq, preempt(name))));
    }
    assert_eq!(leader.log().last_index(), 5);
    assert!(
        leader
            .session_deadline(dying)
            .is_some_and(|at| at < ms(2_000))
    );
    let _ = leader.step(ms(3_000), timer(ServerTimer::Heartbeat));
    assert_eq!(
        leader.log().last_index(),
        5,
        "nothing appended past the bound"
    );
    let coverage = leader.coverage();
    assert_eq!(coverage.count(Branch::SessionsAppendDeferred), 1);
    assert_eq!(coverage.count(Branch::SessionsExpireAppended), 0);
}

/// Lock-delay (Chubby's, Consul's) ends exactly `lock_delay` (stretched by the drift bound)
/// after the expire applied: a preempt one nanosecond before is refused `lock_delayed`, one
/// at the very instant is appended. (Mutant: `now < until` in `lock_delay_remaining` made
/// `<=`.)
#[test]
fn lock_delay_ends_exactly_at_its_stretched_end() {
    let mut leader = tuned_leader_of_three(|config| config.lock_delay = Duration::from_secs(2));
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let waiter = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(dying, 1, preempt("a"))));
    let _ = commit_through(&mut leader, 4, now);
    let expired_at = ms(3_000);
    let _ = leader.step(expired_at, timer(ServerTimer::Heartbeat));
    let expire = leader.log().last_index();
    assert_eq!(
        leader.log().entry(expire).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
    let _ = commit_through(&mut leader, expire, expired_at);
    let delay_end = expired_at + super::super::stretch(Duration::from_secs(2), 0.01);
    let just_before = Time::from_nanos(delay_end.as_nanos() - 1);
    let outputs = leader.step(
        just_before,
        from_client(CLIENT, op(waiter, 1, preempt("a"))),
    );
    assert_eq!(
        replies(&outputs),
        vec![(
            CLIENT,
            refusal(1, ServiceError::LockDelayed { retry_after_ms: 1 })
        )]
    );
    let outputs = leader.step(delay_end, from_client(CLIENT, op(waiter, 2, preempt("a"))));
    assert!(replies(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(persisted(&outputs).len(), 1, "the preempt is appended");
}

/// s2 with a lock-delay of 2 s, which received `entries` from s1 in term 1 at 10 ms (`commit`
/// of them committed) and won term 2's election at 2 s: leader, its no-op not yet applied.
fn leader_not_ready_with_a_2_s_lock_delay(entries: Vec<Entry>, commit: LogIndex) -> Server {
    let mut config = config(S2, 3);
    config.lock_delay = Duration::from_secs(2);
    let (mut server, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, commit)));
    let _ = win_election(&mut server, ms(2_000), 3);
    server
}

/// The only answer is `lock_delayed` for the whole 2 s delay, to operation 1 from `CLIENT`.
fn assert_lock_delayed_2_s(outputs: &[ServerOutput]) {
    let delayed = ServiceError::LockDelayed {
        retry_after_ms: 2_000,
    };
    assert_eq!(replies(outputs), vec![(CLIENT, refusal(1, delayed))]);
}

/// A new leader learns when lock-delays end only once its own no-op is applied (its sessions
/// are then ready). Until then a lock the applied state lists as freed by an expiry waits the
/// whole delay: the expire may have applied a moment ago at the old leader. (Mutants: the
/// match guard `!self.sessions.ready` in `lock_delay_remaining` made `false`, and its `!`
/// deleted.)
#[test]
fn a_new_leader_not_yet_ready_holds_back_a_lock_freed_by_expiry_for_the_whole_delay() {
    let (dying, waiter) = (ClientId(1), ClientId(2));
    let mut entries = dying_holds_a_among(dying, &[waiter]);
    entries.push(in_term_1(Command::Expire { client: dying }));
    let mut server = leader_not_ready_with_a_2_s_lock_delay(entries, 5);
    assert!(server.lock_table().session_expired(dying));
    assert!(!server.sessions_ready(), "its no-op (6) is not applied yet");
    let request = in_term(2, op(waiter, 1, preempt("a")));
    let outputs = server.step(ms(2_001), from_client(CLIENT, request));
    assert_lock_delayed_2_s(&outputs);
    assert_eq!(server.log().last_index(), 6, "nothing appended");
}

/// A new leader hands a lock freed by an expiry to the head of its line only once its queues
/// are ready (its own no-op applied): before that, its applied state may be behind its log,
/// which can already hold the old leader's hand-over. At the election it appends its no-op
/// and nothing else; once the no-op applies, the hand-over follows. (Mutant: `role != Leader
/// || !queues.ready` in `tick_queues` made `&&`, which let a leader not yet ready append.)
#[test]
fn a_new_leader_appends_no_hand_over_before_its_queues_are_ready() {
    let (dying, waiter) = (ClientId(1), ClientId(2));
    let mut entries = dying_holds_a_among(dying, &[waiter]);
    entries.extend([
        in_term_1(long_acquire(waiter, "a")),
        in_term_1(Command::Expire { client: dying }),
    ]);
    let last = entries.len() as LogIndex;
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, last)));
    assert_eq!(
        server.lock_table().check("a"),
        Outcome::Free,
        "freed by the expiry"
    );
    assert_eq!(server.lock_table().waiting_for(waiter), Some(&lock("a")));
    let _ = win_election(&mut server, ms(2_000), 3);
    assert_eq!(
        server.log().last_index(),
        last + 1,
        "its no-op, nothing else"
    );
    let _ = server.step(ms(2_000), peer(S3, append_ok(2, last + 1, 0)));
    assert_eq!(
        server.log().entry(last + 2).map(|entry| &entry.command),
        Some(&Command::HandOver { lock: lock("a") }),
        "ready, it hands the lock over"
    );
}

/// Raft §5.1: a candidate that hears of a later term from a voter, even in a refusal, stops
/// its election and follows that term with no vote cast; a refusal of its own term changes
/// nothing. (Mutant: `term > self.term` in `on_vote_response` made `<`, which kept the
/// candidate campaigning in a term the cluster had left.)
#[test]
fn a_candidate_told_of_a_later_term_by_a_vote_refusal_steps_down_to_it() {
    let mut candidate = boot(S1, 3);
    let now = ms(FIRST_ELECTION_MS);
    let _ = candidate.step(now, timer(ServerTimer::Election));
    let _ = candidate.step(now, peer(S2, pre_vote_answer(1, true)));
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, 1));
    let _ = candidate.step(now, peer(S2, vote(1, false)));
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, 1));
    let _ = candidate.step(now, peer(S3, vote(5, false)));
    assert_eq!(
        (candidate.role(), candidate.term(), candidate.voted_for()),
        (Role::Follower, 5, None)
    );
    assert_eq!(candidate.coverage().count(Branch::VoteResponseNewerTerm), 1);
}

/// A leader projects who will hold a lock once its log applies, to refuse a preempt of a lock
/// that will be held without appending it. A hand-over in the log gives the lock to the head
/// of its line only if nothing earlier in the log already claimed it: here the old leader's
/// unapplied preempt by c3 comes first, so the lock will be c3's whatever the hand-over finds,
/// and c4's preempt waits for a read instead of going into the log. (Mutant: `l == lock &&
/// owner.is_none()` in `projected_owner`'s hand-over arm made `||`, which let the hand-over
/// replace c3 by the line's head, here nobody, so the lock looked free.)
#[test]
fn a_hand_over_in_the_log_does_not_replace_an_earlier_unapplied_claim() {
    let (c3, c4) = (ClientId(1), ClientId(2));
    let entries = vec![
        noop(1),
        registration(c3, None),
        registration(c4, None),
        in_term_1(exclusive_preempt(c3, "a")),
        in_term_1(Command::HandOver { lock: lock("a") }),
    ];
    let mut server = leader_in_term_2_over(entries, 3);
    assert_eq!(
        server.lock_table().check("a"),
        Outcome::Free,
        "applied: free"
    );
    assert_a_preempt_waits_for_a_read(&mut server, c4, "not appended: c3 will hold a");
}

/// A new leader's sessions are ready once its no-op is applied, whether the no-op commits
/// alone or together with the writes appended behind it: here a hello arrives before the
/// no-op commits, and one acknowledgement commits both. (Mutant: `applied_index() <
/// noop_index` in `maybe_ready_sessions` made `>`, which left the sessions of a leader whose
/// no-op applied with a later entry never ready: no keepalive answered, no session expired.)
#[test]
fn a_leader_whose_no_op_commits_with_a_later_write_has_its_sessions_ready() {
    let mut leader = boot(S1, 3);
    let now = ms(FIRST_ELECTION_MS);
    let _ = win_election(&mut leader, now, 3);
    assert_eq!(leader.log().last_index(), 1, "the no-op");
    let _ = leader.step(now, from_client(CLIENT, hello(7)));
    assert_eq!(leader.log().last_index(), 2, "the hello, behind it");
    assert!(!leader.sessions_ready());
    let _ = leader.step(now, peer(S2, append_ok(1, 2, 0)));
    assert_eq!(leader.lock_table().applied_index(), 2);
    assert!(leader.sessions_ready());
    assert_eq!(leader.coverage().count(Branch::SessionsReady), 1);
}

/// The other half of the hand-over arm: a hand-over of the very lock, with nothing earlier in
/// the log claiming it, gives it to the head of its line. Here the lock was freed by its
/// holder's expiry (applied) and the old leader's hand-over is not applied yet: c's preempt
/// would find the lock the waiter's, so it waits for a read instead of going into the log.
/// (Mutant: `l == lock` in `projected_owner`'s hand-over arm made `!=`, which took the lock
/// for free.)
#[test]
fn an_unapplied_hand_over_makes_a_freed_lock_its_heads() {
    let (dying, waiter, c) = (ClientId(1), ClientId(2), ClientId(3));
    let mut entries = dying_holds_a_among(dying, &[waiter, c]);
    entries.extend([
        in_term_1(long_acquire(waiter, "a")),
        in_term_1(Command::Expire { client: dying }),
        in_term_1(Command::HandOver { lock: lock("a") }),
    ]);
    let mut server = leader_in_term_2_over(entries, 7);
    assert_eq!(
        server.lock_table().check("a"),
        Outcome::Free,
        "freed by the expiry"
    );
    assert_a_preempt_waits_for_a_read(&mut server, c, "not appended: the waiter will hold a");
}

/// A leader may count a silent session's deadline from when it appended the mark (its
/// receipt), if that ends sooner. Receipts are pruned once there are many, but only those no
/// mark can still use: a receipt of a mark not yet applied is kept. Here a follower receives
/// 1,100 marks at 10 ms, the last marking the session silent for 1.5 s, and applies only the
/// first entries; pruned then, it keeps every receipt; leader later, it counts the deadline
/// from the last mark's receipt, and knows the session as marked already. (Mutants:
/// `*index > applied` in `prune_receipts` made `==`, which dropped the receipts of unapplied
/// marks; `marked: true` deleted from the session counted from its mark in
/// `maybe_ready_sessions`, which marked it a second time.)
#[test]
fn pruning_keeps_the_receipts_of_marks_not_yet_applied() {
    let client = ClientId(1);
    let mark = |sessions| Entry {
        term: 1,
        command: Command::MarkSilent { sessions },
    };
    let mut entries = vec![
        noop(1),
        Entry {
            term: 1,
            command: Command::Register {
                nonce: 9,
                secret: Some(secret_for(client)),
                ttl_ms: Some(3_000),
            },
        },
    ];
    entries.extend((0..1_099).map(|_| mark(Vec::new())));
    entries.push(mark(vec![SilentSession {
        client,
        silent_ms: 1_500,
    }]));
    let last = entries.len() as LogIndex;
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, 2)));
    let _ = server.step(ms(20), peer(S1, append(1, (last, 1), Vec::new(), last)));
    assert!(
        server
            .lock_table()
            .session(client)
            .is_some_and(|session| session.silent.is_some())
    );
    let _ = win_election(&mut server, ms(1_000), 3);
    let _ = server.step(ms(1_000), peer(S3, append_ok(2, last + 1, 0)));
    assert!(server.sessions_ready());
    assert_eq!(server.coverage().count(Branch::SessionsFromSilentMark), 1);
    // Counted from the mark, the session is already marked: no second mark, and not due yet
    // (10 ms + (3 s - 1.5 s) x 1.01 = 1,525 ms): nothing but the no-op is appended.
    assert_eq!(server.log().last_index(), last + 1);
    let deadline = server.session_deadline(client).expect("tracked");
    assert_eq!(
        deadline,
        ms(10) + super::super::stretch(Duration::from_millis(1_500), 0.01)
    );
}

/// A receipt says when this server appended a silent mark at an index. A snapshot that
/// replaces a log not holding the snapshot's last entry makes every receipt suspect: the entry
/// at a receipt's index may now be another (here the snapshot's own mark at index 3, where s2
/// had received term 1's mark at 10 ms). Leader later, s2 must not count the session from that
/// stale receipt, which would end it 1.5 s after 10 ms, long before its TTL from the takeover.
/// (Mutant: `Server::forget_all_receipts` made `()`.)
#[test]
fn a_snapshot_that_replaces_the_log_drops_the_receipts_of_its_marks() {
    let client = ClientId(1);
    let registration = Command::Register {
        nonce: 9,
        secret: Some(secret_for(client)),
        ttl_ms: Some(3_000),
    };
    let mark = silent_for_1_5_s(client);
    let entries = vec![
        noop(1),
        in_term_1(registration.clone()),
        in_term_1(mark.clone()),
    ];
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, 2)));
    assert_eq!(
        server.log().last_index(),
        3,
        "term 1's mark received at 10 ms"
    );

    let mut table = crate::node::LockTable::new();
    for (index, command) in [
        (1, Command::Noop),
        (2, registration),
        (3, mark),
        (4, Command::Noop),
    ] {
        let _ = table.apply(index, &command);
    }
    let install = install_snapshot(2, (4, 2), table, 1);
    let _ = server.step(ms(500), peer(S3, install));
    assert_eq!(
        (server.log().base_index(), server.log().last_index()),
        (4, 4)
    );

    let takeover = ms(1_000);
    let _ = win_election(&mut server, takeover, 3);
    let _ = server.step(takeover, peer(S3, append_ok(3, 5, 0)));
    assert!(server.sessions_ready());
    assert_eq!(server.coverage().count(Branch::SessionsFromSilentMark), 0);
    let deadline = server.session_deadline(client).expect("tracked");
    assert!(
        deadline >= takeover + Duration::from_millis(3_000),
        "a whole TTL from the takeover, not from a stale receipt: {deadline}"
    );
}

/// Apply is total, and so are answers: a write appended behind its client's own expire (the
/// leader had not applied the expire when the write arrived) is rejected when it applies,
/// and the client hears `session_expired` from that entry instead of nothing. (Mutant: the
/// match arm for `ApplyResult::Rejected` in `answer_for` deleted, which left the client
/// unanswered until its own timeout.)
#[test]
fn a_write_appended_behind_its_clients_expire_is_answered_session_expired() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let expiring = ms(3_000);
    let _ = leader.step(expiring, timer(ServerTimer::Heartbeat));
    let expire = leader.log().last_index();
    assert_eq!(
        leader.log().entry(expire).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
    let outputs = leader.step(expiring, from_client(CLIENT, op(dying, 1, preempt("a"))));
    assert!(replies(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(leader.log().last_index(), expire + 1, "behind the expire");
    let outputs = commit_through(&mut leader, expire + 1, expiring);
    assert_eq!(
        replies(&outputs),
        vec![(
            CLIENT,
            refusal(1, ServiceError::SessionExpired { client: dying })
        )]
    );
}

/// A new leader authenticates a client whose registration it holds but has not applied yet
/// (its own no-op is not committed): against that registration's secret, found by counting
/// the registrations after the applied ones. Both clients' writes are appended, none refused.
/// (Mutant: `next_id == client.0` in `authenticate` made `!=`, which checked each secret
/// against another registration's.)
#[test]
fn a_new_leader_accepts_writes_from_clients_whose_registrations_it_has_not_applied() {
    let (first, second) = (ClientId(1), ClientId(2));
    let registration = |id| Entry {
        term: 1,
        command: Command::Register {
            nonce: 9,
            secret: Some(secret_for(id)),
            ttl_ms: None,
        },
    };
    let entries = vec![noop(1), registration(first), registration(second)];
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, 1)));
    assert_eq!(server.last_applied(), 1);
    let _ = win_election(&mut server, ms(2_000), 3);
    for (client, name) in [(second, "b"), (first, "a")] {
        let request = in_term(2, op(client, 1, preempt(name)));
        let outputs = server.step(ms(2_001), from_client(CLIENT, request));
        assert!(replies(&outputs).is_empty(), "{client}: {outputs:?}");
    }
    assert_eq!(
        server.log().last_index(),
        6,
        "the no-op (4), then both preempts"
    );
}

/// Hand-over on release (docs/design.md) picks a contender from the read round in flight. A
/// contender that arrived while another round was in flight waits for the next one; if the
/// holder's release is in the log when that round confirms, the lock will be free, and the
/// leader appends the contender's preempt behind the release instead of answering `held_by`
/// from the applied state. (Mutant: the `Projection::Free` arm of `decide_refusal` deleted,
/// which answered `held_by` by the releasing holder.)
#[test]
fn a_refused_preempt_whose_lock_is_released_meanwhile_is_appended_behind_the_release() {
    const READER: ClientAddr = ClientAddr(9);
    const CONTENDER: ClientAddr = ClientAddr(10);
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let holder = register(&mut leader, now);
    let contender = register(&mut leader, now);
    let reader = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 1, preempt("a"))));
    let granted = leader.log().last_index();
    let _ = commit_through(&mut leader, granted, now);
    let outputs = leader.step(
        now,
        from_client(READER, op(reader, 1, check("x", Consistency::Linearizable))),
    );
    let first_round = append_rounds(&outputs)[0].1;
    let later = now + Duration::from_micros(1);
    let request = op(contender, 1, preempt("a"));
    let outputs = leader.step(later, from_client(CONTENDER, request));
    assert!(persisted(&outputs).is_empty(), "waits for the next round");
    let _ = leader.step(later, from_client(CLIENT, op(holder, 2, release("a"))));
    let released = leader.log().last_index();
    assert_eq!(released, granted + 1, "nothing handed over at the release");
    // s2 confirms the first round, then the contender's, acknowledging only what it held
    // before the release.
    let outputs = leader.step(later, peer(S2, append_ok(1, granted, first_round)));
    assert_eq!(replies(&outputs), vec![(READER, outcome(1, Outcome::Free))]);
    let second_round = append_rounds(&outputs)[0].1;
    assert!(second_round > first_round);
    let outputs = leader.step(later, peer(S2, append_ok(1, granted, second_round)));
    assert!(replies(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(
        leader.log().entry(released + 1).map(|entry| &entry.command),
        Some(&Command::Preempt {
            client: contender,
            seq: 1,
            lock: lock("a"),
            claim: Claim::EXCLUSIVE,
        }),
        "appended behind the release"
    );
    assert_eq!(leader.coverage().count(Branch::RefusalFreeAppended), 1);
}

/// A release by a client that does not hold the lock frees nothing (it applies as
/// `not_owner`): a preempt queued behind it, of a lock another client holds, is still refused
/// by read and appends nothing. (Mutant: `l == lock && owner == Some(*c)` in
/// `projected_owner`'s release arm made `||`, which took any release of the lock for the
/// holder's.)
#[test]
fn a_release_by_a_client_that_does_not_hold_the_lock_does_not_make_it_look_free() {
    const STRANGER: ClientAddr = ClientAddr(9);
    const CONTENDER: ClientAddr = ClientAddr(10);
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let holder = register(&mut leader, now);
    let stranger = register(&mut leader, now);
    let contender = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 1, preempt("a"))));
    let granted = leader.log().last_index();
    let _ = commit_through(&mut leader, granted, now);
    let _ = leader.step(now, from_client(STRANGER, op(stranger, 1, release("a"))));
    let released = leader.log().last_index();
    assert_eq!(released, granted + 1);
    let outputs = leader.step(now, from_client(CONTENDER, op(contender, 1, preempt("a"))));
    assert!(
        persisted(&outputs).is_empty(),
        "refused by read: {outputs:?}"
    );
    let round = append_rounds(&outputs)[0].1;
    let outputs = leader.step(now, peer(S2, append_ok(1, released, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (STRANGER, outcome(1, Outcome::NotOwner)),
            (CONTENDER, outcome(1, Outcome::HeldBy { owner: holder })),
        ]
    );
    assert_eq!(leader.log().last_index(), released, "nothing appended");
}

/// A write a follower forwards (thesis §6.2) is the leader's to propose: the leader appends
/// it, and once it commits, answers through the follower that forwarded it. (Mutant:
/// `Server::on_forward` made to do nothing, which left forwarded writes unanswered.)
#[test]
fn a_forwarded_write_is_appended_and_answered_through_its_follower() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let client = register(&mut leader, now);
    let forward = PeerMessage::Forward {
        client: CLIENT_AGAIN,
        request: op(client, 1, preempt("a")),
    };
    let outputs = leader.step(now, peer(S2, forward));
    assert_eq!(persisted(&outputs).len(), 1, "appended: {outputs:?}");
    let index = leader.log().last_index();
    let outputs = commit_through(&mut leader, index, now);
    let answers: Vec<(ServerId, ClientAddr, ReplyBody)> = sent(&outputs)
        .into_iter()
        .filter_map(|(to, msg)| match msg {
            PeerMessage::ForwardReply { client, reply } => Some((to, client, reply.body)),
            _ => None,
        })
        .collect();
    let granted = ReplyBody::Outcome(Outcome::Granted { token: index });
    assert_eq!(answers, vec![(S2, CLIENT_AGAIN, granted)]);
}

/// Only writes are forwarded: a follower answers a local check itself and asks the leader
/// for a read index for a linearizable one. A forward that carries a check is malformed, and
/// the leader answers it `unavailable` through the follower, neither appending nor reading for
/// it. (Mutant: `self.role == Role::Leader && is_write` in `on_forward` made `||`.)
#[test]
fn a_forwarded_check_is_answered_unavailable_and_nothing_else() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let client = register(&mut leader, now);
    let last = leader.log().last_index();
    let forward = PeerMessage::Forward {
        client: CLIENT_AGAIN,
        request: op(client, 1, check("a", Consistency::Linearizable)),
    };
    let outputs = leader.step(now, peer(S2, forward));
    let answers: Vec<(ServerId, ClientAddr, ReplyBody)> = sent(&outputs)
        .into_iter()
        .filter_map(|(to, msg)| match msg {
            PeerMessage::ForwardReply { client, reply } => Some((to, client, reply.body)),
            _ => None,
        })
        .collect();
    let unavailable = ReplyBody::Error(ServiceError::Unavailable);
    assert_eq!(answers, vec![(S2, CLIENT_AGAIN, unavailable)]);
    assert!(persisted(&outputs).is_empty());
    assert_eq!(leader.log().last_index(), last);
    assert_eq!(leader.pending_request_count(), 0, "no read started for it");
}

/// The leader's side of the rule below: an acknowledgement that moves no commit index applies
/// nothing, so it draws no odd snapshot either. Checked for 32 seeds at chance one half, ten
/// repeated acknowledgements each. (Mutant: `majority_index > self.commit_index` in
/// `advance_commit` made `>=`, which ran the apply path, and its draw, on every such ack.)
#[test]
fn an_acknowledgement_that_commits_nothing_new_takes_no_odd_snapshot() {
    for seed in 0..32 {
        let mut config = config(S1, 3);
        config.buggify = Some(crate::node::server::Buggify { seed, chance: 0.5 });
        let (mut leader, _) = Server::new(config, DurableState::default(), 1, Time::ZERO);
        let now = ms(FIRST_ELECTION_MS);
        let _ = win_election(&mut leader, now, 3);
        let _ = leader.step(now, peer(S2, append_ok(1, 1, 0)));
        assert_eq!(leader.commit_index(), 1, "seed {seed}");
        let base = leader.log().base_index();
        for _ in 0..10 {
            let outputs = leader.step(now, peer(S2, append_ok(1, 1, 0)));
            assert!(
                !outputs
                    .iter()
                    .any(|output| matches!(output, ServerOutput::PersistSnapshot(_))),
                "seed {seed}: {outputs:?}"
            );
        }
        assert_eq!(leader.log().base_index(), base, "seed {seed}");
    }
}

/// A heartbeat whose commit index the follower already has applies nothing, so none of the
/// work that follows applying runs for it: in particular BUGGIFY draws no odd snapshot for it.
/// Checked for 32 seeds at chance one half, ten heartbeats each. (Mutant:
/// `leader_commit > self.commit_index` in `on_append_entries` made `>=`, which ran the apply
/// path, and its odd-snapshot draw, on every heartbeat.)
#[test]
fn a_heartbeat_that_commits_nothing_new_takes_no_odd_snapshot() {
    for seed in 0..32 {
        let mut config = config(S2, 3);
        config.buggify = Some(crate::node::server::Buggify { seed, chance: 0.5 });
        let (mut follower, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
        let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1, 1]), 2)));
        for at in 20..30 {
            let heartbeat = peer(S1, append(1, (2, 1), Vec::new(), 2));
            let outputs = follower.step(ms(at), heartbeat);
            assert_eq!(snapshots_in(&outputs), 0, "seed {seed} at {at} ms");
        }
    }
}

/// Handing a released lock to a preempt waiting in a read round respects lock-delay: when the
/// lock is free only because its holder's session expired, and the delay still runs, nobody
/// gets it yet, not even the contender that asked first. Here the contender's preempt of `a`
/// waits in a read round (`a` was held) when the holder's session expires; then a client that
/// never held `a` releases it. The release is appended alone, nothing behind it. (Mutant: the
/// match guard `self.lock_delay_remaining(lock, self.step_time).is_some()` in
/// `hand_over_to_waiter` made `false`, which appended the contender's preempt right behind the
/// release, inside the lock-delay.)
#[test]
fn a_release_during_lock_delay_hands_the_lock_to_no_waiting_preempt() {
    const CONTENDER: ClientAddr = ClientAddr(9);
    const STRANGER: ClientAddr = ClientAddr(10);
    let mut leader = tuned_leader_of_three(|config| config.lock_delay = Duration::from_secs(2));
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let contender = register(&mut leader, now);
    let stranger = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(dying, 1, preempt("a"))));
    let granted = leader.log().last_index();
    let _ = commit_through(&mut leader, granted, now);
    let outputs = leader.step(now, from_client(CONTENDER, op(contender, 1, preempt("a"))));
    assert!(
        persisted(&outputs).is_empty(),
        "refused by read, its round unconfirmed"
    );

    let expired_at = ms(3_000);
    let _ = leader.step(expired_at, timer(ServerTimer::Heartbeat));
    let expire = leader.log().last_index();
    assert_eq!(
        leader.log().entry(expire).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
    let _ = commit_through(&mut leader, expire, expired_at);
    assert_eq!(
        leader.lock_table().check("a"),
        Outcome::Free,
        "freed by the expiry"
    );

    let later = expired_at + Duration::from_millis(10);
    let _ = leader.step(later, from_client(STRANGER, op(stranger, 1, release("a"))));
    assert_eq!(
        leader.log().last_index(),
        expire + 1,
        "the release, nothing behind it"
    );
    assert_eq!(leader.coverage().count(Branch::HandOverBehindRelease), 0);
}

/// The leader's session work runs at every step, but at most once per heartbeat interval
/// (`tick_sessions`): a session whose deadline passes between two ticks is expired at the next
/// tick, not by whatever step comes first. Here the tick just before the deadline finds
/// nothing due; an acknowledgement from s2 one millisecond after the deadline appends nothing;
/// the next heartbeat, a full interval after that tick, appends the expire. (Mutant:
/// `|| now < self.sessions.next_tick` in `tick_sessions` made `&&`, which let a leader with
/// sessions run the tick at every step.)
#[test]
fn a_session_past_its_deadline_is_expired_at_the_next_tick_not_at_any_step() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let deadline = leader
        .session_deadline(dying)
        .expect("a ready leader tracks it");
    let tick_at = Time::from_nanos(deadline.as_nanos() - 1_000_000);
    let _ = leader.step(tick_at, timer(ServerTimer::Heartbeat));
    let before = leader.log().last_index();
    let _ = commit_through(&mut leader, before, tick_at);

    let just_after = deadline + Duration::from_millis(1);
    let _ = leader.step(just_after, peer(S2, append_ok(1, before, 0)));
    assert_eq!(leader.log().last_index(), before, "not a tick yet");

    let next_tick = tick_at + Duration::from_millis(50);
    let _ = leader.step(next_tick, timer(ServerTimer::Heartbeat));
    let expire = leader.log().last_index();
    assert_eq!(expire, before + 1);
    assert_eq!(
        leader.log().entry(expire).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
}

/// Lock-delay is about locks an expiry freed, and nothing else: a new leader that is not yet
/// ready holds back a lock the applied state lists as freed by an expiry (the story above), but
/// a lock nobody ever held is granted at once, delay configured or not. (Mutant: `||` in
/// `lock_delay_remaining`'s first test made `&&`, which, with a delay configured, held back
/// every free lock while the leader was not ready.)
#[test]
fn a_new_leader_not_yet_ready_grants_a_lock_no_expiry_freed_without_delay() {
    let waiter = ClientId(1);
    let entries = vec![
        noop(1),
        Entry {
            term: 1,
            command: Command::Register {
                nonce: 9,
                secret: Some(secret_for(waiter)),
                ttl_ms: None,
            },
        },
    ];
    let mut config = config(S2, 3);
    config.lock_delay = Duration::from_secs(2);
    let (mut server, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, 2)));
    let _ = win_election(&mut server, ms(2_000), 3);
    assert!(!server.sessions_ready(), "its no-op (3) is not applied yet");
    let request = in_term(2, op(waiter, 1, preempt("b")));
    let outputs = server.step(ms(2_001), from_client(CLIENT, request));
    assert!(replies(&outputs).is_empty(), "not refused: {outputs:?}");
    assert_eq!(
        server.log().last_index(),
        4,
        "the preempt is appended behind the no-op"
    );
}

/// Once a lock-delay has run out, the leader forgets it at its next session tick, and the
/// lock, still listed as freed by the expiry because nobody has taken it since, is granted to
/// the next preempt without a new delay. (Mutant: the match guard `!self.sessions.ready` in
/// `lock_delay_remaining` made `true`, which held such a lock back for a whole new delay at
/// every preempt, for ever.)
#[test]
fn a_lock_whose_delay_ran_out_and_was_forgotten_is_granted_at_once() {
    let mut leader = tuned_leader_of_three(|config| config.lock_delay = Duration::from_secs(2));
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let waiter = register(&mut leader, now);
    // A session still alive keeps the leader's session tick running (it idles without any).
    let _living = register_with_ttl_at(&mut leader, now, 60_000);
    let _ = leader.step(now, from_client(CLIENT, op(dying, 1, preempt("a"))));
    let granted = leader.log().last_index();
    let _ = commit_through(&mut leader, granted, now);
    let expired_at = ms(3_000);
    let _ = leader.step(expired_at, timer(ServerTimer::Heartbeat));
    let expire = leader.log().last_index();
    assert_eq!(
        leader.log().entry(expire).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
    let _ = commit_through(&mut leader, expire, expired_at);
    assert!(leader.lock_table().freed_by_expiry().contains_key("a"));

    let delay_end = expired_at + super::super::stretch(Duration::from_secs(2), 0.01);
    let _ = leader.step(
        delay_end + Duration::from_millis(100),
        timer(ServerTimer::Heartbeat),
    );
    let later = delay_end + Duration::from_millis(200);
    let outputs = leader.step(later, from_client(CLIENT, op(waiter, 1, preempt("a"))));
    assert!(replies(&outputs).is_empty(), "not refused: {outputs:?}");
    assert_eq!(
        leader.log().last_index(),
        expire + 1,
        "the preempt is appended"
    );
}

/// A lock's queue is bounded (`QUEUE_WAITERS_PER_LOCK_MAX`), and the leader says so before
/// the log: a new client's acquire behind a full queue is refused `queue_full` at once, with
/// no entry (no fsync, no round). Here a follower holds a log where client 1 holds `a` and
/// 1,024 clients wait for it; elected leader, it refuses the 1,025th waiter straight away.
/// (Mutant: `waiting_for(client) != Some(&lock)` in `propose_queue_write` made `==`, which
/// let the newcomer through to the log and refused only a client already waiting.)
#[test]
fn a_leader_refuses_a_waiter_past_a_full_queue_before_the_log() {
    let waiters = crate::node::QUEUE_WAITERS_PER_LOCK_MAX as u64;
    let newcomer = ClientId(waiters + 2);
    let mut entries = vec![noop(1)];
    entries.extend((1..=newcomer.0).map(|id| Entry {
        term: 1,
        command: Command::Register {
            nonce: id,
            secret: Some(secret_for(ClientId(id))),
            ttl_ms: None,
        },
    }));
    entries.push(Entry {
        term: 1,
        command: Command::Preempt {
            client: ClientId(1),
            seq: 1,
            lock: lock("a"),
            claim: Claim::EXCLUSIVE,
        },
    });
    entries.extend((2..=waiters + 1).map(|client| Entry {
        term: 1,
        command: Command::Acquire {
            client: ClientId(client),
            seq: 1,
            lock: lock("a"),
            wait_ms: 60_000,
            claim: Claim::EXCLUSIVE,
        },
    }));
    let last = entries.len() as LogIndex;
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, last)));
    assert_eq!(server.lock_table().waiters("a").count() as u64, waiters);
    let _ = win_election(&mut server, ms(1_000), 3);
    let _ = server.step(ms(1_000), peer(S3, append_ok(2, last + 1, 0)));
    assert_eq!(server.last_applied(), last + 1, "its no-op applied");

    let wait = wait_for_a(60_000);
    let outputs = server.step(
        ms(1_001),
        from_client(CLIENT, in_term(2, op(newcomer, 1, wait))),
    );
    let full = ServiceError::QueueFull {
        waiters_max: waiters as u32,
    };
    assert_eq!(replies(&outputs), vec![(CLIENT, refusal(1, full))]);
    assert!(
        persisted(&outputs).is_empty(),
        "nothing appended: {outputs:?}"
    );
    assert_eq!(server.coverage().count(Branch::QueueFull), 1);
}

fn wait_for_a(wait_ms: u64) -> Operation {
    wait_for_a_as(Claim::EXCLUSIVE, wait_ms)
}

fn wait_for_a_as(claim: Claim, wait_ms: u64) -> Operation {
    Operation::Acquire {
        lock: lock("a"),
        wait_ms,
        claim,
    }
}

/// A waiter's timeout entry may apply to nothing: here the waiter cancelled and queued again
/// (a new acquire, a new seq) before the leader's timeout of its first wait applied. That
/// stale timeout must leave the new wait's deadline alone, so the new wait still times out on
/// time. (Mutant: the guard `deadlines.get(client).is_some_and(|d| d.seq == *seq)` on a
/// timeout in `on_queue_entry_applied` made `true`, and its `d.seq == *seq` made `!=`: both
/// dropped the new wait's deadline, so no timeout was ever appended for it, and its client
/// waited past its own limit. That arm is gone since: it never matched, as every deadline
/// leaves with its waiter's woken decision; the story stays, for the rule.)
#[test]
fn a_stale_timeout_leaves_the_next_waits_deadline_alone() {
    let (mut leader, _holder, waiter) = leader_with_a_held_lock();
    let queuing = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(queuing, from_client(CLIENT, op(waiter, 1, wait_for_a(100))));
    let queued = leader.log().last_index();
    let outputs = commit_through(&mut leader, queued, queuing);
    assert!(replies(&outputs).is_empty(), "queued: {outputs:?}");

    let again = ms(FIRST_ELECTION_MS + 20);
    let cancel = Operation::Cancel { lock: lock("a") };
    let _ = leader.step(again, from_client(CLIENT, op(waiter, 2, cancel)));
    let _ = leader.step(again, from_client(CLIENT, op(waiter, 3, wait_for_a(1_000))));
    let requeued = leader.log().last_index();
    let first_wait_over = ms(FIRST_ELECTION_MS + 200);
    let _ = leader.step(first_wait_over, timer(ServerTimer::Heartbeat));
    let stale = Command::Timeout {
        client: waiter,
        seq: 1,
        lock: lock("a"),
    };
    assert_eq!(
        leader.log().entry(requeued + 1).map(|e| &e.command),
        Some(&stale),
        "the first wait's timeout, appended before the cancel applied"
    );
    let outputs = commit_through(&mut leader, requeued + 1, first_wait_over);
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(2, Outcome::Cancelled)),
            (CLIENT, outcome(1, Outcome::Cancelled))
        ]
    );

    let second_wait_over = ms(FIRST_ELECTION_MS + 1_300);
    let _ = leader.step(second_wait_over, timer(ServerTimer::Heartbeat));
    let due = Command::Timeout {
        client: waiter,
        seq: 3,
        lock: lock("a"),
    };
    assert_eq!(
        leader.log().entry(requeued + 2).map(|e| &e.command),
        Some(&due),
        "the second wait times out on time"
    );
    let outputs = commit_through(&mut leader, requeued + 2, second_wait_over);
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(3, Outcome::TimedOut))]
    );
}

/// Pre-vote (thesis §9.6) asks "would you vote for me in term T?", where T is one past the
/// asker's term: only a T past the voter's own term can win a vote, so a pre-vote for the
/// voter's current term is refused as stale (its asker is a term behind), and one for the
/// next term is granted. Here s2 follows s1 in term 1 and its lease ran out. (Mutant:
/// `term > self.term` in `on_pre_vote` made `>=`, which granted the pre-vote for term 1.)
#[test]
fn a_pre_vote_for_the_voters_own_term_is_refused_as_stale() {
    let mut follower = follower_hearing_s1_at(10);
    let lease_over = ms(500);
    let outputs = follower.step(lease_over, peer(S3, pre_vote(1, 0, 0)));
    assert_eq!(pre_vote_granted(&outputs), Some(false));
    let outputs = follower.step(lease_over, peer(S3, pre_vote(2, 0, 0)));
    assert_eq!(pre_vote_granted(&outputs), Some(true));
    let coverage = follower.coverage();
    assert_eq!(coverage.count(Branch::PreVoteRefusedStaleTerm), 1);
    assert_eq!(coverage.count(Branch::PreVoteGranted), 1);
    assert_eq!(
        (follower.term(), follower.voted_for()),
        (1, None),
        "a pre-vote changes nothing"
    );
}

/// A waiter's limit is measured on the leader's clock, which may run fast by up to
/// `max_clock_drift` (1% here): so the leader stretches the wait before it gives up on the
/// waiter, as it does every wait it times. A 1 s wait queued at 305 ms is not timed out at
/// 1,305 ms (its limit stretched ends at 1,315 ms), but at the next tick, a heartbeat
/// interval later. (Mutant: `Server::drift` in `server_queue.rs` made `0.0`,
/// which timed waiters out by the raw limit: early by a fast clock's measure.)
#[test]
fn a_waiters_limit_is_stretched_by_the_clock_drift_before_it_times_out() {
    let (mut leader, _holder, waiter) = leader_with_a_held_lock();
    let queuing = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(
        queuing,
        from_client(CLIENT, op(waiter, 1, wait_for_a(1_000))),
    );
    let queued = leader.log().last_index();
    let _ = commit_through(&mut leader, queued, queuing);

    let _ = leader.step(ms(FIRST_ELECTION_MS + 1_005), timer(ServerTimer::Heartbeat));
    assert_eq!(
        leader.log().last_index(),
        queued,
        "not yet: 1 s stretched by 1%"
    );
    let _ = leader.step(ms(FIRST_ELECTION_MS + 1_060), timer(ServerTimer::Heartbeat));
    let timeout = Command::Timeout {
        client: waiter,
        seq: 1,
        lock: lock("a"),
    };
    assert_eq!(
        leader.log().entry(queued + 1).map(|e| &e.command),
        Some(&timeout)
    );
}

/// A preempt's seq is "reused" only when its own client used that seq for another write: an
/// unapplied acquire of another client, with whatever seq, says nothing about it. Here the
/// holder of `a` preempts `b` while a waiter's acquire of `a` is still unapplied: the preempt
/// is appended. (Mutant: `(*c, *s) == (client, seq)` in `projected_owner`'s acquire arm made
/// `!=`, which refused the preempt `seq_reused` because of another client's acquire.)
#[test]
fn another_clients_unapplied_acquire_does_not_make_a_preempt_seq_reused() {
    let (mut leader, holder, waiter) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(now, from_client(CLIENT, op(waiter, 1, wait_for_a(1_000))));
    let acquire_index = leader.log().last_index();
    let outputs = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, preempt("b"))));
    assert_eq!(replies(&outputs), vec![], "{outputs:?}");
    assert_eq!(persisted(&outputs).len(), 1, "appended: {outputs:?}");
    let outputs = commit_through(&mut leader, acquire_index + 1, now);
    assert_eq!(
        replies(&outputs),
        vec![(
            CLIENT_AGAIN,
            outcome(
                2,
                Outcome::Granted {
                    token: acquire_index + 1
                }
            )
        )]
    );
}

/// A preempt of a lock its client already holds needs no read: nothing another client does
/// can be its answer, so it is appended at once, in the same step, and answered `granted`
/// with the holder's token when it applies. (Mutant: the guard `owner != client` on
/// `Projection::Owner` in `propose_request` made `true`, which sent such a preempt through a
/// read round first.)
#[test]
fn a_preempt_of_a_lock_its_client_holds_is_appended_without_a_read() {
    let (mut leader, holder, _) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let outputs = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, preempt("a"))));
    assert_eq!(
        persisted(&outputs).len(),
        1,
        "appended at once: {outputs:?}"
    );
    let coverage = leader.coverage();
    assert_eq!(coverage.count(Branch::ProposePreemptRefusedByRead), 0);
    let appended = leader.log().last_index();
    let outputs = commit_through(&mut leader, appended, now);
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT_AGAIN, outcome(2, Outcome::Granted { token: 3 }))]
    );
}

/// A queue write's seq is "reused" only when its own client used that seq for another
/// write: another client's unapplied acquire, of another lock, says nothing about it. Here
/// a waiter's acquire of `a` is unapplied when the holder of `a` acquires `b`: that acquire is
/// appended and granted. (Mutant: `(c, s) == (client, seq)` in `queue_write_in_log` made
/// `!=`, which took the waiter's entry for the holder's own and refused `seq_reused`.)
#[test]
fn another_clients_unapplied_acquire_does_not_make_an_acquire_seq_reused() {
    let (mut leader, holder, waiter) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(now, from_client(CLIENT, op(waiter, 1, wait_for_a(1_000))));
    let wait_b = Operation::Acquire {
        lock: lock("b"),
        wait_ms: 1_000,
        claim: Claim::EXCLUSIVE,
    };
    let outputs = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, wait_b)));
    assert_eq!(replies(&outputs), vec![], "{outputs:?}");
    assert_eq!(persisted(&outputs).len(), 1, "appended: {outputs:?}");
    let appended = leader.log().last_index();
    let outputs = commit_through(&mut leader, appended, now);
    assert_eq!(
        replies(&outputs),
        vec![(
            CLIENT_AGAIN,
            outcome(2, Outcome::Granted { token: appended })
        )]
    );
}

/// The bound on uncommitted entries counts the entries past the commit index, not the log:
/// a leader whose log is all committed appends a due expire however long that log is. Here
/// the bound is 2 and the log holds 4 committed entries. (Mutant: `last_index -
/// commit_index` in `append_session_entry` made `+`, which deferred every session entry once
/// the last index plus the commit index reached the bound.)
#[test]
fn a_due_expire_is_appended_when_every_entry_is_committed_however_long_the_log() {
    let mut leader = tuned_leader_of_three(|config| config.uncommitted_entries_max = 2);
    let now = ms(FIRST_ELECTION_MS + 1);
    let dying = register_with_ttl_at(&mut leader, now, 1_000);
    let _ = register(&mut leader, now);
    assert_eq!((leader.commit_index(), leader.log().last_index()), (3, 3));
    let _ = leader.step(ms(3_000), timer(ServerTimer::Heartbeat));
    assert_eq!(
        leader.log().entry(4).map(|entry| &entry.command),
        Some(&Command::Expire { client: dying })
    );
    assert_eq!(leader.coverage().count(Branch::SessionsAppendDeferred), 0);
}

/// Only an unapplied acquire of the same lock may make a free lock look taken: a waiter's
/// unapplied acquire of `b` says nothing about `c`, so the holder's preempt of the free `c` is
/// appended at once, with no read. (Mutant: `l == lock` in `projected_owner`'s acquire arm
/// made `!=`, which took an acquire of any other lock for one of this lock and refused the
/// preempt by read.)
#[test]
fn an_unapplied_acquire_of_another_lock_leaves_a_free_lock_free() {
    let (mut leader, holder, waiter) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let wait_b = Operation::Acquire {
        lock: lock("b"),
        wait_ms: 1_000,
        claim: Claim::EXCLUSIVE,
    };
    let _ = leader.step(now, from_client(CLIENT, op(waiter, 1, wait_b)));
    let outputs = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, preempt("c"))));
    assert_eq!(
        persisted(&outputs).len(),
        1,
        "appended at once: {outputs:?}"
    );
    assert_eq!(
        leader.coverage().count(Branch::ProposePreemptRefusedByRead),
        0
    );
}

/// A leader remembers a refusal by read for at most `REFUSED_CLIENTS_MAX` clients: 65,536
/// contenders for a held lock, refused in one read round, are each answered `held_by` at once
/// and remembered; the 65,537th of the same round goes through the log instead (correct, only
/// slower), and waits for its entry. A client already remembered is still answered by read
/// when the memory is full: its refusal takes no new room. (Mutants: `refused.len() <
/// REFUSED_CLIENTS_MAX` in `decide_refusal` made `<=` and `==`; and `owner != client &&
/// holder.is_none()` on the arm after it made `||`, which parked the contender past the bound
/// as if an unapplied grant were coming. The memory's bound made them slow to reach: the
/// story takes 0.6 s in a debug build.)
#[test]
fn a_leader_remembers_refusals_by_read_for_at_most_its_bound_of_clients() {
    let bound = crate::node::server::REFUSED_CLIENTS_MAX as u64;
    let holder = ClientId(1);
    let contenders = (2..=bound + 2).map(ClientId);
    let mut entries = vec![noop(1)];
    entries.extend((1..=bound + 2).map(|id| registration(ClientId(id), None)));
    entries.push(in_term_1(exclusive_preempt(holder, "a")));
    let last = entries.len() as LogIndex;
    let mut config = config(S2, 3);
    config.pending_reads_max = 2 * bound as usize;
    let (mut server, _) = Server::new(config, DurableState::default(), 2, Time::ZERO);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, last)));
    let _ = win_election(&mut server, ms(1_000), 3);
    let _ = server.step(ms(1_000), peer(S3, append_ok(2, last + 1, 0)));
    assert_eq!(server.last_applied(), last + 1, "its no-op applied");

    // Every contender at one `now`: one read round for all.
    let now = ms(1_001);
    let mut rounds = Vec::new();
    for contender in contenders.clone() {
        let preempt = in_term(2, op(contender, 1, preempt("a")));
        let outputs = server.step(now, from_client(CLIENT, preempt));
        rounds.extend(append_rounds(&outputs));
    }
    let round = rounds.first().expect("a read round").1;
    let confirmed = server.step(now, peer(S3, append_ok(2, last + 1, round)));
    let held_by = ReplyBody::Outcome(Outcome::HeldBy { owner: holder });
    let answered: Vec<u64> = replies(&confirmed)
        .iter()
        .filter(|(_, reply)| reply.body == held_by)
        .map(|(_, reply)| reply.seq)
        .collect();
    assert_eq!(answered.len() as u64, bound, "the first {bound} at once");
    let coverage = server.coverage();
    assert_eq!(coverage.count(Branch::RefusalHeld), bound);
    assert_eq!(coverage.count(Branch::RefusalAppendedOwn), 1);
    let newest = server.log().entry(server.log().last_index());
    let past_the_bound = ClientId(bound + 2);
    assert!(
        matches!(newest.map(|e| &e.command), Some(Command::Preempt { client, .. }) if *client == past_the_bound),
        "the last contender's preempt is appended: {newest:?}"
    );

    let committed = server.step(now, peer(S3, append_ok(2, last + 2, 0)));
    assert_eq!(
        replies(&committed),
        vec![(CLIENT, outcome(1, Outcome::HeldBy { owner: holder }))],
        "the last contender, answered from its entry"
    );

    // A remembered client, refused again under a new seq while the memory is full.
    let later = ms(1_002);
    let again = in_term(2, op(ClientId(2), 2, preempt("a")));
    let outputs = server.step(later, from_client(CLIENT, again));
    let round = append_rounds(&outputs).first().expect("a read round").1;
    let confirmed = server.step(later, peer(S3, append_ok(2, last + 2, round)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(2, Outcome::HeldBy { owner: holder }))]
    );
    assert_eq!(server.coverage().count(Branch::RefusalHeld), bound + 1);
}

/// Every server notes its own clock when it appends a silent mark (a receipt), so that as a
/// later leader it can restart a silent session's deadline from the mark. A receipt of a mark
/// no session refers to any more is useless, and past `RECEIPTS_MAX` such receipts are
/// dropped: 1,100 marks of one client's silence, all applied, leave only the receipt of the
/// latest, the one in force, and not that of the newest entry, a mark of nobody. (Mutants:
/// `prune_receipts` made `()`, and its `len <= RECEIPTS_MAX` made `>`, which kept every
/// receipt: memory only, so no answer showed it; and `*index > applied` made `>=` and `==`,
/// which kept the newest.)
#[test]
fn receipts_of_marks_no_session_refers_to_are_dropped_past_their_bound() {
    let client = ClientId(1);
    let mut entries = vec![noop(1), registration(client, Some(3_000))];
    entries.extend((0..1_100).map(|_| in_term_1(silent_for_1_5_s(client))));
    // Last, a mark of a client no registration made: it applies to nothing, and no session
    // refers to it, though it is the newest applied.
    entries.push(in_term_1(silent_for_1_5_s(ClientId(77))));
    let last = entries.len() as LogIndex;
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, last)));
    assert_eq!(server.last_applied(), last);
    assert_eq!(server.receipt_count(), 1, "only the mark in force");
}

/// A receipt belongs to the entry this server appended at its index. When a new leader cuts
/// back an uncommitted tail, the receipts of the marks cut off go with it: here s2 received
/// term 1's mark at index 4, and term 2's leader replaces indices 3 and 4 with its one no-op.
/// A receipt kept beyond the log would describe no entry at all, and the server's own check
/// forbids it. (Mutant: `Server::forget_receipts_from` made `()`.)
#[test]
fn a_tail_cut_back_by_a_new_leader_takes_the_receipts_of_its_marks() {
    let client = ClientId(1);
    let entries = vec![
        noop(1),
        registration(client, Some(3_000)),
        noop(1),
        in_term_1(silent_for_1_5_s(client)),
    ];
    let mut server = boot(S2, 3);
    let _ = server.step(ms(10), peer(S1, append(1, (0, 0), entries, 2)));
    assert_eq!(server.receipt_count(), 1, "term 1's mark at index 4");

    let _ = server.step(ms(500), peer(S3, append(2, (2, 1), vec![noop(2)], 2)));
    assert_eq!(
        terms_of(&server),
        vec![1, 1, 2],
        "indices 3 and 4 replaced by one"
    );
    assert_eq!(server.receipt_count(), 0, "the cut mark's receipt is gone");
}

/// A shared acquire is held back by lock-delay even when the lock does not look free: here
/// the old leader appended a waiter's acquire of `a` behind the expire that freed it, and the
/// new leader, not yet ready, is asked for a shared claim of `a`. A unit freed by an expiry
/// goes to nobody new during its delay, whoever else waits or holds, so the reader hears
/// `lock_delayed` and nothing is appended. (Mutant: `!` deleted from `!claim.is_default()` in
/// `propose_queue_write`, which gated such an acquire only when the lock looked free.)
#[test]
fn a_shared_acquire_behind_a_waiter_still_waits_out_the_lock_delay() {
    let (dying, waiter, reader) = (ClientId(1), ClientId(2), ClientId(3));
    let mut entries = dying_holds_a_among(dying, &[waiter, reader]);
    entries.extend([
        in_term_1(Command::Expire { client: dying }),
        in_term_1(long_acquire(waiter, "a")),
    ]);
    let mut server = leader_not_ready_with_a_2_s_lock_delay(entries, 6);
    assert!(server.lock_table().session_expired(dying));
    assert_eq!(
        server.log().last_index(),
        8,
        "the waiter's acquire (7), then the no-op"
    );

    let shared = wait_for_a_as(Claim::SHARED, 60_000);
    let outputs = server.step(
        ms(2_001),
        from_client(CLIENT, in_term(2, op(reader, 1, shared))),
    );
    assert_lock_delayed_2_s(&outputs);
    assert_eq!(server.log().last_index(), 8, "nothing appended");
}
