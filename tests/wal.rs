//! Stories of a server's write-ahead log: what a restart remembers, what a crash at a bad moment
//! leaves behind, and how damage is told apart. A server alone (`Wal::open`, no peers): a torn
//! tail is cut off with a warning, damage in the middle refuses to start and says where. A
//! server with peers (`WalOptions::for_server(3)`): any damage cuts the log and starts a repair
//! from peers, with the vote kept in the hard-state file.
//!
//! Each story runs in its own scratch directory under `std::env::temp_dir()`, removed when the
//! story ends, also when it fails.

mod common;

use common::{append, noop, preempt, vote};
use lockstep::node::{DurableState, PersistOp, ServerId};
use lockstep::storage::format::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};
use lockstep::storage::hard_state::{HARD_STATE_FILE_NAME, HardStateRead, read_hard_state};
use lockstep::storage::{
    Damage, LOG_FILE_NAME, LOG_TEMPORARY_FILE_NAME, LogPosition, OpViolation, Recovery,
    RecoveryWarning, SNAPSHOT_FILE_NAME, SNAPSHOT_TEMPORARY_FILE_NAME, StorageError, Wal,
    WalOptions,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A scratch data directory, removed on drop.
struct DataDirectory {
    path: PathBuf,
}

impl DataDirectory {
    fn new(story: &str) -> DataDirectory {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("lockstep-wal-{story}-{}-{unique}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&path);
        DataDirectory { path }
    }

    fn log(&self) -> PathBuf {
        self.path.join(LOG_FILE_NAME)
    }
}

impl Drop for DataDirectory {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What the simulator's disk holds after `ops`: the state a reopened log must equal.
fn simulated_disk(ops: &[PersistOp]) -> DurableState {
    let mut disk = DurableState::default();
    for op in ops {
        disk.apply(op);
    }
    disk
}

/// A follower's life: it votes, takes entries, and has a conflicting suffix replaced by a new
/// leader (Raft §5.3).
fn a_followers_life() -> Vec<PersistOp> {
    vec![
        vote(1, 2),
        append(1, vec![noop(1), preempt(1, 1, "a"), preempt(1, 2, "b")]),
        vote(2, 3),
        append(4, vec![noop(2), preempt(2, 3, "c")]),
        vote(3, 1),
        append(3, vec![noop(3), preempt(3, 4, "d")]),
    ]
}

fn open(directory: &DataDirectory) -> (Wal, Recovery) {
    Wal::open(&directory.path).unwrap_or_else(|error| panic!("open failed: {error}"))
}

/// Opens, writes `ops` one record each, syncs, and closes: a server that ran and stopped.
fn run_and_stop(directory: &DataDirectory, ops: &[PersistOp]) {
    let (mut wal, _) = open(directory);
    for op in ops {
        wal.append(std::slice::from_ref(op)).unwrap();
    }
    wal.sync().unwrap();
}

/// Offsets and payload lengths of the records in a log file, read by the documented format.
fn records_of(path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut records = Vec::new();
    let mut offset = FILE_HEADER_BYTES;
    while offset < bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        records.push((offset as u64, length as u64));
        offset += RECORD_HEADER_BYTES + length;
    }
    assert_eq!(offset, bytes.len(), "the test reads whole records");
    records
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn file_length(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn open_error(directory: &DataDirectory) -> StorageError {
    match Wal::open(&directory.path) {
        Ok((_, recovery)) => panic!("expected open to fail, it recovered {recovery:?}"),
        Err(error) => error,
    }
}

#[test]
fn a_restarted_server_remembers_its_term_vote_and_log() {
    let directory = DataDirectory::new("restart");
    let (_, recovery) = open(&directory);
    assert!(recovery.created, "the first open creates the log");
    assert_eq!(recovery.state, DurableState::default());

    let ops = a_followers_life();
    run_and_stop(&directory, &ops);
    let (wal, recovery) = open(&directory);
    assert!(!recovery.created);
    assert_eq!(recovery.warnings, vec![]);
    assert_eq!(recovery.log_base, LogPosition::default());
    assert_eq!(recovery.snapshot, None);
    assert_eq!(recovery.state, simulated_disk(&ops));
    assert_eq!(recovery.state.term, 3);
    assert_eq!(recovery.state.voted_for, Some(ServerId(1)));
    assert_eq!(
        recovery.state.log.last_index(),
        4,
        "the conflicting suffix was replaced"
    );
    assert_eq!(wal.last_index(), 4);
}

#[test]
fn group_commit_makes_many_appends_durable_with_one_sync() {
    let directory = DataDirectory::new("group-commit");
    let (mut wal, _) = open(&directory);
    let mut ops = vec![vote(1, 1)];
    for index in 1..=200 {
        ops.push(append(index, vec![preempt(1, index, "lock")]));
    }
    for op in &ops {
        wal.append(std::slice::from_ref(op)).unwrap();
    }
    assert!(wal.unsynced_bytes() > 0, "appends alone are not durable");
    wal.sync().unwrap();
    assert_eq!(
        wal.unsynced_bytes(),
        0,
        "one sync covers every append before it"
    );
    drop(wal);

    let (_, recovery) = open(&directory);
    assert_eq!(recovery.state, simulated_disk(&ops));
    assert_eq!(recovery.state.log.last_index(), 200);
}

#[test]
fn a_torn_final_record_is_cut_off_with_a_warning_and_the_rest_survives() {
    let directory = DataDirectory::new("torn-tail");
    let ops = a_followers_life();
    run_and_stop(&directory, &ops);
    let log = directory.log();
    let (last_offset, last_length) = *records_of(&log).last().unwrap();
    let torn_length = file_length(&log) - 3;
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(torn_length)
        .unwrap();

    let (mut wal, recovery) = open(&directory);
    let bytes_dropped = RECORD_HEADER_BYTES as u64 + last_length - 3;
    assert_eq!(
        recovery.warnings,
        vec![RecoveryWarning::TruncatedTail {
            path: log.clone(),
            offset: last_offset,
            bytes_dropped,
            damage: Damage::PastEndOfFile {
                length_bytes: last_length
            },
        }]
    );
    let warning = recovery.warnings[0].to_string();
    assert!(warning.contains(&log.display().to_string()), "{warning}");
    assert!(
        warning.contains(&format!("offset {last_offset}")),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("{bytes_dropped} bytes dropped")),
        "{warning}"
    );
    let survivors = &ops[..ops.len() - 1];
    assert_eq!(recovery.state, simulated_disk(survivors));
    assert_eq!(
        file_length(&log),
        last_offset,
        "the torn record is gone from the file"
    );

    // The server carries on: it appends again, and that survives another restart.
    let later = [vote(4, 2), append(5, vec![noop(4)])];
    wal.append(&later).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(&directory);
    assert_eq!(recovery.warnings, vec![]);
    assert_eq!(
        recovery.state,
        simulated_disk(&[survivors, &later].concat())
    );
}

#[test]
fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
    let directory = DataDirectory::new("flipped-last");
    let ops = a_followers_life();
    run_and_stop(&directory, &ops);
    let log = directory.log();
    let (last_offset, _) = *records_of(&log).last().unwrap();
    flip_byte(&log, last_offset + RECORD_HEADER_BYTES as u64 + 5);

    let (_, recovery) = open(&directory);
    assert!(
        matches!(
            recovery.warnings.as_slice(),
            [RecoveryWarning::TruncatedTail { offset, damage: Damage::ChecksumMismatch { .. }, .. }]
                if *offset == last_offset
        ),
        "{:?}",
        recovery.warnings
    );
    assert_eq!(recovery.state, simulated_disk(&ops[..ops.len() - 1]));
}

#[test]
fn a_flipped_byte_in_a_middle_record_refuses_to_start_naming_file_and_offset() {
    let directory = DataDirectory::new("flipped-middle");
    run_and_stop(&directory, &a_followers_life());
    let log = directory.log();
    let records = records_of(&log);
    let (middle_offset, _) = records[3];
    let (next_offset, _) = records[4];
    flip_byte(&log, middle_offset + RECORD_HEADER_BYTES as u64 + 2);
    let length_before = file_length(&log);

    let error = open_error(&directory);
    let StorageError::CorruptRecord {
        path,
        offset,
        next_valid_offset,
        ..
    } = &error
    else {
        panic!("expected CorruptRecord, got: {error}");
    };
    assert_eq!(
        (path, *offset, *next_valid_offset),
        (&log, middle_offset, next_offset)
    );
    let message = error.to_string();
    assert!(message.contains(&log.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte offset {middle_offset}")),
        "{message}"
    );
    assert_eq!(
        file_length(&log),
        length_before,
        "a refused log is left untouched"
    );
}

#[test]
fn a_damaged_length_in_the_middle_refuses_to_start() {
    let directory = DataDirectory::new("middle-length");
    run_and_stop(&directory, &a_followers_life());
    let log = directory.log();
    let (second_offset, _) = records_of(&log)[1];
    flip_byte(&log, second_offset);

    let error = open_error(&directory);
    assert!(
        matches!(&error, StorageError::CorruptRecord { offset, .. } if *offset == second_offset),
        "{error}"
    );
}

#[test]
fn a_file_from_another_program_or_version_is_refused_clearly() {
    let directory = DataDirectory::new("wrong-header");
    run_and_stop(&directory, &a_followers_life());
    let log = directory.log();
    let original = fs::read(&log).unwrap();

    fs::write(&log, b"{\"some\": \"json config\"}\n").unwrap();
    let error = open_error(&directory);
    assert!(matches!(error, StorageError::BadMagic { .. }), "{error}");
    assert!(
        error.to_string().contains("not a lockstep log file"),
        "{error}"
    );

    let mut later_version = original.clone();
    later_version[8..12].copy_from_slice(&7u32.to_le_bytes());
    fs::write(&log, &later_version).unwrap();
    let error = open_error(&directory);
    assert!(
        matches!(
            error,
            StorageError::UnsupportedVersion {
                found: 7,
                supported: 1,
                ..
            }
        ),
        "{error}"
    );

    let mut damaged_header = original;
    damaged_header[14] ^= 0x01;
    fs::write(&log, &damaged_header).unwrap();
    let error = open_error(&directory);
    assert!(
        matches!(error, StorageError::HeaderCorrupt { .. }),
        "{error}"
    );
}

#[test]
fn a_record_length_beyond_the_maximum_is_refused_without_allocating() {
    let directory = DataDirectory::new("too-long");
    run_and_stop(&directory, &a_followers_life());
    let log = directory.log();
    let (first_offset, _) = records_of(&log)[0];
    let mut bytes = fs::read(&log).unwrap();
    let start = first_offset as usize;
    bytes[start..start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&log, &bytes).unwrap();

    let started = Instant::now();
    let error = open_error(&directory);
    assert!(
        matches!(
            error,
            StorageError::RecordTooLong { offset, length_bytes, length_bytes_max, .. }
                if offset == first_offset
                    && length_bytes == u64::from(u32::MAX)
                    && length_bytes_max == u64::from(RECORD_PAYLOAD_BYTES_MAX)
        ),
        "{error}"
    );
    // Four gibibytes were never allocated, let alone zeroed.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_snapshot_round_trips_and_survives_a_restart() {
    let directory = DataDirectory::new("snapshot");
    let (mut wal, _) = open(&directory);
    wal.append(&a_followers_life()).unwrap();
    assert_eq!(wal.load_snapshot().unwrap(), None);
    wal.write_snapshot(b"the lock table at 3", 3, 3).unwrap();
    let snapshot = wal
        .load_snapshot()
        .unwrap()
        .expect("a snapshot was written");
    assert_eq!(snapshot.data, b"the lock table at 3");
    assert_eq!(snapshot.last_included, LogPosition { index: 3, term: 3 });
    drop(wal);

    let (wal, recovery) = open(&directory);
    assert_eq!(recovery.snapshot, Some(snapshot));
    assert_eq!(recovery.log_base, LogPosition { index: 3, term: 3 });
    assert_eq!(wal.log_base(), recovery.log_base);
}

#[test]
fn compaction_keeps_the_state_equal_after_reopen() {
    let directory = DataDirectory::new("compaction");
    let mut ops = vec![vote(1, 1)];
    for index in 1..=100 {
        ops.push(append(index, vec![preempt(1 + index / 50, index, "lock")]));
    }
    ops.push(vote(3, 2));
    run_and_stop(&directory, &ops);
    let full = simulated_disk(&ops);
    let log_bytes_before = file_length(&directory.log());

    let (mut wal, _) = open(&directory);
    let cut_term = full.log.term_at(60).unwrap();
    wal.write_snapshot(b"locks up to 60", 60, cut_term).unwrap();
    assert_eq!(wal.last_index(), 100);
    drop(wal);
    assert!(
        file_length(&directory.log()) < log_bytes_before / 2,
        "the log shrank"
    );

    let (mut wal, recovery) = open(&directory);
    assert_eq!(recovery.warnings, vec![]);
    assert_eq!(
        recovery.log_base,
        LogPosition {
            index: 60,
            term: cut_term
        }
    );
    assert_eq!(
        (recovery.state.term, recovery.state.voted_for),
        (3, Some(ServerId(2)))
    );
    // Entry k of the recovered log is global entry 60 + k.
    assert_eq!(
        recovery.state.log.entries_from(1, 100),
        full.log.entries_from(61, 100)
    );

    // Appends carry on in global indexes; nothing the snapshot covers can be rewritten.
    let rejected = wal.append(&[append(60, vec![noop(3)])]).unwrap_err();
    assert!(
        matches!(
            rejected,
            StorageError::OpRejected {
                position: 0,
                violation: OpViolation::AppendIntoSnapshot {
                    first_index: 60,
                    base_index: 60
                }
            }
        ),
        "{rejected}"
    );
    wal.append(&[append(90, vec![noop(3)])]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovery) = open(&directory);
    assert_eq!(recovery.state.log.last_index(), 30);
    assert_eq!(recovery.state.log.term_at(30), Some(3));
}

/// Raft §7: a snapshot from the leader that the log disagrees with replaces the whole log, and
/// the follower carries on appending after it.
#[test]
fn a_snapshot_that_conflicts_with_the_log_replaces_it_whole() {
    let directory = DataDirectory::new("conflicting-snapshot");
    let (mut wal, _) = open(&directory);
    wal.append(&a_followers_life()).unwrap();
    // The log holds terms [1, 1, 3, 3]; the leader's snapshot says entry 3 has term 4.
    wal.write_snapshot(b"leader's lock table", 3, 4).unwrap();
    assert_eq!((wal.log_base().index, wal.last_index()), (3, 3));
    wal.append(&[vote(5, 4), append(4, vec![noop(5)])]).unwrap();
    wal.sync().unwrap();
    drop(wal);

    let (_, recovery) = open(&directory);
    assert_eq!(recovery.warnings, vec![]);
    assert_eq!(recovery.log_base, LogPosition { index: 3, term: 4 });
    assert_eq!(recovery.state.term, 5);
    assert_eq!(recovery.state.log.entries_from(1, 10), vec![noop(5)]);
}

#[test]
fn a_crash_before_the_snapshot_rename_leaves_the_old_state_loadable() {
    let directory = DataDirectory::new("stray-temporary");
    let ops = a_followers_life();
    let (mut wal, _) = open(&directory);
    wal.append(&ops).unwrap();
    wal.write_snapshot(b"old snapshot", 2, 1).unwrap();
    drop(wal);
    let (_, before) = open(&directory);

    // The crash: a new snapshot and a rewritten log were written but never renamed.
    let stray_snapshot = directory.path.join(SNAPSHOT_TEMPORARY_FILE_NAME);
    fs::write(&stray_snapshot, b"LSTEPSNP half of a newer snapshot").unwrap();
    let stray_log = directory.path.join(LOG_TEMPORARY_FILE_NAME);
    fs::write(&stray_log, b"LSTEPWAL half").unwrap();

    let (_, after) = open(&directory);
    assert_eq!(after.state, before.state);
    assert_eq!(after.snapshot, before.snapshot);
    assert_eq!(after.snapshot.unwrap().data, b"old snapshot");
    assert_eq!(
        after.warnings,
        vec![
            RecoveryWarning::RemovedTemporaryFile {
                path: stray_log.clone(),
                length_bytes: 13
            },
            RecoveryWarning::RemovedTemporaryFile {
                path: stray_snapshot.clone(),
                length_bytes: 33
            },
        ]
    );
    assert!(!stray_snapshot.exists() && !stray_log.exists());
}

/// The snapshot was renamed into place, then the server crashed before the log was rewritten.
#[test]
fn a_crash_between_snapshot_and_log_rewrite_finishes_the_compaction_on_open() {
    let ops = a_followers_life();
    let compacted = DataDirectory::new("compacted");
    let (mut wal, _) = open(&compacted);
    wal.append(&ops).unwrap();
    wal.write_snapshot(b"snapshot at 3", 3, 3).unwrap();
    drop(wal);
    let (_, expected) = open(&compacted);

    let crashed = DataDirectory::new("crashed-mid-compaction");
    run_and_stop(&crashed, &ops);
    let snapshot_bytes = fs::read(compacted.path.join(SNAPSHOT_FILE_NAME)).unwrap();
    fs::write(crashed.path.join(SNAPSHOT_FILE_NAME), snapshot_bytes).unwrap();

    let (_, recovery) = open(&crashed);
    assert_eq!(
        recovery.warnings,
        vec![RecoveryWarning::ResumedCompaction {
            path: crashed.log(),
            snapshot: LogPosition { index: 3, term: 3 },
            entries_discarded: 0,
        }]
    );
    assert_eq!(recovery.state, expected.state);
    assert_eq!(recovery.log_base, expected.log_base);
    let (_, again) = open(&crashed);
    assert_eq!((again.warnings, again.state), (vec![], expected.state));
}

#[test]
fn a_log_that_starts_after_a_missing_snapshot_is_refused() {
    let directory = DataDirectory::new("missing-snapshot");
    let (mut wal, _) = open(&directory);
    wal.append(&a_followers_life()).unwrap();
    wal.write_snapshot(b"snapshot", 3, 3).unwrap();
    drop(wal);
    fs::remove_file(directory.path.join(SNAPSHOT_FILE_NAME)).unwrap();

    let error = open_error(&directory);
    assert!(
        matches!(error, StorageError::SnapshotMissing { base_index: 3, .. }),
        "{error}"
    );
}

#[test]
fn a_batch_that_does_not_follow_the_state_is_refused_whole() {
    let directory = DataDirectory::new("refused-batch");
    let (mut wal, _) = open(&directory);
    wal.append(&[vote(2, 1), append(1, vec![noop(2)])]).unwrap();
    let hole = wal
        .append(&[append(2, vec![noop(2)]), append(4, vec![noop(2)])])
        .unwrap_err();
    assert!(
        matches!(
            hole,
            StorageError::OpRejected {
                position: 1,
                violation: OpViolation::AppendLeavesHole {
                    first_index: 4,
                    last_index: 2
                }
            }
        ),
        "{hole}"
    );
    let back = wal.append(&[vote(1, 1)]).unwrap_err();
    assert!(matches!(back, StorageError::OpRejected { .. }), "{back}");
    wal.sync().unwrap();
    drop(wal);

    let (_, recovery) = open(&directory);
    assert_eq!(
        recovery.state,
        simulated_disk(&[vote(2, 1), append(1, vec![noop(2)])])
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let directory = DataDirectory::new("locked");
    let (_wal, _) = open(&directory);
    let error = open_error(&directory);
    assert!(
        matches!(error, StorageError::DirectoryLocked { .. }),
        "{error}"
    );
}

/// Not a test: prints synced appends per second on this machine. Run with
/// `cargo test --release --test wal -- --ignored --nocapture`. Set `LOCKSTEP_WAL_BENCH_DIR` to
/// measure a particular disk (the default is the system temporary directory).
#[test]
#[ignore]
fn measure_synced_appends_per_second() {
    let directory = match std::env::var_os("LOCKSTEP_WAL_BENCH_DIR") {
        Some(parent) => DataDirectory {
            path: PathBuf::from(parent).join(format!("lockstep-wal-bench-{}", std::process::id())),
        },
        None => DataDirectory::new("bench"),
    };
    let (mut wal, _) = open(&directory);
    let mut next_index = 1;
    let mut small_record = || {
        let op = append(next_index, vec![preempt(1, next_index, "lock-a")]);
        next_index += 1;
        op
    };
    for (batch_records, syncs) in [(1usize, 2000u32), (64, 500)] {
        let started = Instant::now();
        for _ in 0..syncs {
            for _ in 0..batch_records {
                wal.append(&[small_record()]).unwrap();
            }
            wal.sync().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let records = f64::from(syncs) * batch_records as f64;
        println!(
            "{batch_records:>3} record(s) per sync: {:>9.0} records/s, {:>7.0} syncs/s, \
             {:.3} ms per sync",
            records / seconds,
            f64::from(syncs) / seconds,
            seconds * 1000.0 / f64::from(syncs)
        );
    }
}

// ----- preallocated space -----

/// A server's log grows in preallocated zeroed chunks, so a sync writes only data. The zeros
/// after the last record are free space: a reopen recovers every record with no warning, and
/// later appends land right after the last record, not after the free space.
#[test]
fn a_preallocated_log_reopens_cleanly_and_appends_after_its_last_record() {
    let directory = DataDirectory::new("preallocated");
    let ops = a_followers_life();
    let (first, rest) = ops.split_at(3);
    let options = WalOptions::for_server(3);
    {
        let (mut wal, _) = Wal::open_with(&directory.path, options).unwrap();
        wal.append(first).unwrap();
        wal.sync().unwrap();
    }
    let path = directory.path.join(LOG_FILE_NAME);
    assert_eq!(
        file_length(&path),
        options.preallocate_bytes,
        "the file holds the records and zeros up to one chunk"
    );
    {
        let (mut wal, recovery) = Wal::open_with(&directory.path, options).unwrap();
        assert_eq!(recovery.warnings, vec![], "free space is not a torn tail");
        assert_eq!(recovery.state, simulated_disk(first));
        wal.append(rest).unwrap();
        wal.sync().unwrap();
    }
    let (_, recovery) = Wal::open_with(&directory.path, options).unwrap();
    assert_eq!(recovery.warnings, vec![]);
    assert_eq!(
        recovery.state,
        simulated_disk(&ops),
        "no record was lost or overwritten"
    );
    let (_, recovery) = open(&directory);
    assert_eq!(
        recovery.state,
        simulated_disk(&ops),
        "a log opened without preallocation reads the same"
    );
}

/// A crash in the middle of an append into preallocated space leaves part of a record and
/// then zeros: that is a torn tail, cut off with a warning like any other.
#[test]
fn a_torn_record_in_preallocated_space_is_cut_off_with_a_warning() {
    let directory = DataDirectory::new("preallocated-torn");
    let ops = a_followers_life();
    // A server alone: nobody to repair from, so a damaged tail can only be cut off.
    let options = WalOptions::for_server(1);
    {
        let (mut wal, _) = Wal::open_with(&directory.path, options).unwrap();
        wal.append(&ops).unwrap();
        wal.sync().unwrap();
    }
    let path = directory.path.join(LOG_FILE_NAME);
    let (_, recovery) = Wal::open_with(&directory.path, options).unwrap();
    assert_eq!(recovery.warnings, vec![]);
    drop(recovery);
    // Find the end of the last record, then write half a record there.
    let bytes = fs::read(&path).unwrap();
    let mut end = FILE_HEADER_BYTES;
    loop {
        let length = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        end += RECORD_HEADER_BYTES + length;
    }
    let mut torn = bytes.clone();
    torn[end..end + 6].copy_from_slice(&[50, 0, 0, 0, 7, 7]);
    fs::write(&path, &torn).unwrap();

    let (_, recovery) = Wal::open_with(&directory.path, options).unwrap();
    assert_eq!(recovery.state, simulated_disk(&ops));
    match recovery.warnings.as_slice() {
        [RecoveryWarning::TruncatedTail { offset, .. }] => assert_eq!(*offset, end as u64),
        other => panic!("one truncation expected, got {other:?}"),
    }
}

// ----- repair from peers (issue 14): a server with peers cuts damage and repairs -----

fn open_with_peers(directory: &DataDirectory) -> Result<(Wal, Recovery), StorageError> {
    Wal::open_with(&directory.path, WalOptions::for_server(3))
}

fn hard_state_sequence(directory: &DataDirectory) -> u64 {
    match read_hard_state(&directory.path).unwrap() {
        HardStateRead::Valid { sequence, .. } => sequence,
        other => panic!("expected a valid hard-state file, found {other:?}"),
    }
}

/// Record 2 of a follower's life (its vote for s3 in term 2) rots. With peers, the server does
/// not refuse: it cuts the log there, keeps entries 1-3, names what it dropped, and starts
/// repairing, durably. The vote of term 3, cut from the log, is still in the hard-state file.
/// Once the server clears the flag (its repair done), the next start is an ordinary one.
#[test]
fn with_peers_a_damaged_middle_record_cuts_the_log_and_starts_a_repair_keeping_the_vote() {
    let directory = DataDirectory::new("repair-middle");
    let ops = a_followers_life();
    run_and_stop(&directory, &ops);
    let log = directory.log();
    let records = records_of(&log);
    flip_byte(&log, records[2].0 + RECORD_HEADER_BYTES as u64 + 2);

    let (wal, recovery) = open_with_peers(&directory).unwrap();
    let warning = match recovery.warnings.as_slice() {
        [
            warning @ RecoveryWarning::CutForRepair {
                offset,
                kept_through_index: 3,
                dropped_through_index: Some(5),
                next_valid_offset: Some(next),
                ..
            },
        ] if *offset == records[2].0 && *next == records[3].0 => warning.to_string(),
        other => panic!("one cut for repair expected, got {other:?}"),
    };
    assert!(warning.contains(&log.display().to_string()), "{warning}");
    assert!(warning.contains("entries 4 to 5 dropped"), "{warning}");
    assert!(warning.contains("repairing from peers"), "{warning}");
    let expected = DurableState {
        term: 3,
        voted_for: Some(ServerId(1)),
        recovering: true,
        ..simulated_disk(&ops[..2])
    };
    assert_eq!(recovery.state, expected);
    drop(wal);

    let (mut wal, again) = open_with_peers(&directory).unwrap();
    assert_eq!(again.warnings, vec![], "the cut log is whole now");
    assert_eq!(
        again.state, expected,
        "a crash during the repair keeps repairing"
    );
    let repaired = PersistOp::HardState {
        term: 4,
        voted_for: None,
        recovering: false,
    };
    wal.append(std::slice::from_ref(&repaired)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, after) = open_with_peers(&directory).unwrap();
    assert!(!after.state.recovering);
    assert_eq!((after.state.term, after.state.voted_for), (4, None));
}

/// The real log cannot tell a rotted last record from a torn one. Alone, it must cut it off
/// and hope it was never synced; with peers it need not guess: both start a repair.
#[test]
fn with_peers_a_damaged_last_record_starts_a_repair_instead_of_passing_for_torn() {
    let directory = DataDirectory::new("repair-last");
    let ops = a_followers_life();
    run_and_stop(&directory, &ops);
    let log = directory.log();
    let (last_offset, _) = *records_of(&log).last().unwrap();
    flip_byte(&log, last_offset + RECORD_HEADER_BYTES as u64 + 5);

    let (_, recovery) = open_with_peers(&directory).unwrap();
    assert!(
        matches!(
            recovery.warnings.as_slice(),
            [RecoveryWarning::CutForRepair { offset, next_valid_offset: None, .. }]
                if *offset == last_offset
        ),
        "{:?}",
        recovery.warnings
    );
    assert!(recovery.state.recovering);
    assert_eq!(
        recovery.state.log,
        simulated_disk(&ops[..ops.len() - 1]).log
    );
}

/// The second copy of term and vote costs appends nothing: only a sync that covers a
/// `HardState` record writes the hard-state file.
#[test]
fn only_a_sync_covering_a_term_or_vote_writes_the_hard_state_file() {
    let directory = DataDirectory::new("hard-state-writes");
    let (mut wal, _) = open(&directory);
    let created = hard_state_sequence(&directory);
    wal.append(&[vote(1, 2)]).unwrap();
    assert_eq!(
        hard_state_sequence(&directory),
        created,
        "not before the sync"
    );
    wal.sync().unwrap();
    let voted = hard_state_sequence(&directory);
    assert_eq!(voted, created + 1);
    for index in 1..=50 {
        wal.append(&[append(index, vec![noop(1)])]).unwrap();
        wal.sync().unwrap();
    }
    assert_eq!(
        hard_state_sequence(&directory),
        voted,
        "appends leave it alone"
    );
}

/// Both copies of the vote gone at once is the one damage a repair cannot get past: the log is
/// damaged and neither slot of the hard-state file is valid, so the latest vote is unknown and
/// the server refuses rather than vote twice. With the log intact, the file is rewritten from
/// it, with a warning.
#[test]
fn a_damaged_log_with_both_hard_state_slots_damaged_refuses_to_start() {
    let directory = DataDirectory::new("hard-state-lost");
    run_and_stop(&directory, &a_followers_life());
    let hard_state = directory.path.join(HARD_STATE_FILE_NAME);
    let mut bytes = fs::read(&hard_state).unwrap();
    bytes[20] ^= 0x01;
    bytes[64 + 20] ^= 0x01;
    fs::write(&hard_state, &bytes).unwrap();
    let (_, recovery) = open_with_peers(&directory).unwrap();
    assert!(
        matches!(
            recovery.warnings.as_slice(),
            [RecoveryWarning::RewroteHardState { .. }]
        ),
        "{:?}",
        recovery.warnings
    );
    assert_eq!(
        (recovery.state.term, recovery.state.voted_for),
        (3, Some(ServerId(1)))
    );

    fs::write(&hard_state, &bytes).unwrap();
    let log = directory.log();
    let (middle, _) = records_of(&log)[2];
    flip_byte(&log, middle + RECORD_HEADER_BYTES as u64 + 2);
    for _ in 0..2 {
        let error = open_with_peers(&directory).unwrap_err();
        assert!(
            matches!(&error, StorageError::HardStateLost { offset, .. } if *offset == middle),
            "{error} (a refusal leaves both files as they were, so it refuses again)"
        );
    }
}

/// A crash between the two writes of a sync leaves the log's copy of a vote newer than the
/// file's: the newer one wins, and the file catches up.
#[test]
fn a_vote_the_log_has_and_the_hard_state_file_missed_is_recovered_from_the_log() {
    let directory = DataDirectory::new("hard-state-behind");
    let hard_state = directory.path.join(HARD_STATE_FILE_NAME);
    let (mut wal, _) = open(&directory);
    wal.append(&[vote(1, 2)]).unwrap();
    wal.sync().unwrap();
    let before_second_vote = fs::read(&hard_state).unwrap();
    wal.append(&[vote(2, 3)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs::write(&hard_state, &before_second_vote).unwrap();

    let (_, recovery) = open_with_peers(&directory).unwrap();
    assert_eq!(
        (recovery.state.term, recovery.state.voted_for),
        (2, Some(ServerId(3)))
    );
    assert!(!recovery.state.recovering);
    match read_hard_state(&directory.path).unwrap() {
        HardStateRead::Valid { state, .. } => {
            assert_eq!((state.term, state.voted_for), (2, Some(ServerId(3))))
        }
        other => panic!("{other:?}"),
    }
}

/// A data directory written before the hard-state file existed has only the log's copy of the
/// vote: its first open repairs nothing and refuses damage in the middle as before.
#[test]
fn without_a_hard_state_file_damage_in_the_middle_is_still_refused() {
    let directory = DataDirectory::new("no-hard-state");
    run_and_stop(&directory, &a_followers_life());
    fs::remove_file(directory.path.join(HARD_STATE_FILE_NAME)).unwrap();
    let log = directory.log();
    let (middle, _) = records_of(&log)[3];
    flip_byte(&log, middle + RECORD_HEADER_BYTES as u64 + 2);
    let error = open_with_peers(&directory).unwrap_err();
    assert!(
        matches!(&error, StorageError::CorruptRecord { offset, .. } if *offset == middle),
        "{error}"
    );
}
