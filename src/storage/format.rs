//! The byte layout of the log and snapshot files (specified in the [module docs](super)): file
//! headers, record framing and checksums, and the rules a `PersistOp` must satisfy to follow
//! the state before it.
//!
//! Pure functions on bytes and values. Nothing here touches the file system, and nothing here
//! trusts a length it did not check against a bound first.

use super::LogPosition;
use super::error::{OpViolation, StorageError};
use crate::node::{DurableState, LogIndex, PersistOp, Term};
use std::path::Path;

/// First bytes of a log file.
pub const WAL_MAGIC: [u8; 8] = *b"LSTEPWAL";
/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"LSTEPSNP";
/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, version, base index, base term, header checksum.
pub const FILE_HEADER_BYTES: usize = 32;
/// Length, checksum.
pub const RECORD_HEADER_BYTES: usize = 8;
/// The largest log record payload. A longer length in a file is corruption, never an
/// allocation.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// The largest snapshot payload.
pub const SNAPSHOT_PAYLOAD_BYTES_MAX: u32 = 1024 * 1024 * 1024;

const HEADER_CHECKSUM_OFFSET: usize = 28;

/// The 32-byte header that starts both files, with `base` (the log's snapshot base, or the
/// snapshot's last included position).
pub fn encode_file_header(magic: [u8; 8], base: LogPosition) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0u8; FILE_HEADER_BYTES];
    header[0..8].copy_from_slice(&magic);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&base.index.to_le_bytes());
    header[20..28].copy_from_slice(&base.term.to_le_bytes());
    let checksum = crc32c::crc32c(&header[..HEADER_CHECKSUM_OFFSET]);
    header[HEADER_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Checks a file's first bytes (`bytes` may be shorter than a header when the file is) and
/// returns its base position. Magic and version come before the checksum, so that a file from
/// another program or a later version is named as such rather than as damaged.
pub fn decode_file_header(
    path: &Path,
    magic: [u8; 8],
    bytes: &[u8],
) -> Result<LogPosition, StorageError> {
    if bytes.len() < magic.len() || bytes[..magic.len()] != magic {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
            expected: if magic == WAL_MAGIC {
                "log"
            } else {
                "snapshot"
            },
            expected_magic: magic,
            found: bytes[..bytes.len().min(magic.len())].to_vec(),
        });
    }
    if bytes.len() < 12 {
        return Err(header_corrupt(
            path,
            format!("only {} bytes long", bytes.len()),
        ));
    }
    let version = u32::from_le_bytes(array_at(bytes, 8));
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if bytes.len() < FILE_HEADER_BYTES {
        let reason = format!("only {} of {FILE_HEADER_BYTES} header bytes", bytes.len());
        return Err(header_corrupt(path, reason));
    }
    let stored = u32::from_le_bytes(array_at(bytes, HEADER_CHECKSUM_OFFSET));
    let computed = crc32c::crc32c(&bytes[..HEADER_CHECKSUM_OFFSET]);
    if stored != computed {
        let reason = format!("checksum stored {stored:#010x}, computed {computed:#010x}");
        return Err(header_corrupt(path, reason));
    }
    let base = LogPosition {
        index: u64::from_le_bytes(array_at(bytes, 12)),
        term: u64::from_le_bytes(array_at(bytes, 20)),
    };
    if base.index == 0 && base.term != 0 {
        let reason = format!("base term {} at index 0", base.term);
        return Err(header_corrupt(path, reason));
    }
    Ok(base)
}

fn header_corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::HeaderCorrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// `N` bytes of `bytes` from `at`. The caller checked the length.
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}

/// The checksum stored in a record header: crc32c over the length bytes, then the payload.
/// Covering the length means a damaged length is caught even when it still fits in the file.
pub fn record_checksum(length: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&length.to_le_bytes()), payload)
}

/// Splits a record header into (payload length, stored checksum).
pub fn decode_record_header(header: [u8; RECORD_HEADER_BYTES]) -> (u32, u32) {
    let length = u32::from_le_bytes(array_at(&header, 0));
    let checksum = u32::from_le_bytes(array_at(&header, 4));
    (length, checksum)
}

