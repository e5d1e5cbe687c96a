//! Durable storage for one server: a write-ahead log of its [`DurableState`] plus an opaque
//! snapshot, kept in a data directory with plain `std::fs`.
//!
//! This is the real-deployment counterpart of the simulator's in-memory "disk". It stores
//! [`PersistOp`]s and replays them with [`DurableState::apply`], so a record means exactly what
//! the simulator means by it. It must never spawn threads, never read a clock, never allocate
//! more than a record's bounded size on the word of a file, and never panic on a bad file: every
//! damage is a [`StorageError`] naming the file and the byte offset, or, for a torn tail or a
//! damaged log repaired from peers, a [`RecoveryWarning`] saying what was dropped.
//!
//! # Calling contract
//! See [`Wal`]: [`Wal::open`] once per process (it locks the directory), then any number of
//! [`Wal::append`]s followed by one [`Wal::sync`] (group commit). A message that depends on
//! appended state MUST NOT be sent before the `sync` that covers it has returned `Ok`. After any
//! error from a mutating call the `Wal` refuses further work: drop it and reopen.
//!
//! # Data directory
//! | file           | what                                                                      |
//! |----------------|---------------------------------------------------------------------------|
//! | `lock`         | empty; holds an exclusive `flock` while a [`Wal`] is open                 |
//! | `wal`          | the write-ahead log: a header, then records                               |
//! | `snapshot`     | the latest snapshot, if one was ever written                              |
//! | `hardstate`    | term, vote and repair flag again, in two checksummed slots ([`hard_state`]) |
//! | `*.tmp`        | half-written replacements; a crash may leave one, [`Wal::open`] removes it |
//!
//! # File format, version 1
//! All integers are little-endian. `crc32c` is CRC-32C (Castagnoli).
//!
//! Both files start with the same 32-byte header:
//! ```text
//! offset size field
//!      0    8 magic        "LSTEPWAL" (log) or "LSTEPSNP" (snapshot)
//!      8    4 version      u32, 1
//!     12    8 base index   u64: log: the index the snapshot covers up to (0 = no snapshot);
//!                               snapshot: its last included index
//!     20    8 base term    u64: the term of the entry at base index (0 when base index is 0)
//!     28    4 header crc   u32: crc32c of bytes 0..28
//! ```
//! Magic and version are checked before the header checksum, so a later version may change
//! everything after byte 12 and still be refused with a clear "unsupported version".
//!
//! After the header come records, each framed the same way:
//! ```text
//!      0    4 length       u32: payload bytes, 1..=64 MiB in the log (0..=1 GiB in a snapshot)
//!      4    4 crc          u32: crc32c of the 4 length bytes followed by the payload
//!      8  len payload
//! ```
//! - Log payloads are one [`PersistOp`] each, as JSON (`serde_json`, the type's own serde
//!   representation). Compact JSON holds only bytes >= 0x20 (control characters are escaped),
//!   so any four payload bytes read as a length give at least 0x20202020 (512 MiB), above the
//!   maximum: the resynchronising scan below cannot mistake a piece of a torn record's payload
//!   for a record.
//! - A snapshot file holds exactly one record after its header: the opaque snapshot bytes. The
//!   file must end right after it.
//!
//! # Preallocation
//! With [`WalOptions::preallocate_bytes`] (servers use 4 MiB), the log file grows in zeroed
//! chunks ahead of the records, so that a sync writes data only, not the file's new size. A
//! zero length where a record would start, with nothing but zeros after it, is therefore the
//! clean end of the log, not damage. A torn record followed by zeros is still a torn tail.
//!
//! # Recovery of the log
//! Records are read in order and each is checked (length bound, checksum, JSON, and the same
//! [`PersistOp`] rules that [`Wal::append`] checks) before it is applied. At the first record
//! that is damaged:
//! - a length above the maximum is refused outright ([`StorageError::RecordTooLong`]): we never
//!   write one, and a torn append leaves a prefix of what was written, never a new length;
//! - otherwise (fewer than 8 bytes left, a zero length, a length running past the end of the
//!   file, a checksum mismatch) the rest of the file is scanned byte by byte for any frame with
//!   a valid checksum. None: the damage is a torn tail, the file is truncated there and a
//!   [`RecoveryWarning::TruncatedTail`] reports file, offset and bytes dropped. Some: the damage
//!   is in the middle, and [`StorageError::CorruptRecord`] refuses to start, naming the file, the
//!   damaged record's offset and the offset of the valid record after it.
//!
//! # Repair from peers
//! With [`WalOptions::repair_from_peers`] (a server with peers; [`WalOptions::for_server`]),
//! damage is not refused: any damaged record, in the middle or at the end, torn or rotted, or a
//! length above the maximum, is where the log is cut. [`Wal::open`] first raises the repair
//! flag (`DurableState::recovering`) in the hard-state file and `fdatasync`s it, then truncates
//! the log there, then appends the merged hard state (flag raised) to the log, and reports a
//! [`RecoveryWarning::CutForRepair`] naming the file, the offset, the entries kept and the
//! highest index a valid record after the damage named. The server then votes for no one until
//! a leader has repaired its log (`node::Server`, "Repair of a damaged log"). A record with a
//! valid checksum that does not decode or does not follow its state is still refused: that is
//! not rot. Repair needs the hard-state file, since a cut may drop the log's newest vote: a
//! directory without one (written by an older build) refuses or truncates as without peers on
//! its first open, which creates the file; one whose two slots are both damaged while the log
//! is damaged too is refused ([`StorageError::HardStateLost`]).
//!
//! Term and vote are recovered as the newer of the log's last `HardState` record and the
//! hard-state file (by term, then vote); of two equally new, the repair flag is raised if
//! either has it. When the file is the newer, the log gets a `HardState` record of it, so the
//! two agree after every open.
//!
//! # Snapshots and compaction
//! [`Wal::write_snapshot`] at (index I, term T):
//! 1. makes pending appends durable;
//! 2. writes `snapshot.tmp`, fsyncs it, renames it over `snapshot`, fsyncs the directory;
//! 3. rewrites the log as `wal.tmp` with base (I, T), one `HardState` record (current term and
//!    vote) and `Append` records for the entries after I, fsyncs it, renames it over `wal`, and
//!    fsyncs the directory. Those entries come from the last entries the open `Wal` mirrors in
//!    memory (a bounded window; a snapshot is taken at the applied index, so what follows it is
//!    short), or, if the window does not reach back to I, from re-reading the log.
//!
//! Replay combines the two with the rule of Raft §7 for installing a snapshot: "if an existing
//! log entry has the same index and term as the snapshot's last included entry, retain log
//! entries following it; otherwise discard the entire log". After a clean compaction the log's
//! base equals the snapshot's position and nothing is discarded. A crash between steps 2 and 3
//! leaves a new snapshot beside the old log; [`Wal::open`] applies the rule and finishes the
//! compaction (a [`RecoveryWarning::ResumedCompaction`]) so that later appends land in a log whose
//! base is the snapshot. A crash before a rename leaves the old file in place plus a stray
//! `.tmp`, which open removes. A log whose base is ahead of the snapshot, or a log with a
//! non-zero base and no snapshot, is refused: entries would be missing.
//!
//! The recovered [`DurableState`] holds the entries *after* the base: its entry `k` (1-based)
//! is the global log entry `base.index + k`. Without a snapshot the base is 0 and the state is
//! exactly the simulator's.

mod error;
pub mod format;
pub mod hard_state;
mod replay;
mod snapshot;
mod wal;

#[cfg(test)]
pub(crate) mod test_directory;

pub use error::{Damage, OpViolation, RecoveryWarning, SnapshotViolation, StorageError};
pub use wal::{
    LOCK_FILE_NAME, LOG_FILE_NAME, LOG_TEMPORARY_FILE_NAME, Recovery, SNAPSHOT_FILE_NAME,
    SNAPSHOT_TEMPORARY_FILE_NAME, Wal, WalOptions,
};

use crate::node::{LogIndex, Term};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::node::{DurableState, PersistOp};

/// A position in the replicated log: an index and the term of the entry there. `(0, 0)` is the
/// position before the first entry.
#[derive(
    Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    pub index: LogIndex,
    pub term: Term,
}

/// A snapshot of the replicated state up to and including `last_included`. The bytes are opaque
/// here: the lock table serialises itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    pub last_included: LogPosition,
    pub data: Vec<u8>,
}
