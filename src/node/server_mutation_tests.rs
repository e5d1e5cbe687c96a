//! Stories that kill mutants of `src/node/server.rs` which survived the other tests (README,
//! "Mutation testing"). Each says which rule it pins and cites the mutant it was written for.

use super::*;
use crate::node::coverage::Branch;

/// A pre-candidate in term 0 asks for pre-votes for term 1 at its election deadline.
fn pre_candidate_of_three() -> Server {
    let (mut server, boot_outputs) =
        Server::new(config(S1, 3), DurableState::default(), 1, Time::ZERO);
    let deadline = timer_at(&boot_outputs, ServerTimer::Election).expect("an election timer");
    let _ = server.step(deadline, timer(ServerTimer::Election));
    assert_eq!((server.role(), server.term()), (Role::PreCandidate, 0));
    server
}

/// Pre-vote (thesis §9.6): a refusal is never a vote, whatever term it names. A refusal from a
/// server already in term 1 tells the pre-candidate it is behind: it follows term 1 instead of
/// counting the refusal toward a quorum and standing. (Mutant: `granted && term == ...` in
/// `on_pre_vote_response` made `||`.)
#[test]
fn a_pre_vote_refusal_from_one_term_ahead_is_not_counted_as_a_vote() {
    let mut server = pre_candidate_of_three();
    let outputs = server.step(ms(400), peer(S2, pre_vote_answer(1, false)));
    assert_eq!((server.role(), server.term()), (Role::Follower, 1));
    assert!(
        !sent(&outputs)
            .iter()
            .any(|(_, msg)| matches!(msg, PeerMessage::RequestVote { .. })),
        "no election on a refusal: {outputs:?}"
    );
}

/// A follower of three holding the term-1 log that registers `owner` and grants it `a`, all
/// committed and applied (index 3).
fn follower_with_committed_grant(owner: ClientId) -> Server {
    let mut follower = boot(S2, 3);
    let _ = follower.step(
        ms(10),
        peer(S1, append(1, (0, 0), register_and_grant_a(owner), 3)),
    );
    assert_eq!((follower.commit_index(), follower.last_applied()), (3, 3));
    follower
}

/// Coverage names the situation exactly (README, "Protocol coverage"): a refusal because the
/// voter already voted for another candidate this term is `vote.refused_already_voted`, and
/// one because the candidate's log is behind is `vote.refused_log_behind`, never the other.
/// (Mutant: `vote != from` in the refusal's classification made `==`.)
#[test]
fn a_vote_refused_for_an_earlier_vote_is_counted_as_already_voted() {
    let mut voter = boot(S1, 3);
    let _ = voter.step(ms(10), peer(S2, request_vote(1, 0, 0)));
    assert_eq!(voter.voted_for(), Some(S2));
    let outputs = voter.step(ms(11), peer(S3, request_vote(1, 0, 0)));
    assert_eq!(sent(&outputs), vec![(S3, vote(1, false))]);
    let coverage = voter.coverage();
    assert_eq!(coverage.count(Branch::VoteGranted), 1);
    assert_eq!(coverage.count(Branch::VoteRefusedAlreadyVoted), 1);
    assert_eq!(coverage.count(Branch::VoteRefusedLogBehind), 0);
}

/// Raft §5.3, counted: entries that extend the log past its end are `appended`, even when the
/// message repeats entries the follower already holds first; only a new entry at an index
/// the log already holds is `conflict_truncated`. (Mutant: `prev_index + 1 + first_new` in the
/// classification made `- first_new`.)
#[test]
fn entries_past_a_duplicate_prefix_count_as_appended_not_as_a_conflict() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));
    let _ = follower.step(ms(20), peer(S1, append(1, (0, 0), noops(&[1, 1]), 0)));
    assert_eq!(terms_of(&follower), vec![1, 1]);
    let coverage = follower.coverage();
    assert_eq!(coverage.count(Branch::AppendEntriesAppended), 2);
    assert_eq!(coverage.count(Branch::AppendEntriesConflictTruncated), 0);
}

/// Raft §7: a snapshot that ends exactly at the follower's commit index brings nothing new;
/// it is counted `install_snapshot.already_covered` and acknowledged, not installed. (Mutant:
/// `index > self.commit_index` in the classification made `>=`.)
#[test]
fn a_snapshot_ending_at_the_commit_index_is_already_covered() {
    let owner = ClientId(1);
    let mut follower = follower_with_committed_grant(owner);
    let install = install_snapshot(1, (3, 1), follower.table.clone(), 1);
    let outputs = follower.step(ms(30), peer(S1, install));
    assert!(
        !outputs
            .iter()
            .any(|output| matches!(output, ServerOutput::PersistSnapshot(_))),
        "nothing to install: {outputs:?}"
    );
    let coverage = follower.coverage();
    assert_eq!(coverage.count(Branch::InstallSnapshotAlreadyCovered), 1);
    assert_eq!(coverage.count(Branch::InstallSnapshotInstalled), 0);
}