/// Appends one framed record holding `payload` to `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("format: a payload's length fits in u32");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&record_checksum(length, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one framed record holding `op` as JSON to `out`, serialising in place. Returns the
/// payload length; the caller MUST check it against [`RECORD_PAYLOAD_BYTES_MAX`] and discard
/// `out` beyond its old length if it is over.
pub fn encode_op_record(op: &PersistOp, out: &mut Vec<u8>) -> u64 {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    serde_json::to_writer(&mut *out, op).expect("format: a PersistOp always serialises to JSON");
    let payload_start = start + RECORD_HEADER_BYTES;
    let length_bytes = (out.len() - payload_start) as u64;
    assert!(length_bytes > 0, "format: JSON is never empty");
    // An over-long payload gets a clamped length; the caller discards it anyway.
    let length = u32::try_from(length_bytes).unwrap_or(u32::MAX);
    let checksum = record_checksum(length, &out[payload_start..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&checksum.to_le_bytes());
    length_bytes
}

/// Decodes a log record's payload.
pub fn decode_op(payload: &[u8]) -> Result<PersistOp, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// What replaying a log gives, without the entries: enough to check the next operation. Kept
/// by an open `Wal` (in global indexes) so that it refuses what replay would refuse.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) struct LogShape {
    pub term: Term,
    pub base: LogPosition,
    pub last_index: LogIndex,
}

impl LogShape {
    /// The shape of `state`, whose entries follow `base`.
    pub fn of(base: LogPosition, state: &DurableState) -> LogShape {
        let last_index = base
            .index
            .checked_add(state.log.last_index())
            .expect("format: a replayed log's last index fits in u64");
        LogShape {
            term: state.term,
            base,
            last_index,
        }
    }

    /// Whether `op` may follow this shape: exactly the preconditions of
    /// [`DurableState::apply`], plus "never rewrite what the snapshot covers".
    pub fn check(&self, op: &PersistOp) -> Result<(), OpViolation> {
        match op {
            PersistOp::HardState { term, .. } if *term < self.term => {
                Err(OpViolation::TermWentBack {
                    from: self.term,
                    to: *term,
                })
            }
            PersistOp::HardState { .. } => Ok(()),
            PersistOp::Append {
                first_index,
                entries,
            } => self.check_append(*first_index, entries.len() as u64),
        }
    }

    fn check_append(&self, first_index: LogIndex, count: u64) -> Result<(), OpViolation> {
        if first_index <= self.base.index {
            let base_index = self.base.index;
            return Err(OpViolation::AppendIntoSnapshot {
                first_index,
                base_index,
            });
        }
        if first_index > self.last_index.saturating_add(1) {
            let last_index = self.last_index;
            return Err(OpViolation::AppendLeavesHole {
                first_index,
                last_index,
            });
        }
        if (first_index - 1).checked_add(count).is_none() {
            return Err(OpViolation::IndexOverflow { first_index, count });
        }
        Ok(())
    }

    /// The shape after `op`, which MUST have passed [`LogShape::check`].
    pub fn after(&self, op: &PersistOp) -> LogShape {
        assert_eq!(
            self.check(op),
            Ok(()),
            "format: shape advanced by an unchecked op"
        );
        match op {
            PersistOp::HardState { term, .. } => LogShape {
                term: *term,
                ..*self
            },
            PersistOp::Append {
                first_index,
                entries,
            } => LogShape {
                last_index: first_index - 1 + entries.len() as u64,
                ..*self
            },
        }
    }
}

