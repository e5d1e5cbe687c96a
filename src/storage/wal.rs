//! [`Wal`]: the write-ahead log a driver keeps for one server, with its snapshot and compaction.
//!
//! Plain blocking `std::fs`: no threads, no async, no clocks. Every file it replaces is
//! replaced atomically (`snapshot::replace_file`); the only file it changes in place is the log,
//! and only by appending to it or truncating a torn tail on open.

use super::Damage;
use super::error::{RecoveryWarning, SnapshotViolation, StorageError};
use super::format::{
    LogShape, RECORD_PAYLOAD_BYTES_MAX, SNAPSHOT_PAYLOAD_BYTES_MAX, WAL_MAGIC, encode_file_header,
    encode_op_record,
};
use super::hard_state::{
    HARD_STATE_FILE_NAME, HARD_STATE_TEMPORARY_FILE_NAME, HardState, HardStateFile, HardStateRead,
    read_hard_state,
};
use super::replay::{Replayed, io_error, replay_log};
use super::snapshot::{read_snapshot_file, replace_file, sync_directory, write_snapshot_file};
use super::{LogPosition, Snapshot};
use crate::node::{DurableState, Entry, LogIndex, PersistOp, RaftLog, ServerId, Term};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The log file in the data directory.
pub const LOG_FILE_NAME: &str = "wal";
/// The log being rewritten by a compaction, before its rename.
pub const LOG_TEMPORARY_FILE_NAME: &str = "wal.tmp";
/// The snapshot file in the data directory.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot";
/// The snapshot being written, before its rename.
pub const SNAPSHOT_TEMPORARY_FILE_NAME: &str = "snapshot.tmp";
/// Held with an exclusive lock while a `Wal` is open.
pub const LOCK_FILE_NAME: &str = "lock";

/// A compaction writes at most this many entries per record (fewer if they would not fit).
const COMPACTION_ENTRIES_PER_RECORD_MAX: usize = 4096;
/// An append buffer larger than this is released after use rather than kept for the next.
const ENCODE_BUFFER_RETAINED_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most log entries an open `Wal` mirrors in memory ([`LogTail`]): four times a leader's
/// default limit of uncommitted entries, which bounds what a compaction keeps.
const TAIL_ENTRIES_MAX: usize = 16_384;

/// A server's durable state on disk: an append-only log of [`PersistOp`]s, plus a snapshot.
///
/// # Calling contract
/// - [`Wal::open`] once per data directory and process; it locks the directory, repairs a torn
///   tail, and returns the [`Recovery`] to rebuild the server from.
/// - [`Wal::append`] encodes and writes operations; it does NOT make them durable. The driver
///   MUST call [`Wal::sync`] and see it return `Ok` before sending any message, or replying to
///   any client, in a way that depends on the appended state (a vote, an append
///   acknowledgement). Several appends followed by one sync is a group commit: the one fsync
///   covers them all.
/// - Operations MUST follow the state before them (the rules of [`DurableState::apply`], and
///   no append at or below the snapshot's index). A batch that does not is refused whole,
///   nothing written, with [`StorageError::OpRejected`]: that is a caller bug.
/// - [`Wal::write_snapshot`] makes pending appends durable, then atomically replaces the
///   snapshot and compacts the log to the entries after it.
/// - After any I/O error from `append`, `sync` or `write_snapshot` the `Wal` is poisoned:
///   every later mutating call returns [`StorageError::Poisoned`]. The caller MUST drop it and
///   reopen (restart the server). After a failed fsync the page cache can no longer be trusted
///   to match the disk; only recovery from the file tells the truth.
/// - Dropping a `Wal` does not sync: unsynced appends may or may not survive, as in a crash.
pub struct Wal {
    directory: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Holds the directory's `flock` for as long as the `Wal` lives.
    _directory_lock: File,
    /// What replaying the log file would give, in global indexes.
    shape: LogShape,
    log_bytes: u64,
    /// The log file's length: `log_bytes` plus zeroed space preallocated for appends, so that
    /// a sync need not also write the file's new size (an `fdatasync` of an append that grows
    /// the file writes the inode too, roughly doubling its cost).
    allocated_bytes: u64,
    /// Zeroed space to grow the file by when an append needs room; 0 grows it by appending.
    preallocate_bytes: u64,
    synced_bytes: u64,
    poisoned: bool,
    encode_buffer: Vec<u8>,
    /// The hard state and the log's last entries, so that a compaction need not re-read the
    /// file.
    tail: LogTail,
    /// Term, vote and repair flag kept beside the log (`hard_state` module).
    hard_state: HardStateFile,
    /// A hard state appended but not yet synced: the next sync writes it to the file too.
    hard_state_pending: Option<HardState>,
}

