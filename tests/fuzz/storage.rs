//! Fuzz targets for what a server reads from its data directory: the write-ahead log and the
//! snapshot, through [`Wal::open`], the one way a server reads them.
//!
//! The oracle knows what was written: the valid inputs are written through the storage API,
//! so every byte offset of every record is known, and so is the state each prefix of the log
//! replays to.

use crate::common::{append, noop, preempt as entry, vote};
use crate::harness::{self, Applied, Materialized, ScratchDirectory, Target};
use lockstep::node::{DurableState, Entry, PersistOp, ServerId};
use lockstep::storage::format::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES, decode_record_header};
use lockstep::storage::hard_state::HARD_STATE_FILE_NAME;
use lockstep::storage::{
    LOG_FILE_NAME, Recovery, RecoveryWarning, SNAPSHOT_FILE_NAME, Snapshot, StorageError, Wal,
};
use std::fs;
use std::path::Path;

/// The operation sequences of the valid logs: a follower whose suffix a new leader replaces
/// (Raft §5.3), a lone vote, and a run of one-entry appends.
fn histories() -> Vec<Vec<PersistOp>> {
    let follower = vec![
        vote(1, 2),
        append(1, vec![noop(1), entry(1, 1, "a"), entry(1, 2, "b")]),
        vote(2, 3),
        append(4, vec![noop(2), entry(2, 3, "c")]),
        vote(3, 1),
        append(3, vec![noop(3), entry(3, 4, "d\u{e9}\n")]),
    ];
    let lone_vote = vec![PersistOp::HardState {
        term: 7,
        voted_for: None,
        recovering: false,
    }];
    let mut appends = vec![vote(2, 1)];
    for index in 1..=8 {
        appends.push(append(index, vec![entry(2, index, "lock")]));
    }
    vec![follower, lone_vote, appends]
}

/// One valid log: its file's bytes, where each record starts, and the state after each prefix.
struct ValidLog {
    bytes: Vec<u8>,
    /// `offsets[k]` is where record `k` starts; the last element is the file's length.
    offsets: Vec<usize>,
    /// `prefix_states[k]`: the state after the first `k` records.
    prefix_states: Vec<DurableState>,
    /// The snapshot file the log follows, if its base is not 0.
    snapshot: Option<Vec<u8>>,
}

impl ValidLog {
    fn records(&self) -> usize {
        self.offsets.len() - 1
    }

    /// How many records lie wholly before `offset`.
    fn records_before(&self, offset: usize) -> usize {
        self.offsets[1..]
            .iter()
            .take_while(|&&end| end <= offset)
            .count()
    }
}

/// Writes `ops` through [`Wal`], one append each, and reads the file back.
fn write_valid_log(directory: &Path, ops: &[PersistOp]) -> ValidLog {
    let _ = fs::remove_file(directory.join(LOG_FILE_NAME));
    let _ = fs::remove_file(directory.join(HARD_STATE_FILE_NAME));
    let (mut wal, _) = Wal::open(directory).expect("fuzz: open a fresh log");
    for op in ops {
        wal.append(std::slice::from_ref(op))
            .expect("fuzz: a valid history appends");
    }
    wal.sync().expect("fuzz: sync");
    drop(wal);
    let bytes = fs::read(directory.join(LOG_FILE_NAME)).expect("fuzz: read the log back");
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len() - 1, ops.len(), "fuzz: one record per append");
    let mut prefix_states = vec![DurableState::default()];
    for op in ops {
        let mut next = prefix_states.last().unwrap().clone();
        next.apply(op);
        prefix_states.push(next);
    }
    ValidLog {
        bytes,
        offsets,
        prefix_states,
        snapshot: None,
    }
}

/// Where each record of a valid log file starts, and its length at the end.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = vec![FILE_HEADER_BYTES];
    while *offsets.last().unwrap() < bytes.len() {
        let at = *offsets.last().unwrap();
        let header = bytes[at..at + RECORD_HEADER_BYTES].try_into().unwrap();
        let (length, _) = decode_record_header(header);
        offsets.push(at + RECORD_HEADER_BYTES + length as usize);
    }
    assert_eq!(*offsets.last().unwrap(), bytes.len(), "fuzz: whole records");
    offsets
}

