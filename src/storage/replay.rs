//! Reads a log file back into a `DurableState`, classifying damage as a torn tail (reported,
//! for the caller to truncate) or corruption in the middle (refused, or, when the caller can
//! repair the log from peers, reported with what follows it, for the caller to cut).
//!
//! Reading only: this module never writes, truncates or deletes. Memory is bounded by the
//! recovered state plus one record of at most `RECORD_PAYLOAD_BYTES_MAX`.

use super::LogPosition;
use super::error::{Damage, StorageError};
use super::format::{
    FILE_HEADER_BYTES, LogShape, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, WAL_MAGIC,
    apply_at_base, decode_file_header, decode_op, decode_record_header, record_checksum,
};
use crate::node::{DurableState, LogIndex, PersistOp};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much of a file the resynchronising scan reads at a time.
const SCAN_WINDOW_BYTES: u64 = 1024 * 1024;
const REPLAY_BUFFER_BYTES: usize = 1024 * 1024;

/// A log file read back.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// The position the file's entries follow (its header's base).
    pub base: LogPosition,
    /// Term, vote and the entries after `base` (entry k is global index `base.index + k`).
    pub state: DurableState,
    /// Where the last valid record ends: the file's length, unless `tail` is set or the file
    /// ends in space preallocated for appends (zero bytes up to its end).
    pub end_offset: u64,
    pub length_bytes: u64,
    /// Damage at `end_offset`: the caller must cut the file there. Without `repair`, only a
    /// torn tail (nothing valid after it) comes back here.
    pub tail: Option<Damage>,
    /// With `tail`: where the first valid record after the damage starts, if one does (the
    /// damage is in the middle of the log, not a torn tail).
    pub next_valid_offset: Option<u64>,
    /// With `tail`: the highest log index a valid record after the damage names, if any: the
    /// entries from `state`'s last up to it are what cutting the file drops.
    pub dropped_through_index: Option<LogIndex>,
}

/// One attempt to read the record at an offset.
enum RecordRead {
    EndOfFile,
    Valid { payload: Vec<u8> },
    Damaged(Damage),
}

/// Replays the log at `path`. A torn tail is returned in [`Replayed::tail`]; so is any damaged
/// record (a checksum that fails, a length out of bounds) when `repair` is set, for a caller
/// that can repair the log from peers. Everything else that is wrong with the file is an error
/// naming the file and, for records, the offset.
pub(crate) fn replay_log(path: &Path, repair: bool) -> Result<Replayed, StorageError> {
    let file = File::open(path).map_err(io_error(path))?;
    let length_bytes = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::with_capacity(REPLAY_BUFFER_BYTES, &file);
    let mut header = vec![0u8; FILE_HEADER_BYTES];
    let header_read = read_up_to(&mut reader, &mut header).map_err(io_error(path))?;
    let base = decode_file_header(path, WAL_MAGIC, &header[..header_read])?;

    let mut state = DurableState::default();
    let mut shape = LogShape::of(base, &state);
    let mut offset = FILE_HEADER_BYTES as u64;
    // Every record takes at least one byte more than its header, which bounds the loop.
    let records_max = length_bytes / (RECORD_HEADER_BYTES as u64 + 1) + 1;
    for _ in 0..=records_max {
        let read = match read_record(path, &mut reader, offset, length_bytes) {
            Err(StorageError::RecordTooLong { length_bytes, .. }) if repair => {
                RecordRead::Damaged(Damage::LengthTooLong { length_bytes })
            }
            other => other?,
        };
        let damage = match read {
            RecordRead::EndOfFile => return Ok(replayed(base, state, offset, length_bytes, None)),
            RecordRead::Damaged(damage) => damage,
            RecordRead::Valid { payload } => {
                let op = decode_op(&payload).map_err(|error| StorageError::UndecodableRecord {
                    path: path.to_path_buf(),
                    offset,
                    reason: error.to_string(),
                })?;
                shape
                    .check(&op)
                    .map_err(|violation| StorageError::InvalidRecord {
                        path: path.to_path_buf(),
                        offset,
                        violation,
                    })?;
                shape = shape.after(&op);
                apply_at_base(&mut state, base, op);
                assert_eq!(
                    shape,
                    LogShape::of(base, &state),
                    "replay: shape and state agree"
                );
                offset += (RECORD_HEADER_BYTES + payload.len()) as u64;
                continue;
            }
        };
        if only_zeros_from(path, &file, offset, length_bytes)? {
            // Space preallocated for later appends, never written: the log ends cleanly here.
            return Ok(replayed(base, state, offset, length_bytes, None));
        }
        let next_valid = find_valid_record(path, &file, offset + 1, length_bytes)?;
        if let (Some(next_valid_offset), false) = (next_valid, repair) {
            return Err(StorageError::CorruptRecord {
                path: path.to_path_buf(),
                offset,
                damage,
                next_valid_offset,
            });
        }
        let mut replayed = replayed(base, state, offset, length_bytes, Some(damage));
        replayed.next_valid_offset = next_valid;
        if let Some(from) = next_valid {
            replayed.dropped_through_index =
                last_index_named_from(path, &file, from, length_bytes)?;
        }
        return Ok(replayed);
    }
    unreachable!("replay: more records than the file has room for");
}