/// What [`Wal::open`] found. Log every warning: recovery never repairs anything silently.
#[must_use]
#[derive(Debug)]
pub struct Recovery {
    /// Term, vote and the log entries after `log_base`. Entry `k` (1-based) of `state.log` is
    /// the global log entry `log_base.index + k`; without a snapshot `log_base` is `(0, 0)` and
    /// this is exactly the simulator's durable state.
    pub state: DurableState,
    /// The snapshot's last included position, or `(0, 0)`.
    pub log_base: LogPosition,
    /// The snapshot whose entries precede `state.log`, if one was written.
    pub snapshot: Option<Snapshot>,
    pub warnings: Vec<RecoveryWarning>,
    /// The directory held no log and a fresh, empty one was created.
    pub created: bool,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("log_path", &self.log_path)
            .field("shape", &self.shape)
            .field("log_bytes", &self.log_bytes)
            .field("synced_bytes", &self.synced_bytes)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the data directory, locks it, and recovers its state:
    /// removes stray temporary files, truncates a torn tail, and finishes an interrupted
    /// compaction, reporting each as a warning. Corruption anywhere else is an error.
    pub fn open(directory: impl AsRef<Path>) -> Result<(Wal, Recovery), StorageError> {
        Wal::open_with(directory, WalOptions::default())
    }

    /// [`Wal::open`] with options: see [`WalOptions`].
    pub fn open_with(
        directory: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal, Recovery), StorageError> {
        let directory = directory.as_ref().to_path_buf();
        fs::create_dir_all(&directory).map_err(io_error(&directory))?;
        let directory_lock = lock_directory(&directory)?;
        let mut warnings = remove_temporary_files(&directory)?;
        let snapshot = read_snapshot_file(&directory.join(SNAPSHOT_FILE_NAME))?;
        let log_path = directory.join(LOG_FILE_NAME);
        let created = create_log_if_missing(&directory, snapshot.is_some())?;
        let hard_state_read = read_hard_state(&directory)?;
        // A repair cuts records that may hold the latest vote: it needs the file that keeps it.
        let repair = options.repair_from_peers && hard_state_read != HardStateRead::Missing;
        let replayed = replay_log(&log_path, repair)?;
        if replayed.tail.is_some() && repair && hard_state_read == HardStateRead::Damaged {
            // Checked before anything is written: the damaged file stays as it was found.
            return Err(StorageError::HardStateLost {
                path: directory.join(HARD_STATE_FILE_NAME),
                log_path,
                offset: replayed.end_offset,
            });
        }
        let log_state = HardState::of(&replayed.state);
        let mut hard_state =
            open_hard_state(&directory, hard_state_read, log_state, &mut warnings)?;
        if let Some(damage) = replayed.tail {
            if repair {
                // The flag is durable before the log loses anything: a crash from here on
                // starts the repair again.
                let flagged = HardState {
                    recovering: true,
                    ..hard_state.state().newer(log_state)
                };
                hard_state.write(flagged)?;
            }
            truncate_log(&log_path, replayed.end_offset)?;
            warnings.push(cut_warning(&log_path, &replayed, damage, repair));
        }
        let replayed_base = replayed.base;
        let replayed_end = replayed.end_offset;
        let (log_base, mut state) =
            reconcile(&directory, snapshot.as_ref(), replayed, &mut warnings)?;
        let rewritten = log_base != replayed_base;
        let (log, allocated_bytes) = open_for_writing(&log_path)?;
        // A log rewritten by `reconcile` has no preallocated space; otherwise appends go right
        // after the last valid record.
        let log_bytes = if rewritten {
            allocated_bytes
        } else {
            replayed_end
        };
        let mut log = log;
        log.seek(SeekFrom::Start(log_bytes))
            .map_err(io_error(&log_path))?;
        let merged = hard_state.state().newer(HardState::of(&state));
        let mut wal = Wal {
            directory,
            log_path,
            log,
            _directory_lock: directory_lock,
            shape: LogShape::of(log_base, &state),
            log_bytes,
            allocated_bytes,
            preallocate_bytes: options.preallocate_bytes,
            synced_bytes: log_bytes,
            poisoned: false,
            encode_buffer: Vec::new(),
            tail: LogTail::of(log_base, &state),
            hard_state,
            hard_state_pending: None,
        };
        if merged != HardState::of(&state) {
            // The file is ahead of the log (a cut took the log's newest hard state, or the
            // repair flag was just raised): the log gets it too, so both copies agree.
            let op = merged.as_op();
            wal.append(std::slice::from_ref(&op))?;
            wal.sync()?;
            state.apply(&op);
        }
        if wal.hard_state.state() != merged {
            // The log is ahead of the file (a crash between the two writes of a sync).
            wal.hard_state.write(merged)?;
        }
        let recovery = Recovery {
            state,
            log_base,
            snapshot,
            warnings,
            created,
        };
        assert_eq!(wal.shape, LogShape::of(recovery.log_base, &recovery.state));
        assert_eq!(wal.hard_state.state(), HardState::of(&recovery.state));
        Ok((wal, recovery))
    }