/// A log compacted after a snapshot at index 5 (its base), with entries appended after it.
/// The state after each prefix of its records is what opening that clean prefix beside the
/// snapshot gives; the whole log's state is checked against the entries written.
fn write_valid_log_after_snapshot(directory: &Path) -> ValidLog {
    let (snapshot, _, _, _) = write_valid_snapshot(directory);
    let (mut wal, _) = Wal::open(directory).expect("fuzz: reopen after the snapshot");
    let later: Vec<Entry> = (9..=12).map(|client| entry(3, client, "after")).collect();
    wal.append(&[vote(3, 2), append(9, later.clone())])
        .expect("fuzz: appends after the snapshot");
    wal.append(&[append(12, vec![noop(3)])])
        .expect("fuzz: a suffix replaced after the snapshot");
    wal.sync().expect("fuzz: sync");
    drop(wal);
    let bytes = fs::read(directory.join(LOG_FILE_NAME)).expect("fuzz: read the log back");
    let offsets = record_offsets(&bytes);
    let prefix_states: Vec<DurableState> = offsets
        .iter()
        .map(|&end| {
            let (_, recovery) = open_with_files(directory, &bytes[..end], Some(&snapshot))
                .expect("fuzz: a clean prefix of the log opens");
            assert!(recovery.warnings.is_empty(), "fuzz: a clean prefix warns");
            recovery.state
        })
        .collect();
    let whole = prefix_states.last().unwrap();
    let after_base: Vec<Entry> = whole.log.iter().map(|(_, entry)| entry.clone()).collect();
    let expected: Vec<Entry> = [
        entry(2, 6, "lock"),
        entry(2, 7, "lock"),
        entry(2, 8, "lock"),
    ]
    .into_iter()
    .chain(later[..3].iter().cloned())
    .chain([noop(3)])
    .collect();
    assert_eq!(after_base, expected, "fuzz: the entries after the snapshot");
    assert_eq!((whole.term, whole.voted_for), (3, Some(ServerId(2))));
    ValidLog {
        bytes,
        offsets,
        prefix_states,
        snapshot: Some(snapshot),
    }
}

/// Opens `directory` after writing `log` (and `snapshot`, or removing it) as its files. The
/// hard-state file is removed, so that what is judged is the log reader alone (its second copy
/// of term and vote, and its merge with the log's, are `tests/wal.rs`'s stories).
fn open_with_files(
    directory: &Path,
    log: &[u8],
    snapshot: Option<&[u8]>,
) -> Result<(Wal, Recovery), StorageError> {
    fs::write(directory.join(LOG_FILE_NAME), log).expect("fuzz: write the log");
    let _ = fs::remove_file(directory.join(HARD_STATE_FILE_NAME));
    let snapshot_path = directory.join(SNAPSHOT_FILE_NAME);
    match snapshot {
        Some(bytes) => fs::write(&snapshot_path, bytes).expect("fuzz: write the snapshot"),
        None => {
            let _ = fs::remove_file(&snapshot_path);
        }
    }
    Wal::open(directory)
}

/// The first byte offset where `mutated` differs from `original` (a prefix differs at its end).
fn first_difference(original: &[u8], mutated: &[u8]) -> usize {
    let common = original.len().min(mutated.len());
    let same = original
        .iter()
        .zip(mutated)
        .take_while(|(a, b)| a == b)
        .count();
    if same == common && original.len() == mutated.len() {
        usize::MAX
    } else {
        same
    }
}

/// A recovered log must reopen as itself: the repair is durable and nothing is left to repair.
fn check_reopen(directory: &Path, recovery: &Recovery) -> Result<(), String> {
    let (_, again) = Wal::open(directory).map_err(|error| format!("reopen failed: {error}"))?;
    if !again.warnings.is_empty() {
        return Err(format!("reopen warned again: {:?}", again.warnings));
    }
    if again.state != recovery.state {
        return Err(format!(
            "reopen gave {:?}, first open {:?}",
            again.state, recovery.state
        ));
    }
    Ok(())
}

fn names_file(error: &StorageError, path: &Path) -> Result<(), String> {
    let shown = error.to_string();
    if shown.starts_with(&format!("{}: ", path.display())) {
        Ok(())
    } else {
        Err(format!(
            "the error does not start with the file's name {path:?}: {shown}"
        ))
    }
}

/// What a mutated log must do, given where the first changed byte is: every record before it
/// is recovered exactly; the first record touched ends the log (a torn tail, truncated with a
/// warning at its offset) or is refused at its offset; nothing after it is ever recovered.
fn check_mutated_log(
    directory: &Path,
    valid: &ValidLog,
    materialized: &Materialized,
) -> Result<(), String> {
    let log_path = directory.join(LOG_FILE_NAME);
    let mutated = &materialized.bytes;
    let changed_at = first_difference(&valid.bytes, mutated);
    let result = open_with_files(directory, mutated, valid.snapshot.as_deref());
    if changed_at < FILE_HEADER_BYTES {
        return match result {
            Ok((_, recovery)) => Err(format!("a damaged header was accepted: {recovery:?}")),
            Err(
                ref error @ (StorageError::BadMagic { .. }
                | StorageError::UnsupportedVersion { .. }
                | StorageError::HeaderCorrupt { .. }),
            ) => names_file(error, &log_path),
            Err(other) => Err(format!("a damaged header gave another error: {other}")),
        };
    }
    let intact = valid.records_before(changed_at);
    let damaged_offset = valid.offsets[intact];
    match result {
        Ok((wal, recovery)) => {
            drop(wal);
            check_recovered_prefix(valid, mutated, intact, &recovery)?;
            check_reopen(directory, &recovery)
        }
        Err(error) => {
            names_file(&error, &log_path)?;
            check_refusal(&error, damaged_offset, mutated.len())
        }
    }
}