/// Monotonic reads, at the boundary: a local check waiting for its replica to catch up is
/// refused at the very instant its wait (one maximum election timeout) ends, not a step
/// later. (Mutant: `now < at` in `expire_local_checks`'s early return made `<=`.)
#[test]
fn a_waiting_local_check_is_refused_exactly_when_its_wait_ends() {
    let owner = ClientId(1);
    let mut follower = follower_with_committed_grant(owner);
    let mut ahead = op(owner, 2, check("a", Consistency::Local));
    ahead.seen_index = 50;
    let asked_at = ms(40);
    assert!(replies(&follower.step(asked_at, from_client(CLIENT, ahead))).is_empty());
    let wait_end = asked_at + follower.config.election_timeout_max;
    let heartbeat = || peer(S1, append(1, (3, 1), Vec::new(), 3));
    let just_before = Time::from_nanos(wait_end.as_nanos() - 1);
    assert!(replies(&follower.step(just_before, heartbeat())).is_empty());
    assert_eq!(
        replies(&follower.step(wait_end, heartbeat())),
        vec![(CLIENT, refusal(2, ServiceError::Unavailable))]
    );
    assert_eq!(follower.coverage().count(Branch::LocalCheckExpired), 1);
}

/// How many `Persist` and `PersistSnapshot` outputs `outputs` holds: what a driver counts for
/// `ServerInput::Persisted`.
fn persist_outputs(outputs: &[ServerOutput]) -> u64 {
    outputs
        .iter()
        .filter(|output| {
            matches!(
                output,
                ServerOutput::Persist(_) | ServerOutput::PersistSnapshot(_)
            )
        })
        .count() as u64
}

/// Durability reported by the driver (thesis §10.2.1) counts every `Persist` and
/// `PersistSnapshot` output, snapshots included. s1 installs s2's snapshot as a follower, then
/// leads term 2 and appends its no-op; a report that stops just before the no-op's write does
/// not make it durable, so s2's acknowledgement alone commits nothing, and the report that
/// covers it does. (Mutant: `persist_count += 1` for an installed snapshot made `-= 1`, which
/// numbers later writes too low and lets an earlier report cover them.)
#[test]
fn a_durability_report_counts_an_installed_snapshot_among_the_writes() {
    let mut config = config(S1, 3);
    config.durability_reported = true;
    let (mut s1, mut outputs) = Server::new(config, DurableState::default(), 1, Time::ZERO);
    let table = follower_with_committed_grant(ClientId(1)).table.clone();
    let install = install_snapshot(1, (3, 1), table, 0);
    outputs.extend(s1.step(ms(10), peer(S2, install)));
    assert_eq!(s1.commit_index(), 3);
    let election = win_election(&mut s1, ms(1_000), 3);
    let noop_at = position_of(&election, |output| {
        matches!(output, ServerOutput::Persist(PersistOp::Append { .. }))
    });
    outputs.extend_from_slice(&election[..noop_at]);
    let before_noop = persist_outputs(&outputs);
    let _ = s1.step(
        ms(1_000),
        ServerInput::Persisted {
            through: before_noop,
        },
    );
    let _ = s1.step(ms(1_001), peer(S2, append_ok(2, 4, 0)));
    assert_eq!(
        s1.commit_index(),
        3,
        "only s2's copy of the no-op is durable"
    );
    let _ = s1.step(
        ms(1_002),
        ServerInput::Persisted {
            through: before_noop + 1,
        },
    );
    assert_eq!(
        s1.commit_index(),
        4,
        "s1's own copy is durable now: a majority"
    );
}

/// Raft §5.1: a server that sees a higher term adopts it, even from the leader it already
/// follows. s2 follows s1 in term 1; s1 wins term 2 without s2's vote and sends its first
/// AppendEntries of term 2: s2 moves to term 2, makes that durable, and answers in term 2.
/// (Mutant: `term > self.term || ...` in `accept_leader` made `&&`, which kept s2 in term 1.)
#[test]
fn a_follower_adopts_the_new_term_of_the_leader_it_already_follows() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));
    assert_eq!((follower.term(), follower.leader()), (1, Some(S1)));
    let outputs = follower.step(ms(20), peer(S1, append(2, (1, 1), noops(&[2]), 0)));
    assert_eq!(follower.term(), 2);
    assert!(
        persisted(&outputs)
            .iter()
            .any(|op| matches!(op, PersistOp::HardState { term: 2, .. })),
        "the new term is made durable: {outputs:?}"
    );
    assert_eq!(sent(&outputs), vec![(S1, append_ok(2, 2, 0))]);
}

