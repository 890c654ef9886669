//! The aggregator's write-ahead log (`--state-dir`): every data message from a processor is
//! appended as it is received, as a frame of its length (4 bytes), its CRC-32 (4 bytes, both
//! little-endian) and the bytes, and made durable by `fdatasync` with group commit (one per
//! group of messages, by count or age; [`Wal::due`]). Only what is durable is acknowledged.
//!
//! Read back at a restart, frames are taken up to the first that is short (a torn last write)
//! or fails its checksum: that tail is cut off, counted and logged, never a panic; what was
//! acknowledged lies before it (it was durable). The log is bounded by `--wal-max-bytes`: a
//! message that would pass it is refused (not appended, not processed, not acknowledged: the
//! processor keeps it and sends it again), loudly. A write or sync that fails (a full disk) is
//! an ERROR; the message is refused the same way and nothing is acknowledged past it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A frame's header: length and checksum.
const HEADER: usize = 8;
/// No frame is longer (a longer length is damage, not a frame).
const MAX_FRAME: usize = 2 * tapflow_proto::wire::MAX_MESSAGE_BYTES + 64;

/// The write-ahead log could not be opened, read, written or synced.
#[derive(Debug, thiserror::Error)]
#[error("write-ahead log {path}: cannot {what}: {source}")]
pub struct WalError {
    pub path: String,
    pub what: &'static str,
    pub source: std::io::Error,
}

/// The log read back: its frames, and what was cut off its end.
#[derive(Debug, Default)]
pub struct Recovered {
    pub frames: Vec<Vec<u8>>,
    /// Bytes of a torn or damaged tail, removed.
    pub damaged_bytes: u64,
}

/// When to sync: after this many frames or this long since the first not yet synced.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    pub frames: usize,
    pub age: Duration,
}

pub struct Wal {
    file: File,
    path: String,
    bytes: u64,
    max_bytes: u64,
    commit: Commit,
    /// Frames appended and not yet synced, and when the first of them was.
    pending: usize,
    since: Option<Instant>,
    /// Syncs done, frames refused for the size bound, write or sync failures.
    pub syncs: u64,
    pub refused_full: u64,
    pub failures: u64,
}

impl Wal {
    /// Opens (creating) the log at `path`, reads back its frames and cuts off a damaged tail.
    pub fn open(path: &Path, max_bytes: u64, commit: Commit) -> Result<(Wal, Recovered), WalError> {
        let shown = path.display().to_string();
        let err = |what| {
            let path = shown.clone();
            move |source| WalError { path, what, source }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(err("open"))?;
        let mut all = Vec::new();
        file.read_to_end(&mut all).map_err(err("read"))?;
        let (frames, good) = parse(&all);
        let damaged_bytes = (all.len() - good) as u64;
        if damaged_bytes > 0 {
            file.set_len(good as u64)
                .map_err(err("cut the damaged tail of"))?;
            file.sync_data().map_err(err("sync"))?;
        }
        let wal = Wal {
            file,
            path: shown,
            bytes: good as u64,
            max_bytes,
            commit,
            pending: 0,
            since: None,
            syncs: 0,
            refused_full: 0,
            failures: 0,
        };
        Ok((
            wal,
            Recovered {
                frames,
                damaged_bytes,
            },
        ))
    }

    /// Appends one frame made of `parts` (not yet durable). `Err`: refused, nothing of it kept.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), WalError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let len = (HEADER + payload_len) as u64;
        if self.bytes + len > self.max_bytes {
            self.refused_full += 1;
            return Err(self.error(
                "append to (--wal-max-bytes reached)",
                std::io::ErrorKind::StorageFull.into(),
            ));
        }
        let mut sum = flate2::Crc::new();
        for p in parts {
            sum.update(p);
        }
        let mut frame = Vec::with_capacity(HEADER + payload_len);
        frame.extend_from_slice(&(payload_len as u32).to_le_bytes());
        frame.extend_from_slice(&sum.sum().to_le_bytes());
        for p in parts {
            frame.extend_from_slice(p);
        }
        if let Err(e) = self.file.write_all(&frame) {
            self.failures += 1;
            // Cut back what part of the frame went out, so the next frame follows whole ones.
            let _ = self.file.set_len(self.bytes);
            return Err(self.error("append to", e));
        }
        self.bytes += len;
        self.pending += 1;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// A sync is due: enough frames, or the oldest waiting long enough.
    pub fn due(&self, now: Instant) -> bool {
        self.pending >= self.commit.frames
            || self
                .since
                .is_some_and(|t| now.duration_since(t) >= self.commit.age)
    }

    /// How long until a sync is due (`None`: nothing waits).
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.since
            .map(|t| self.commit.age.saturating_sub(now.duration_since(t)))
    }

