//! The snapshot file, and the one way storage replaces a file: write a temporary file, fsync
//! it, rename it over the old one, fsync the directory.
//!
//! A file is never modified in place here, so a crash leaves either the old file or the new
//! one, plus perhaps a stray temporary file that `Wal::open` removes.

use super::error::StorageError;
use super::format::{
    FILE_HEADER_BYTES, RECORD_HEADER_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_PAYLOAD_BYTES_MAX,
    decode_file_header, decode_record_header, encode_file_header, encode_record, record_checksum,
};
use super::replay::{io_error, read_up_to};
use super::{LogPosition, Snapshot};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Writes the snapshot of everything up to `last_included` as `directory/name`, atomically
/// (see [`replace_file`]).
pub(crate) fn write_snapshot_file(
    directory: &Path,
    name: &str,
    temporary_name: &str,
    last_included: LogPosition,
    data: &[u8],
) -> Result<(), StorageError> {
    assert!(
        data.len() <= SNAPSHOT_PAYLOAD_BYTES_MAX as usize,
        "snapshot: the caller checked the size"
    );
    assert!(
        last_included.index > 0,
        "snapshot: the caller checked it covers something"
    );
    let header = encode_file_header(SNAPSHOT_MAGIC, last_included);
    let mut frame = Vec::with_capacity(RECORD_HEADER_BYTES + data.len());
    encode_record(data, &mut frame);
    replace_file(directory, name, temporary_name, |writer| {
        writer.write_all(&header)?;
        writer.write_all(&frame)
    })
}

/// Reads the snapshot at `path`; `None` if there is none. The whole file is checked: header,
/// one record, and nothing after it.
pub(crate) fn read_snapshot_file(path: &Path) -> Result<Option<Snapshot>, StorageError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    let length_bytes = file.metadata().map_err(io_error(path))?.len();
    let mut header = [0u8; FILE_HEADER_BYTES];
    let header_read = read_up_to(&mut file, &mut header).map_err(io_error(path))?;
    let last_included = decode_file_header(path, SNAPSHOT_MAGIC, &header[..header_read])?;

    let mut record_header = [0u8; RECORD_HEADER_BYTES];
    let record_header_read = read_up_to(&mut file, &mut record_header).map_err(io_error(path))?;
    if record_header_read < RECORD_HEADER_BYTES {
        return Err(snapshot_corrupt(
            path,
            "the record header is incomplete".to_string(),
        ));
    }
    let (length, stored) = decode_record_header(record_header);
    if length > SNAPSHOT_PAYLOAD_BYTES_MAX {
        return Err(StorageError::RecordTooLong {
            path: path.to_path_buf(),
            offset: FILE_HEADER_BYTES as u64,
            length_bytes: u64::from(length),
            length_bytes_max: u64::from(SNAPSHOT_PAYLOAD_BYTES_MAX),
        });
    }
    let expected_bytes = (FILE_HEADER_BYTES + RECORD_HEADER_BYTES) as u64 + u64::from(length);
    if expected_bytes != length_bytes {
        let reason = format!("the file is {length_bytes} bytes, its header says {expected_bytes}");
        return Err(snapshot_corrupt(path, reason));
    }
    let mut data = vec![0u8; length as usize];
    file.read_exact(&mut data).map_err(io_error(path))?;
    let computed = record_checksum(length, &data);
    if computed != stored {
        let reason = format!("checksum stored {stored:#010x}, computed {computed:#010x}");
        return Err(snapshot_corrupt(path, reason));
    }
    Ok(Some(Snapshot {
        last_included,
        data,
    }))
}

fn snapshot_corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::SnapshotCorrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// Replaces `directory/name` with what `write` produces, so that a crash at any point leaves
/// either the old file or the new one: write `directory/temporary_name`, fsync it, rename it
/// over `name`, fsync the directory (which makes the rename itself durable).
pub(crate) fn replace_file(
    directory: &Path,
    name: &str,
    temporary_name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), StorageError> {
    assert_ne!(
        name, temporary_name,
        "snapshot: a temporary file has its own name"
    );
    let temporary = directory.join(temporary_name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    let mut writer = BufWriter::with_capacity(1024 * 1024, file);
    write(&mut writer).map_err(io_error(&temporary))?;
    let file = writer
        .into_inner()
        .map_err(|error| io_error(&temporary)(error.into_error()))?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    let target = directory.join(name);
    fs::rename(&temporary, &target).map_err(io_error(&target))?;
    sync_directory(directory)
}

/// Makes the directory's entries (creations, renames) durable.
pub(crate) fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    let handle = File::open(directory).map_err(io_error(directory))?;
    handle.sync_all().map_err(io_error(directory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_directory::TestDirectory;

    #[test]
    fn a_snapshot_round_trips_and_a_trailing_byte_is_refused() {
        let directory = TestDirectory::new("snapshot-file");
        let snapshot = Snapshot {
            last_included: LogPosition { index: 9, term: 4 },
            data: b"lock table".to_vec(),
        };
        let (name, temporary) = ("snapshot", "snapshot.tmp");
        let at = snapshot.last_included;
        write_snapshot_file(directory.path(), name, temporary, at, &snapshot.data).unwrap();
        let path = directory.path().join("snapshot");
        assert_eq!(read_snapshot_file(&path).unwrap(), Some(snapshot));
        assert!(
            !directory.path().join("snapshot.tmp").exists(),
            "the temporary was renamed"
        );

        let mut bytes = fs::read(&path).unwrap();
        bytes.push(0);
        fs::write(&path, &bytes).unwrap();
        let error = read_snapshot_file(&path).unwrap_err();
        assert!(
            matches!(error, StorageError::SnapshotCorrupt { .. }),
            "{error}"
        );
    }

    #[test]
    fn no_snapshot_file_means_no_snapshot() {
        let directory = TestDirectory::new("no-snapshot");
        assert_eq!(
            read_snapshot_file(&directory.path().join("snapshot")).unwrap(),
            None
        );
    }
}