/// Applies a checked `op` whose indexes are global to `state`, whose entries follow `base`:
/// shifts the append's index so that [`DurableState::apply`] does the work, so replay means
/// exactly what the simulator means.
pub(crate) fn apply_at_base(state: &mut DurableState, base: LogPosition, op: PersistOp) {
    match op {
        PersistOp::HardState { .. } => state.apply(&op),
        PersistOp::Append {
            first_index,
            entries,
        } => {
            assert!(first_index > base.index, "format: append into the snapshot");
            state.apply(&PersistOp::Append {
                first_index: first_index - base.index,
                entries,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ClientId, Command, Entry};

    fn noop(term: Term) -> Entry {
        Entry {
            term,
            command: Command::Noop,
        }
    }

    #[test]
    fn a_header_round_trips_and_names_its_file_when_damaged() {
        let path = Path::new("/data/wal");
        let base = LogPosition { index: 7, term: 3 };
        let header = encode_file_header(WAL_MAGIC, base);
        assert_eq!(decode_file_header(path, WAL_MAGIC, &header).unwrap(), base);

        let mut flipped = header;
        flipped[15] ^= 0x01;
        let error = decode_file_header(path, WAL_MAGIC, &flipped).unwrap_err();
        assert!(
            matches!(error, StorageError::HeaderCorrupt { .. }),
            "{error}"
        );
        assert!(error.to_string().starts_with("/data/wal: "), "{error}");
    }

    #[test]
    fn a_snapshot_is_not_a_log_and_a_later_version_is_not_this_one() {
        let path = Path::new("wal");
        let snapshot = encode_file_header(SNAPSHOT_MAGIC, LogPosition::default());
        let error = decode_file_header(path, WAL_MAGIC, &snapshot).unwrap_err();
        assert!(matches!(error, StorageError::BadMagic { .. }), "{error}");

        let mut later = encode_file_header(WAL_MAGIC, LogPosition::default());
        later[8..12].copy_from_slice(&2u32.to_le_bytes());
        let error = decode_file_header(path, WAL_MAGIC, &later).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{error}"
        );
        let error = decode_file_header(path, WAL_MAGIC, b"LSTEP").unwrap_err();
        assert!(matches!(error, StorageError::BadMagic { .. }), "{error}");
    }

    #[test]
    fn an_op_record_frames_json_with_a_checksum_over_length_and_payload() {
        let op = PersistOp::Append {
            first_index: 1,
            entries: vec![Entry {
                term: 4,
                command: Command::Release {
                    client: ClientId(2),
                    seq: 3,
                    lock: "a lock name with \u{0}, \n and \u{e9}".into(),
                },
            }],
        };
        let mut out = vec![0xAA];
        let length_bytes = encode_op_record(&op, &mut out);
        assert_eq!(
            out.len() as u64,
            1 + RECORD_HEADER_BYTES as u64 + length_bytes
        );
        let header: [u8; RECORD_HEADER_BYTES] = array_at(&out, 1);
        let (length, checksum) = decode_record_header(header);
        assert_eq!(u64::from(length), length_bytes);
        let payload = &out[1 + RECORD_HEADER_BYTES..];
        assert_eq!(checksum, record_checksum(length, payload));
        assert_eq!(decode_op(payload).unwrap(), op);
        // What keeps the resynchronising scan from finding a frame inside a payload.
        let length_from_payload = u32::from_le_bytes(array_at(payload, 0));
        assert!(
            payload.iter().all(|&byte| byte >= 0x20),
            "compact JSON is printable"
        );
        assert!(length_from_payload > RECORD_PAYLOAD_BYTES_MAX);
    }

    /// The same rules guard append and replay, so replay never trips `DurableState::apply`.
    #[test]
    fn the_shape_refuses_what_durable_state_would_panic_on() {
        let shape = LogShape {
            term: 3,
            base: LogPosition { index: 10, term: 2 },
            last_index: 12,
        };
        let back = PersistOp::HardState {
            term: 2,
            voted_for: None,
            recovering: false,
        };
        assert_eq!(
            shape.check(&back),
            Err(OpViolation::TermWentBack { from: 3, to: 2 })
        );
        let append = |first_index| PersistOp::Append {
            first_index,
            entries: vec![noop(3)],
        };
        assert!(matches!(
            shape.check(&append(10)),
            Err(OpViolation::AppendIntoSnapshot { .. })
        ));
        assert!(matches!(
            shape.check(&append(14)),
            Err(OpViolation::AppendLeavesHole { .. })
        ));
        assert_eq!(shape.after(&append(13)).last_index, 13);
        assert_eq!(
            shape.after(&append(11)).last_index,
            11,
            "a conflicting suffix goes"
        );
    }

    #[test]
    fn apply_at_base_shifts_global_indexes_onto_the_entries_after_the_base() {
        let base = LogPosition { index: 5, term: 1 };
        let mut state = DurableState::default();
        let entries = vec![noop(1), noop(2)];
        apply_at_base(
            &mut state,
            base,
            PersistOp::Append {
                first_index: 6,
                entries,
            },
        );
        apply_at_base(
            &mut state,
            base,
            PersistOp::Append {
                first_index: 7,
                entries: vec![noop(3)],
            },
        );
        assert_eq!(state.log.last_index(), 2);
        assert_eq!(state.log.term_at(2), Some(3));
        assert_eq!(LogShape::of(base, &state).last_index, 7);
    }
}