    /// Checks `ops` against the state they follow, encodes them and writes them to the log in
    /// one `write`. Not durable until [`Wal::sync`]. A refused batch writes nothing.
    pub fn append(&mut self, ops: &[PersistOp]) -> Result<(), StorageError> {
        self.check_healthy()?;
        let mut buffer = std::mem::take(&mut self.encode_buffer);
        buffer.clear();
        let shape = encode_batch(self.shape, ops, &mut buffer);
        let shape = match shape {
            Ok(shape) => shape,
            Err(error) => {
                self.encode_buffer = buffer;
                return Err(error);
            }
        };
        if !buffer.is_empty() {
            self.preallocate_for(buffer.len() as u64);
            if let Err(source) = self.log.write_all(&buffer) {
                self.poisoned = true;
                // Best effort: drop a partial record now rather than leave a tail to repair.
                let _ = self.log.set_len(self.log_bytes);
                return Err(io_error(&self.log_path)(source));
            }
            self.log_bytes += buffer.len() as u64;
        }
        self.shape = shape;
        for op in ops {
            self.tail.apply(op);
            if let PersistOp::HardState {
                term,
                voted_for,
                recovering,
            } = op
            {
                self.hard_state_pending = Some(HardState {
                    term: *term,
                    voted_for: *voted_for,
                    recovering: *recovering,
                });
            }
        }
        if buffer.capacity() <= ENCODE_BUFFER_RETAINED_BYTES_MAX {
            self.encode_buffer = buffer;
        }
        assert!(
            self.synced_bytes <= self.log_bytes,
            "wal: synced more than was written"
        );
        Ok(())
    }

    /// Makes sure the file has room for `length` more bytes after the log's end, growing it by
    /// `preallocate_bytes` of zeros at a time. Best effort: where the file system cannot
    /// preallocate, appends simply grow the file.
    fn preallocate_for(&mut self, length: u64) {
        let needed = self.log_bytes + length;
        if needed <= self.allocated_bytes || self.preallocate_bytes == 0 {
            return;
        }
        let target = needed.div_ceil(self.preallocate_bytes) * self.preallocate_bytes;
        if allocate_zeros(
            &self.log,
            self.allocated_bytes,
            target - self.allocated_bytes,
        ) {
            self.allocated_bytes = target;
        }
    }

