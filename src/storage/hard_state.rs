//! The hard-state file: term, vote and the repair flag, kept beside the log so that damage to
//! the log cannot take a vote with it.
//!
//! Every `HardState` record the log gets is also written here, by the [`super::Wal::sync`]
//! that makes it durable. A vote lost from the log (a damaged record) is then still here, and
//! one lost here is still in the log: `Wal::open` takes the newer of the two. Votes are rare,
//! so the second write costs a lock request nothing: appends alone never touch this file.
//!
//! # Layout
//! Two slots of [`SLOT_BYTES`] bytes each; a write goes to the slot its sequence number picks
//! (`(sequence - 1) % 2`: the first write, at creation, fills slot 0), so the slot it overwrites holds the state before the previous write, and
//! a torn write leaves the other slot, the previous state, intact. Reading takes the valid
//! slot with the higher sequence. All integers little-endian:
//! ```text
//! offset size field
//!      0    8 magic        "LSTEPHSF"
//!      8    4 version      u32, 1
//!     12    8 sequence     u64: 1 for the first write, one more for each after it
//!     20    8 term         u64
//!     28    1 vote present 0 or 1
//!     29    4 voted for    u32 server id (0 when no vote)
//!     33    1 recovering   0 or 1: repairing a damaged log (`DurableState::recovering`)
//!     34   26 zeros
//!     60    4 crc          u32: crc32c of bytes 0..60
//! ```
//! Reading only what it was given and writing only whole slots, it never panics on a file.

use super::error::StorageError;
use super::replay::{io_error, read_up_to};
use super::snapshot::replace_file;
use crate::node::{ServerId, Term};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The hard-state file in the data directory.
pub const HARD_STATE_FILE_NAME: &str = "hardstate";
/// The hard-state file being created, before its rename.
pub const HARD_STATE_TEMPORARY_FILE_NAME: &str = "hardstate.tmp";
/// Bytes of one slot; the file holds two.
pub const SLOT_BYTES: usize = 64;

const MAGIC: [u8; 8] = *b"LSTEPHSF";
const VERSION: u32 = 1;
const CHECKSUM_OFFSET: usize = 60;

/// Term, vote and repair flag: what one slot holds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<ServerId>,
    pub recovering: bool,
}

impl HardState {
    /// The hard state of `state`.
    pub fn of(state: &crate::node::DurableState) -> HardState {
        HardState {
            term: state.term,
            voted_for: state.voted_for,
            recovering: state.recovering,
        }
    }

    /// The record that writes it to the log.
    pub fn as_op(&self) -> crate::node::PersistOp {
        crate::node::PersistOp::HardState {
            term: self.term,
            voted_for: self.voted_for,
            recovering: self.recovering,
        }
    }

    /// Hard states only grow in this order: a term, then a vote in it. The repair flag is
    /// raised with a new term and cleared within one.
    fn age(&self) -> (Term, bool) {
        (self.term, self.voted_for.is_some())
    }

    /// The newer of two copies; of two equally new, the one still repairing if either is: a
    /// cleared flag that reached one copy only is cleared again after one more repair, while
    /// a raised flag lost would let a damaged log vote.
    pub fn newer(self, other: HardState) -> HardState {
        match self.age().cmp(&other.age()) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => HardState {
                recovering: self.recovering || other.recovering,
                ..self
            },
        }
    }
}

/// What reading the file found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HardStateRead {
    /// No file: a new data directory, or one written before this file existed.
    Missing,
    /// The file exists but neither slot is valid.
    Damaged,
    /// The newest valid slot, with its sequence number.
    Valid { sequence: u64, state: HardState },
}

fn encode_slot(sequence: u64, state: HardState) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..8].copy_from_slice(&MAGIC);
    slot[8..12].copy_from_slice(&VERSION.to_le_bytes());
    slot[12..20].copy_from_slice(&sequence.to_le_bytes());
    slot[20..28].copy_from_slice(&state.term.to_le_bytes());
    slot[28] = u8::from(state.voted_for.is_some());
    slot[29..33].copy_from_slice(&state.voted_for.map_or(0, |id| id.0).to_le_bytes());
    slot[33] = u8::from(state.recovering);
    let checksum = crc32c::crc32c(&slot[..CHECKSUM_OFFSET]);
    slot[CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    slot
}

