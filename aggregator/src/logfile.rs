//! The aggregator's JSON-lines files: optional, buffered, reopened on SIGHUP.
//!
//! A file is opened in append mode and never through a symbolic link at its last component
//! (`O_APPEND | O_NOFOLLOW`): a log path that is a symlink is refused, and an existing file is
//! never truncated (a rerun appends).
//!
//! A line is written whole or not at all. Lines are buffered (whole lines only) and written
//! with one `write` loop per buffer; when a write fails part-way (a full disk), the bytes of
//! the line cut short are removed again (the file is cut back to the end of the last whole
//! line: its offset after the failed write, less the partial line), and the lines that did not
//! make it are counted as unwritten. Writing goes on: the next buffer is tried again (the disk
//! may have room again), so a failing log never stops the run; the caller reads
//! [`LogFile::unwritten`] at the end and reports it.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{error, info};

/// A log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct LogError {
    pub path: String,
    pub source: std::io::Error,
}

/// Logs resumed after a restart (`--state-dir`): by path, the offset where the interrupted
/// run began writing. [`LogFile::create`] cuts off a torn last line past it and skips as many
/// lines as the run had already written, so a record already written is not written again.
static RESUMED: std::sync::Mutex<Vec<(PathBuf, u64)>> = std::sync::Mutex::new(Vec::new());

/// Says that the log at `path` resumes a run that began writing at byte `start`.
pub fn resume(path: &Path, start: u64) {
    if let Ok(mut r) = RESUMED.lock() {
        r.retain(|(p, _)| p != path);
        r.push((path.to_path_buf(), start));
    }
}

/// What resuming did to a log: the lines found written and the bytes of a torn line cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    pub lines: u64,
    pub torn_bytes: u64,
}

/// Cuts a torn last line off `f` and counts the whole lines past `start`.
fn resume_file(f: &File, start: u64) -> std::io::Result<Resumed> {
    use std::io::Read;
    let len = f.metadata()?.len();
    let mut tail = Vec::new();
    let mut r = f;
    r.seek(std::io::SeekFrom::Start(start.min(len)))?;
    r.read_to_end(&mut tail)?;
    let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn_bytes = (tail.len() - whole) as u64;
    if torn_bytes > 0 {
        f.set_len(len - torn_bytes)?;
    }
    let lines = tail[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
    Ok(Resumed { lines, torn_bytes })
}

/// Lines buffered before they are written.
const BUFFER: usize = 1 << 16;

/// Where whole lines go: a file, or a test double.
pub trait Target: Write {
    /// Removes the last `bytes` bytes written (a line cut short by a failed write).
    fn cut_back(&mut self, bytes: u64) -> std::io::Result<()>;
}

impl Target for File {
    fn cut_back(&mut self, bytes: u64) -> std::io::Result<()> {
        // In append mode the offset is the end of what this write put there.
        let end = self.stream_position()?;
        self.set_len(end.saturating_sub(bytes))
    }
}

/// An optional JSON-lines file.
pub struct LogFile {
    path: String,
    w: Option<LineWriter<File>>,
}

impl LogFile {
    /// Opens `path` for appending (created if missing; a symlink is refused); `None`: nothing
    /// is written.
    pub fn create(path: Option<&Path>) -> Result<LogFile, LogError> {
        let Some(p) = path else {
            return Ok(LogFile {
                path: String::new(),
                w: None,
            });
        };
        let path = p.display().to_string();
        let f = open(p, &path)?;
        let mut w = LineWriter::new(f, path.clone());
        let start = RESUMED
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|(q, _)| q == p).map(|(_, s)| *s));
        if let Some(start) = start {
            let r = resume_file(&w.target, start).map_err(|source| LogError {
                path: path.clone(),
                source,
            })?;
            if r.torn_bytes > 0 {
                error!(path = %path, bytes = r.torn_bytes, "a torn last line (cut short by a crash) was removed; it is written again whole");
            }
            info!(path = %path, lines = r.lines, "resuming the log: lines already written are not written again");
            w.skip = r.lines;
        }
        Ok(LogFile { w: Some(w), path })
    }

    /// Flushes, then opens the path again (appending; created if logrotate moved it away).
    /// If it cannot be opened (or is now a symlink), the error is logged and lines go on to
    /// the file already open.
    pub fn reopen(&mut self) {
        let Some(w) = self.w.as_mut() else {
            return;
        };
        w.flush();
        match open(Path::new(&self.path), &self.path) {
            Ok(f) => w.target = f,
            Err(e) => error!("SIGHUP: {e}; still writing to the file open before"),
        }
    }

    /// Appends `text` (whole lines) and clears it.
    pub fn write(&mut self, text: &mut String) {
        if let Some(w) = self.w.as_mut() {
            w.write(text.as_bytes());
        }
        text.clear();
    }

    /// Writes `text` once it has grown past a chunk, so that the records released at the end of
    /// a capture (hundreds of thousands at once) never pile up in one string.
    pub fn write_chunk(&mut self, text: &mut String) {
        const CHUNK: usize = 1 << 18;
        if text.len() >= CHUNK {
            self.write(text);
        }
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) {
        if let Some(w) = self.w.as_mut() {
            w.flush();
        }
    }

    /// Writes what is buffered and syncs the file (a checkpoint of the write-ahead log).
    /// False while lines already in the file from before a restart are still being skipped.
    pub fn sync(&mut self) -> bool {
        let Some(w) = self.w.as_mut() else {
            return true;
        };
        w.flush();
        if let Err(e) = w.target.sync_data() {
            error!(path = %self.path, error = %e, "cannot sync the log for a checkpoint");
            return false;
        }
        w.skip == 0
    }

    /// Lines that could not be written so far.
    pub fn unwritten(&self) -> u64 {
        self.w.as_ref().map_or(0, |w| w.unwritten)
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// `O_APPEND | O_NOFOLLOW`, created if missing; a symlink gets a message saying so.
fn open(p: &Path, path: &str) -> Result<File, LogError> {
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|source| {
            let source = if source.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(
                    "it is a symbolic link (log files are not opened through one: give the real path)",
                )
            } else {
                source
            };
            LogError {
                path: path.to_string(),
                source,
            }
        })
}