    /// Makes everything appended so far durable (`fdatasync`), and a hard state among it in
    /// the hard-state file too (a second write and `fdatasync`, only when a term or vote
    /// changed). Cheap when nothing is pending.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_healthy()?;
        if self.synced_bytes == self.log_bytes {
            return Ok(());
        }
        if let Err(source) = self.log.sync_data() {
            self.poisoned = true;
            return Err(io_error(&self.log_path)(source));
        }
        self.synced_bytes = self.log_bytes;
        if let Some(state) = self.hard_state_pending.take()
            && let Err(error) = self.hard_state.write(state)
        {
            self.poisoned = true;
            return Err(error);
        }
        Ok(())
    }

    /// Makes pending appends durable, writes `snapshot_bytes` as the snapshot of everything up
    /// to and including (`last_included_index`, `last_included_term`), then compacts the log to
    /// the hard state and the entries after it (dropping all entries if the log disagrees at
    /// that index, Raft §7). Both files are replaced atomically, the snapshot first; see the
    /// module docs for what a crash in between leaves.
    pub fn write_snapshot(
        &mut self,
        snapshot_bytes: &[u8],
        last_included_index: LogIndex,
        last_included_term: Term,
    ) -> Result<(), StorageError> {
        self.check_healthy()?;
        let last_included = LogPosition {
            index: last_included_index,
            term: last_included_term,
        };
        self.check_snapshot(last_included, snapshot_bytes.len())
            .map_err(|violation| StorageError::SnapshotRejected { violation })?;
        self.sync()?;
        let result = self.snapshot_and_compact(last_included, snapshot_bytes);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Reads the snapshot back from disk, checking that it is the one the log starts after.
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.directory.join(SNAPSHOT_FILE_NAME);
        let snapshot = read_snapshot_file(&path)?;
        let found = snapshot
            .as_ref()
            .map_or(LogPosition::default(), |s| s.last_included);
        if found != self.shape.base {
            return Err(StorageError::ChangedWhileOpen {
                path,
                detail: format!("snapshot at {found:?}, log base {:?}", self.shape.base),
            });
        }
        Ok(snapshot)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The snapshot's last included position, which the log's entries follow; `(0, 0)` if none.
    pub fn log_base(&self) -> LogPosition {
        self.shape.base
    }

    /// The global index of the last entry appended (durable or not).
    pub fn last_index(&self) -> LogIndex {
        self.shape.last_index
    }

    /// The log file's bytes of records (its preallocated tail not counted).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Bytes appended but not yet covered by a [`Wal::sync`].
    pub fn unsynced_bytes(&self) -> u64 {
        self.log_bytes - self.synced_bytes
    }

    fn check_healthy(&self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                path: self.log_path.clone(),
            });
        }
        Ok(())
    }

    fn check_snapshot(
        &self,
        at: LogPosition,
        length_bytes: usize,
    ) -> Result<(), SnapshotViolation> {
        let base = self.shape.base;
        if at.index == 0 {
            return Err(SnapshotViolation::CoversNothing);
        }
        if at.index < base.index {
            let (index, base_index) = (at.index, base.index);
            return Err(SnapshotViolation::Behind { index, base_index });
        }
        if at.index == base.index && at.term != base.term {
            let (index, term, base_term) = (at.index, at.term, base.term);
            return Err(SnapshotViolation::TermMismatch {
                index,
                term,
                base_term,
            });
        }
        if length_bytes > SNAPSHOT_PAYLOAD_BYTES_MAX as usize {
            return Err(SnapshotViolation::TooLarge {
                length_bytes: length_bytes as u64,
                length_bytes_max: u64::from(SNAPSHOT_PAYLOAD_BYTES_MAX),
            });
        }
        Ok(())
    }

    fn snapshot_and_compact(&mut self, at: LogPosition, data: &[u8]) -> Result<(), StorageError> {
        assert_eq!(
            self.unsynced_bytes(),
            0,
            "wal: compaction starts from a synced log"
        );
        let directory = &self.directory;
        write_snapshot_file(
            directory,
            SNAPSHOT_FILE_NAME,
            SNAPSHOT_TEMPORARY_FILE_NAME,
            at,
            data,
        )?;
        // What the compacted log keeps comes from the mirrored tail when it reaches back to
        // the snapshot (a snapshot is taken at the applied index, so it keeps only the short
        // unapplied suffix). Re-reading the whole file instead took about 100 ms per 100,000
        // entries, during which nothing the log thread held could leave.
        let state = match self.tail.state_after(self.shape, at) {
            Some(state) => {
                if cfg!(debug_assertions) {
                    let replayed = replay_log(&self.log_path, false)?;
                    self.check_unchanged(&replayed)?;
                    let (from_file, _) = state_after_snapshot(replayed.base, &replayed.state, at);
                    assert_eq!(
                        state, from_file,
                        "wal: the mirrored tail disagrees with the file"
                    );
                }
                state
            }
            None => {
                let replayed = replay_log(&self.log_path, false)?;
                self.check_unchanged(&replayed)?;
                state_after_snapshot(replayed.base, &replayed.state, at).0
            }
        };
        write_log(directory, at, &state)?;
        let (log, allocated_bytes) = open_for_writing(&self.log_path)?;
        self.log = log;
        self.log
            .seek(SeekFrom::End(0))
            .map_err(io_error(&self.log_path))?;
        self.log_bytes = allocated_bytes;
        self.allocated_bytes = allocated_bytes;
        self.synced_bytes = self.log_bytes;
        self.shape = LogShape::of(at, &state);
        // The mirror follows the compacted log: a snapshot beyond the log, or one that
        // conflicts with it, discarded entries the old mirror still held, and the next append
        // would have found a hole after them.
        self.tail = LogTail::of(at, &state);
        Ok(())
    }

    /// Pair check: the log on disk is what this `Wal` wrote.
    fn check_unchanged(&self, replayed: &Replayed) -> Result<(), StorageError> {
        let found = LogShape::of(replayed.base, &replayed.state);
        if replayed.tail.is_some() || replayed.end_offset != self.log_bytes || found != self.shape {
            // (Preallocated space after `end_offset` is zeros, which replay does not count.)
            return Err(StorageError::ChangedWhileOpen {
                path: self.log_path.clone(),
                detail: format!(
                    "expected {} bytes shaped {:?}, found {} bytes (valid to {}) shaped {found:?}",
                    self.log_bytes, self.shape, replayed.length_bytes, replayed.end_offset
                ),
            });
        }
        Ok(())
    }
}

/// Checks and encodes `ops` after `shape` into `buffer`; returns the shape after them.
fn encode_batch(
    shape: LogShape,
    ops: &[PersistOp],
    buffer: &mut Vec<u8>,
) -> Result<LogShape, StorageError> {
    let mut shape = shape;
    for (position, op) in ops.iter().enumerate() {
        shape
            .check(op)
            .map_err(|violation| StorageError::OpRejected {
                position,
                violation,
            })?;
        let start = buffer.len();
        let length_bytes = encode_op_record(op, buffer);
        if length_bytes > u64::from(RECORD_PAYLOAD_BYTES_MAX) {
            buffer.truncate(start);
            return Err(StorageError::OpTooLarge {
                position,
                length_bytes,
                length_bytes_max: u64::from(RECORD_PAYLOAD_BYTES_MAX),
            });
        }
        shape = shape.after(op);
    }
    Ok(shape)
}

/// What an open [`Wal`] mirrors of its log beyond its [`LogShape`] (which has the term and the
/// base): the vote, and the last entries, exact for global indexes `from` through
/// `from + entries.len() - 1`, the log's last index. At most [`TAIL_ENTRIES_MAX`] entries.
#[derive(Debug)]
struct LogTail {
    voted_for: Option<ServerId>,
    recovering: bool,
    from: LogIndex,
    entries: VecDeque<Entry>,
}

impl LogTail {
    /// The tail of `state`, whose entries follow `base`.
    fn of(base: LogPosition, state: &DurableState) -> LogTail {
        let last = state.log.last_index();
        let count = usize::try_from(last)
            .unwrap_or(usize::MAX)
            .min(TAIL_ENTRIES_MAX);
        let first = last + 1 - count as LogIndex;
        LogTail {
            voted_for: state.voted_for,
            recovering: state.recovering,
            from: base.index + first,
            entries: state.log.entries_from(first, count).into(),
        }
    }