/// Monotonic reads: a local check waiting for its replica is answered as soon as the replica
/// has applied at least what the client has seen, also when one step carries the replica past
/// it. The client saw index 2; the replica has applied 1, then learns in one heartbeat that 3
/// is committed, applies 2 and 3, and answers from index 3. (Mutant: `read_index > applied`
/// in `serve_confirmed_reads`'s early return made `<`, which answered only a read that the
/// replica reaches exactly.)
#[test]
fn a_waiting_local_check_is_answered_when_its_replica_moves_past_what_was_seen() {
    let owner = ClientId(1);
    let mut follower = boot(S2, 3);
    let _ = follower.step(
        ms(10),
        peer(S1, append(1, (0, 0), register_and_grant_a(owner), 1)),
    );
    assert_eq!(follower.last_applied(), 1);
    let mut seen_two = op(owner, 2, check("a", Consistency::Local));
    seen_two.seen_index = 2;
    assert!(replies(&follower.step(ms(11), from_client(CLIENT, seen_two))).is_empty());
    let caught_up = follower.step(ms(12), peer(S1, append(1, (3, 1), Vec::new(), 3)));
    assert_eq!(follower.last_applied(), 3);
    assert_eq!(
        replies(&caught_up),
        vec![(CLIENT, outcome(2, Outcome::Owner { owner, token: 3 }))]
    );
}

/// Thesis §6.3, with the index every reply carries: a retry appended again before the original
/// committed is answered from the write it repeats. Both connections learn index 3, where the
/// grant was applied, not the index of the copy that changed nothing, so that a client's view
/// of the log (monotonic reads) is the state its answer reflects. (Mutant: the match arm of
/// `answer_for` for a duplicate write deleted, which answered the copy with its own index.)
#[test]
fn a_retry_applied_as_a_duplicate_is_answered_with_the_index_of_the_original() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(client, 1, preempt("a"))));
    let _ = leader.step(now, from_client(CLIENT_AGAIN, op(client, 1, preempt("a"))));
    let outputs = commit_through(&mut leader, 4, now);
    let indexes: Vec<(ClientAddr, LogIndex)> = outputs
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Reply { to, reply } => Some((*to, reply.index)),
            _ => None,
        })
        .collect();
    assert_eq!(indexes, vec![(CLIENT, 3), (CLIENT_AGAIN, 3)]);
}

/// Raft §5.3, counted: a follower's commit index advances only to the last entry it verified
/// against the leader, and `append_entries.commit_advanced` counts exactly the messages that
/// moved it. A heartbeat naming a higher leader commit that this follower cannot verify yet
/// moves nothing and counts nothing. (Mutant: `self.commit_index > commit_before` made `==`.)
#[test]
fn commit_advanced_counts_only_the_messages_that_moved_the_commit_index() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    assert_eq!(
        (follower.commit_index(), follower_commit_advances(&follower)),
        (1, 1)
    );
    // Entries 2 and 3 exist at the leader, but this heartbeat only verifies entry 1.
    let _ = follower.step(ms(20), peer(S1, append(1, (1, 1), Vec::new(), 3)));
    assert_eq!(
        (follower.commit_index(), follower_commit_advances(&follower)),
        (1, 1)
    );
}

fn follower_commit_advances(follower: &Server) -> u64 {
    follower
        .coverage()
        .count(Branch::AppendEntriesCommitAdvanced)
}

/// BUGGIFY's odd snapshot: with chance 1, a server that has applied entries past its snapshot
/// takes a snapshot after applying them, though no `snapshot_entries` bound asked for one.
/// (Mutant: `applied > self.log.base_index()` for the odd moment made `==`, which only ever
/// tried a snapshot of nothing.)
#[test]
fn buggify_at_chance_one_snapshots_what_was_just_applied() {
    let mut follower = boot_buggified(S2, 1.0);
    let outputs = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    assert_eq!(follower.last_applied(), 1);
    let snapshots: Vec<LogIndex> = outputs
        .iter()
        .filter_map(|output| match output {
            ServerOutput::PersistSnapshot(snapshot) => Some(snapshot.last_included_index),
            _ => None,
        })
        .collect();
    assert_eq!(snapshots, vec![1]);
    assert_eq!(follower.coverage().count(Branch::BuggifyOddSnapshot), 1);
}

