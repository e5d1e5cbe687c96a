//! Protocol coverage: named counters of the handler branches a server took.
//!
//! A testbed is worth what it reaches. The explorer sums these counters over every server of
//! every seed and names the branches that no seed took, so that a blind spot (a branch only a
//! unit test ever runs) shows up as a line in its summary instead of as a bug that 20,000 seeds
//! miss. They are counters in the node, not a profiler: they name protocol situations
//! (`append_entries.conflict_truncated`), survive refactoring of the code around them, and cost
//! one array increment.
//!
//! Counting is deterministic state like any other: it never changes what a server does.

use serde::ser::SerializeMap;
use std::fmt;

macro_rules! branches {
    ($($variant:ident => $name:literal,)*) => {
        /// A handler branch worth reaching, named `handler.situation`.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Branch {
            $($variant,)*
        }

        impl Branch {
            /// Every branch, in declaration order (the order reports list them in).
            pub const ALL: &'static [Branch] = &[$(Branch::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Branch::$variant => $name,)*
                }
            }

            /// The branch named `name`, if there is one.
            pub fn from_name(name: &str) -> Option<Branch> {
                match name {
                    $($name => Some(Branch::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

branches! {
    PreVoteGranted => "pre_vote.granted",
    PreVoteRefusedStaleTerm => "pre_vote.refused_stale_term",
    PreVoteRefusedLogBehind => "pre_vote.refused_log_behind",
    PreVoteRefusedLeaderLease => "pre_vote.refused_leader_lease",
    PreVoteResponseWon => "pre_vote_response.won",
    PreVoteResponseNewerTerm => "pre_vote_response.newer_term",
    VoteIgnoredLeaderLease => "vote.ignored_leader_lease",
    VoteGranted => "vote.granted",
    VoteRefusedStaleTerm => "vote.refused_stale_term",
    VoteRefusedAlreadyVoted => "vote.refused_already_voted",
    VoteRefusedLogBehind => "vote.refused_log_behind",
    VoteResponseNewerTerm => "vote_response.newer_term",
    VoteResponseWon => "vote_response.won",
    LeaderMessageRefusedStaleTerm => "leader_message.refused_stale_term",
    AppendEntriesRefusedMissingPrev => "append_entries.refused_missing_prev",
    AppendEntriesRefusedPrevTermConflict => "append_entries.refused_prev_term_conflict",
    AppendEntriesHeartbeat => "append_entries.heartbeat",
    AppendEntriesAllDuplicates => "append_entries.all_duplicates",
    AppendEntriesAppended => "append_entries.appended",
    AppendEntriesConflictTruncated => "append_entries.conflict_truncated",
    AppendEntriesCommitAdvanced => "append_entries.commit_advanced",
    InstallSnapshotInstalled => "install_snapshot.installed",
    InstallSnapshotAlreadyCovered => "install_snapshot.already_covered",
    SnapshotCompacted => "snapshot.compacted",
    AppendResponseNewerTerm => "append_response.newer_term",
    AppendResponseStale => "append_response.stale",
    AppendResponseSuccess => "append_response.success",
    AppendResponseBackOffByTerm => "append_response.back_off_by_term",
    AppendResponseBackOffToIndex => "append_response.back_off_to_index",
    CheckBadLockName => "check.bad_lock_name",
    CheckLocal => "check.local",
    CheckLinearizable => "check.linearizable",
    WriteBadLockName => "write.bad_lock_name",
    WriteAtLeader => "write.at_leader",
    WriteNotLeaderTermMismatch => "write.not_leader_term_mismatch",
    WriteForwarded => "write.forwarded",
    WriteNoLeader => "write.no_leader",
    ForwardProposed => "forward.proposed",
    ForwardRefusedNotLeader => "forward.refused_not_leader",
    ProposeHello => "propose.hello",
    ProposeUnauthenticated => "propose.unauthenticated",
    ProposeReplayedAnswer => "propose.replayed_answer",
    ProposeStaleTerm => "propose.stale_term",
    ProposeSeqReused => "propose.seq_reused",
    ProposeOverloaded => "propose.overloaded",
    ProposePreemptRefusedByRead => "propose.preempt_refused_by_read",
    ProposePreemptAppended => "propose.preempt_appended",
    ProposeReleaseAppended => "propose.release_appended",
    HandOverBehindRelease => "hand_over.appended_behind_release",
    RefusalReplayed => "refusal.replayed",
    RefusalCopyInLog => "refusal.copy_in_log",
    RefusalSeqReused => "refusal.seq_reused",
    RefusalFreeAppended => "refusal.free_appended",
    RefusalHeld => "refusal.held",
    RefusalWaitsForUnappliedGrant => "refusal.waits_for_unapplied_grant",
    RefusalAppendedOwn => "refusal.appended_own",
    ReadAwaitingOwnTermCommit => "read.awaiting_own_term_commit",
    ReadJoinedRound => "read.joined_round",
    ReadNextRound => "read.next_round",
    ReadStartedRound => "read.started_round",
    ReadForwardedToLeader => "read.forwarded_to_leader",
    ReadIndexRefusedNotLeader => "read_index.refused_not_leader",
    ReadFailed => "read.failed",
    LocalCheckAnsweredAtOnce => "local_check.answered_at_once",
    LocalCheckWaited => "local_check.waited_to_catch_up",
    LocalCheckExpired => "local_check.expired",
    ElectionCheckQuorumHeld => "election.check_quorum_held",
    ElectionCheckQuorumLost => "election.check_quorum_lost",
    ElectionTimeout => "election.timeout",
    LeaderElected => "leader.elected",
    RecoveryStarted => "recovery.started",
    PreVoteRefusedRecovering => "pre_vote.refused_recovering",
    VoteRefusedRecovering => "vote.refused_recovering",
    ElectionSkippedRecovering => "election.skipped_recovering",
    RecoveryCompleted => "recovery.completed",
    ApplyRejected => "apply.rejected",
    HelloBadTtl => "hello.bad_ttl",
    ProposeSessionExpired => "propose.session_expired",
    ProposeLockDelayed => "propose.lock_delayed",
    KeepaliveBeforeReady => "keepalive.before_ready",
    KeepaliveRoundStarted => "keepalive.awaits_round",
    KeepaliveAcknowledged => "keepalive.acknowledged",
    KeepaliveRevived => "keepalive.revive_appended",
    KeepaliveSessionExpired => "keepalive.session_expired",
    SessionsReady => "sessions.ready",
    SessionsFromSilentMark => "sessions.deadline_from_silent_mark",
    SessionsMarkedSilent => "sessions.marked_silent",
    SessionsExpireAppended => "sessions.expire_appended",
    SessionsAppendDeferred => "sessions.append_deferred_overloaded",
    ApplyExpired => "apply.expired",
    QueueRetryFoundInLog => "queue.retry_found_in_log",
    QueueSeqReused => "queue.seq_reused",
    QueueLockDelayed => "queue.lock_delayed",
    QueueFull => "queue.full",
    QueueBadWait => "queue.bad_wait",
    QueueWaiterGranted => "queue.waiter_granted",
    QueueWaiterTimedOut => "queue.waiter_timed_out",
    QueueWaiterCancelled => "queue.waiter_cancelled",
    QueueWaiterExpired => "queue.waiter_session_expired",
    QueueWaitsRestarted => "queue.waits_restarted_by_new_leader",
    QueueTimeoutAppended => "queue.timeout_appended",
    QueueHandOverAppended => "queue.hand_over_appended",
    BuggifyShortBatch => "buggify.short_batch",
    BuggifySpuriousElectionTimer => "buggify.spurious_election_timer",
    BuggifySkippedHeartbeat => "buggify.skipped_heartbeat",
    BuggifyOddSnapshot => "buggify.odd_snapshot",
    BuggifyResent => "buggify.resent",
    WatchRefusedUnauthorized => "watch.refused_unauthorized",
    WatchRefusedUnknownClient => "watch.refused_unknown_client",
    WatchRefusedBadTarget => "watch.refused_bad_target",
    WatchRefusedIdInUse => "watch.refused_id_in_use",
    WatchRefusedTooManyWatches => "watch.refused_too_many_watches",
}

const BRANCH_COUNT: usize = Branch::ALL.len();

/// How often each [`Branch`] was taken. Adds up across servers, incarnations and seeds.
#[derive(Clone, PartialEq, Eq)]
pub struct Coverage {
    counts: [u64; BRANCH_COUNT],
}

impl Default for Coverage {
    fn default() -> Coverage {
        Coverage {
            counts: [0; BRANCH_COUNT],
        }
    }
}

impl Coverage {
    pub fn hit(&mut self, branch: Branch) {
        self.counts[branch as usize] = self.counts[branch as usize].saturating_add(1);
    }

    pub fn count(&self, branch: Branch) -> u64 {
        self.counts[branch as usize]
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Coverage) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Every branch with its count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (Branch, u64)> + '_ {
        Branch::ALL
            .iter()
            .map(|&branch| (branch, self.count(branch)))
    }

    /// The branches never taken, in declaration order.
    pub fn unreached(&self) -> Vec<Branch> {
        self.iter()
            .filter(|&(_, count)| count == 0)
            .map(|(branch, _)| branch)
            .collect()
    }

    /// Sets `branch`'s count: for reading counts back from a report.
    pub fn set(&mut self, branch: Branch, count: u64) {
        self.counts[branch as usize] = count;
    }
}

impl fmt::Debug for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .filter(|&(_, count)| count > 0)
                    .map(|(b, c)| (b.name(), c)),
            )
            .finish()
    }
}