    /// Follows `op`, which the `Wal` has checked and written.
    fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::HardState {
                voted_for,
                recovering,
                ..
            } => {
                self.voted_for = *voted_for;
                self.recovering = *recovering;
            }
            PersistOp::Append {
                first_index,
                entries,
            } => {
                if *first_index < self.from {
                    // Rewrites from below what is mirrored: from here on it is exactly `entries`.
                    self.from = *first_index;
                    self.entries.clear();
                } else {
                    let keep = usize::try_from(first_index - self.from).unwrap_or(usize::MAX);
                    assert!(keep <= self.entries.len(), "wal: an append leaves a hole");
                    self.entries.truncate(keep);
                }
                self.entries.extend(entries.iter().cloned());
                // Bounded: at most `TAIL_ENTRIES_MAX` pops per append beyond the limit.
                while self.entries.len() > TAIL_ENTRIES_MAX {
                    self.entries.pop_front();
                    self.from += 1;
                }
            }
        }
    }

    /// What `state_after_snapshot` gives for a snapshot at `cut` of the log shaped `shape`, if
    /// the mirrored entries reach back far enough to tell; otherwise `None`.
    fn state_after(&self, shape: LogShape, cut: LogPosition) -> Option<DurableState> {
        let base = shape.base;
        let end = self.from + self.entries.len() as LogIndex; // One past the last index.
        let term_at_cut = if cut.index == base.index {
            if base.index + 1 < self.from {
                return None; // The entries after the cut are not all mirrored.
            }
            Some(base.term)
        } else if cut.index >= end {
            None // No entry there: the whole log goes, as with the file.
        } else if cut.index >= self.from {
            Some(self.entries[usize::try_from(cut.index - self.from).ok()?].term)
        } else {
            return None;
        };
        let mut log = RaftLog::new();
        if term_at_cut == Some(cut.term) && cut.index + 1 < end {
            let skip = usize::try_from(cut.index + 1 - self.from).ok()?;
            let after: Vec<Entry> = self.entries.iter().skip(skip).cloned().collect();
            log.truncate_and_append(1, &after);
        }
        Some(DurableState {
            term: shape.term,
            voted_for: self.voted_for,
            log,
            snapshot: None,
            recovering: self.recovering,
        })
    }
}

/// Raft §7, installing a snapshot at `cut`: "if an existing log entry has the same index and
/// term as the snapshot's last included entry, retain log entries following it; otherwise
/// discard the entire log". `state`'s entries follow `base`; the result's follow `cut`.
/// Returns the state and how many entries after `cut` were discarded.
fn state_after_snapshot(
    base: LogPosition,
    state: &DurableState,
    cut: LogPosition,
) -> (DurableState, u64) {
    assert!(
        cut.index >= base.index,
        "wal: a snapshot behind the log's base"
    );
    let relative = cut.index - base.index;
    let term_at_cut = if relative == 0 {
        Some(base.term)
    } else {
        state.log.term_at(relative)
    };
    let after = state
        .log
        .entries_from(relative.saturating_add(1), usize::MAX);
    let mut log = RaftLog::new();
    let discarded = if term_at_cut == Some(cut.term) {
        log.truncate_and_append(1, &after);
        0
    } else {
        after.len() as u64
    };
    let compacted = DurableState {
        term: state.term,
        voted_for: state.voted_for,
        log,
        snapshot: None,
        recovering: state.recovering,
    };
    assert!(
        compacted.log.last_index() <= state.log.last_index(),
        "wal: compaction grew"
    );
    (compacted, discarded)
}

/// Combines the snapshot and the replayed log into the recovered state (module docs, "Snapshots
/// and compaction"). Finishes a compaction a crash interrupted.
fn reconcile(
    directory: &Path,
    snapshot: Option<&Snapshot>,
    replayed: Replayed,
    warnings: &mut Vec<RecoveryWarning>,
) -> Result<(LogPosition, DurableState), StorageError> {
    let log_path = directory.join(LOG_FILE_NAME);
    let log_base = replayed.base;
    let Some(snapshot) = snapshot else {
        if log_base.index == 0 {
            return Ok((log_base, replayed.state));
        }
        let base_index = log_base.index;
        return Err(StorageError::SnapshotMissing {
            path: log_path,
            base_index,
        });
    };
    let at = snapshot.last_included;
    if at.index < log_base.index || (at.index == log_base.index && at != log_base) {
        return Err(StorageError::SnapshotDisagreesWithLog {
            snapshot_path: directory.join(SNAPSHOT_FILE_NAME),
            log_path,
            snapshot: at,
            log_base,
        });
    }
    if at == log_base {
        return Ok((log_base, replayed.state));
    }
    let (state, entries_discarded) = state_after_snapshot(log_base, &replayed.state, at);
    write_log(directory, at, &state)?;
    warnings.push(RecoveryWarning::ResumedCompaction {
        path: log_path,
        snapshot: at,
        entries_discarded,
    });
    Ok((at, state))
}