/// Thesis §6.3 for refusals: a seq answered `held by` is that preempt's, of that lock. A
/// request that reuses the seq for a preempt of another lock, or for a release of the same
/// one, is another operation under a used seq: `seq reused`, never the stored refusal.
/// (Mutant: `kind != WriteKind::Preempt || *refused.lock != *lock` in `settled_answer` made
/// `&&`, which replayed the refusal to either.)
#[test]
fn a_refused_seq_reused_for_another_lock_or_a_release_is_refused_as_reused() {
    let (mut leader, holder, contender) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let last_index = leader.log().last_index();
    let outputs = leader.step(now, from_client(CLIENT, op(contender, 1, preempt("a"))));
    let round = append_rounds(&outputs)[0].1;
    let confirmed = leader.step(now, peer(S2, append_ok(1, last_index, round)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(1, Outcome::HeldBy { owner: holder }))]
    );
    for reuse in [preempt("b"), release("a")] {
        let outputs = leader.step(now, from_client(CLIENT, op(contender, 1, reuse)));
        assert_eq!(
            replies(&outputs),
            vec![(CLIENT, refusal(1, ServiceError::SeqReused { seq: 1 }))]
        );
        assert!(persisted(&outputs).is_empty(), "nothing reaches the log");
    }
}

/// Raft §5.2 with the leader lease (thesis §4.2.3): the lease ignores only a candidate of a
/// newer term. A candidate of the term this follower is already in is answered: s2 learned
/// term 1 from s1's appends without voting in it, so it may grant (one vote per term), and it
/// does not forget its leader for it. (Mutant: `term > self.term` at the top of
/// `on_request_vote` made `>=`, which silenced the answer inside the lease.)
#[test]
fn a_vote_request_of_the_current_term_is_answered_inside_the_lease() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    assert_eq!((follower.term(), follower.leader()), (1, Some(S1)));
    let outputs = follower.step(ms(20), peer(S3, request_vote(1, 1, 1)));
    assert_eq!(sent(&outputs), vec![(S3, vote(1, true))]);
    assert_eq!((follower.term(), follower.leader()), (1, Some(S1)));
}

/// A hello goes through the log like a write, but it names no term a client could have got
/// wrong: a follower forwards it to its leader whatever term it carries, and only a preempt or
/// release naming another term is sent back `not leader`. (Mutant: `is_write` made `true`.)
#[test]
fn a_follower_forwards_a_hello_whatever_term_it_names() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    let outputs = follower.step(ms(20), from_client(CLIENT, hello(5)));
    assert!(
        replies(&outputs).is_empty(),
        "no answer from s2: {outputs:?}"
    );
    assert!(matches!(
        sent(&outputs).as_slice(),
        [(S1, PeerMessage::Forward { .. })]
    ));
}

/// A heartbeat from the leader a follower already follows restarts its election timer once:
/// one `SetTimer`, from one draw of its jitter, and nothing else changes (no new term, no
/// write). (Mutant: `self.role != Role::Follower` in `accept_leader` made `==`, which ran the
/// whole of `become_follower` again for every message from the leader it follows.)
#[test]
fn a_heartbeat_from_the_followed_leader_sets_the_election_timer_once() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    let outputs = follower.step(ms(20), peer(S1, append(1, (1, 1), Vec::new(), 1)));
    let election_timers = outputs
        .iter()
        .filter(|output| {
            matches!(
                output,
                ServerOutput::SetTimer {
                    timer: ServerTimer::Election,
                    ..
                }
            )
        })
        .count();
    assert_eq!(election_timers, 1, "{outputs:?}");
    assert!(persisted(&outputs).is_empty());
    assert_eq!(sent(&outputs), vec![(S1, append_ok(1, 1, 0))]);
}

/// The lock name limit is inclusive: a name of exactly `LOCK_NAME_BYTES_MAX` bytes is a lock
/// like any other and is appended; one byte more is a bad request (the story beside it in the
/// protocol tables). (Mutant: `name.len() > LOCK_NAME_BYTES_MAX` made `>=`.)
#[test]
fn a_lock_name_of_exactly_the_limit_is_accepted() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let longest = "x".repeat(LOCK_NAME_BYTES_MAX);
    let outputs = leader.step(now, from_client(CLIENT, op(client, 1, preempt(&longest))));
    assert!(
        replies(&outputs).is_empty(),
        "appended, not refused: {outputs:?}"
    );
    assert_eq!(persisted(&outputs).len(), 1);
}

