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
//!
//! Past the bound, [`RESERVE_BYTES`] more are kept for control frames ([`Wal::append_control`]:
//! the run's start and restarts, membership decisions, refusal counts), which data messages
//! cannot use: a decision is not held back and a restart not refused because data filled the
//! log, until the next checkpoint trims it. Frames written there are counted
//! ([`Wal::reserve_frames`]). The reserve is room under the bound, not space set aside on the
//! disk: a disk that is full refuses a control frame like any other.
//!
//! A checkpoint replaces the log ([`Wal::rewrite`]): the new frames go to `aggregator.wal.tmp`,
//! which is synced, read back and checked, then the current log is hard-linked as
//! `aggregator.wal.prev` (the previous generation, replacing the one before) and the new one
//! renamed over it, and the directory synced. A rename is atomic: a crash at any point leaves
//! the old log whole or the new one whole (a leftover `.tmp` is removed at the next open), so
//! nothing acknowledged is lost. Should the new log's first frame (the checkpoint) be found
//! damaged at an open (a bad sector), the previous generation is read instead, followed by the
//! frames after that first one: everything acknowledged since the previous checkpoint is in
//! one or the other ([`Recovered::fell_back`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A frame's header: length and checksum.
const HEADER: usize = 8;
/// No frame is longer (a longer length is damage, not a frame).
const MAX_FRAME: usize = 2 * tapflow_proto::wire::MAX_MESSAGE_BYTES + 64;

/// Bytes past `--wal-max-bytes` only control frames may use ([`Wal::append_control`]).
pub const RESERVE_BYTES: u64 = 1 << 20;

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
    /// The first frame was damaged: the previous generation was read in its place.
    pub fell_back: bool,
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
    /// Control frames written past the bound (into the reserve), and when the last was.
    pub reserve_frames: u64,
    pub reserve_last: Option<Instant>,
}

impl Wal {
    /// Opens (creating) the log at `path`, reads back its frames and cuts off a damaged tail.
    pub fn open(path: &Path, max_bytes: u64, commit: Commit) -> Result<(Wal, Recovered), WalError> {
        let shown = path.display().to_string();
        let err = |what| {
            let path = shown.clone();
            move |source| WalError { path, what, source }
        };
        // A checkpoint that never reached its rename: the log beside it is whole.
        let _ = std::fs::remove_file(sibling(path, "tmp"));
        let mut file = open_append(path).map_err(err("open"))?;
        let mut all = Vec::new();
        file.read_to_end(&mut all).map_err(err("read"))?;
        let (mut frames, good) = parse(&all);
        let mut damaged_bytes = (all.len() - good) as u64;
        let mut fell_back = false;
        if frames.is_empty() && !all.is_empty() {
            if let Some((older, damaged)) = fall_back(path, &all) {
                (frames, damaged_bytes, fell_back) = (older, damaged, true);
            }
        }
        let mut good = good as u64;
        if fell_back {
            let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            good = write_new(path, &parts).map_err(err("repair"))?;
            file = open_append(path).map_err(err("open"))?;
        } else if damaged_bytes > 0 {
            file.set_len(good).map_err(err("cut the damaged tail of"))?;
            file.sync_data().map_err(err("sync"))?;
        }
        let wal = Wal {
            file,
            path: shown,
            bytes: good,
            max_bytes,
            commit,
            pending: 0,
            since: None,
            syncs: 0,
            refused_full: 0,
            failures: 0,
            reserve_frames: 0,
            reserve_last: None,
        };
        Ok((
            wal,
            Recovered {
                frames,
                damaged_bytes,
                fell_back,
            },
        ))
    }

