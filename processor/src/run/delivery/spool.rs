//! The disk spool behind acknowledged delivery (`--spool-dir`): the oldest messages not yet
//! acknowledged, moved out of memory once `--unacked-max-bytes` is reached, in append-only
//! segment files. Each frame on disk is its length (4 bytes, little-endian), its CRC-32 (over
//! the sequence number and the message), its sequence number (8 bytes) and the message as it
//! goes on the wire. The spool always holds a run of sequence numbers older than every one
//! held in memory, so giving up the oldest (past `--spool-max-bytes`, or when the disk is full)
//! leaves what is held one run, as the aggregator's deduplication needs. A segment is deleted
//! once every frame in it is acknowledged (or given up). Sending again reads the frames back
//! in order, one at a time: the spool is never loaded into memory.
//!
//! The spool belongs to one processor incarnation: what an earlier one left is deleted at
//! start (its sequence numbers mean nothing to the aggregator under a new incarnation). A
//! `LOCK` file holding the process id keeps a second, live processor out of the directory
//! (it then runs without a spool: what is past memory is given up, counted).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

/// Frame header: length, CRC-32, sequence number.
const HEADER: u64 = 16;
/// A segment is closed once it holds this much (or a quarter of the spool's maximum).
const SEGMENT_BYTES: u64 = 64 << 20;
/// Segment files are `<first sequence number>.processor-spool`: nothing else in the directory is
/// touched (the aggregator's own spools included, should the directory be shared by mistake).
const EXTENSION: &str = "processor-spool";

/// What the spool did, for the end log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpoolStats {
    /// Messages written to the spool, and their bytes (the messages', headers left out).
    pub spooled_frames: u64,
    pub spooled_bytes: u64,
    /// Messages given up by the spool (past its maximum, the disk full or unwritable).
    pub spool_given_up: u64,
    pub spool_given_up_bytes: u64,
    /// Frames read back from disk to be sent (again, each time), and those found damaged,
    /// skipped.
    pub spool_read: u64,
    pub spool_damaged: u64,
}

/// The spooled run of sequence numbers `first..end`, in segments.
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending; `None` once sealed (after a write error).
    writer: Option<File>,
    first: u64,
    end: u64,
    disk_bytes: u64,
    reader: Option<Reader>,
    /// The highest sequence number found damaged on reading back.
    damaged: Option<u64>,
    pub stats: SpoolStats,
    log: RateLimit<&'static str>,
    record: Vec<u8>,
    /// Why the directory cannot be used (another live processor holds it), if so.
    unusable: Option<String>,
}

struct Segment {
    path: PathBuf,
    first: u64,
    /// Inclusive; `first - 1` while empty.
    last: u64,
    /// Its good length: frames written whole.
    bytes: u64,
}

/// Reads one segment forward; `frame` is the last frame read (kept until it is sent).
struct Reader {
    segment_first: u64,
    file: BufReader<File>,
    pos: u64,
    /// The sequence number of the next frame in the file.
    next: u64,
    frame: Option<(u64, Vec<u8>)>,
}