/// Whether every byte of `file` from `offset` to `length_bytes` is zero: preallocated space a
/// log grows into, rather than a torn record. Reads at most the preallocation's size.
fn only_zeros_from(
    path: &Path,
    file: &File,
    offset: u64,
    length_bytes: u64,
) -> Result<bool, StorageError> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(io_error(path))?;
    let mut remaining = length_bytes - offset;
    let mut window = vec![0u8; SCAN_WINDOW_BYTES.min(remaining.max(1)) as usize];
    while remaining > 0 {
        let take = window.len().min(remaining as usize);
        reader
            .read_exact(&mut window[..take])
            .map_err(io_error(path))?;
        if window[..take].iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        remaining -= take as u64;
    }
    Ok(true)
}

fn replayed(
    base: LogPosition,
    state: DurableState,
    end_offset: u64,
    length_bytes: u64,
    tail: Option<Damage>,
) -> Replayed {
    assert!(
        end_offset <= length_bytes,
        "replay: ended past the end of the file"
    );
    assert!(
        tail.is_none() || end_offset < length_bytes,
        "replay: a tail is what is left"
    );
    Replayed {
        base,
        state,
        end_offset,
        length_bytes,
        tail,
        next_valid_offset: None,
        dropped_through_index: None,
    }
}

/// The highest log index any valid `Append` record from `from` on names, skipping damage the
/// way [`find_valid_record`] does: what a cut at damage before `from` drops, for the warning.
fn last_index_named_from(
    path: &Path,
    file: &File,
    from: u64,
    length_bytes: u64,
) -> Result<Option<LogIndex>, StorageError> {
    let mut highest = None;
    let mut next = Some(from);
    // Each pass moves past one valid record, at least one header and a byte.
    let records_max = length_bytes / (RECORD_HEADER_BYTES as u64 + 1) + 1;
    for _ in 0..records_max {
        let Some(at) = next else {
            return Ok(highest);
        };
        let header = read_at(path, file, at, RECORD_HEADER_BYTES as u64)?;
        let header: [u8; RECORD_HEADER_BYTES] = header.try_into().expect("a header's bytes");
        let (length, _) = decode_record_header(header);
        let payload = read_at(
            path,
            file,
            at + RECORD_HEADER_BYTES as u64,
            u64::from(length),
        )?;
        if let Ok(PersistOp::Append {
            first_index,
            entries,
        }) = decode_op(&payload)
        {
            let last = (first_index - 1).saturating_add(entries.len() as LogIndex);
            highest = highest.max(Some(last));
        }
        let after = at + (RECORD_HEADER_BYTES as u64) + u64::from(length);
        next = find_valid_record(path, file, after, length_bytes)?;
    }
    unreachable!("replay: more valid records than the file has room for");
}