    /// Makes every appended frame durable. `Ok(true)`: some were synced now.
    pub fn sync(&mut self) -> Result<bool, WalError> {
        if self.pending == 0 {
            return Ok(false);
        }
        if let Err(e) = self.file.sync_data() {
            self.failures += 1;
            return Err(self.error("sync", e));
        }
        self.pending = 0;
        self.since = None;
        self.syncs += 1;
        Ok(true)
    }

    /// Empties the log (the run ended with everything written).
    pub fn clear(&mut self) -> Result<(), WalError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.error("empty", e))?;
        self.bytes = 0;
        self.pending = 0;
        self.since = None;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn error(&self, what: &'static str, source: std::io::Error) -> WalError {
        WalError {
            path: self.path.clone(),
            what,
            source,
        }
    }
}

/// The state directory's write-ahead log file.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join("aggregator.wal")
}

fn crc(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

/// The whole frames at the start of `all`, and the length they take.
fn parse(all: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(head) = all.get(at..at + HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = all
            .get(at + HEADER..at + HEADER + len)
            .filter(|_| len <= MAX_FRAME)
        else {
            break;
        };
        if crc(body) != sum {
            break;
        }
        frames.push(body.to_vec());
        at += HEADER + len;
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: Commit = Commit {
        frames: 2,
        age: Duration::from_secs(3600),
    };

    fn check(tail: &[u8], frames_back: usize, damaged: u64) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_in(dir.path());
        let (mut wal, r) = Wal::open(&path, 1 << 20, COMMIT).expect("open");
        assert!(r.frames.is_empty());
        wal.append(&[b"o", b"ne"]).expect("append");
        assert!(!wal.due(Instant::now()));
        wal.append(&[b"two"]).expect("append");
        assert!(wal.due(Instant::now()));
        assert_eq!(wal.sync().ok(), Some(true));
        assert_eq!(wal.sync().ok(), Some(false));
        drop(wal);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("reopen");
        f.write_all(tail).expect("write the tail");
        drop(f);
        let (wal, r) = Wal::open(&path, 1 << 20, COMMIT).expect("open again");
        assert_eq!(r.frames.len(), frames_back);
        assert_eq!(r.frames[..2], [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(r.damaged_bytes, damaged);
        assert_eq!(wal.bytes(), 22 + if frames_back == 3 { 13 } else { 0 });
    }

    #[test]
    fn whole_frames_come_back_and_a_damaged_tail_is_cut() {
        let mut good = Vec::new();
        good.extend_from_slice(&5u32.to_le_bytes());
        good.extend_from_slice(&crc(b"three").to_le_bytes());
        good.extend_from_slice(b"three");
        check(&good, 3, 0);
        // Torn: a header and part of the body; a header cut short; a bad checksum; a length
        // past any frame.
        check(&good[..10], 2, 10);
        check(&good[..3], 2, 3);
        let mut bad = good.clone();
        bad[12] ^= 1;
        check(&bad, 2, 13);
        check(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1], 2, 9);
    }

    #[test]
    fn past_the_bound_a_frame_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut wal, _) = Wal::open(&path_in(dir.path()), 20, COMMIT).expect("open");
        assert!(wal.append(&[b"0123456789"]).is_ok());
        let e = wal.append(&[b"0123456789"]).expect_err("past 20 bytes");
        assert!(e.to_string().contains("--wal-max-bytes"), "{e}");
        assert_eq!((wal.refused_full, wal.bytes()), (1, 18));
    }
}