fn check_recovered_prefix(
    valid: &ValidLog,
    mutated: &[u8],
    intact: usize,
    recovery: &Recovery,
) -> Result<(), String> {
    if recovery.state != valid.prefix_states[intact] {
        return Err(format!(
            "recovered {:?}, but only the first {intact} records are intact: expected {:?}",
            recovery.state, valid.prefix_states[intact]
        ));
    }
    let end = valid.offsets[intact];
    let rest = &mutated[end.min(mutated.len())..];
    let expected_warning = !rest.is_empty() && rest.iter().any(|&byte| byte != 0);
    match recovery.warnings.as_slice() {
        [] if !expected_warning => Ok(()),
        [
            RecoveryWarning::TruncatedTail {
                offset,
                bytes_dropped,
                ..
            },
        ] if expected_warning && *offset == end as u64 && *bytes_dropped == rest.len() as u64 => {
            Ok(())
        }
        warnings => Err(format!(
            "expected {} torn tail at offset {end} of {} bytes, got {warnings:?}",
            if expected_warning { "a" } else { "no" },
            rest.len()
        )),
    }
}

/// A refused log names the first damaged record's offset, and a valid record after it.
fn check_refusal(error: &StorageError, damaged_offset: usize, length: usize) -> Result<(), String> {
    match *error {
        StorageError::CorruptRecord {
            offset,
            next_valid_offset,
            ..
        } if offset == damaged_offset as u64
            && next_valid_offset > offset
            && next_valid_offset < length as u64 =>
        {
            Ok(())
        }
        StorageError::RecordTooLong { offset, .. } if offset == damaged_offset as u64 => Ok(()),
        _ => Err(format!(
            "expected a refusal at the first damaged record (offset {damaged_offset}), got {error}"
        )),
    }
}

