//! The Raft log and the durable state around it.
//!
//! `DurableState` is exactly what survives a crash: term, vote and log. A server changes it only
//! by emitting `Persist` effects, which the driver applies to its storage with
//! [`DurableState::apply`]; on restart the server is rebuilt from that storage. Keeping the two in
//! one type means the simulator's "disk" and a real write-ahead log replay the same operations.

use super::messages::{Entry, LogIndex, ServerId, Snapshot, Term};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An in-memory Raft log with 1-based global indexes. Entries up to `base_index` were
/// compacted into a snapshot: only their last position (`base_index`, `base_term`) is kept.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RaftLog {
    #[serde(default)]
    base_index: LogIndex,
    #[serde(default)]
    base_term: Term,
    /// `entries[k]` is the entry at global index `base_index + 1 + k`.
    entries: Vec<Entry>,
}

impl RaftLog {
    pub fn new() -> RaftLog {
        RaftLog::default()
    }

    /// `log`'s entries (numbered from 1 there) placed after the compacted position
    /// (`base_index`, `base_term`): how a driver rebuilds the log it replayed from a
    /// write-ahead log that follows a snapshot.
    pub fn rebased(base_index: LogIndex, base_term: Term, log: RaftLog) -> RaftLog {
        assert_eq!(
            log.base_index, 0,
            "log: rebasing a log that already has a base"
        );
        RaftLog {
            base_index,
            base_term,
            entries: log.entries,
        }
    }

    /// The last index compacted into a snapshot (0 if none).
    pub fn base_index(&self) -> LogIndex {
        self.base_index
    }

    pub fn base_term(&self) -> Term {
        self.base_term
    }