/// Reads the record at `offset`, the reader's position. A length above the maximum is an error
/// here, before anything is allocated for it.
fn read_record(
    path: &Path,
    reader: &mut impl Read,
    offset: u64,
    length_bytes: u64,
) -> Result<RecordRead, StorageError> {
    assert!(
        offset <= length_bytes,
        "replay: read past the end of the file"
    );
    let left_bytes = length_bytes - offset;
    if left_bytes == 0 {
        return Ok(RecordRead::EndOfFile);
    }
    if left_bytes < RECORD_HEADER_BYTES as u64 {
        let damage = Damage::IncompleteHeader {
            bytes_present: left_bytes,
        };
        return Ok(RecordRead::Damaged(damage));
    }
    let mut header = [0u8; RECORD_HEADER_BYTES];
    reader.read_exact(&mut header).map_err(io_error(path))?;
    let (length, stored) = decode_record_header(header);
    if length > RECORD_PAYLOAD_BYTES_MAX {
        return Err(StorageError::RecordTooLong {
            path: path.to_path_buf(),
            offset,
            length_bytes: u64::from(length),
            length_bytes_max: u64::from(RECORD_PAYLOAD_BYTES_MAX),
        });
    }
    if length == 0 {
        return Ok(RecordRead::Damaged(Damage::ZeroLength));
    }
    if u64::from(length) > left_bytes - RECORD_HEADER_BYTES as u64 {
        let damage = Damage::PastEndOfFile {
            length_bytes: u64::from(length),
        };
        return Ok(RecordRead::Damaged(damage));
    }
    let mut payload = vec![0u8; length as usize];
    reader.read_exact(&mut payload).map_err(io_error(path))?;
    let computed = record_checksum(length, &payload);
    if computed != stored {
        let damage = Damage::ChecksumMismatch { stored, computed };
        return Ok(RecordRead::Damaged(damage));
    }
    Ok(RecordRead::Valid { payload })
}

/// The first offset in `from..end` where a whole record with a valid checksum starts, if any.
/// This is what tells a torn tail (nothing valid after the damage) from corruption in the
/// middle. Reads the file in windows; a candidate's payload is read only if its length fits.
pub(crate) fn find_valid_record(
    path: &Path,
    file: &File,
    from: u64,
    end: u64,
) -> Result<Option<u64>, StorageError> {
    let header_bytes = RECORD_HEADER_BYTES as u64;
    let mut window = Vec::new();
    let mut window_start = from;
    let mut candidate = from;
    while candidate + header_bytes <= end {
        if candidate + header_bytes > window_start + window.len() as u64 {
            window_start = candidate;
            let window_bytes = SCAN_WINDOW_BYTES.min(end - candidate);
            window = read_at(path, file, candidate, window_bytes)?;
        }
        let at = (candidate - window_start) as usize;
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header.copy_from_slice(&window[at..at + RECORD_HEADER_BYTES]);
        let (length, stored) = decode_record_header(header);
        let fits = candidate + header_bytes + u64::from(length) <= end;
        if (1..=RECORD_PAYLOAD_BYTES_MAX).contains(&length) && fits {
            let payload_start = at + RECORD_HEADER_BYTES;
            let payload_end = payload_start + length as usize;
            let computed = if payload_end <= window.len() {
                record_checksum(length, &window[payload_start..payload_end])
            } else {
                let payload = read_at(path, file, candidate + header_bytes, u64::from(length))?;
                record_checksum(length, &payload)
            };
            if computed == stored {
                return Ok(Some(candidate));
            }
        }
        candidate += 1;
    }
    Ok(None)
}

/// Exactly `length_bytes` bytes of `file` from `offset`; the caller checked they exist.
fn read_at(
    path: &Path,
    file: &File,
    offset: u64,
    length_bytes: u64,
) -> Result<Vec<u8>, StorageError> {
    assert!(
        length_bytes <= u64::from(RECORD_PAYLOAD_BYTES_MAX),
        "replay: bounded read"
    );
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(io_error(path))?;
    let mut bytes = vec![0u8; length_bytes as usize];
    reader.read_exact(&mut bytes).map_err(io_error(path))?;
    Ok(bytes)
}