/// Replaces the log with one holding `state` after `base`: the header, one `HardState` record
/// (unless it is the default), then `Append` records of at most
/// [`COMPACTION_ENTRIES_PER_RECORD_MAX`] entries each.
fn write_log(
    directory: &Path,
    base: LogPosition,
    state: &DurableState,
) -> Result<(), StorageError> {
    let header = encode_file_header(WAL_MAGIC, base);
    let hard_state = PersistOp::HardState {
        term: state.term,
        voted_for: state.voted_for,
        recovering: state.recovering,
    };
    replace_file(
        directory,
        LOG_FILE_NAME,
        LOG_TEMPORARY_FILE_NAME,
        |writer| {
            writer.write_all(&header)?;
            let mut buffer = Vec::new();
            // A fresh log holds only its header: the default hard state needs no record.
            if state.term != 0 || state.voted_for.is_some() || state.recovering {
                encode_op_record(&hard_state, &mut buffer);
                writer.write_all(&buffer)?;
            }
            let last = state.log.last_index();
            let mut first: LogIndex = 1;
            while first <= last {
                let remaining = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
                let mut count = remaining.min(COMPACTION_ENTRIES_PER_RECORD_MAX);
                // Halve until the record fits: at most log2(entries per record) times.
                loop {
                    let op = PersistOp::Append {
                        first_index: base.index + first,
                        entries: state.log.entries_from(first, count),
                    };
                    buffer.clear();
                    if encode_op_record(&op, &mut buffer) <= u64::from(RECORD_PAYLOAD_BYTES_MAX) {
                        break;
                    }
                    if count == 1 {
                        let message =
                            format!("entry {} does not fit in a record", base.index + first);
                        return Err(io::Error::other(message));
                    }
                    count /= 2;
                }
                writer.write_all(&buffer)?;
                first += count as LogIndex;
            }
            Ok(())
        },
    )?;
    if cfg!(debug_assertions) {
        verify_log(directory, base, state);
    }
    Ok(())
}

/// Pair assertion for tests and debug builds: the log just written replays to `state`.
fn verify_log(directory: &Path, base: LogPosition, state: &DurableState) {
    let replayed =
        replay_log(&directory.join(LOG_FILE_NAME), false).expect("wal: re-read the new log");
    assert_eq!(replayed.base, base, "wal: the rewritten log's base");
    assert_eq!(
        &replayed.state, state,
        "wal: the rewritten log replays to its state"
    );
    assert!(
        replayed.tail.is_none(),
        "wal: the rewritten log has no tail"
    );
}

fn lock_directory(directory: &Path) -> Result<File, StorageError> {
    let path = directory.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::DirectoryLocked {
            path: directory.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(io_error(&path)(source)),
    }
}

/// Opens the hard-state file, creating it from the log's hard state if there is none (a new
/// directory, or one written before the file existed) or if both its slots are damaged (with
/// a warning; `Wal::open` refuses that if the log is damaged too).
fn open_hard_state(
    directory: &Path,
    read: HardStateRead,
    log_state: HardState,
    warnings: &mut Vec<RecoveryWarning>,
) -> Result<HardStateFile, StorageError> {
    match read {
        HardStateRead::Valid { sequence, state } => HardStateFile::open(directory, sequence, state),
        HardStateRead::Missing => HardStateFile::create(directory, log_state),
        HardStateRead::Damaged => {
            warnings.push(RecoveryWarning::RewroteHardState {
                path: directory.join(HARD_STATE_FILE_NAME),
            });
            HardStateFile::create(directory, log_state)
        }
    }
}

/// What cutting the log at damage reports: a torn tail, or, with a repair, any damage.
fn cut_warning(path: &Path, replayed: &Replayed, damage: Damage, repair: bool) -> RecoveryWarning {
    let bytes_dropped = replayed.length_bytes - replayed.end_offset;
    if !repair {
        return RecoveryWarning::TruncatedTail {
            path: path.to_path_buf(),
            offset: replayed.end_offset,
            bytes_dropped,
            damage,
        };
    }
    RecoveryWarning::CutForRepair {
        path: path.to_path_buf(),
        offset: replayed.end_offset,
        bytes_dropped,
        damage,
        kept_through_index: replayed.base.index + replayed.state.log.last_index(),
        dropped_through_index: replayed.dropped_through_index,
        next_valid_offset: replayed.next_valid_offset,
    }
}

/// Removes what a crash before a rename left behind; the file it was to replace is intact.
fn remove_temporary_files(directory: &Path) -> Result<Vec<RecoveryWarning>, StorageError> {
    let mut warnings = Vec::new();
    for name in [
        LOG_TEMPORARY_FILE_NAME,
        SNAPSHOT_TEMPORARY_FILE_NAME,
        HARD_STATE_TEMPORARY_FILE_NAME,
    ] {
        let path = directory.join(name);
        let length_bytes = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error(&path)(error)),
        };
        fs::remove_file(&path).map_err(io_error(&path))?;
        warnings.push(RecoveryWarning::RemovedTemporaryFile { path, length_bytes });
    }
    Ok(warnings)
}

