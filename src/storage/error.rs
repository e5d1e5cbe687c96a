//! What can go wrong in storage, and what recovery repaired and reports.
//!
//! Every variant that comes from a file names that file, and the byte offset where one applies,
//! so that an operator can look at the exact spot with `xxd -s OFFSET FILE`.

use super::LogPosition;
use crate::node::{LogIndex, Term};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a storage call failed. Errors with a path came from that file; the others are requests
/// the caller should not have made.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: another process holds this data directory's lock; refusing to open it twice",
        .path.display()
    )]
    DirectoryLocked { path: PathBuf },
    #[error(
        "{}: not a lockstep {expected} file (its first bytes are {found:02x?}, expected {:02x?})",
        .path.display(), .expected_magic
    )]
    BadMagic {
        path: PathBuf,
        expected: &'static str,
        expected_magic: [u8; 8],
        found: Vec<u8>,
    },
    #[error(
        "{}: format version {found}, but this build reads only version {supported}",
        .path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{}: the file header is damaged: {reason}", .path.display())]
    HeaderCorrupt { path: PathBuf, reason: String },
    #[error(
        "{}: corrupt record at byte offset {offset} ({damage}), yet a valid record follows at \
         byte offset {next_valid_offset}: this is not a torn tail, refusing to start",
        .path.display()
    )]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        damage: Damage,
        next_valid_offset: u64,
    },
    #[error(
        "{}: record at byte offset {offset} claims {length_bytes} bytes, more than the maximum \
         {length_bytes_max}: corruption, refusing to start",
        .path.display()
    )]
    RecordTooLong {
        path: PathBuf,
        offset: u64,
        length_bytes: u64,
        length_bytes_max: u64,
    },
    #[error(
        "{}: record at byte offset {offset} has a valid checksum but does not decode: {reason}",
        .path.display()
    )]
    UndecodableRecord {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{}: record at byte offset {offset} cannot be replayed: {violation}", .path.display())]
    InvalidRecord {
        path: PathBuf,
        offset: u64,
        violation: OpViolation,
    },
    #[error("{}: snapshot is damaged: {reason}", .path.display())]
    SnapshotCorrupt { path: PathBuf, reason: String },
    #[error(
        "{}: the log starts after index {base_index}, but there is no snapshot to cover the \
         entries before it",
        .path.display()
    )]
    SnapshotMissing { path: PathBuf, base_index: LogIndex },
    #[error(
        "{}: the snapshot ends at {snapshot:?} but the log file {} starts at {log_base:?}",
        .snapshot_path.display(), .log_path.display()
    )]
    SnapshotDisagreesWithLog {
        snapshot_path: PathBuf,
        log_path: PathBuf,
        snapshot: LogPosition,
        log_base: LogPosition,
    },
    #[error(
        "{}: both slots of the hard-state file are damaged, and the log {} is damaged at byte \
         offset {offset}: the latest term and vote cannot be known, refusing to start",
        .path.display(), .log_path.display()
    )]
    HardStateLost {
        path: PathBuf,
        log_path: PathBuf,
        offset: u64,
    },
    #[error("{}: a snapshot exists but the log file is missing", .path.display())]
    LogMissing { path: PathBuf },
    #[error("{}: the log changed under an open Wal: {detail}", .path.display())]
    ChangedWhileOpen { path: PathBuf, detail: String },
    #[error("{}: an earlier write or sync failed; drop this Wal and reopen", .path.display())]
    Poisoned { path: PathBuf },
    #[error("append refused, nothing written: operation {position} of the batch: {violation}")]
    OpRejected {
        position: usize,
        violation: OpViolation,
    },
    #[error(
        "append refused, nothing written: operation {position} of the batch encodes to \
         {length_bytes} bytes, more than the maximum record {length_bytes_max}"
    )]
    OpTooLarge {
        position: usize,
        length_bytes: u64,
        length_bytes_max: u64,
    },
    #[error("snapshot refused, nothing written: {violation}")]
    SnapshotRejected { violation: SnapshotViolation },
}

/// How a record was damaged. Whether it is a torn tail or corruption in the middle depends on
/// what follows it, not on the damage itself.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Damage {
    /// Fewer than a record header's bytes were left at the end of the file.
    IncompleteHeader { bytes_present: u64 },
    /// A length of zero, which is never written.
    ZeroLength,
    /// The record's length runs past the end of the file.
    PastEndOfFile { length_bytes: u64 },
    /// The checksum over length and payload does not match.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A length above the maximum record, which is never written: reported as damage only
    /// when the log can be repaired from peers (otherwise [`StorageError::RecordTooLong`]).
    LengthTooLong { length_bytes: u64 },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::IncompleteHeader { bytes_present } => {
                write!(f, "incomplete record header, {bytes_present} bytes present")
            }
            Damage::ZeroLength => write!(f, "zero record length"),
            Damage::PastEndOfFile { length_bytes } => {
                write!(
                    f,
                    "record length {length_bytes} runs past the end of the file"
                )
            }
            Damage::LengthTooLong { length_bytes } => {
                write!(f, "record length {length_bytes} is above the maximum")
            }
            Damage::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch, stored {stored:#010x}, computed {computed:#010x}"
                )
            }
        }
    }
}

