//! Follower fuzzing: one follower, driven by hand with AppendEntries cut from a reference
//! leader's log and delivered reordered, duplicated and late, never applies an entry that the
//! leader's log does not hold at that index.
//!
//! The explorer reaches a follower's append handler only through whole clusters, and some of its
//! states (a stale tail left by an old leader, then a leader commit beyond what the follower has
//! verified) are rare there. Here every case starts in such a state:
//! - the leader of term `T` holds the reference log `L` and has committed its first `c` entries;
//! - the follower holds a prefix of `L`, then a stale tail written by an earlier leader of an
//!   older term, whose entries `L` does not hold;
//! - messages are what the leader of `T` could have sent at some moment (a slice of `L` after a
//!   matching predecessor, with a commit index of at most `c`), or what the old leader could have
//!   sent before it lost (a slice of its own log, with a commit index within the shared prefix,
//!   since only a committed prefix survives an election), in any order, any number of times.
//!
//! The follower's applied entries must all be `L`'s, at their indexes.
//!
//! Like `tests/properties.rs`: CI runs the same cases every time (`LOCKSTEP_PROPTEST_CASES`,
//! default 1,000 here, since a case is one server and microseconds; `LOCKSTEP_PROPTEST_SEED`).

mod common;

use lockstep::node::{
    Command, DurableState, Entry, LogIndex, PeerMessage, RaftLog, Server, ServerConfig, ServerId,
    ServerInput, ServerOutput, Term, Time,
};
use proptest::prelude::*;
use std::time::Duration;

const LEADER: ServerId = ServerId(1);
const FOLLOWER: ServerId = ServerId(2);
const OLD_LEADER: ServerId = ServerId(3);

/// One case: the reference log, the leader's term and commit, the follower's disk, and the
/// messages in the order they arrive.
#[derive(Clone, Debug)]
struct Case {
    /// Terms of the leader's log `L`, entry by entry (index 1 first). All even.
    leader_terms: Vec<Term>,
    leader_term: Term,
    leader_commit: LogIndex,
    /// How much of `L` the follower holds before its stale tail.
    shared: LogIndex,
    /// Terms of the follower's stale tail, after the shared prefix. All odd, so `L` never holds
    /// one of these entries.
    stale_terms: Vec<Term>,
    /// The follower's current term on its disk: at least its log's last, at most the leader's.
    follower_term: Term,
    messages: Vec<Message>,
}

/// A message as drawn: who sends it, and the slice and commit index it carries.
#[derive(Clone, Debug)]
struct Message {
    from_old_leader: bool,
    prev_index: LogIndex,
    entry_count: usize,
    leader_commit: LogIndex,
}

impl Case {
    fn leader_entry(&self, index: LogIndex) -> Entry {
        noop(self.leader_terms[index as usize - 1])
    }

    /// The old leader's log: the shared prefix, then the stale tail.
    fn old_leader_terms(&self) -> Vec<Term> {
        let mut terms = self.leader_terms[..self.shared as usize].to_vec();
        terms.extend(&self.stale_terms);
        terms
    }

    fn old_leader_term(&self) -> Term {
        self.stale_terms.last().copied().unwrap_or(1)
    }

    /// The message as the follower receives it: a slice of its sender's log after a predecessor
    /// from that same log, cut to what that log holds.
    fn peer_message(&self, message: &Message) -> (ServerId, PeerMessage) {
        let (from, term, terms, commit_max) = if message.from_old_leader {
            (
                OLD_LEADER,
                self.old_leader_term(),
                self.old_leader_terms(),
                self.shared,
            )
        } else {
            (
                LEADER,
                self.leader_term,
                self.leader_terms.clone(),
                self.leader_commit,
            )
        };
        let last = terms.len() as LogIndex;
        let prev_log_index = message.prev_index.min(last);
        let prev_log_term = match prev_log_index {
            0 => 0,
            index => terms[index as usize - 1],
        };
        let end = (prev_log_index as usize + message.entry_count).min(terms.len());
        let entries = terms[prev_log_index as usize..end]
            .iter()
            .map(|&term| noop(term))
            .collect();
        let message = PeerMessage::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: message.leader_commit.min(commit_max),
            round: 0,
            urgent: true,
        };
        (from, message)
    }

    fn follower_disk(&self) -> DurableState {
        let mut log = RaftLog::new();
        let terms: Vec<Entry> = self
            .old_leader_terms()
            .into_iter()
            .map(noop)
            .collect::<Vec<_>>();
        log.truncate_and_append(1, &terms);
        DurableState {
            term: self.follower_term,
            voted_for: None,
            log,
            snapshot: None,
            recovering: false,
        }
    }
}

fn noop(term: Term) -> Entry {
    Entry {
        term,
        command: Command::Noop,
    }
}