    /// The first index still held as an entry.
    pub fn first_index(&self) -> LogIndex {
        self.base_index + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.base_index + self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.base_term, |entry| entry.term)
    }

    /// Entries held (not compacted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The term of the entry at `index`; the base (index 0 without a snapshot) has its term.
    /// `None` beyond the end and before the base (compacted away).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The entry at `index`; `None` if compacted away or beyond the end.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let position = usize::try_from(index.checked_sub(self.base_index + 1)?).ok()?;
        self.entries.get(position)
    }

    /// Up to `count_max` entries starting at `first`, cloned for sending.
    ///
    /// Contract: `first` MUST be after the base (compacted entries cannot be sent).
    pub fn entries_from(&self, first: LogIndex, count_max: usize) -> Vec<Entry> {
        assert!(
            first > self.base_index,
            "log: entries up to {} are compacted; cannot send from {first}",
            self.base_index
        );
        let start = usize::try_from(first - self.base_index - 1)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let end = start.saturating_add(count_max).min(self.entries.len());
        self.entries[start..end].to_vec()
    }

    /// The entries after `index` (at most the uncommitted suffix a leader scans).
    pub fn entries_after(&self, index: LogIndex) -> impl Iterator<Item = (LogIndex, &Entry)> {
        // Sliced, not `iter().skip(..)`: skipping through a mapped iterator walks every entry
        // before `index`, and leaders call this for every preempt.
        let skip = usize::try_from(index.saturating_sub(self.base_index))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let first = self.base_index + skip as LogIndex + 1;
        self.entries[skip..]
            .iter()
            .enumerate()
            .map(move |(offset, entry)| (first + offset as LogIndex, entry))
    }

    /// The first index of the run of entries with the same term as the entry at `index`
    /// (never before the first entry held).
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        // The entries held before `index`, newest first: a scan of a slice, so it ends within
        // the log whatever the arithmetic (a counted-down index would loop for ever if it
        // stopped going down).
        let held_before = usize::try_from(index.saturating_sub(self.first_index()))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let same_term = self.entries[..held_before]
            .iter()
            .rev()
            .take_while(|entry| entry.term == term)
            .count();
        index - same_term as LogIndex
    }

    /// The last index holding an entry of `term`, if any.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter()
            .rposition(|entry| entry.term == term)
            .map(|p| self.base_index + p as LogIndex + 1)
    }

    /// Drops every entry at `first_index` and beyond, then appends `entries` there.
    ///
    /// Contract: `first_index` MUST be after the base and at most one past the last entry.
    pub fn truncate_and_append(&mut self, first_index: LogIndex, entries: &[Entry]) {
        assert!(
            first_index > self.base_index,
            "log: appending at {first_index} would rewrite compacted entries up to {}",
            self.base_index
        );
        assert!(
            first_index <= self.last_index() + 1,
            "log: appending at {first_index} would leave a hole after {}",
            self.last_index()
        );
        self.entries
            .truncate((first_index - self.base_index - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Raft §7: forgets everything up to (`index`, `term`), the last position a snapshot
    /// covers. If the log holds that very entry, the entries after it are kept; otherwise the
    /// whole log is discarded (it conflicts with, or is behind, the snapshot).
    pub fn compact_to(&mut self, index: LogIndex, term: Term) {
        if index <= self.base_index {
            return;
        }
        if self.term_at(index) == Some(term) {
            let drop = (index - self.base_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.base_index = index;
        self.base_term = term;
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub fn iter(&self) -> impl Iterator<Item = (LogIndex, &Entry)> {
        self.entries_after(self.base_index)
    }
}

/// Everything a server must not forget across a crash (Raft figure 2, "persistent state").
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DurableState {
    pub term: Term,
    pub voted_for: Option<ServerId>,
    /// Entries after the snapshot (the log's base is the snapshot's last included entry).
    pub log: RaftLog,
    /// The latest snapshot made durable, if any.
    #[serde(default)]
    pub snapshot: Option<Arc<Snapshot>>,
    /// The log was found damaged and cut short at a start, and no leader has repaired it yet:
    /// the server must not vote or stand for election (see `Server`, "Repair of a damaged
    /// log"). Set by the driver's storage when it finds the damage, cleared by the server.
    #[serde(default)]
    pub recovering: bool,
}

/// One change to durable state. The driver MUST make it durable before carrying out any effect
/// that follows it in the same batch (a vote, an append acknowledgement).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistOp {
    /// The current term, the vote cast in it, and whether the server is still repairing a
    /// damaged log (`DurableState::recovering`; written only when true, so a log without
    /// damage reads the same as before the field existed).
    HardState {
        term: Term,
        voted_for: Option<ServerId>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recovering: bool,
    },
    /// Truncate the log from `first_index` on, then append `entries` there.
    Append {
        first_index: LogIndex,
        entries: Vec<Entry>,
    },
}

impl DurableState {
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::HardState {
                term,
                voted_for,
                recovering,
            } => {
                assert!(
                    *term >= self.term,
                    "durable: term went back from {} to {term}",
                    self.term
                );
                self.term = *term;
                self.voted_for = *voted_for;
                self.recovering = *recovering;
            }
            PersistOp::Append {
                first_index,
                entries,
            } => {
                self.log.truncate_and_append(*first_index, entries);
            }
        }
    }

    /// Makes `snapshot` the durable snapshot and compacts the log behind it (Raft §7).
    pub fn install_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|current| current.last_included_index >= snapshot.last_included_index)
        {
            return;
        }
        self.log
            .compact_to(snapshot.last_included_index, snapshot.last_included_term);
        self.snapshot = Some(snapshot);
    }
}