/// A refusal by read never appends its preempt when the lock is about to be someone else's.
/// Its read round may be confirmed after the holder's release applied but before the grant
/// appended behind it did: the lock is free in the applied state, and an unapplied entry
/// already gives it to another client. The refusal waits for that grant and is answered `held
/// by` it with no entry of its own (no fsync, the point of refusing by read). Here client
/// `late` is refused while a linearizable check's round is in flight, so it waits for the next
/// round and is no contender the release could hand the lock to; `early` asks once the release
/// applied, and is appended. (Mutant: the guard `owner != client && holder.is_none()` in
/// `decide_refusal` made `false`, which appended the refused preempt for apply to refuse.)
#[test]
fn a_refusal_confirmed_between_a_release_and_the_next_grant_waits_and_appends_nothing() {
    const LATE: ClientAddr = ClientAddr(9);
    const READER: ClientAddr = ClientAddr(10);
    let (mut leader, holder, early) = leader_with_a_held_lock();
    let late = register(&mut leader, ms(FIRST_ELECTION_MS));
    let reading = ms(FIRST_ELECTION_MS + 5);
    let check_b = op(holder, 2, check("b", Consistency::Linearizable));
    let outputs = leader.step(reading, from_client(READER, check_b));
    let round = append_rounds(&outputs)[0].1;

    let later = ms(FIRST_ELECTION_MS + 6);
    let outputs = leader.step(later, from_client(LATE, op(late, 1, preempt("a"))));
    assert!(
        append_rounds(&outputs).is_empty(),
        "it waits for the next round"
    );
    let _ = leader.step(
        later,
        from_client(CLIENT_AGAIN, op(holder, 3, release("a"))),
    );
    let release_index = leader.log().last_index();
    let outputs = leader.step(later, peer(S2, append_ok(1, release_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT_AGAIN, outcome(3, Outcome::Released)),
            (READER, outcome(2, Outcome::Free))
        ]
    );
    assert!(append_rounds(&outputs).iter().all(|&(_, r)| r == round + 1));

    let outputs = leader.step(later, from_client(CLIENT, op(early, 1, preempt("a"))));
    assert_eq!(
        persisted(&outputs).len(),
        1,
        "the free lock's preempt is appended"
    );
    let grant_index = leader.log().last_index();
    // s2 answers the next round's heartbeat, sent before the grant was appended.
    let outputs = leader.step(later, peer(S2, append_ok(1, release_index, round + 1)));
    assert!(replies(&outputs).is_empty(), "{outputs:?}");
    assert!(persisted(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(
        leader
            .coverage()
            .count(Branch::RefusalWaitsForUnappliedGrant),
        1
    );

    let outputs = leader.step(later, peer(S2, append_ok(1, grant_index, round + 1)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(1, Outcome::Granted { token: grant_index })),
            (LATE, outcome(1, Outcome::HeldBy { owner: early }))
        ]
    );
    assert_eq!(
        leader.log().last_index(),
        grant_index,
        "the refusal appended nothing"
    );
}

/// A preempt is refused by read only behind an unapplied grant of its own lock: an unapplied
/// grant of another lock does not make a free one look held, so a preempt of it is appended at
/// once; one behind another client's unapplied grant of the same lock is refused, naming that
/// client once the grant applies. (Mutant: `l == lock && owner.is_none()` in
/// `projected_owner` made `||`, which took a grant of any lock for one of this lock.)
#[test]
fn a_preempt_is_refused_by_read_only_behind_an_unapplied_grant_of_its_own_lock() {
    const SECOND: ClientAddr = ClientAddr(9);
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let first = register(&mut leader, now);
    let second = register(&mut leader, now);
    let later = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(later, from_client(CLIENT, op(first, 1, preempt("b"))));
    let outputs = leader.step(later, from_client(SECOND, op(second, 1, preempt("a"))));
    assert_eq!(persisted(&outputs).len(), 1, "`a` is free: {outputs:?}");
    let a_index = leader.log().last_index();
    let outputs = leader.step(later, from_client(CLIENT_AGAIN, op(first, 2, preempt("a"))));
    assert!(
        persisted(&outputs).is_empty(),
        "refused by read: {outputs:?}"
    );
    let round = append_rounds(&outputs)[0].1;

    let outputs = leader.step(later, peer(S2, append_ok(1, a_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(1, Outcome::Granted { token: a_index - 1 })),
            (SECOND, outcome(1, Outcome::Granted { token: a_index })),
            (CLIENT_AGAIN, outcome(2, Outcome::HeldBy { owner: second }))
        ]
    );
    assert_eq!(
        leader.log().last_index(),
        a_index,
        "the refusal appended nothing"
    );
}

/// The seed design's fixed initial leader is a shortcut for a first boot only. A server whose
/// log is being repaired lost entries, perhaps a vote or a later term with them, so it never
/// takes it, even when what is left is term 0 and an empty log: it starts its repair as a
/// follower that has voted for no one. (Mutant: `last_index() == 0 && !durable.recovering`
/// in `Server::build`'s first-boot test made `||`.)
#[test]
fn a_recovering_server_never_takes_the_initial_leader_shortcut() {
    let mut config = config(S1, 3);
    config.initial_leader = Some(S1);
    let damaged = DurableState {
        recovering: true,
        ..DurableState::default()
    };
    let (server, _) = Server::new(config, damaged, 1, Time::ZERO);
    assert_eq!(server.role(), Role::Follower);
    assert_eq!(server.voted_for(), None);
}

/// A refused client may hold the lock itself by the time its refusal is decided: it was
/// queued for the lock, asked to preempt it meanwhile and was refused by read, and the
/// holder's release handed the lock to it in the very answer that confirmed the read. The
/// lock is its own in the applied state and nothing in the log changes that, so the refused
/// preempt is appended like any preempt of a lock already one's own, and the client hears
/// `granted` when that entry applies. (Mutant: the guard `owner != client && holder.is_none()`
/// in `decide_refusal` made `true`, which parked the refusal behind the applied log again and
/// again: the client never heard back.)
#[test]
fn a_refused_client_handed_the_lock_meanwhile_is_answered_from_its_own_entry() {
    const PREEMPTING: ClientAddr = ClientAddr(9);
    let (mut leader, holder, waiter) = leader_with_a_held_lock();
    let queuing = ms(FIRST_ELECTION_MS + 5);
    let wait = Operation::Acquire {
        lock: lock("a"),
        wait_ms: 60_000,
        claim: crate::node::Claim::EXCLUSIVE,
    };
    let _ = leader.step(queuing, from_client(CLIENT, op(waiter, 1, wait)));
    let queued = leader.log().last_index();
    let outputs = commit_through(&mut leader, queued, queuing);
    assert!(replies(&outputs).is_empty(), "a waiter hears nothing yet");

    let asking = ms(FIRST_ELECTION_MS + 6);
    let outputs = leader.step(asking, from_client(PREEMPTING, op(waiter, 2, preempt("a"))));
    assert!(
        persisted(&outputs).is_empty(),
        "refused by read: {outputs:?}"
    );
    let round = append_rounds(&outputs)[0].1;
    let _ = leader.step(
        asking,
        from_client(CLIENT_AGAIN, op(holder, 2, release("a"))),
    );
    let release_index = leader.log().last_index();
    // s2's answer to the read's heartbeat holds the release: it applies and hands `a` to the
    // waiter, and the refusal, confirmed by the same answer, is decided with the waiter
    // holding `a`.
    let outputs = leader.step(asking, peer(S2, append_ok(1, release_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT_AGAIN, outcome(2, Outcome::Released)),
            (
                CLIENT,
                outcome(
                    1,
                    Outcome::Granted {
                        token: release_index
                    }
                )
            )
        ]
    );
    assert_eq!(
        leader.log().last_index(),
        release_index + 1,
        "the refused preempt is appended: {outputs:?}"
    );
    let outputs = commit_through(&mut leader, release_index + 1, asking);
    assert_eq!(
        replies(&outputs),
        vec![(
            PREEMPTING,
            outcome(
                2,
                Outcome::Granted {
                    token: release_index
                }
            )
        )]
    );
}

/// A retry of a preempt refused by read waits in its own read round. When the holder's
/// release is appended, the first copy is handed the lock right behind it; the retry,
/// confirmed later while the release is still unapplied, must be answered by that appended
/// copy, `granted` with the first, not `held by` the holder on its way out. (Mutant: the match
/// arm `Projection::InLog` in `decide_refusal` deleted, which refused the retry by read with
/// the holder's name while its own copy was about to be granted.)
#[test]
fn a_retry_confirmed_after_its_copy_was_handed_the_lock_is_answered_by_that_copy() {
    const RETRY: ClientAddr = ClientAddr(9);
    let (mut leader, holder, contender) = leader_with_a_held_lock();
    let asking = ms(FIRST_ELECTION_MS + 5);
    let outputs = leader.step(asking, from_client(CLIENT, op(contender, 1, preempt("a"))));
    let round = append_rounds(&outputs)[0].1;
    let outputs = leader.step(asking, from_client(RETRY, op(contender, 1, preempt("a"))));
    assert!(outputs.is_empty(), "the retry waits for the next round");
    let _ = leader.step(
        asking,
        from_client(CLIENT_AGAIN, op(holder, 2, release("a"))),
    );
    let handed = leader.log().last_index();
    assert_eq!(
        leader.coverage().count(Branch::HandOverBehindRelease),
        1,
        "the first copy follows the release"
    );
    // s2 confirms both read rounds but holds nothing new: the release is not applied.
    let committed = leader.commit_index();
    let _ = leader.step(asking, peer(S2, append_ok(1, committed, round)));
    let outputs = leader.step(asking, peer(S2, append_ok(1, committed, round + 1)));
    assert_eq!(
        replies(&outputs),
        vec![],
        "answered by the copy, once it applies"
    );

    let outputs = commit_through(&mut leader, handed, asking);
    let granted = outcome(1, Outcome::Granted { token: handed });
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT_AGAIN, outcome(2, Outcome::Released)),
            (CLIENT, granted.clone()),
            (RETRY, granted)
        ]
    );
    assert_eq!(leader.coverage().count(Branch::RefusalCopyInLog), 1);
}

