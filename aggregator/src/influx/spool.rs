//! The on-disk spool: batches InfluxDB could not take yet, one file each, oldest first.
//!
//! Files are plain line protocol (`<seq>.lp`, `seq` zero-padded so names sort by age), written
//! to a temporary name and renamed, so a crash leaves whole files only; an operator can post
//! one by hand (`curl --data-binary @FILE`). Files left by an earlier run are picked up at open
//! and written first. The total size is bounded: a batch that would pass `max_bytes` makes room
//! by dropping the oldest files (never the one being delivered), and the points in them are
//! counted as dropped; ERROR is logged, as this is data loss.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::error;

use super::batch::Batch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolFile {
    pub seq: u64,
    pub bytes: u64,
    pub lines: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<SpoolFile>,
    next_seq: u64,
    bytes: u64,
    /// The file being delivered: never dropped to make room.
    busy: Option<u64>,
    /// Points dropped to keep within `max_bytes`.
    pub dropped_points: u64,
    /// Points found at open (left by an earlier run).
    pub recovered_points: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir` and indexes the files already there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".lp.tmp") {
                // A write cut short by a crash: it was never counted as spooled.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name.strip_suffix(".lp").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let body = fs::read(&path)?;
            let lines = Batch::from_body(body.clone()).lines() as u64;
            files.push(SpoolFile {
                seq,
                bytes: body.len() as u64,
                lines,
            });
        }
        files.sort_by_key(|f| f.seq);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            next_seq: files.last().map_or(0, |f| f.seq + 1),
            bytes: files.iter().map(|f| f.bytes).sum(),
            recovered_points: files.iter().map(|f| f.lines).sum(),
            files: files.into(),
            busy: None,
            dropped_points: 0,
        };
        spool.make_room(0);
        Ok(spool)
    }

    /// Appends `batch` as the newest file, dropping the oldest ones (counted) if it would not
    /// fit. A batch larger than the whole spool is itself dropped (counted). Returns the
    /// points stored.
    pub fn push(&mut self, batch: &Batch) -> io::Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let size = batch.body.len() as u64;
        if size > self.max_bytes {
            self.dropped_points += batch.lines() as u64;
            error!(
                points = batch.lines(),
                bytes = size,
                max_bytes = self.max_bytes,
                "InfluxDB spool: batch larger than the whole spool dropped"
            );
            return Ok(0);
        }
        self.make_room(size);
        let seq = self.next_seq;
        self.write(seq, &batch.body)?;
        self.next_seq += 1;
        self.bytes += size;
        self.files.push_back(SpoolFile {
            seq,
            bytes: size,
            lines: batch.lines() as u64,
        });
        Ok(batch.lines() as u64)
    }

    /// The oldest file and its lines; it is marked busy until [`Spool::settle`].
    pub fn take_oldest(&mut self) -> io::Result<Option<(u64, Batch)>> {
        let Some(f) = self.files.front() else {
            return Ok(None);
        };
        let seq = f.seq;
        match fs::read(self.path(seq)) {
            Ok(body) => {
                self.busy = Some(seq);
                Ok(Some((seq, Batch::from_body(body))))
            }
            Err(e) => {
                // Gone or unreadable: what it held cannot be written.
                let f = self.files.pop_front().unwrap_or(SpoolFile {
                    seq,
                    bytes: 0,
                    lines: 0,
                });
                self.bytes -= f.bytes;
                self.dropped_points += f.lines;
                error!(file = %self.path(seq).display(), points = f.lines, error = %e,
                    "InfluxDB spool: unreadable file dropped");
                Err(e)
            }
        }
    }

    /// Delivery of file `seq` ended with `rest` still to write: removes the file when `rest`
    /// is empty, otherwise rewrites it with `rest`.
    pub fn settle(&mut self, seq: u64, rest: &Batch) -> io::Result<()> {
        self.busy = None;
        let Some(i) = self.files.iter().position(|f| f.seq == seq) else {
            return Ok(());
        };
        if rest.is_empty() {
            if let Some(f) = self.files.remove(i) {
                self.bytes -= f.bytes;
            }
            return fs::remove_file(self.path(seq)).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        }
        self.write(seq, &rest.body)?;
        let f = &mut self.files[i];
        self.bytes = self.bytes - f.bytes + rest.body.len() as u64;
        f.bytes = rest.body.len() as u64;
        f.lines = rest.lines() as u64;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Points waiting in the spool.
    pub fn points(&self) -> u64 {
        self.files.iter().map(|f| f.lines).sum()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.lp"))
    }

    fn write(&self, seq: u64, body: &[u8]) -> io::Result<()> {
        let path = self.path(seq);
        let tmp = path.with_extension("lp.tmp");
        fs::write(&tmp, body)?;
        fs::rename(&tmp, &path)
    }

    /// Drops the oldest files (not the busy one) until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) {
        let mut i = 0;
        while self.bytes + incoming > self.max_bytes && i < self.files.len() {
            if Some(self.files[i].seq) == self.busy {
                i += 1;
                continue;
            }
            let Some(f) = self.files.remove(i) else {
                break;
            };
            self.bytes -= f.bytes;
            self.dropped_points += f.lines;
            let _ = fs::remove_file(self.path(f.seq));
            error!(
                points = f.lines,
                max_bytes = self.max_bytes,
                "InfluxDB spool full: oldest batch dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(from: usize, n: usize) -> Batch {
        let body: String = (from..from + n)
            .map(|i| format!("m v={i:04}i {i:04}\n"))
            .collect();
        Batch::from_body(body.into_bytes())
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapflow-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn fifo_partial_settle_and_reopen() -> io::Result<()> {
        let dir = tmpdir("fifo");
        let mut s = Spool::open(&dir, 1 << 20)?;
        s.push(&batch(0, 3))?;
        s.push(&batch(3, 2))?;
        assert_eq!((s.files(), s.points()), (2, 5));
        let (seq, b) = s.take_oldest()?.unwrap_or_default();
        assert_eq!(b, batch(0, 3));
        let last = 2..3;
        s.settle(seq, &b.subset(&[last]))?;
        assert_eq!(s.points(), 3);
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20)?;
        assert_eq!((s.recovered_points, s.points()), (3, 3));
        let (seq, b) = s.take_oldest()?.unwrap_or_default();
        assert_eq!(b, batch(2, 1));
        s.settle(seq, &Batch::default())?;
        let (seq, b) = s.take_oldest()?.unwrap_or_default();
        assert_eq!(b, batch(3, 2));
        s.settle(seq, &Batch::default())?;
        assert!(s.is_empty() && s.take_oldest()?.is_none());
        assert_eq!(fs::read_dir(&dir)?.count(), 0);
        fs::remove_dir_all(&dir)
    }

    #[test]
    fn bounded_dropping_oldest_but_not_the_busy_one() -> io::Result<()> {
        let dir = tmpdir("bound");
        let one = batch(0, 10).body.len() as u64;
        let mut s = Spool::open(&dir, 3 * one)?;
        for i in 0..3 {
            s.push(&batch(i * 10, 10))?;
        }
        let (busy, _) = s.take_oldest()?.unwrap_or_default();
        s.push(&batch(30, 10))?;
        assert_eq!((s.files(), s.dropped_points, s.bytes()), (3, 10, 3 * one));
        // The busy (oldest) one stayed; the second oldest went.
        let (seq, _) = s.take_oldest()?.unwrap_or_default();
        assert_eq!(seq, busy);
        s.push(&batch(0, 100))?;
        assert_eq!(s.dropped_points, 110, "larger than the spool");
        fs::remove_dir_all(&dir)
    }
}