/// Whole lines to a [`Target`], buffered; a failed write leaves no partial line and counts
/// the lines it lost.
pub struct LineWriter<T: Target> {
    target: T,
    path: String,
    buf: Vec<u8>,
    /// Lines lost to failed writes.
    pub unwritten: u64,
    /// Writes are failing (logged once until one succeeds again).
    failing: bool,
    /// Lines still to drop (already in the file from before a restart).
    skip: u64,
}

impl<T: Target> LineWriter<T> {
    pub fn new(target: T, path: String) -> LineWriter<T> {
        LineWriter {
            target,
            path,
            buf: Vec::with_capacity(BUFFER),
            unwritten: 0,
            failing: false,
            skip: 0,
        }
    }

    /// Buffers `lines` (whole lines), writing once the buffer is full.
    pub fn write(&mut self, mut lines: &[u8]) {
        while self.skip > 0 && !lines.is_empty() {
            let end = lines
                .iter()
                .position(|&b| b == b'\n')
                .map_or(lines.len(), |i| i + 1);
            lines = &lines[end..];
            self.skip -= 1;
        }
        if self.buf.is_empty() && lines.len() >= BUFFER {
            // A buffer's worth already (the conn log hands over 256 KiB at a time): written
            // as it is, not copied into the buffer first.
            self.write_out(lines);
            return;
        }
        self.buf.extend_from_slice(lines);
        if self.buf.len() >= BUFFER {
            self.flush();
        }
    }

    /// Writes the buffer: every line, or on an error the lines before it and none cut short.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        self.write_out(&buf);
        self.buf = buf;
        self.buf.clear();
    }

    /// Writes `lines` (whole lines): every line, or on an error the lines before it and none
    /// cut short.
    fn write_out(&mut self, lines: &[u8]) {
        let (done, result) = write_some(&mut self.target, lines);
        let result = result.and_then(|()| self.target.flush());
        match result {
            Ok(()) => {
                if self.failing {
                    info!(path = %self.path, unwritten = self.unwritten, "log writable again");
                    self.failing = false;
                }
            }
            Err(e) => self.failed(lines, done, &e),
        }
    }

    /// `done` bytes of `lines` went out before `e`.
    fn failed(&mut self, lines: &[u8], done: usize, e: &std::io::Error) {
        let whole = lines[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < done {
            if let Err(cut) = self.target.cut_back((done - whole) as u64) {
                error!(path = %self.path, "cannot remove a line cut short by a failed write: {cut}");
            }
        }
        let lost = lines[whole..].iter().filter(|&&b| b == b'\n').count() as u64;
        self.unwritten += lost;
        if !self.failing {
            error!(
                "cannot write {}: {e}; {lost} lines not written (counted in the accounting report), writing goes on",
                self.path
            );
            self.failing = true;
        }
    }
}