fn read_index_request_id(outputs: &[ServerOutput]) -> u64 {
    match sent(outputs).as_slice() {
        [(S1, PeerMessage::ReadIndexRequest { id })] => *id,
        other => panic!("expected one read-index request to s1, got {other:?}"),
    }
}

/// Thesis §6.4: a follower forwards each linearizable check to the leader under its own id,
/// so two checks in flight at once are each answered when the leader's answer for its id
/// comes back, in whatever order. (Mutant: `next_read_id += 1` in `start_linearizable_check`
/// made `*=`, which gave every forwarded check the same id: the second replaced the first,
/// and the first client was never answered.)
#[test]
fn two_checks_forwarded_at_once_are_each_answered_by_their_own_read_index() {
    const SECOND: ClientAddr = ClientAddr(9);
    let owner = ClientId(1);
    let mut follower = follower_with_committed_grant(owner);
    let read = |seq| op(owner, seq, check("a", Consistency::Linearizable));
    let first = read_index_request_id(&follower.step(ms(12), from_client(CLIENT, read(5))));
    let second = read_index_request_id(&follower.step(ms(12), from_client(SECOND, read(6))));
    assert_ne!(first, second);

    let held = Outcome::Owner { owner, token: 3 };
    let index = |id| PeerMessage::ReadIndexResponse { id, index: Some(3) };
    let outputs = follower.step(ms(13), peer(S1, index(second)));
    assert_eq!(replies(&outputs), vec![(SECOND, outcome(6, held))]);
    let outputs = follower.step(ms(13), peer(S1, index(first)));
    assert_eq!(replies(&outputs), vec![(CLIENT, outcome(5, held))]);
}

