//! The conn log on its own thread: released records are formatted (Zeek-style JSON lines) and
//! written there, in the order they are handed over.
//!
//! At the end of a capture the main loop releases a few hundred thousand records at once; the
//! JSON line and its copies were the largest part of that work, on one core while the other
//! idled. Records go over in chunks through one bounded channel (at most [`DEPTH`] chunks of
//! [`CHUNK`] records queued: past that the releasing thread waits), so the log's order is the
//! release order. A write error does not stop the thread: the log keeps whole lines only,
//! counts the records it could not write and tries again with the next ones
//! ([`crate::logfile`]); [`ConnWriter::finish`] returns that count.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use tapflow_proto::conn::ConnRecord;

use crate::conns::conn_json;
use crate::logfile::{LogError, LogFile};

/// Why the conn log stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnLogError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Small, and few in flight: a record is formatted soon after the releasing thread read it
/// (detection's input), while its lines may still be in a cache (issue 19: on 1024 x 16 the
/// queued records, ~9 MB, outgrew the 4 MiB L2 and `conn_json` waited on cold loads).
const CHUNK: usize = 128;
const DEPTH: usize = 4;

type Released = (Box<ConnRecord>, Vec<String>);

/// Records the thread could not write (a full disk), and the log's path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwritten {
    pub path: String,
    pub records: u64,
}

enum Cmd {
    Records(Vec<Released>),
    /// SIGHUP: flush and open the path again, after the records handed over before it.
    Reopen,
    /// A checkpoint: write and sync everything handed over, then say if the log is caught up.
    Sync(SyncSender<bool>),
}

pub struct ConnWriter {
    chunk: Vec<Released>,
    tx: Option<SyncSender<Cmd>>,
    /// Emptied chunks back from the thread, to be filled again.
    spare: Option<Receiver<Vec<Released>>>,
    handle: Option<JoinHandle<Unwritten>>,
}

impl ConnWriter {
    /// Opens the log at `path` for appending and starts its thread; with no path, records are
    /// dropped as they are handed over.
    pub fn start(path: Option<&Path>) -> Result<ConnWriter, ConnLogError> {
        let mut w = ConnWriter {
            chunk: Vec::new(),
            tx: None,
            spare: None,
            handle: None,
        };
        if path.is_none() {
            return Ok(w);
        }
        let mut log = LogFile::create(path)?;
        let (tx, rx) = mpsc::sync_channel::<Cmd>(DEPTH);
        let (spare_tx, spare) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("conn-log".into())
            .spawn(move || {
                let mut text = String::with_capacity(1 << 19);
                for cmd in rx {
                    match cmd {
                        Cmd::Records(mut records) => {
                            for (r, parents) in records.drain(..) {
                                conn_json(&r, &parents, &mut text);
                                log.write_chunk(&mut text);
                            }
                            let _ = spare_tx.send(records);
                            log.write(&mut text);
                        }
                        Cmd::Reopen => log.reopen(),
                        Cmd::Sync(done) => {
                            let _ = done.send(log.sync());
                        }
                    }
                }
                log.write(&mut text);
                log.flush();
                Unwritten {
                    path: log.path().to_string(),
                    records: log.unwritten(),
                }
            })
            .map_err(ConnLogError::Thread)?;
        w.chunk = Vec::with_capacity(CHUNK);
        w.tx = Some(tx);
        w.spare = Some(spare);
        w.handle = Some(handle);
        Ok(w)
    }

    /// The next record in release order.
    pub fn push(&mut self, r: Box<ConnRecord>, parents: Vec<String>) -> Result<(), ConnLogError> {
        if self.tx.is_none() {
            return Ok(());
        }
        self.chunk.push((r, parents));
        if self.chunk.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over what is queued here (call after each release).
    pub fn flush(&mut self) -> Result<(), ConnLogError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .as_ref()
            .and_then(|s| s.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.chunk, next);
        self.send(Cmd::Records(chunk))
    }

    /// Reopens the log (SIGHUP), after every record handed over so far.
    pub fn reopen(&mut self) -> Result<(), ConnLogError> {
        self.flush()?;
        if self.tx.is_none() {
            return Ok(());
        }
        self.send(Cmd::Reopen)
    }

    /// Waits until every record handed over is written and synced; false if the log is not
    /// caught up (still skipping lines written before a restart) or the thread is gone.
    pub fn sync(&mut self) -> Result<bool, ConnLogError> {
        self.flush()?;
        if self.tx.is_none() {
            return Ok(true);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Sync(tx))?;
        Ok(rx.recv().unwrap_or(false))
    }

    /// End of stream: waits until every record is written and the file flushed; returns
    /// the records that could not be written.
    pub fn finish(mut self) -> Result<Unwritten, ConnLogError> {
        self.flush()?;
        self.tx = None;
        self.join()
    }

    fn send(&mut self, cmd: Cmd) -> Result<(), ConnLogError> {
        let Some(tx) = self.tx.as_ref() else {
            return Ok(());
        };
        if tx.send(cmd).is_ok() {
            return Ok(());
        }
        // The thread ended early: it died.
        self.tx = None;
        self.join().map(|_| ())
    }

    fn join(&mut self) -> Result<Unwritten, ConnLogError> {
        match self.handle.take().map(JoinHandle::join) {
            None => Ok(Unwritten::default()),
            Some(Ok(unwritten)) => Ok(unwritten),
            Some(Err(_)) => Err(ConnLogError::Thread(std::io::Error::other(
                "the conn-log thread failed",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scan_and_sessions;

    #[test]
    fn writes_the_lines_conn_json_makes_in_the_order_handed_over_and_reopens_between() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("conn.jsonl");
        let records = scan_and_sessions(5_000);
        let mut expected = String::new();
        let mut w = ConnWriter::start(Some(&path)).expect("starts");
        for (i, r) in records.iter().enumerate() {
            let parents = if i % 1000 == 7 {
                vec![format!("Cparent{i}")]
            } else {
                vec![]
            };
            conn_json(r, &parents, &mut expected);
            w.push(Box::new(r.clone()), parents).expect("push");
            if i == 2_999 {
                // As logrotate does: the file is moved away, then SIGHUP.
                // The writer thread may still hold records handed over before the rename: they
                // land in the moved file through its open handle, as with logrotate.
                std::fs::rename(&path, dir.path().join("conn.jsonl.1")).expect("rename");
                w.reopen().expect("reopen");
            }
        }
        assert_eq!(w.finish().expect("finish").records, 0);
        let rotated = std::fs::read_to_string(dir.path().join("conn.jsonl.1")).expect("rotated");
        let current = std::fs::read_to_string(&path).expect("current");
        assert_eq!(
            rotated.lines().count() + current.lines().count(),
            records.len()
        );
        assert_eq!(format!("{rotated}{current}"), expected);
    }

    #[test]
    fn a_write_error_is_counted_and_the_records_go_on_being_taken() {
        // Writes to /dev/full fail with ENOSPC.
        let mut w = ConnWriter::start(Some(Path::new("/dev/full"))).expect("opens");
        for r in scan_and_sessions(20_000) {
            w.push(Box::new(r), vec![]).expect("push");
        }
        let unwritten = w.finish().expect("finish");
        assert_eq!(
            unwritten,
            Unwritten {
                path: "/dev/full".into(),
                records: 20_000
            }
        );
    }

    #[test]
    fn without_a_path_nothing_is_written_and_nothing_fails() {
        let mut w = ConnWriter::start(None).expect("starts");
        for r in scan_and_sessions(3_000) {
            w.push(Box::new(r), vec![]).expect("push");
        }
        w.finish().expect("finish");
    }
}
