//! Stories that kill mutants of `src/node/server.rs` which survived the other tests (README,
//! "Mutation testing"). Each says which rule it pins and cites the mutant it was written for.

use super::*;

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