    /// Appends one frame made of `parts` (not yet durable). `Err`: refused, nothing of it kept.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), WalError> {
        self.append_within(parts, self.max_bytes, "append to (--wal-max-bytes reached)")
    }

    /// Appends one control frame, which may go past the bound into the reserve
    /// ([`RESERVE_BYTES`]). `Ok(true)`: it went into the reserve (counted).
    pub fn append_control(&mut self, parts: &[&[u8]]) -> Result<bool, WalError> {
        let limit = self.max_bytes.saturating_add(RESERVE_BYTES);
        let what = "append a control frame to (--wal-max-bytes and its reserve reached)";
        self.append_within(parts, limit, what)?;
        let past = self.bytes > self.max_bytes;
        if past {
            self.reserve_frames += 1;
            self.reserve_last = Some(Instant::now());
        }
        Ok(past)
    }

    /// A frame of `len` payload bytes would go past the bound (into the reserve, if control).
    pub fn past_bound(&self, len: usize) -> bool {
        self.bytes + (HEADER + len) as u64 > self.max_bytes
    }

    fn append_within(
        &mut self,
        parts: &[&[u8]],
        limit: u64,
        what: &'static str,
    ) -> Result<(), WalError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let len = (HEADER + payload_len) as u64;
        if self.bytes + len > limit {
            self.refused_full += 1;
            return Err(self.error(what, std::io::ErrorKind::StorageFull.into()));
        }
        let mut frame = Vec::with_capacity(HEADER + payload_len);
        encode(parts, &mut frame);
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

    /// Removes the previous generation (the run ended: a new run never falls back to it).
    pub fn forget_previous(&mut self) -> Result<(), WalError> {
        match std::fs::remove_file(sibling(Path::new(&self.path), "prev")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.error("remove the previous generation of", e))
            }
            _ => Ok(()),
        }
    }

    /// Replaces the log by `frames` (a checkpoint), atomically (see the module's doc), once
    /// what was appended is synced. Returns the bytes the log held before. On `Err` the old
    /// log is in place, whole, and appends go on to it.
    pub fn rewrite(&mut self, frames: &[&[u8]]) -> Result<u64, WalError> {
        self.sync()?;
        let path = PathBuf::from(&self.path);
        let bytes = write_new(&path, frames).map_err(|e| {
            self.failures += 1;
            self.error("write a checkpoint of", e)
        })?;
        self.file = open_append(&path).map_err(|e| self.error("reopen", e))?;
        let before = self.bytes;
        self.bytes = bytes;
        Ok(before)
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

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

/// `path` with `.ext` added (`aggregator.wal.tmp`, `aggregator.wal.prev`).
fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// One frame of `parts`, appended to `out`.
fn encode(parts: &[&[u8]], out: &mut Vec<u8>) {
    let mut sum = flate2::Crc::new();
    parts.iter().for_each(|p| sum.update(p));
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&sum.sum().to_le_bytes());
    parts.iter().for_each(|p| out.extend_from_slice(p));
}