impl Spool {
    /// A spool in `dir` (created if missing), holding at most `max_bytes` on disk; what an
    /// earlier incarnation left there is deleted, and said. A directory that cannot be
    /// created is an ERROR here, and every frame offered later is given up and counted.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Spool {
        if let Err(e) = std::fs::create_dir_all(dir) {
            error!(dir = %dir.display(), error = %e, "cannot create the spool directory: messages past --unacked-max-bytes will be given up");
        }
        let unusable = lock(dir).err();
        if let Some(e) = &unusable {
            error!(dir = %dir.display(), "{e}: this processor runs without a spool, messages past --unacked-max-bytes will be given up");
        } else {
            discard_earlier(dir);
        }
        Spool {
            unusable,
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 4).clamp(HEADER, SEGMENT_BYTES),
            segments: VecDeque::new(),
            writer: None,
            first: 0,
            end: 0,
            disk_bytes: 0,
            reader: None,
            damaged: None,
            stats: SpoolStats::default(),
            log: RateLimit::default(),
            record: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first >= self.end
    }

    /// The lowest sequence number spooled (meaningful when not empty).
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// One past the highest sequence number spooled.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of segment files on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// The highest sequence number found damaged, if any.
    pub(crate) fn damaged(&self) -> Option<u64> {
        self.damaged
    }

    /// Appends message `seq` (the next after every one spooled). Past the maximum the oldest
    /// segments are given up; on a write error (disk full) the segment is sealed and the
    /// oldest given up to make room, and when nothing is left to give up, the message itself.
    pub(crate) fn push(&mut self, seq: u64, frame: &[u8]) {
        let size = HEADER + frame.len() as u64;
        if size > self.max_bytes {
            while self.give_up_oldest("a message larger than --spool-max-bytes") {}
            self.give_up_frame(seq, frame.len(), "larger than --spool-max-bytes");
            return;
        }
        while self.disk_bytes + size > self.max_bytes
            && self.give_up_oldest("past --spool-max-bytes")
        {}
        loop {
            match self.write(seq, frame) {
                Ok(()) => return,
                Err(e) => {
                    if let Some(l) = self.log.hit("write", Instant::now()) {
                        error!(dir = %self.dir.display(), error = %e, suppressed = l.suppressed,
                            "cannot write to the spool (disk full?): its oldest messages are given up to make room");
                    }
                    self.seal();
                    if !self.give_up_oldest("the spool cannot be written") {
                        self.give_up_frame(seq, frame.len(), "the spool cannot be written");
                        return;
                    }
                }
            }
        }
    }

    /// Everything up to `seq` is acknowledged: returns how many spooled messages that covers;
    /// segments wholly acknowledged are deleted.
    pub(crate) fn acknowledge(&mut self, seq: u64) -> u64 {
        if self.is_empty() || seq < self.first {
            return 0;
        }
        let upto = (seq + 1).min(self.end);
        let covered = upto - self.first;
        self.first = upto;
        while self.segments.front().is_some_and(|s| s.last < self.first) {
            self.delete_front();
        }
        covered
    }

    /// Reads the spooled message `want` or, when it is damaged, the next readable one after
    /// it (from disk, one frame at a time): its number, the frame then in [`Spool::frame_mut`].
    /// `None` when none is left.
    pub(crate) fn read(&mut self, want: u64) -> Option<u64> {
        let want = want.max(self.first);
        if want >= self.end {
            return None;
        }
        let kept = self
            .reader
            .as_ref()
            .and_then(|r| r.frame.as_ref())
            .map(|(s, _)| *s);
        if kept != Some(want) {
            self.advance(want)?;
        }
        self.reader.as_ref()?.frame.as_ref().map(|(s, _)| *s)
    }

    /// The frame [`Spool::read`] found.
    pub(crate) fn frame_mut(&mut self) -> Option<&mut Vec<u8>> {
        self.reader.as_mut()?.frame.as_mut().map(|(_, f)| f)
    }

    /// Positions the reader on the first readable frame at or after `want`.
    fn advance(&mut self, want: u64) -> Option<()> {
        if self.reader.as_ref().is_none_or(|r| r.next > want) {
            self.open_reader(want)?;
        }
        loop {
            let (seg_first, next) = {
                let r = self.reader.as_ref()?;
                (r.segment_first, r.next)
            };
            let seg = self.segments.iter().find(|s| s.first == seg_first)?;
            let (limit, last) = (seg.bytes, seg.last);
            if next > last {
                self.open_reader(last + 1)?;
                continue;
            }
            match self.read_frame(limit) {
                Ok(Some((seq, frame))) if seq >= want => {
                    self.stats.spool_read += 1;
                    if let Some(r) = self.reader.as_mut() {
                        r.frame = Some((seq, frame));
                    }
                    return Some(());
                }
                Ok(Some(_)) => {}
                Ok(None) => self.on_damaged(next, next),
                Err(e) => {
                    warn!(error = %e, segment = %seg_path(&self.dir, seg_first).display(), "spool segment unreadable past this point");
                    self.on_damaged(next, last);
                    self.open_reader(last + 1)?;
                }
            }
        }
    }

    /// Reads the reader's next frame: `Ok(None)` when its checksum fails (the frame is skipped),
    /// `Err` when the rest of the segment cannot be read (a bad length or header, an IO error).
    fn read_frame(&mut self, limit: u64) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let r = self.reader.as_mut().ok_or_else(|| bad("no reader"))?;
        let mut header = [0u8; HEADER as usize];
        if r.pos + HEADER > limit {
            return Err(bad("frame header past the segment's end"));
        }
        r.file.read_exact(&mut header)?;
        let (len, rest) = header.split_at(4);
        let (sum, seq) = rest.split_at(4);
        let len = u64::from(u32::from_le_bytes(
            len.try_into().map_err(|_| bad("length"))?,
        ));
        let sum = u32::from_le_bytes(sum.try_into().map_err(|_| bad("checksum"))?);
        let seq = u64::from_le_bytes(seq.try_into().map_err(|_| bad("sequence number"))?);
        if seq != r.next || r.pos + HEADER + len > limit {
            return Err(bad("frame header damaged"));
        }
        let mut frame = r.frame.take().map(|(_, f)| f).unwrap_or_default();
        frame.resize(len as usize, 0);
        r.file.read_exact(&mut frame)?;
        r.pos += HEADER + len;
        r.next += 1;
        Ok((crc(seq, &frame) == sum).then_some((seq, frame)))
    }

    /// Frames `from..=to` could not be read back: skipped, counted (once each).
    fn on_damaged(&mut self, from: u64, to: u64) {
        let from = self.damaged.map_or(from, |d| from.max(d + 1));
        if to >= from {
            self.stats.spool_damaged += to - from + 1;
            self.damaged = Some(to);
            error!(
                from,
                to,
                damaged = self.stats.spool_damaged,
                "damaged spool frames skipped: lost (the aggregator counts them given up)"
            );
        }
    }

    /// A reader at the start of the segment holding `want` (at the first after it if none).
    fn open_reader(&mut self, want: u64) -> Option<()> {
        self.reader = None;
        let seg = self.segments.iter().find(|s| s.last >= want)?;
        let (first, path) = (seg.first, seg.path.clone());
        match File::open(&path) {
            Ok(f) => {
                self.reader = Some(Reader {
                    segment_first: first,
                    file: BufReader::with_capacity(1 << 16, f),
                    pos: 0,
                    next: first,
                    frame: None,
                });
                Some(())
            }
            Err(e) => {
                warn!(segment = %path.display(), error = %e, "spool segment cannot be opened");
                let last = seg.last;
                self.on_damaged(first, last);
                self.open_reader(last + 1)
            }
        }
    }

    /// Writes one frame to the last segment (a new one when it is full or sealed).
    fn write(&mut self, seq: u64, frame: &[u8]) -> std::io::Result<()> {
        if let Some(e) = &self.unusable {
            return Err(std::io::Error::other(e.clone()));
        }
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.writer.is_none() || full {
            let path = seg_path(&self.dir, seq);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            self.writer = Some(file);
            self.segments.push_back(Segment {
                path,
                first: seq,
                last: seq.wrapping_sub(1),
                bytes: 0,
            });
        }
        let len = u32::try_from(frame.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        self.record.clear();
        self.record.extend_from_slice(&len.to_le_bytes());
        self.record
            .extend_from_slice(&crc(seq, frame).to_le_bytes());
        self.record.extend_from_slice(&seq.to_le_bytes());
        self.record.extend_from_slice(frame);
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&self.record)?;
        }
        if let Some(s) = self.segments.back_mut() {
            s.last = seq;
            s.bytes += self.record.len() as u64;
        }
        if self.is_empty() {
            self.first = seq;
        }
        self.end = seq + 1;
        self.disk_bytes += self.record.len() as u64;
        self.stats.spooled_frames += 1;
        self.stats.spooled_bytes += frame.len() as u64;
        Ok(())
    }

    /// After a write error: the last segment keeps its good length (a torn frame cut off if
    /// the disk allows) and the next write opens a new one. An empty one is deleted.
    fn seal(&mut self) {
        let Some(file) = self.writer.take() else {
            return;
        };
        let Some(s) = self.segments.back() else {
            return;
        };
        let _ = file.set_len(s.bytes);
        if s.bytes == 0 {
            let _ = std::fs::remove_file(&s.path);
            self.segments.pop_back();
        }
    }

    /// Gives up the oldest segment's messages not yet acknowledged (an ERROR, counted) and
    /// deletes it; false when there is none.
    fn give_up_oldest(&mut self, why: &'static str) -> bool {
        let Some(seg) = self.segments.front() else {
            return false;
        };
        let from = self.first.max(seg.first);
        if seg.last >= from {
            let frames = seg.last - from + 1;
            let bytes = if from == seg.first {
                seg.bytes - HEADER * frames
            } else {
                message_bytes_from(&seg.path, seg.first, from).unwrap_or(0)
            };
            self.stats.spool_given_up += frames;
            self.stats.spool_given_up_bytes += bytes;
            if let Some(l) = self.log.hit("given_up", Instant::now()) {
                error!(from, to = seg.last, bytes, given_up = self.stats.spool_given_up, suppressed = l.suppressed,
                    "unacknowledged messages given up from the spool ({why}): lost if the aggregator lacks them");
            }
            self.first = seg.last + 1;
        }
        self.delete_front();
        if self.segments.is_empty() {
            self.first = self.end;
        }
        true
    }

    /// A message that could not be spooled (nothing older is held on disk): given up.
    fn give_up_frame(&mut self, seq: u64, bytes: usize, why: &'static str) {
        self.stats.spool_given_up += 1;
        self.stats.spool_given_up_bytes += bytes as u64;
        if let Some(l) = self.log.hit("given_up", Instant::now()) {
            error!(seq, bytes, given_up = self.stats.spool_given_up, suppressed = l.suppressed,
                "an unacknowledged message could not be spooled ({why}): given up, lost if the aggregator lacks it");
        }
        self.first = seq + 1;
        self.end = seq + 1;
    }

    fn delete_front(&mut self) {
        let Some(seg) = self.segments.pop_front() else {
            return;
        };
        if self.segments.is_empty() {
            self.writer = None;
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|r| r.segment_first == seg.first)
        {
            self.reader = None;
        }
        self.disk_bytes -= seg.bytes;
        if let Err(e) = std::fs::remove_file(&seg.path) {
            warn!(segment = %seg.path.display(), error = %e, "spool segment not deleted");
        }
    }
}