/// Thesis §6.3 for a release still in the log: a retry of that very release (its seq, its
/// lock), say through another connection after a time-out, is the same operation. It is
/// appended again and the first copy to apply answers both, as `Released`. The same seq used
/// to release another lock is another operation under a used seq: `seq reused` at once, and
/// nothing appended, because the first copy to apply would otherwise answer it too.
/// (Mutant: `**l == *lock` in `seq_reused_in_log` made `!=`, which refused the retry and
/// appended the reuse.)
#[test]
fn a_retried_release_still_in_the_log_is_appended_again_but_its_seq_reused_for_another_lock_is_refused()
 {
    let (mut leader, holder, _) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let first = leader.step(now, from_client(CLIENT, op(holder, 2, release("a"))));
    assert!(replies(&first).is_empty(), "answered once committed");
    assert_eq!(leader.log().last_index(), 5);

    let retry = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, release("a"))));
    assert!(
        replies(&retry).is_empty(),
        "the retry is not refused: {retry:?}"
    );
    assert_eq!(leader.log().last_index(), 6, "the retry is appended too");

    let reuse = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, release("b"))));
    assert_eq!(
        replies(&reuse),
        vec![(CLIENT_AGAIN, refusal(2, ServiceError::SeqReused { seq: 2 }))]
    );
    assert!(persisted(&reuse).is_empty(), "nothing reaches the log");

    let committed = commit_through(&mut leader, 6, now);
    let mut answers = replies(&committed);
    answers.sort_by_key(|(addr, _)| addr.0);
    assert_eq!(
        answers,
        vec![
            (CLIENT, outcome(2, Outcome::Released)),
            (CLIENT_AGAIN, outcome(2, Outcome::Released)),
        ]
    );
    assert_eq!(leader.lock_table().holder("a"), None);
}

/// BUGGIFY's spurious election timer (README, "Protocol coverage and BUGGIFY") is early, never
/// late: anywhere from one heartbeat to the configured minimum, so it only ever tests an
/// election sooner than the real timer would start one. Fifty heartbeats at chance 1 each
/// re-arm it inside that span, and they spread over it rather than sitting at one end.
/// (Mutant: `min - floor` for the span made `min + floor`, which let it run past the minimum.)
#[test]
fn a_spurious_election_timer_fires_between_one_heartbeat_and_the_minimum_timeout() {
    let mut follower = boot_buggified(S2, 1.0);
    let config = config(S2, 3);
    let (floor, ceiling) = (config.heartbeat_interval, config.election_timeout_min);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    let spurious = |server: &Server| {
        server
            .coverage()
            .count(Branch::BuggifySpuriousElectionTimer)
    };
    let before = spurious(&follower);
    let mut timeouts = Vec::new();
    for beat in 1..=50 {
        let now = ms(10 + beat * 20);
        let outputs = follower.step(now, peer(S1, append(1, (1, 1), Vec::new(), 1)));
        let deadline = timer_at(&outputs, ServerTimer::Election).expect("re-armed");
        timeouts.push(deadline.saturating_since(now));
    }
    assert_eq!(follower.role(), Role::Follower);
    for timeout in &timeouts {
        assert!(
            (floor..=ceiling).contains(timeout),
            "{timeout:?} outside {floor:?}..={ceiling:?}"
        );
    }
    let middle = floor + (ceiling - floor) / 2;
    assert!(timeouts.iter().any(|timeout| *timeout < middle));
    assert!(timeouts.iter().any(|timeout| *timeout > middle));
    assert_eq!(spurious(&follower) - before, 50);
}