/// As a JSON object of every branch's name and count, in declaration order.
impl serde::Serialize for Coverage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(BRANCH_COUNT))?;
        for (branch, count) in self.iter() {
            map.serialize_entry(branch.name(), &count)?;
        }
        map.end()
    }
}

/// Reads what [`Coverage`]'s `Serialize` writes. A name this build does not know (a result
/// written by another version) is an error naming it, not silently dropped; a branch the file
/// does not name counts 0.
impl<'de> serde::Deserialize<'de> for Coverage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Coverage, D::Error> {
        let named: std::collections::BTreeMap<String, u64> =
            serde::Deserialize::deserialize(deserializer)?;
        let mut coverage = Coverage::default();
        for (name, count) in named {
            let branch = Branch::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format!("unknown coverage branch `{name}`"))
            })?;
            coverage.set(branch, count);
        }
        Ok(coverage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_branch_has_a_distinct_dotted_name_that_reads_back() {
        let mut names: Vec<&str> = Branch::ALL.iter().map(|b| b.name()).collect();
        for (branch, name) in Branch::ALL.iter().zip(&names) {
            assert!(name.contains('.'), "{name}: handler.situation");
            assert_eq!(Branch::from_name(name), Some(*branch));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Branch::ALL.len(), "names are distinct");
    }

    #[test]
    fn counts_add_up_and_the_unreached_are_named() {
        let mut one = Coverage::default();
        one.hit(Branch::VoteGranted);
        one.hit(Branch::VoteGranted);
        let mut two = Coverage::default();
        two.hit(Branch::LeaderElected);
        one.add(&two);
        assert_eq!(one.count(Branch::VoteGranted), 2);
        assert_eq!(one.count(Branch::LeaderElected), 1);
        let unreached = one.unreached();
        assert_eq!(unreached.len(), Branch::ALL.len() - 2);
        assert!(!unreached.contains(&Branch::VoteGranted));
    }

    #[test]
    fn coverage_round_trips_through_json_and_refuses_unknown_branches() {
        let mut coverage = Coverage::default();
        coverage.hit(Branch::AppendEntriesConflictTruncated);
        let text = serde_json::to_string(&coverage).expect("serializes");
        assert!(
            text.contains("\"append_entries.conflict_truncated\":1"),
            "{text}"
        );
        let back: Coverage = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, coverage);
        let error = serde_json::from_str::<Coverage>(r#"{"vote.maybe":1}"#).expect_err("unknown");
        assert!(error.to_string().contains("vote.maybe"), "{error}");
    }

    /// A failing test prints coverage with `{:?}`: only the branches taken, with their counts,
    /// so that the few that matter are not lost among seventy zeros.
    #[test]
    fn debug_output_names_only_the_branches_taken() {
        let mut coverage = Coverage::default();
        coverage.hit(Branch::LeaderElected);
        coverage.hit(Branch::LeaderElected);
        assert_eq!(format!("{coverage:?}"), r#"{"leader.elected": 2}"#);
        assert_eq!(format!("{:?}", Coverage::default()), "{}");
    }
}