/// Writes `frames` as the new log at `path`: to `.tmp`, synced, read back and checked; the
/// current log kept as `.prev`; the new one renamed over it; the directory synced. Returns
/// its length.
fn write_new(path: &Path, frames: &[&[u8]]) -> std::io::Result<u64> {
    let tmp = sibling(path, "tmp");
    let written = write_tmp(path, &tmp, frames);
    if written.is_err() {
        // A full disk: the space the half-written checkpoint took is given back.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_tmp(path: &Path, tmp: &Path, frames: &[&[u8]]) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    frames.iter().for_each(|f| encode(&[f], &mut bytes));
    let mut f = File::create(tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    let back = std::fs::read(tmp)?;
    if back != bytes || parse(&back).0.len() != frames.len() {
        return Err(std::io::Error::other("the checkpoint read back differs"));
    }
    if path.exists() {
        let (prev, next) = (sibling(path, "prev"), sibling(path, "prev.tmp"));
        let _ = std::fs::remove_file(&next);
        std::fs::hard_link(path, &next)?;
        std::fs::rename(&next, &prev)?;
    }
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(bytes.len() as u64)
}

/// The log's first frame is damaged: the previous generation's frames, then those after that
/// first frame (if its length can be read), and the bytes of `all` not recovered. `None`: no
/// previous generation to read.
fn fall_back(path: &Path, all: &[u8]) -> Option<(Vec<Vec<u8>>, u64)> {
    let older = std::fs::read(sibling(path, "prev")).ok()?;
    let (mut frames, _) = parse(&older);
    if frames.is_empty() {
        return None;
    }
    let skip = first_len(all) as usize;
    let mut kept = 0;
    if let Some(rest) = all.get(skip..).filter(|_| skip > HEADER) {
        let (after, good) = parse(rest);
        frames.extend(after);
        kept = good;
    }
    Some((frames, (all.len() - kept) as u64))
}

/// The bytes the first frame of `all` takes by its header (0 if that cannot be read).
fn first_len(all: &[u8]) -> u64 {
    all.get(..4)
        .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
        .filter(|&len| len <= MAX_FRAME && HEADER + len <= all.len())
        .map_or(0, |len| (HEADER + len) as u64)
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

    #[test]
    fn control_frames_use_the_reserve_data_frames_do_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_in(dir.path());
        let (mut wal, _) = Wal::open(&path, 30, COMMIT).expect("open");
        assert_eq!(
            wal.append_control(&[b"S"]).ok(),
            Some(false),
            "under the bound"
        );
        assert!(wal.append(&[b"0123456789"]).is_ok());
        assert!(wal.past_bound(1));
        assert!(wal.append(&[b"M"]).is_err(), "a data frame is refused");
        // A decision goes past the bound, counted; data still cannot follow it.
        assert_eq!(wal.append_control(&[b"D1"]).ok(), Some(true));
        assert_eq!(wal.append_control(&[b"D2"]).ok(), Some(true));
        assert!(wal.append(&[b"M"]).is_err());
        assert_eq!((wal.reserve_frames, wal.refused_full), (2, 2));
        assert!(wal.reserve_last.is_some());
        // The reserve has an end too.
        let big = vec![b'x'; RESERVE_BYTES as usize];
        let e = wal.append_control(&[&big]).expect_err("past the reserve");
        assert!(e.to_string().contains("reserve"), "{e}");
        assert_eq!((wal.reserve_frames, wal.refused_full), (2, 3));
        wal.sync().expect("sync");
        drop(wal);
        let back: Vec<Vec<u8>> = frames_of(&path);
        assert_eq!(back.len(), 4, "start, data and both decisions read back");
        assert_eq!(back[3], b"D2");
        // A checkpoint trims the log: data goes in again, the reserve left alone.
        let (mut wal, _) = Wal::open(&path, 30, COMMIT).expect("open");
        wal.rewrite(&[b"C"]).expect("rewrite");
        assert!(wal.append(&[b"M"]).is_ok());
        assert_eq!(wal.append_control(&[b"F"]).ok(), Some(false));
    }

    fn frames_of(path: &Path) -> Vec<Vec<u8>> {
        Wal::open(path, 1 << 20, COMMIT).expect("open").1.frames
    }

    #[test]
    fn a_rewrite_replaces_the_log_and_keeps_the_previous_generation() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_in(dir.path());
        let (mut wal, _) = Wal::open(&path, 1 << 20, COMMIT).expect("open");
        wal.append(&[b"one"]).expect("append");
        wal.append(&[b"two"]).expect("append");
        assert_eq!(wal.rewrite(&[b"C1"]).ok(), Some(22));
        assert_eq!(wal.bytes(), 10);
        wal.append(&[b"three"]).expect("append after the rewrite");
        wal.sync().expect("sync");
        drop(wal);
        assert_eq!(frames_of(&path), [b"C1".to_vec(), b"three".to_vec()]);
        let prev = std::fs::read(sibling(&path, "prev")).expect("the previous generation");
        assert_eq!(parse(&prev).0, [b"one".to_vec(), b"two".to_vec()]);
        // A checkpoint that never reached its rename is removed, the log untouched.
        std::fs::write(sibling(&path, "tmp"), b"half a checkpoint").expect("write");
        assert_eq!(frames_of(&path).len(), 2);
        assert!(!sibling(&path, "tmp").exists());
    }

    #[test]
    fn a_damaged_checkpoint_falls_back_to_the_previous_generation() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = path_in(dir.path());
        let (mut wal, _) = Wal::open(&path, 1 << 20, COMMIT).expect("open");
        wal.append(&[b"S"]).expect("append");
        wal.append(&[b"M1"]).expect("append");
        wal.rewrite(&[b"C-of-S-M1"]).expect("rewrite");
        wal.append(&[b"M2"]).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        // The checkpoint's body damaged (its length intact): the previous generation, then
        // what followed the checkpoint.
        let mut all = std::fs::read(&path).expect("read");
        all[HEADER + 1] ^= 0xff;
        std::fs::write(&path, &all).expect("write");
        let (wal, r) = Wal::open(&path, 1 << 20, COMMIT).expect("open");
        assert!(r.fell_back);
        assert_eq!(r.frames, [b"S".to_vec(), b"M1".to_vec(), b"M2".to_vec()]);
        assert_eq!(r.damaged_bytes, (HEADER + 9) as u64);
        drop(wal);
        // Repaired: read again, the same frames, nothing damaged.
        let (_, r) = Wal::open(&path, 1 << 20, COMMIT).expect("open again");
        assert_eq!(
            (r.frames.len(), r.damaged_bytes, r.fell_back),
            (3, 0, false)
        );
    }
}