/// Writes as much of `bytes` as `w` takes: the count written, and the error that stopped it.
fn write_some(w: &mut impl Write, bytes: &[u8]) -> (usize, std::io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match w.write(&bytes[done..]) {
            Ok(0) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed log: a torn last line is cut off, and the lines the interrupted run wrote
    /// (past where it began) are not written again; lines from before it are left alone.
    #[test]
    fn a_resumed_log_skips_what_it_already_holds() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("conn.jsonl");
        std::fs::write(&path, "old\none\ntwo\nthr").expect("write the log");
        resume(&path, 4);
        let mut log = LogFile::create(Some(&path)).expect("open the log");
        for line in ["one\ntwo\n", "three\nfour\n"] {
            log.write(&mut line.to_string());
        }
        log.flush();
        let text = std::fs::read_to_string(&path).expect("read the log");
        assert_eq!(text, "old\none\ntwo\nthree\nfour\n");
    }

    /// A disk with `room` bytes left: writes take what fits, then fail with ENOSPC.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Target for Disk {
        fn cut_back(&mut self, bytes: u64) -> std::io::Result<()> {
            let keep = self.data.len() - bytes as usize;
            self.room += self.data.len() - keep;
            self.data.truncate(keep);
            Ok(())
        }
    }

    fn line(i: usize) -> String {
        format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 37))
    }

    /// Line by line (through the buffer), and in pieces of a buffer's worth or more (written
    /// as they are, as the conn log hands them over).
    #[test]
    fn a_full_disk_leaves_whole_lines_only_counts_the_rest_and_writing_resumes_with_room() {
        for lines_per_write in [1, 2_500] {
            full_disk(lines_per_write);
        }
    }

    fn full_disk(lines_per_write: usize) {
        let disk = Disk {
            data: Vec::new(),
            room: 100_000,
        };
        let mut w = LineWriter::new(disk, "test.jsonl".into());
        let mut sent = 0;
        let mut piece = String::new();
        for i in 0..5_000 {
            piece.push_str(&line(i));
            sent += 1;
            if sent % lines_per_write == 0 {
                if lines_per_write > 1 {
                    assert!(piece.len() >= BUFFER, "a piece of {} bytes", piece.len());
                }
                w.write(piece.as_bytes());
                piece.clear();
            }
        }
        w.flush();
        let text = String::from_utf8(w.target.data.clone()).expect("utf-8");
        assert!(text.ends_with('\n'), "a partial line is left");
        let written = text.lines().count() as u64;
        // Whole lines in order; after a failed buffer, later buffers may fit the room left.
        let mut last = None;
        for l in text.lines() {
            let n: serde_json::Value = serde_json::from_str(l).expect("a whole JSON line");
            let n = n["n"].as_u64().expect("n") as usize;
            assert_eq!(format!("{l}\n"), line(n));
            assert!(last < Some(n), "{last:?} then {n}");
            last = Some(n);
        }
        assert!(w.unwritten > 0, "the disk was meant to fill");
        assert_eq!(written + w.unwritten, sent as u64);
        // Space again: the next lines go out, after the whole ones.
        w.target.room = 1 << 20;
        let before = w.unwritten;
        w.write(line(7).as_bytes());
        w.flush();
        assert_eq!(w.unwritten, before);
        let text = String::from_utf8(w.target.data.clone()).expect("utf-8");
        assert_eq!(text.lines().count() as u64, written + 1);
        assert!(text.ends_with(&line(7)));
    }

    #[test]
    fn a_write_that_fails_at_once_loses_the_buffer_and_nothing_is_cut() {
        let disk = Disk {
            data: b"{\"old\":1}\n".to_vec(),
            room: 0,
        };
        let mut w = LineWriter::new(disk, "full".into());
        w.write(line(1).as_bytes());
        w.write(line(2).as_bytes());
        w.flush();
        assert_eq!(w.unwritten, 2);
        assert_eq!(w.target.data, b"{\"old\":1}\n");
    }

    #[test]
    fn a_log_is_appended_to_and_a_symlink_is_refused_with_its_target_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"before\":1}\n").expect("write the earlier run's line");
        let mut log = LogFile::create(Some(&path)).expect("opens");
        log.write(&mut "{\"after\":2}\n".to_string());
        log.flush();
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"before\":1}\n{\"after\":2}\n"
        );
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").expect("write the victim");
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let refused = LogFile::create(Some(&link))
            .err()
            .expect("a symlink is refused");
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }
}