/// Creates an empty log if there is none; returns whether it did. A snapshot without a log is
/// refused: the log is only ever replaced by rename, never removed.
fn create_log_if_missing(directory: &Path, has_snapshot: bool) -> Result<bool, StorageError> {
    let log_path = directory.join(LOG_FILE_NAME);
    if log_path.try_exists().map_err(io_error(&log_path))? {
        return Ok(false);
    }
    if has_snapshot {
        return Err(StorageError::LogMissing { path: log_path });
    }
    write_log(directory, LogPosition::default(), &DurableState::default())?;
    // The data directory may be new as well: make its own entry durable too, or a crash could
    // lose the directory with every record synced into it.
    if let Some(parent) = directory.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        sync_directory(parent)?;
    }
    Ok(true)
}

fn truncate_log(log_path: &Path, end_offset: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(log_path)
        .map_err(io_error(log_path))?;
    file.set_len(end_offset).map_err(io_error(log_path))?;
    file.sync_all().map_err(io_error(log_path))
}

/// Opens the log for positional writes (not `O_APPEND`: the file may end in preallocated
/// space) and returns it with its length.
fn open_for_writing(log_path: &Path) -> Result<(File, u64), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(log_path)
        .map_err(io_error(log_path))?;
    let length = file.metadata().map_err(io_error(log_path))?.len();
    Ok((file, length))
}

/// How a [`Wal`] manages its file.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct WalOptions {
    /// Grow the log file by this many zeroed bytes at a time, ahead of appends (0: grow it by
    /// appending). An `fdatasync` after an append that grows the file must also write the
    /// file's size; into preallocated space it writes only the data, about half the cost on
    /// ext4. Replay treats zeros after the last record as free space, not as a torn record.
    pub preallocate_bytes: u64,
    /// Peers can repair a damaged log (the cluster has more than one server): any damaged
    /// record, in the middle or at the end, cuts the log there and sets
    /// `DurableState::recovering` instead of refusing to start (module docs, "Repair from
    /// peers"). Off, damage in the middle is refused and a damaged tail truncated.
    pub repair_from_peers: bool,
}

impl WalOptions {
    /// What a server of a cluster of `servers` uses: 4 MiB of preallocated space at a time,
    /// and repair from peers when it has any.
    pub fn for_server(servers: usize) -> WalOptions {
        WalOptions {
            preallocate_bytes: 4 * 1024 * 1024,
            repair_from_peers: servers > 1,
        }
    }
}

/// Allocates `length` zero bytes at `offset` of `file` without writing them; true on success.
#[cfg(unix)]
fn allocate_zeros(file: &File, offset: u64, length: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(length)) = (libc::off_t::try_from(offset), libc::off_t::try_from(length))
    else {
        return false;
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call; posix_fallocate only
    // reads its integer arguments.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, length) == 0 }
}