/// Tests only: a log of no-ops of these terms, from index 1.
#[cfg(test)]
pub(crate) fn log_of_terms(terms: &[Term]) -> RaftLog {
    let mut log = RaftLog::new();
    let entries: Vec<Entry> = terms
        .iter()
        .map(|&term| Entry {
            term,
            command: crate::node::messages::Command::Noop,
        })
        .collect();
    log.truncate_and_append(1, &entries);
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::messages::Command;

    /// `len` and `is_empty` count the entries held, not the index: a log compacted through its
    /// last entry holds none, though its last index is not 0. (Mutant: `RaftLog::is_empty` made
    /// `true`.)
    #[test]
    fn a_log_is_empty_when_it_holds_no_entry_whatever_its_last_index() {
        let mut log = RaftLog::new();
        assert!(log.is_empty());
        assert_eq!(log.len(), 0);
        log = log_of_terms(&[1, 1, 2]);
        assert!(!log.is_empty());
        assert_eq!(log.len(), 3);
        log.compact_to(3, 2);
        assert_eq!(log.last_index(), 3);
        assert!(log.is_empty());
        assert_eq!(log.len(), 0);
    }

    /// Raft §5.4.1: compare last terms first, then lengths.
    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of_terms(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2), "an identical log is up to date");
        assert!(
            log.is_up_to_date(1, 3),
            "a shorter log with a later last term is up to date"
        );
        assert!(
            log.is_up_to_date(4, 2),
            "a longer log with the same last term is up to date"
        );
        assert!(
            !log.is_up_to_date(2, 2),
            "a shorter log with the same last term is behind"
        );
        assert!(
            !log.is_up_to_date(9, 1),
            "a longer log with an earlier last term is behind"
        );
    }

    #[test]
    fn truncate_and_append_replaces_a_conflicting_suffix() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.truncate_and_append(
            3,
            &[Entry {
                term: 3,
                command: Command::Noop,
            }],
        );
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term_at(3), Some(3));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.first_index_of_term_at(2), 1);
        assert_eq!(log.last_index_of_term(1), Some(2));
        assert_eq!(log.entries_from(2, 10).len(), 2);
    }

    /// The conflict hint of Raft §5.3's optimisation: the first index of the run of entries
    /// with the term of the entry at `index`, looking back no further than the first entry
    /// held; an index the log does not hold is its own answer.
    #[test]
    fn the_first_index_of_a_terms_run_is_found_within_the_log_held() {
        let log = log_of_terms(&[1, 1, 2, 2, 2, 3]);
        assert_eq!(log.first_index_of_term_at(5), 3, "the run 3..=5 of term 2");
        assert_eq!(log.first_index_of_term_at(3), 3, "its first entry");
        assert_eq!(log.first_index_of_term_at(2), 1, "the run at the start");
        assert_eq!(log.first_index_of_term_at(6), 6, "a run of one");
        assert_eq!(log.first_index_of_term_at(9), 9, "not held");

        let mut compacted = log_of_terms(&[1, 1, 2, 2, 2, 3]);
        compacted.compact_to(3, 2);
        assert_eq!(
            compacted.first_index_of_term_at(5),
            4,
            "not before the first held"
        );
        assert_eq!(
            compacted.first_index_of_term_at(3),
            3,
            "the base is its own answer"
        );
    }

    #[test]
    fn durable_state_replays_persist_ops() {
        let mut disk = DurableState::default();
        disk.apply(&PersistOp::HardState {
            term: 2,
            voted_for: Some(ServerId(3)),
            recovering: false,
        });
        disk.apply(&PersistOp::Append {
            first_index: 1,
            entries: vec![Entry {
                term: 2,
                command: Command::Noop,
            }],
        });
        assert_eq!(disk.term, 2);
        assert_eq!(disk.voted_for, Some(ServerId(3)));
        assert_eq!(disk.log.last_term(), 2);
    }

    #[test]
    #[should_panic(expected = "would leave a hole")]
    fn appending_past_the_end_is_a_bug() {
        let mut log = log_of_terms(&[1]);
        log.truncate_and_append(3, &[]);
    }

    /// Raft §7: compacting to an entry the log holds keeps what follows it; compacting to one it
    /// does not hold (a snapshot from the leader that conflicts or runs ahead) drops everything.
    #[test]
    fn compaction_keeps_the_suffix_after_a_matching_entry_and_drops_a_conflicting_log() {
        let mut log = log_of_terms(&[1, 1, 2, 2, 3]);
        log.compact_to(3, 2);
        assert_eq!((log.base_index(), log.base_term()), (3, 2));
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!(log.term_at(3), Some(2), "the base keeps its term");
        assert_eq!(log.term_at(2), None, "compacted away");
        assert_eq!(log.entry(4).map(|e| e.term), Some(2));
        assert_eq!(log.entries_after(3).count(), 2);
        assert_eq!(
            log.first_index_of_term_at(4),
            4,
            "never before the first entry held"
        );

        let mut behind = log_of_terms(&[1, 1]);
        behind.compact_to(5, 3);
        assert_eq!((behind.base_index(), behind.last_index()), (5, 5));
        assert_eq!(behind.last_term(), 3);
        assert!(behind.is_empty());

        let mut conflicting = log_of_terms(&[1, 1, 1, 1]);
        conflicting.compact_to(3, 2);
        assert_eq!(conflicting.last_index(), 3, "a conflicting suffix goes too");
    }

    #[test]
    #[should_panic(expected = "would rewrite compacted entries")]
    fn appending_into_the_snapshot_is_a_bug() {
        let mut log = log_of_terms(&[1, 1, 1]);
        log.compact_to(2, 1);
        log.truncate_and_append(2, &[]);
    }
}