/// Fills `buffer` as far as the reader goes; returns how many bytes were read.
pub(crate) fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Wraps an `io::Error` with the path it happened on.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path: PathBuf = path.to_path_buf();
    move |source| StorageError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PersistOp;
    use crate::storage::format::{encode_file_header, encode_op_record, encode_record};
    use crate::storage::test_directory::TestDirectory;

    fn hard_state(term: u64) -> PersistOp {
        PersistOp::HardState {
            term,
            voted_for: None,
            recovering: false,
        }
    }

    /// A log file of three hard-state records; returns the bytes and each record's offset.
    fn three_records() -> (Vec<u8>, Vec<u64>) {
        let mut bytes = encode_file_header(WAL_MAGIC, LogPosition::default()).to_vec();
        let mut offsets = Vec::new();
        for term in 1..=3 {
            offsets.push(bytes.len() as u64);
            encode_op_record(&hard_state(term), &mut bytes);
        }
        (bytes, offsets)
    }

    #[test]
    fn the_scan_finds_the_record_after_a_damaged_one_and_nothing_in_a_torn_tail() {
        let directory = TestDirectory::new("scan");
        let path = directory.path().join("wal");
        let (mut bytes, offsets) = three_records();
        bytes[offsets[1] as usize + RECORD_HEADER_BYTES] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let end = bytes.len() as u64;
        assert_eq!(
            find_valid_record(&path, &file, offsets[1] + 1, end).unwrap(),
            Some(offsets[2])
        );
        assert_eq!(
            find_valid_record(&path, &file, offsets[2] + 1, end).unwrap(),
            None
        );

        let error = replay_log(&path, false).unwrap_err();
        assert!(
            matches!(error, StorageError::CorruptRecord { offset, next_valid_offset, .. }
                if offset == offsets[1] && next_valid_offset == offsets[2]),
            "{error}"
        );
    }

    /// A caller that can repair from peers gets damage in the middle back as a cut, with where
    /// the next valid record starts, instead of a refusal.
    #[test]
    fn with_repair_damage_in_the_middle_is_reported_for_a_cut_not_refused() {
        let directory = TestDirectory::new("repair-cut");
        let path = directory.path().join("wal");
        let (mut bytes, offsets) = three_records();
        let append = PersistOp::Append {
            first_index: 1,
            entries: vec![
                crate::node::Entry {
                    term: 3,
                    command: crate::node::Command::Noop
                };
                4
            ],
        };
        encode_op_record(&append, &mut bytes);
        bytes[offsets[1] as usize + RECORD_HEADER_BYTES] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let replayed = replay_log(&path, true).unwrap();
        assert_eq!(replayed.end_offset, offsets[1]);
        assert!(matches!(
            replayed.tail,
            Some(Damage::ChecksumMismatch { .. })
        ));
        assert_eq!(replayed.next_valid_offset, Some(offsets[2]));
        assert_eq!(replayed.dropped_through_index, Some(4));
        assert_eq!(replayed.state.term, 1, "the state before the damage");
        // A length beyond the maximum is damage too, when it can be repaired.
        bytes[offsets[1] as usize..offsets[1] as usize + 4].copy_from_slice(&[0xff; 4]);
        std::fs::write(&path, &bytes).unwrap();
        let replayed = replay_log(&path, true).unwrap();
        assert!(matches!(replayed.tail, Some(Damage::LengthTooLong { .. })));
        assert!(matches!(
            replay_log(&path, false).unwrap_err(),
            StorageError::RecordTooLong { .. }
        ));
    }

    /// Zeros after the last record are space preallocated for appends: the log ends cleanly
    /// there, with no tail to truncate.
    #[test]
    fn a_zero_filled_tail_is_preallocated_space_not_a_torn_tail() {
        let directory = TestDirectory::new("zeros");
        let path = directory.path().join("wal");
        let (mut bytes, _) = three_records();
        let end_offset = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let replayed = replay_log(&path, false).unwrap();
        assert_eq!(replayed.end_offset, end_offset);
        assert_eq!(replayed.tail, None);
        assert_eq!(replayed.state.term, 3);
    }

    /// A torn record in preallocated space is still a torn tail: something non-zero follows
    /// the last valid record.
    #[test]
    fn a_torn_record_followed_by_zeros_is_a_torn_tail() {
        let directory = TestDirectory::new("torn-then-zeros");
        let path = directory.path().join("wal");
        let (mut bytes, _) = three_records();
        let end_offset = bytes.len() as u64;
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let replayed = replay_log(&path, false).unwrap();
        assert_eq!(replayed.end_offset, end_offset);
        assert!(replayed.tail.is_some());
    }

    #[test]
    fn a_valid_frame_of_undecodable_bytes_is_refused_not_truncated() {
        let directory = TestDirectory::new("undecodable");
        let path = directory.path().join("wal");
        let (mut bytes, _) = three_records();
        let offset = bytes.len() as u64;
        encode_record(b"{\"not\":\"an op\"}", &mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let error = replay_log(&path, false).unwrap_err();
        assert!(
            matches!(error, StorageError::UndecodableRecord { offset: at, .. } if at == offset),
            "{error}"
        );
    }
}