impl Drop for Spool {
    /// What is left belongs to this incarnation only: deleted.
    fn drop(&mut self) {
        self.writer = None;
        self.reader = None;
        while !self.segments.is_empty() {
            self.delete_front();
        }
        if self.unusable.is_none() {
            let _ = std::fs::remove_file(self.dir.join(LOCK));
        }
    }
}

const LOCK: &str = "LOCK";

/// Takes `dir` for this process: its `LOCK` file written with our process id, unless it names
/// another process still running (one that crashed left it: taken over).
fn lock(dir: &Path) -> Result<(), String> {
    let path = dir.join(LOCK);
    let ours = std::process::id();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let holder = text.trim().parse::<u32>().ok();
        if let Some(pid) =
            holder.filter(|&p| p != ours && Path::new(&format!("/proc/{p}")).exists())
        {
            return Err(format!(
                "the spool directory is in use by process {pid} (its {LOCK} file): one directory per processor"
            ));
        }
    }
    // Whether the lock can be written or not, the segments' own writes say if the directory
    // is usable.
    let _ = std::fs::write(&path, format!("{ours}\n"));
    Ok(())
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{EXTENSION}"))
}

/// CRC-32 of a frame's sequence number and message.
fn crc(seq: u64, frame: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(&seq.to_le_bytes());
    c.update(frame);
    c.sum()
}

/// The message bytes of the frames numbered `from` and after in the segment at `path`.
fn message_bytes_from(path: &Path, first: u64, from: u64) -> std::io::Result<u64> {
    let mut f = BufReader::new(File::open(path)?);
    let (mut seq, mut bytes) = (first, 0);
    let mut header = [0u8; HEADER as usize];
    while f.read_exact(&mut header).is_ok() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len);
        if seq >= from {
            bytes += u64::from(len);
        }
        f.seek(SeekFrom::Current(i64::from(len)))?;
        seq += 1;
    }
    Ok(bytes)
}

/// Deletes the segments an earlier incarnation left in `dir`, saying how much was discarded.
fn discard_earlier(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != EXTENSION) {
            continue;
        }
        let len = entry.metadata().map_or(0, |m| m.len());
        match std::fs::remove_file(&path) {
            Ok(()) => (files, bytes) = (files + 1, bytes + len),
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot delete a spool segment an earlier incarnation left")
            }
        }
    }
    if files > 0 {
        info!(dir = %dir.display(), files, bytes,
            "spool left by an earlier processor incarnation discarded (its flows ended with it; the aggregator counts what it lacks)");
    }
}

#[cfg(test)]
#[path = "spool/tests.rs"]
mod tests;
