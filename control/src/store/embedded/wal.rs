//! The write-ahead log. A batch of writes is acknowledged once its log
//! entries are appended here and `fdatasync`ed: one sequential write, where
//! a durable redb commit would write back a dozen scattered pages. redb
//! applies the batch at once but makes it durable only at the next
//! checkpoint; after a crash the store replays what the WAL holds beyond
//! redb's last durable revision.
//!
//! Layout: a 4 KiB header (`magic | generation | crc`), then frames at
//! 8-byte boundaries: `generation | payload length | crc | payload`, the
//! crc covering all but itself. A checkpoint empties the log by bumping the
//! generation, so frames left from before never verify. The
//! file is zero-filled to its working size when created, so an append never
//! changes the file's size and `fdatasync` flushes data only.
//!
//! A frame that fails its check ends the log: a crash mid-append leaves
//! exactly that, a torn last frame that was never acknowledged. A damaged
//! frame followed by intact ones is corruption, and opening refuses it.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

const MAGIC: &[u8; 8] = b"CAPSTWAL";
const HEADER: u64 = 4096;
const FRAME_HEADER: usize = 16;
/// Zero-filled when the file is created; appends stay inside it until a
/// checkpoint (at [`CHECKPOINT_BYTES`]) empties the log.
const PREALLOCATED: u64 = 32 << 20;
/// The writer checkpoints once the log holds this much.
pub(super) const CHECKPOINT_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub(super) enum WalError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Corrupt(String),
}

/// One acknowledged write: its revision and its encoded log entry.
pub(super) type WalEntry = (u64, Vec<u8>);

#[derive(Debug)]
pub(super) struct Wal {
    file: File,
    path: PathBuf,
    generation: u64,
    /// Where the next frame goes.
    end: u64,
}