#[cfg(not(unix))]
fn allocate_zeros(_file: &File, _offset: u64, _length: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Command, Entry};

    fn entries(terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .map(|&term| Entry {
                term,
                command: Command::Noop,
            })
            .collect()
    }

    fn state_with(terms: &[Term]) -> DurableState {
        let mut state = DurableState::default();
        state.apply(&PersistOp::Append {
            first_index: 1,
            entries: entries(terms),
        });
        state
    }

    /// The mirrored tail must give exactly what re-reading the file gives: random appends
    /// (overwriting suffixes, as followers do), hard states and cuts, each compared with
    /// `state_after_snapshot` on the whole state.
    #[test]
    fn the_mirrored_tail_compacts_exactly_like_the_file() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut answered = 0;
        for _ in 0..200 {
            let base = LogPosition {
                index: rng.random_range(0..5),
                term: 1,
            };
            let mut state = DurableState::default();
            let mut tail = LogTail::of(base, &state);
            let mut term: Term = 1;
            for _ in 0..rng.random_range(1..40) {
                let op = if rng.random_bool(0.1) {
                    term += 1;
                    PersistOp::HardState {
                        term,
                        voted_for: None,
                        recovering: false,
                    }
                } else {
                    let last = state.log.last_index();
                    let first = rng.random_range(1..=last + 1);
                    let count = rng.random_range(0..5);
                    PersistOp::Append {
                        first_index: base.index + first,
                        entries: entries(&vec![term; count]),
                    }
                };
                tail.apply(&op);
                super::super::format::apply_at_base(&mut state, base, op);
            }
            // A tail rebuilt from the whole state agrees too.
            let rebuilt = LogTail::of(base, &state);
            for tail in [&tail, &rebuilt] {
                let last = base.index + state.log.last_index();
                for index in base.index..=last + 1 {
                    for cut_term in [1, term] {
                        let cut = LogPosition {
                            index,
                            term: cut_term,
                        };
                        match tail.state_after(LogShape::of(base, &state), cut) {
                            Some(mirrored) => {
                                answered += 1;
                                let (from_file, _) = state_after_snapshot(base, &state, cut);
                                assert_eq!(mirrored, from_file, "cut {cut:?}");
                            }
                            None => panic!("a tail holding the whole log declined {cut:?}"),
                        }
                    }
                }
            }
        }
        assert!(answered > 1_000, "{answered} answered");
    }

    /// A tail keeps at most `TAIL_ENTRIES_MAX` entries, and declines what lies before them.
    #[test]
    fn the_mirrored_tail_is_bounded_and_declines_what_it_dropped() {
        let mut state = DurableState::default();
        let base = LogPosition::default();
        let mut tail = LogTail::of(base, &state);
        let total = TAIL_ENTRIES_MAX as LogIndex + 100;
        for index in 1..=total {
            let op = PersistOp::Append {
                first_index: index,
                entries: entries(&[1]),
            };
            tail.apply(&op);
            state.apply(&op);
        }
        assert_eq!(tail.entries.len(), TAIL_ENTRIES_MAX);
        let shape = LogShape::of(base, &state);
        assert_eq!(
            tail.state_after(shape, LogPosition { index: 50, term: 1 }),
            None
        );
        let recent = LogPosition {
            index: total - 10,
            term: 1,
        };
        let mirrored = tail
            .state_after(shape, recent)
            .expect("recent cuts are mirrored");
        assert_eq!(mirrored.log.last_index(), 10);
        assert_eq!(mirrored, state_after_snapshot(base, &state, recent).0);

        // An append that rewrites from below the mirror leaves it exact from there on.
        let rewrite = PersistOp::Append {
            first_index: 10,
            entries: entries(&[2, 2, 2]),
        };
        tail.apply(&rewrite);
        state.apply(&rewrite);
        assert_eq!(tail.from, 10);
        let shape = LogShape::of(base, &state);
        let cut = LogPosition { index: 10, term: 2 };
        assert_eq!(
            tail.state_after(shape, cut),
            Some(state_after_snapshot(base, &state, cut).0)
        );
        assert_eq!(
            tail.state_after(shape, LogPosition { index: 9, term: 1 }),
            None
        );
    }

    /// Found by `lockstep chaos`: a follower that fell behind was sent the leader's snapshot,
    /// beyond its own log, and its log thread panicked ("an append leaves a hole") on the
    /// next append, because the mirrored tail still ended where the discarded log had.
    #[test]
    fn appends_after_a_snapshot_beyond_the_log_continue_from_the_snapshot() {
        let directory = crate::storage::test_directory::TestDirectory::new("wal-beyond");
        let (mut wal, _) = Wal::open(directory.path()).unwrap();
        wal.append(&[PersistOp::Append {
            first_index: 1,
            entries: entries(&[1, 1, 1]),
        }])
        .unwrap();
        wal.write_snapshot(b"the leader's lock table", 10, 2)
            .unwrap();
        for conflicting in [false, true] {
            let first_index = wal.last_index() + 1;
            wal.append(&[PersistOp::Append {
                first_index,
                entries: entries(&[2, 2]),
            }])
            .unwrap();
            if conflicting {
                // And one that conflicts with the log at its index discards it all too.
                wal.write_snapshot(b"another table", first_index, 3)
                    .unwrap();
            } else {
                wal.write_snapshot(b"own table", first_index, 2).unwrap();
            }
        }
        let first_index = wal.last_index() + 1;
        wal.append(&[PersistOp::Append {
            first_index,
            entries: entries(&[3]),
        }])
        .unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (reopened, recovery) = Wal::open(directory.path()).unwrap();
        assert_eq!(reopened.log_base(), LogPosition { index: 13, term: 3 });
        assert_eq!(reopened.last_index(), 14);
        assert_eq!(recovery.state.log.entries_from(1, 10), entries(&[3]));
    }

    /// Raft §7: a snapshot matching the log keeps the entries after it.
    #[test]
    fn a_matching_snapshot_keeps_the_entries_after_it() {
        let state = state_with(&[1, 1, 2, 3]);
        let cut = LogPosition { index: 2, term: 1 };
        let (after, discarded) = state_after_snapshot(LogPosition::default(), &state, cut);
        assert_eq!(discarded, 0);
        assert_eq!(after.log.entries_from(1, 10), entries(&[2, 3]));
    }

    /// Raft §7: a snapshot that conflicts with the log (or lies beyond it) discards it all.
    #[test]
    fn a_conflicting_or_later_snapshot_discards_the_whole_log() {
        let state = state_with(&[1, 1, 2, 3]);
        let conflicting = LogPosition { index: 3, term: 5 };
        let (after, discarded) = state_after_snapshot(LogPosition::default(), &state, conflicting);
        assert_eq!((after.log.last_index(), discarded), (0, 1));
        let beyond = LogPosition { index: 9, term: 5 };
        let (after, discarded) = state_after_snapshot(LogPosition::default(), &state, beyond);
        assert_eq!((after.log.last_index(), discarded), (0, 0));
    }

    #[test]
    fn a_snapshot_at_the_base_keeps_everything() {
        let base = LogPosition { index: 4, term: 2 };
        let state = state_with(&[2, 3]);
        let (after, discarded) = state_after_snapshot(base, &state, base);
        assert_eq!((after, discarded), (state, 0));
    }
}