/// What exactly one edit must do: a truncation is a torn tail, always recovered; a flipped or
/// overwritten byte in any record but the last is corruption in the middle, always refused.
fn check_single_edit(
    valid: &ValidLog,
    applied: Applied,
    result: &Result<Recovery, String>,
) -> Result<(), String> {
    match applied {
        Applied::Truncate { at } if at >= FILE_HEADER_BYTES => match result {
            Ok(_) => Ok(()),
            Err(error) => Err(format!("a log truncated at {at} was refused: {error}")),
        },
        Applied::FlipBit { at } | Applied::Overwrite { at } if at >= FILE_HEADER_BYTES => {
            let record = valid.records_before(at);
            let last = record + 1 == valid.records();
            match result {
                Ok(recovery) if !last && recovery.warnings.is_empty() => Ok(()),
                Ok(recovery) if !last => Err(format!(
                    "a damaged record {record} of {} was cut off as a torn tail: {:?}",
                    valid.records(),
                    recovery.warnings
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Any log at all: no panic, an error names the log, and whatever is recovered holds only
/// entries that some valid log holds, and reopens as itself.
fn check_any_log(
    directory: &Path,
    valid_entries: &[Entry],
    bytes: &[u8],
    snapshot: Option<&[u8]>,
) -> Result<(), String> {
    let log_path = directory.join(LOG_FILE_NAME);
    match open_with_files(directory, bytes, snapshot) {
        Ok((wal, recovery)) => {
            drop(wal);
            for (index, entry) in recovery.state.log.iter() {
                if !valid_entries.contains(entry) {
                    return Err(format!(
                        "recovered entry {index} was never written: {entry:?}"
                    ));
                }
            }
            check_reopen(directory, &recovery)
        }
        Err(error) => names_file(&error, &log_path),
    }
}

#[test]
fn wal_reader() {
    let directory = ScratchDirectory::new("wal");
    let mut valid: Vec<ValidLog> = histories()
        .iter()
        .map(|ops| write_valid_log(directory.path(), ops))
        .collect();
    valid.push(write_valid_log_after_snapshot(directory.path()));
    let corpus: Vec<Vec<u8>> = valid.iter().map(|log| log.bytes.clone()).collect();
    let valid_entries: Vec<Entry> = valid
        .iter()
        .flat_map(|log| log.prefix_states.iter())
        .flat_map(|state| state.log.iter().map(|(_, entry)| entry.clone()))
        .collect();
    check_every_truncation(directory.path(), &valid);
    let target = Target {
        name: "wal_reader",
        corpus: &corpus,
        random_bytes_max: 256,
        random_prefix: &corpus[0][..FILE_HEADER_BYTES],
        dictionary: &[],
    };
    harness::fuzz(&target, |_, materialized| {
        let snapshot = materialized
            .base
            .and_then(|base| valid[base].snapshot.as_deref());
        check_any_log(
            directory.path(),
            &valid_entries,
            &materialized.bytes,
            snapshot,
        )?;
        let Some(base) = materialized.base else {
            return Ok(());
        };
        if materialized.spliced() {
            return Ok(());
        }
        check_mutated_log(directory.path(), &valid[base], materialized)?;
        if let Some(applied) = materialized.single() {
            let snapshot = valid[base].snapshot.as_deref();
            let result = open_with_files(directory.path(), &materialized.bytes, snapshot)
                .map(|(_, recovery)| recovery)
                .map_err(|error| error.to_string());
            check_single_edit(&valid[base], applied, &result)?;
        }
        Ok(())
    });
}

/// A torn tail at every byte offset of every valid log recovers exactly the whole records
/// before it (not sampled: every offset).
fn check_every_truncation(directory: &Path, valid: &[ValidLog]) {
    for log in valid {
        for at in FILE_HEADER_BYTES..=log.bytes.len() {
            let materialized = Materialized {
                bytes: log.bytes[..at].to_vec(),
                base: None,
                applied: vec![Applied::Truncate { at }],
            };
            let outcome = check_mutated_log(directory, log, &materialized).and_then(|()| {
                let result =
                    open_with_files(directory, &materialized.bytes, log.snapshot.as_deref())
                        .map(|(_, recovery)| recovery)
                        .map_err(|error| error.to_string());
                check_single_edit(log, Applied::Truncate { at }, &result)
            });
            if let Err(failure) = outcome {
                panic!(
                    "a log truncated at {at}: {failure}\ninput (hex): {}",
                    harness::hex(&materialized.bytes)
                );
            }
        }
    }
}

/// A data directory after a snapshot and compaction: the snapshot file and the log after it.
fn write_valid_snapshot(directory: &Path) -> (Vec<u8>, Vec<u8>, Snapshot, DurableState) {
    let _ = fs::remove_file(directory.join(LOG_FILE_NAME));
    let _ = fs::remove_file(directory.join(SNAPSHOT_FILE_NAME));
    let _ = fs::remove_file(directory.join(HARD_STATE_FILE_NAME));
    let (mut wal, _) = Wal::open(directory).expect("fuzz: open a fresh log");
    for op in &histories()[2] {
        wal.append(std::slice::from_ref(op))
            .expect("fuzz: a valid history appends");
    }
    wal.write_snapshot(b"{\"locks\":{\"lock\":[5,50]}}", 5, 2)
        .expect("fuzz: write a snapshot");
    drop(wal);
    let (_, recovery) = Wal::open(directory).expect("fuzz: reopen after the snapshot");
    let snapshot = recovery.snapshot.expect("fuzz: the snapshot was written");
    let log = fs::read(directory.join(LOG_FILE_NAME)).expect("fuzz: read the log");
    let file = fs::read(directory.join(SNAPSHOT_FILE_NAME)).expect("fuzz: read the snapshot");
    (file, log, snapshot, recovery.state)
}

#[test]
fn snapshot_reader() {
    let directory = ScratchDirectory::new("snapshot");
    let (file, log, snapshot, state) = write_valid_snapshot(directory.path());
    let snapshot_path = directory.path().join(SNAPSHOT_FILE_NAME);
    let corpus = vec![file.clone()];
    let target = Target {
        name: "snapshot_reader",
        corpus: &corpus,
        random_bytes_max: 128,
        random_prefix: &file[..FILE_HEADER_BYTES + RECORD_HEADER_BYTES],
        dictionary: &[],
    };
    harness::fuzz(&target, |_, materialized| {
        // The log is the valid one that follows the snapshot: anything refused is refused for
        // the snapshot's sake, and must say so.
        match open_with_files(directory.path(), &log, Some(&materialized.bytes)) {
            Ok((_, recovery)) if recovery.snapshot.as_ref() == Some(&snapshot) => {
                if recovery.state != state || !recovery.warnings.is_empty() {
                    return Err(format!("the log after the snapshot changed: {recovery:?}"));
                }
                if materialized.bytes != file {
                    return Err("a changed snapshot file was read back as the original".into());
                }
                Ok(())
            }
            Ok((_, recovery)) => Err(format!(
                "a damaged snapshot was accepted as {:?}",
                recovery.snapshot
            )),
            Err(error) => names_file(&error, &snapshot_path),
        }
    });
}