impl Wal {
    /// Opens the log at `path`, creating it if missing; returns the entries
    /// it holds, in revision order.
    pub fn open(path: &Path) -> Result<(Self, Vec<WalEntry>), WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() == 0 {
            let wal = Self::create(file, path)?;
            return Ok((wal, Vec::new()));
        }
        let bytes = std::fs::read(path)?;
        let generation = read_header(&bytes)?;
        let (entries, end) = read_frames(&bytes, generation)?;
        let wal = Self {
            file,
            path: path.to_owned(),
            generation,
            end,
        };
        Ok((wal, entries))
    }

    fn create(file: File, path: &Path) -> Result<Self, WalError> {
        let zeros = vec![0_u8; 1 << 20];
        let mut at = 0;
        while at < PREALLOCATED {
            file.write_all_at(&zeros, at)?;
            at += zeros.len() as u64;
        }
        let mut wal = Self {
            file,
            path: path.to_owned(),
            generation: 0,
            end: HEADER,
        };
        wal.reset()?;
        wal.file.sync_all()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(wal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of entries since the last checkpoint.
    pub fn len(&self) -> u64 {
        self.end - HEADER
    }

    /// Appends `entries` as one frame and makes it durable.
    pub fn append(&mut self, entries: &[WalEntry]) -> io::Result<()> {
        let payload = encode(entries);
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len() + 8);
        frame.extend_from_slice(&self.generation.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(self.generation, &payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame.resize(frame.len().next_multiple_of(8), 0);
        self.file.write_all_at(&frame, self.end)?;
        self.file.sync_data()?;
        self.end += frame.len() as u64;
        Ok(())
    }

    /// Empties the log, once redb holds everything in it durably.
    pub fn reset(&mut self) -> io::Result<()> {
        self.generation += 1;
        let mut header = Vec::with_capacity(20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.generation.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&header, 0)?;
        self.file.sync_data()?;
        self.end = HEADER;
        Ok(())
    }
}

fn checksum(generation: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode(entries: &[WalEntry]) -> Vec<u8> {
    let size: usize = entries.iter().map(|(_, e)| 12 + e.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (revision, entry) in entries {
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        out.extend_from_slice(entry);
    }
    out
}

fn decode(mut payload: &[u8]) -> Option<Vec<WalEntry>> {
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = (payload.get(..n)?, payload.get(n..)?);
        payload = rest;
        Some(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut entries = Vec::new();
    for _ in 0..count {
        let revision = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        entries.push((revision, take(len)?.to_vec()));
    }
    take(0)?;
    Some(entries)
}

fn read_header(bytes: &[u8]) -> Result<u64, WalError> {
    let header = bytes
        .get(..20)
        .ok_or_else(|| WalError::Corrupt("header is truncated".to_owned()))?;
    if &header[..8] != MAGIC {
        return Err(WalError::Corrupt(
            "not a capstan write-ahead log".to_owned(),
        ));
    }
    let crc = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
    if crc != crc32fast::hash(&header[..16]) {
        return Err(WalError::Corrupt("header checksum mismatch".to_owned()));
    }
    Ok(u64::from_le_bytes(
        header[8..16].try_into().unwrap_or_default(),
    ))
}

/// The frame at `at`, if it verifies: (entries, offset after it).
fn frame_at(bytes: &[u8], at: usize, generation: u64) -> Option<(Vec<WalEntry>, usize)> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    if u64::from_le_bytes(header[..8].try_into().ok()?) != generation {
        return None;
    }
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[12..].try_into().ok()?);
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    if len == 0 || checksum(generation, payload) != crc {
        return None;
    }
    let entries = decode(payload)?;
    Some((entries, (at + FRAME_HEADER + len).next_multiple_of(8)))
}

/// The entries of every verifying frame of `generation`, and where the log
/// ends. Refuses a log whose intact frames continue past a damaged one.
fn read_frames(bytes: &[u8], generation: u64) -> Result<(Vec<WalEntry>, u64), WalError> {
    let mut entries: Vec<WalEntry> = Vec::new();
    let mut at = HEADER as usize;
    while let Some((frame, next)) = frame_at(bytes, at, generation) {
        for (revision, entry) in frame {
            if entries.last().is_some_and(|(last, _)| revision != last + 1) {
                return Err(WalError::Corrupt(format!(
                    "frame at offset {at} jumps from revision {} to {revision}",
                    entries.last().map_or(0, |(last, _)| *last)
                )));
            }
            entries.push((revision, entry));
        }
        at = next;
    }
    let end = at;
    let mut later = end + 8;
    while later + FRAME_HEADER <= bytes.len() {
        if let Some((frame, _)) = frame_at(bytes, later, generation)
            && frame.first().map(|(revision, _)| *revision) > entries.last().map(|(r, _)| *r)
        {
            return Err(WalError::Corrupt(format!(
                "the record at offset {end} is damaged but later ones (from offset {later}) are intact"
            )));
        }
        later += 8;
    }
    Ok((entries, end as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(revisions: std::ops::RangeInclusive<u64>) -> Vec<WalEntry> {
        revisions
            .map(|r| (r, format!("entry {r}").into_bytes()))
            .collect()
    }

    #[test]
    fn appended_entries_come_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert!(found.is_empty());
        wal.append(&entries(1..=3)).unwrap();
        wal.append(&entries(4..=4)).unwrap();
        drop(wal);
        let (_, found) = Wal::open(&path).unwrap();
        assert_eq!(found, entries(1..=4));
    }

    #[test]
    fn a_reset_log_replays_nothing_of_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&entries(1..=50)).unwrap();
        wal.reset().unwrap();
        wal.append(&entries(51..=51)).unwrap();
        drop(wal);
        let (wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found, entries(51..=51));
        assert_eq!(wal.len(), wal.end - HEADER);
    }

    #[test]
    fn a_torn_last_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&entries(1..=2)).unwrap();
        let torn_at = wal.end;
        wal.append(&entries(3..=3)).unwrap();
        drop(wal);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 6], torn_at + 18).unwrap();
        let (wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found, entries(1..=2));
        assert_eq!(wal.end, torn_at);
    }

    #[test]
    fn a_damaged_frame_before_intact_ones_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&entries(1..=2)).unwrap();
        wal.append(&entries(3..=3)).unwrap();
        drop(wal);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 4], HEADER + 20).unwrap();
        assert!(matches!(Wal::open(&path), Err(WalError::Corrupt(_))));
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(Wal::open(&path), Err(WalError::Corrupt(_))));
    }
}