/// A slot's sequence and state, or `None` if it is not a valid slot of this version.
fn decode_slot(slot: &[u8]) -> Option<(u64, HardState)> {
    if slot.len() != SLOT_BYTES || slot[0..8] != MAGIC {
        return None;
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([slot[at], slot[at + 1], slot[at + 2], slot[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    if crc32c::crc32c(&slot[..CHECKSUM_OFFSET]) != u32_at(CHECKSUM_OFFSET) {
        return None;
    }
    let flags_valid = slot[28] <= 1 && slot[33] <= 1;
    let padding_zero = slot[34..CHECKSUM_OFFSET].iter().all(|&byte| byte == 0);
    if u32_at(8) != VERSION || !flags_valid || !padding_zero {
        return None;
    }
    let sequence = u64_at(12);
    let state = HardState {
        term: u64_at(20),
        voted_for: (slot[28] == 1).then(|| ServerId(u32_at(29))),
        recovering: slot[33] == 1,
    };
    (sequence >= 1).then_some((sequence, state))
}

/// Reads the file in `directory`.
pub fn read_hard_state(directory: &Path) -> Result<HardStateRead, StorageError> {
    let path = directory.join(HARD_STATE_FILE_NAME);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(HardStateRead::Missing),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let mut bytes = [0u8; 2 * SLOT_BYTES];
    let read = read_up_to(&mut file, &mut bytes).map_err(io_error(&path))?;
    let newest = bytes[..read]
        .chunks(SLOT_BYTES)
        .filter_map(decode_slot)
        .max_by_key(|(sequence, _)| *sequence);
    Ok(match newest {
        Some((sequence, state)) => HardStateRead::Valid { sequence, state },
        None => HardStateRead::Damaged,
    })
}

/// The open hard-state file of a `Wal`.
///
/// Calling contract: [`HardStateFile::write`] returns once the state is durable (written and
/// `fdatasync`ed); after an error the caller MUST treat the file as unknown (poison the `Wal`).
#[derive(Debug)]
pub struct HardStateFile {
    path: PathBuf,
    file: File,
    /// The sequence of the last write: the next goes to the other slot.
    sequence: u64,
    written: HardState,
}

impl HardStateFile {
    /// Creates the file afresh holding `state` (atomically: a temporary file renamed over it),
    /// then opens it.
    pub fn create(directory: &Path, state: HardState) -> Result<HardStateFile, StorageError> {
        replace_file(
            directory,
            HARD_STATE_FILE_NAME,
            HARD_STATE_TEMPORARY_FILE_NAME,
            |writer| {
                writer.write_all(&encode_slot(1, state))?;
                writer.write_all(&[0u8; SLOT_BYTES])
            },
        )?;
        HardStateFile::open(directory, 1, state)
    }

    /// Opens the existing file, whose newest valid slot has `sequence` and holds `state`.
    pub fn open(
        directory: &Path,
        sequence: u64,
        state: HardState,
    ) -> Result<HardStateFile, StorageError> {
        let path = directory.join(HARD_STATE_FILE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(HardStateFile {
            path,
            file,
            sequence,
            written: state,
        })
    }

    /// What the file holds now.
    pub fn state(&self) -> HardState {
        self.written
    }

    /// Makes `state` durable in the slot the previous write did not use. Writing what the file
    /// already holds does nothing.
    pub fn write(&mut self, state: HardState) -> Result<(), StorageError> {
        if state == self.written {
            return Ok(());
        }
        let sequence = self.sequence + 1;
        let offset = ((sequence - 1) % 2) * SLOT_BYTES as u64;
        let slot = encode_slot(sequence, state);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(&slot))
            .map_err(io_error(&self.path))?;
        self.file.sync_data().map_err(io_error(&self.path))?;
        self.sequence = sequence;
        self.written = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_directory::TestDirectory;

    fn voted(term: Term, server: u32) -> HardState {
        HardState {
            term,
            voted_for: Some(ServerId(server)),
            recovering: false,
        }
    }

    #[test]
    fn writes_alternate_slots_and_the_newest_valid_slot_is_read_back() {
        let directory = TestDirectory::new("hard-state-slots");
        assert_eq!(
            read_hard_state(directory.path()).unwrap(),
            HardStateRead::Missing
        );
        let mut file = HardStateFile::create(directory.path(), voted(1, 1)).unwrap();
        file.write(voted(2, 3)).unwrap();
        let read = read_hard_state(directory.path()).unwrap();
        assert_eq!(
            read,
            HardStateRead::Valid {
                sequence: 2,
                state: voted(2, 3)
            }
        );
        file.write(voted(3, 2)).unwrap();
        let read = read_hard_state(directory.path()).unwrap();
        assert_eq!(
            read,
            HardStateRead::Valid {
                sequence: 3,
                state: voted(3, 2)
            }
        );
    }

    /// A torn or rotted newest slot leaves the one before it; both gone is `Damaged`, never a
    /// guess.
    #[test]
    fn a_damaged_newest_slot_falls_back_to_the_other_and_two_are_damaged() {
        let directory = TestDirectory::new("hard-state-damage");
        let mut file = HardStateFile::create(directory.path(), voted(1, 1)).unwrap();
        file.write(voted(2, 3)).unwrap();
        let path = directory.path().join(HARD_STATE_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 20] ^= 0x01; // Slot 1 holds sequence 2: its term.
        std::fs::write(&path, &bytes).unwrap();
        let read = read_hard_state(directory.path()).unwrap();
        assert_eq!(
            read,
            HardStateRead::Valid {
                sequence: 1,
                state: voted(1, 1)
            }
        );
        bytes[40] ^= 0x01; // Slot 0's padding.
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_hard_state(directory.path()).unwrap(),
            HardStateRead::Damaged
        );
    }

    #[test]
    fn the_newer_of_two_copies_wins_and_an_equal_pair_keeps_a_raised_repair_flag() {
        let repairing = HardState {
            recovering: true,
            ..voted(2, 1)
        };
        assert_eq!(voted(2, 1).newer(voted(1, 3)), voted(2, 1));
        assert_eq!(voted(1, 3).newer(repairing), repairing);
        assert_eq!(voted(2, 1).newer(repairing), repairing);
        let no_vote = HardState {
            voted_for: None,
            ..voted(2, 1)
        };
        assert_eq!(
            no_vote.newer(voted(2, 1)),
            voted(2, 1),
            "a vote follows its term"
        );
    }
}
