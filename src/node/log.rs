//! The Raft log and the durable state around it.
//!
//! `DurableState` is exactly what survives a crash: term, vote and log. A server changes it only
//! by emitting `Persist` effects, which the driver applies to its storage with
//! [`DurableState::apply`]; on restart the server is rebuilt from that storage. Keeping the two in
//! one type means the simulator's "disk" and a real write-ahead log replay the same operations.

use super::messages::{Entry, LogIndex, ServerId, Term};
use serde::{Deserialize, Serialize};

/// An in-memory Raft log with 1-based indexes.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RaftLog {
    entries: Vec<Entry>,
}

impl RaftLog {
    pub fn new() -> RaftLog {
        RaftLog::default()
    }

    pub fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |entry| entry.term)
    }

    /// The term of the entry at `index`; index 0 has term 0. `None` beyond the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let position = usize::try_from(index.checked_sub(1)?).ok()?;
        self.entries.get(position)
    }

    /// Up to `count_max` entries starting at `first`, cloned for sending.
    pub fn entries_from(&self, first: LogIndex, count_max: usize) -> Vec<Entry> {
        assert!(first >= 1, "log: entries are numbered from 1");
        let start = usize::try_from(first - 1)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let end = start.saturating_add(count_max).min(self.entries.len());
        self.entries[start..end].to_vec()
    }

    /// The first index of the run of entries with the same term as the entry at `index`.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding an entry of `term`, if any.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter()
            .rposition(|entry| entry.term == term)
            .map(|p| p as LogIndex + 1)
    }

    /// Drops every entry at `first_index` and beyond, then appends `entries` there.
    ///
    /// Contract: `first_index` MUST be at most one past the last entry (no holes).
    pub fn truncate_and_append(&mut self, first_index: LogIndex, entries: &[Entry]) {
        assert!(first_index >= 1, "log: entries are numbered from 1");
        assert!(
            first_index <= self.last_index() + 1,
            "log: appending at {first_index} would leave a hole after {}",
            self.last_index()
        );
        self.entries.truncate((first_index - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub fn iter(&self) -> impl Iterator<Item = (LogIndex, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(position, entry)| (position as LogIndex + 1, entry))
    }
}

/// Everything a server must not forget across a crash (Raft figure 2, "persistent state").
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DurableState {
    pub term: Term,
    pub voted_for: Option<ServerId>,
    pub log: RaftLog,
}

/// One change to durable state. The driver MUST make it durable before carrying out any effect
/// that follows it in the same batch (a vote, an append acknowledgement).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistOp {
    /// The current term and the vote cast in it.
    HardState {
        term: Term,
        voted_for: Option<ServerId>,
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
            PersistOp::HardState { term, voted_for } => {
                assert!(
                    *term >= self.term,
                    "durable: term went back from {} to {term}",
                    self.term
                );
                self.term = *term;
                self.voted_for = *voted_for;
            }
            PersistOp::Append {
                first_index,
                entries,
            } => {
                self.log.truncate_and_append(*first_index, entries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::messages::Command;

    fn log_of_terms(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::new();
        let entries: Vec<Entry> = terms
            .iter()
            .map(|&term| Entry {
                term,
                command: Command::Noop,
            })
            .collect();
        log.truncate_and_append(1, &entries);
        log
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

    #[test]
    fn durable_state_replays_persist_ops() {
        let mut disk = DurableState::default();
        disk.apply(&PersistOp::HardState {
            term: 2,
            voted_for: Some(ServerId(3)),
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
}