/// Raft §5.3: a refusal only ever moves a follower's next index back to just past what that
/// follower is known to match. A late refusal (from a round before the follower caught up,
/// delivered after its acknowledgement) hints at index 2, but s2 already matched the whole
/// log: the leader resends nothing it knows s2 holds. (Mutant: the floor `match_index + 1` in
/// `on_append_failure` made `match_index * 1`, which resent s2's last entry.)
#[test]
fn a_late_refusal_never_moves_next_below_what_the_follower_matched() {
    let mut leader = boot_from(S1, 3, disk(4, None, &[1, 1, 3, 3, 4, 4]));
    let now = ms(FIRST_ELECTION_MS);
    let _ = win_election(&mut leader, now, 3);
    assert_eq!(leader.log().last_index(), 7, "its no-op at 7");
    let _ = leader.step(now, peer(S2, append_ok(5, 7, 0)));
    assert_eq!(leader.commit_index(), 7);
    let outputs = leader.step(now, peer(S2, append_refused(5, 2, None)));
    assert_eq!(sent(&outputs), vec![(S2, append(5, (7, 5), Vec::new(), 7))]);
}

/// The repair's own term counts as after the damage: s3 moved to term 3 when it found its log
/// damaged, so a leader elected in term 3 (s1, with s2's vote) was elected without s3 and
/// held every committed entry. Its no-op of term 3 committing ends the repair. (Mutant:
/// `committed_term < repair_term` in `finish_repair_if_done` made `<=`, which waited for a
/// later term.)
#[test]
fn a_repair_ends_when_an_entry_of_its_own_term_commits() {
    let (mut s3, _) = Server::new(config(S3, 3), damaged_disk(), 3, Time::ZERO);
    assert!((s3.term(), s3.is_recovering()) == (3, true));
    let outputs = s3.step(ms(10), peer(S1, append(3, (2, 1), noops(&[2, 3]), 4)));
    assert_eq!(sent(&outputs), vec![(S1, append_ok(3, 4, 0))]);
    assert_eq!(s3.commit_index(), 4);
    assert!(!s3.is_recovering());
    assert_eq!(s3.coverage().count(Branch::RecoveryCompleted), 1);
}

/// Raft §7, pipelined: once the leader has sent a follower its snapshot, it assumes the
/// snapshot arrives, as it does for appends, and carries on from the entry after it. A
/// heartbeat while the snapshot is still on its way is an append from the snapshot's index,
/// not a second copy of the snapshot. (Mutant: `last_included_index + 1` as the follower's
/// next index in `send_append` made `* 1`, which resent the whole snapshot every heartbeat
/// until it was acknowledged.)
#[test]
fn a_heartbeat_after_a_snapshot_sent_appends_from_the_snapshot_index() {
    let (mut network, client) = snapshotting_with_s3_cut_off();
    let _ = network.client(S1, op(client, 1, preempt("a")));
    let _ = network.client(S1, op(client, 2, preempt("b")));
    let base = network.server(S1).log().base_index();
    assert!(base >= 3, "the leader compacted its log");
    network.heal();

    // Deliver until the leader has sent s3 its snapshot, and hold that one back.
    let _ = network.fire(S1, ServerTimer::Heartbeat);
    let snapshot_to_s3 = |envelope: &Envelope| {
        envelope.to == S3 && matches!(envelope.msg, PeerMessage::InstallSnapshot { .. })
    };
    for _ in 0..100 {
        if network.in_flight.iter().any(snapshot_to_s3) {
            break;
        }
        let _ = network
            .deliver_next()
            .expect("the snapshot is sent before all goes quiet");
    }
    assert!(network.in_flight.iter().any(snapshot_to_s3));
    let outputs = network.fire(S1, ServerTimer::Heartbeat);
    let to_s3: Vec<PeerMessage> = sent(&outputs)
        .into_iter()
        .filter(|(to, _)| *to == S3)
        .map(|(_, msg)| msg)
        .collect();
    assert!(
        matches!(
            to_s3[..],
            [PeerMessage::AppendEntries { prev_log_index, .. }] if prev_log_index == base
        ),
        "an append from the snapshot's index {base}: {to_s3:?}"
    );
    network.deliver_all();
    assert_eq!(
        network.server(S3).lock_table(),
        network.server(S1).lock_table()
    );
}