/// A `PersistOp` that cannot follow the state before it. The same rules are checked when an
/// operation is appended and again when it is replayed, so replay never reaches one of
/// [`crate::node::DurableState::apply`]'s assertions.
#[derive(Copy, Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum OpViolation {
    #[error("the term goes back from {from} to {to}")]
    TermWentBack { from: Term, to: Term },
    #[error(
        "an append at index {first_index} rewrites entries the snapshot covers (up to {base_index})"
    )]
    AppendIntoSnapshot {
        first_index: LogIndex,
        base_index: LogIndex,
    },
    #[error("an append at index {first_index} leaves a hole after the last entry {last_index}")]
    AppendLeavesHole {
        first_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("an append at index {first_index} of {count} entries overflows the log index")]
    IndexOverflow { first_index: LogIndex, count: u64 },
}

/// A snapshot request that cannot be honoured.
#[derive(Copy, Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SnapshotViolation {
    #[error("a snapshot must cover at least one entry (last included index 0)")]
    CoversNothing,
    #[error("a snapshot at index {index} is behind the current one at {base_index}")]
    Behind {
        index: LogIndex,
        base_index: LogIndex,
    },
    #[error(
        "a snapshot at index {index} has term {term}, but the current one there has {base_term}"
    )]
    TermMismatch {
        index: LogIndex,
        term: Term,
        base_term: Term,
    },
    #[error("the snapshot is {length_bytes} bytes, more than the maximum {length_bytes_max}")]
    TooLarge {
        length_bytes: u64,
        length_bytes_max: u64,
    },
}

/// Something recovery repaired. Each one is worth a log line: none is silent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RecoveryWarning {
    /// The log ended in a torn or corrupt record with nothing valid after it; the file was
    /// truncated to `offset`, dropping `bytes_dropped` bytes (records never acknowledged as
    /// synced, if the caller kept the contract).
    TruncatedTail {
        path: PathBuf,
        offset: u64,
        bytes_dropped: u64,
        damage: Damage,
    },
    /// A damaged record, with peers to repair from: the log was cut at `offset`, dropping
    /// `bytes_dropped` bytes, and the server starts repairing its log (it votes for no one until
    /// a leader has given back what it lost). Entries up to `kept_through_index` were kept;
    /// valid records after the damage named entries up to `dropped_through_index`.
    CutForRepair {
        path: PathBuf,
        offset: u64,
        bytes_dropped: u64,
        damage: Damage,
        kept_through_index: LogIndex,
        dropped_through_index: Option<LogIndex>,
        next_valid_offset: Option<u64>,
    },
    /// Both slots of the hard-state file were damaged while the log was intact: the file was
    /// written afresh from the log's hard state.
    RewroteHardState { path: PathBuf },
    /// A half-written replacement file left by a crash before its rename was removed.
    RemovedTemporaryFile { path: PathBuf, length_bytes: u64 },
    /// A snapshot newer than the log's base was found (a crash between writing the snapshot and
    /// rewriting the log); the log was rewritten to start at the snapshot. `entries_discarded`
    /// counts entries after the snapshot dropped by Raft §7's rule (a conflicting log).
    ResumedCompaction {
        path: PathBuf,
        snapshot: LogPosition,
        entries_discarded: u64,
    },
}

impl fmt::Display for RecoveryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryWarning::TruncatedTail {
                path,
                offset,
                bytes_dropped,
                damage,
            } => write!(
                f,
                "{}: torn tail at byte offset {offset} ({damage}): truncated, {bytes_dropped} \
                 bytes dropped",
                path.display()
            ),
            RecoveryWarning::CutForRepair {
                path,
                offset,
                bytes_dropped,
                damage,
                kept_through_index,
                dropped_through_index,
                next_valid_offset,
            } => {
                write!(
                    f,
                    "{}: damaged record at byte offset {offset} ({damage}): log cut there, \
                     {bytes_dropped} bytes dropped, entries kept through index \
                     {kept_through_index}",
                    path.display()
                )?;
                if let Some(next) = next_valid_offset {
                    write!(f, ", a valid record followed at byte offset {next}")?;
                }
                if let Some(dropped) = dropped_through_index.filter(|d| d > kept_through_index) {
                    write!(
                        f,
                        ", entries {} to {dropped} dropped",
                        kept_through_index + 1
                    )?;
                }
                write!(
                    f,
                    "; repairing from peers: this server votes for no one until a leader has \
                     given back what it lost"
                )
            }
            RecoveryWarning::RewroteHardState { path } => write!(
                f,
                "{}: both slots damaged, the log intact: rewrote it from the log's term and vote",
                path.display()
            ),
            RecoveryWarning::RemovedTemporaryFile { path, length_bytes } => write!(
                f,
                "{}: removed a temporary file of {length_bytes} bytes left by an interrupted write",
                path.display()
            ),
            RecoveryWarning::ResumedCompaction {
                path,
                snapshot,
                entries_discarded,
            } => write!(
                f,
                "{}: finished an interrupted compaction at snapshot index {} term {}, \
                 {entries_discarded} conflicting entries discarded",
                path.display(),
                snapshot.index,
                snapshot.term
            ),
        }
    }
}