/// A reference log of even terms, never falling, and a leader term at least its last.
fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0u64..3, 1..40),
        0u64..2,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0usize..8,
    )
        .prop_flat_map(|(steps, extra, commit, shared, stale_len)| {
            // Term steps of 0 keep the term: runs of entries per term, as a real log has.
            let mut term = 2;
            let leader_terms: Vec<Term> = steps
                .iter()
                .map(|&step| {
                    term += 2 * step;
                    term
                })
                .collect();
            let leader_term = term + 2 * extra;
            let length = leader_terms.len();
            let leader_commit = commit.index(length + 1) as LogIndex;
            let shared = shared.index(length + 1) as LogIndex;
            // The stale tail: odd terms after the shared prefix's last term and below the
            // leader's term, written by one old leader (its terms never fall either).
            let floor = match shared {
                0 => 0,
                index => leader_terms[index as usize - 1],
            };
            let stale_term = floor + 1;
            let stale_len = if stale_term < leader_term {
                stale_len
            } else {
                0
            };
            let stale_terms = vec![stale_term; stale_len];
            // A server's term is never below the last term in its log, nor above the leader's.
            let follower_term_min = stale_terms.last().copied().unwrap_or(floor).max(1);
            let leader_len = length as LogIndex;
            (
                Just((
                    leader_terms,
                    leader_term,
                    leader_commit,
                    shared,
                    stale_terms,
                )),
                follower_term_min..=leader_term,
                prop::collection::vec(message(leader_len + 8), 1..30),
            )
        })
        .prop_map(
            |(
                (leader_terms, leader_term, leader_commit, shared, stale_terms),
                follower_term,
                messages,
            )| {
                Case {
                    leader_terms,
                    leader_term,
                    leader_commit,
                    shared,
                    stale_terms,
                    follower_term,
                    messages,
                }
            },
        )
}

/// Mostly the new leader's messages, a fifth the old leader's.
fn message(index_max: LogIndex) -> impl Strategy<Value = Message> {
    (
        prop::bool::weighted(0.2),
        0..=index_max,
        0usize..6,
        0..=index_max,
    )
        .prop_map(
            |(from_old_leader, prev_index, entry_count, leader_commit)| Message {
                from_old_leader,
                prev_index,
                entry_count,
                leader_commit,
            },
        )
}

fn applied(outputs: &[ServerOutput]) -> Vec<(LogIndex, Entry)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Applied { index, entry, .. } => Some((*index, entry.clone())),
            _ => None,
        })
        .collect()
}

/// Delivers the case's messages in order, 1 ms apart (well inside the election timeout, so the
/// follower stays a follower), and returns every entry it applied.
fn run(case: &Case) -> Vec<(LogIndex, Entry)> {
    let servers = vec![LEADER, FOLLOWER, OLD_LEADER];
    let config = ServerConfig::new(FOLLOWER, servers);
    let (mut follower, boot) = Server::new(config, case.follower_disk(), 7, Time::ZERO);
    let mut all = applied(&boot);
    for (position, message) in case.messages.iter().enumerate() {
        let now = Time::ZERO + Duration::from_millis(1 + position as u64);
        let (from, msg) = case.peer_message(message);
        let outputs = follower.step(now, ServerInput::Peer { from, msg });
        all.extend(applied(&outputs));
    }
    all
}

proptest! {
    #![proptest_config(common::proptest_config(1_000, 0xf011))]

    #[test]
    fn a_follower_applies_only_what_the_leaders_log_holds(case in case()) {
        let applied = run(&case);
        for (expected_index, (index, entry)) in (1..).zip(applied.iter()) {
            prop_assert_eq!(*index, expected_index, "applied in order, without gaps");
            prop_assert!(
                *index <= case.leader_terms.len() as LogIndex,
                "applied index {} beyond the leader's log of {}",
                index,
                case.leader_terms.len()
            );
            prop_assert_eq!(
                entry,
                &case.leader_entry(*index),
                "the entry applied at {} is not the leader's",
                index
            );
        }
        // Nothing beyond what some leader announced as committed: the new leader's commit, or
        // the old one's, which lies within the shared prefix.
        prop_assert!(
            applied.len() as LogIndex <= case.leader_commit.max(case.shared),
            "applied {} entries, but the leaders committed {} and {}",
            applied.len(),
            case.leader_commit,
            case.shared
        );
    }
}

/// The story the property generalises, told once by hand: the follower holds the leader's first
/// two entries and three stale ones; the leader, having committed four, sends a heartbeat after
/// entry 2. The follower may commit only what it verified (2), not its own last index (5).
#[test]
fn a_heartbeat_commits_only_up_to_the_entry_it_verified() {
    let case = Case {
        leader_terms: vec![2, 2, 4, 4],
        leader_term: 4,
        leader_commit: 4,
        shared: 2,
        stale_terms: vec![3, 3, 3],
        follower_term: 3,
        messages: vec![Message {
            from_old_leader: false,
            prev_index: 2,
            entry_count: 0,
            leader_commit: 4,
        }],
    };
    let applied = run(&case);
    let indexes: Vec<LogIndex> = applied.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, vec![1, 2]);
}
