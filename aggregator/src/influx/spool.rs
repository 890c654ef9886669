//! The on-disk spool: batches InfluxDB could not take yet, one file each, oldest first.
//!
//! Files are plain line protocol (`<seq>.lp`, `seq` zero-padded so names sort by age), written
//! to a temporary name and renamed, so a crash leaves whole files only; an operator can post
//! one by hand (`curl --data-binary @FILE`). Files left by an earlier run are picked up at open
//! and written first. The total size is bounded: a batch that would pass `max_bytes` makes room
//! by dropping the oldest files (never the one being delivered), and the points in them are
//! counted as dropped; ERROR is logged, as this is data loss.
//!
//! Whatever is in the spool is replayed to InfluxDB as this process's user, so only that user
//! may write there: the directory is created mode 0700 and its files 0600; a directory owned by
//! another user, or writable by group or others, is refused ([`SpoolError`]); a file in it that
//! is not a regular file of this user's, or is writable by group or others, is never replayed
//! (left in place, counted in [`Spool::refused_files`], ERROR logged).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use tracing::error;

use super::batch::Batch;

/// Why a spool directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("cannot tell this process's effective uid (/proc/self/status): {0}")]
    Uid(io::Error),
    #[error("not a directory")]
    NotADirectory,
    #[error(
        "owned by uid {owner}, not by this process's uid {euid}: another user could make it \
         replay forged points; give --influx-spool-dir a directory of this user's"
    )]
    NotOwned { owner: u32, euid: u32 },
    #[error(
        "writable by group or others (mode {mode:03o}): another user could make it replay \
         forged points; chmod 700 it, or give --influx-spool-dir another directory"
    )]
    Writable { mode: u32 },
}

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
    /// Files written since the last [`Spool::sync`].
    unsynced: Vec<u64>,
    /// Spool files found at open and not replayed: not a regular file of this user's, or
    /// writable by group or others.
    pub refused_files: u64,
}

impl Spool {
    /// Opens (creating it, mode 0700, if needed) the spool in `dir`, after checking that only
    /// this user can write there, and indexes the files already there (refusing foreign ones).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let euid = effective_uid().map_err(SpoolError::Uid)?;
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(SpoolError::NotADirectory);
        }
        if meta.uid() != euid {
            return Err(SpoolError::NotOwned {
                owner: meta.uid(),
                euid,
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(SpoolError::Writable {
                mode: meta.mode() & 0o7777,
            });
        }
        let (files, refused, last_seq) = index(dir, euid)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            next_seq: last_seq.map_or(0, |s| s + 1),
            bytes: files.iter().map(|f| f.bytes).sum(),
            recovered_points: files.iter().map(|f| f.lines).sum(),
            files: files.into(),
            busy: None,
            dropped_points: 0,
            refused_files: refused,
            unsynced: Vec::new(),
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

    /// Every file written so far is on disk, and so is the directory (their names): a crash
    /// or a power cut from now on loses none of them.
    pub fn sync(&mut self) -> io::Result<()> {
        for seq in std::mem::take(&mut self.unsynced) {
            if self.files.iter().any(|f| f.seq == seq) {
                match fs::File::open(self.path(seq)) {
                    Ok(f) => f.sync_all()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        fs::File::open(&self.dir)?.sync_all()
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

    /// Writes `body` as file `seq` (mode 0600), through a temporary file renamed over it.
    fn write(&mut self, seq: u64, body: &[u8]) -> io::Result<()> {
        let path = self.path(seq);
        let tmp = path.with_extension("lp.tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        drop(f);
        fs::rename(&tmp, &path)?;
        self.unsynced.push(seq);
        if self.unsynced.len() > 2 * self.files.len() + 64 {
            // Without checkpoints nobody syncs: forget the files gone since.
            let files = &self.files;
            self.unsynced.retain(|s| files.iter().any(|f| f.seq == *s));
        }
        Ok(())
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

/// Where the spool goes when `--influx-spool-dir` is not given: `influx-spool` under this
/// user's state directory, the first of `$STATE_DIRECTORY` (systemd's `StateDirectory=`),
/// `/var/lib/tapflow` for root, `$XDG_STATE_HOME/tapflow`, `$HOME/.local/state/tapflow`
/// (environment values are used only when absolute). `None`: no state directory is known.
pub fn default_spool_dir() -> Option<PathBuf> {
    default_dir_from(|k| std::env::var_os(k), effective_uid().ok())
}

fn default_dir_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    euid: Option<u32>,
) -> Option<PathBuf> {
    let absolute = |k: &str| var(k).map(PathBuf::from).filter(|p| p.is_absolute());
    // systemd joins several StateDirectory= entries with `:`.
    let state = var("STATE_DIRECTORY")
        .and_then(|v| v.to_str()?.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute());
    let base = state
        .or_else(|| (euid == Some(0)).then(|| PathBuf::from("/var/lib/tapflow")))
        .or_else(|| absolute("XDG_STATE_HOME").map(|p| p.join("tapflow")))
        .or_else(|| absolute("HOME").map(|p| p.join(".local/state/tapflow")))?;
    Some(base.join("influx-spool"))
}

/// The spool files in `dir` that may be replayed (oldest first), the number refused, and the
/// highest sequence number seen (refused files included, so none is overwritten).
fn index(dir: &Path, euid: u32) -> io::Result<(Vec<SpoolFile>, u64, Option<u64>)> {
    let (mut files, mut refused, mut last) = (Vec::new(), 0, None::<u64>);
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
        last = last.max(Some(seq));
        let meta = fs::symlink_metadata(&path)?;
        if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
            refused += 1;
            error!(file = %path.display(), owner = meta.uid(), mode = format!("{:03o}", meta.mode() & 0o7777),
                "InfluxDB spool: file not written by this user (or writable by others): \
                 not replayed, left in place");
            continue;
        }
        let body = fs::read(&path)?;
        let lines = Batch::from_body(body.clone()).lines() as u64;
        files.push(SpoolFile {
            seq,
            bytes: body.len() as u64,
            lines,
        });
    }
    files.sort_by_key(|f| f.seq);
    Ok((files, refused, last))
}

/// This process's effective uid (the second field of `Uid:` in `/proc/self/status`).
fn effective_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no effective uid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

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
    fn fifo_partial_settle_and_reopen() -> Result<(), SpoolError> {
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
        Ok(fs::remove_dir_all(&dir)?)
    }

    #[test]
    fn bounded_dropping_oldest_but_not_the_busy_one() -> Result<(), SpoolError> {
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
        Ok(fs::remove_dir_all(&dir)?)
    }

    #[test]
    fn the_default_spool_is_under_a_state_directory() {
        let check = |env: &[(&str, &str)], euid, want: Option<&str>| {
            let got = default_dir_from(
                |k| {
                    env.iter()
                        .find(|(name, _)| *name == k)
                        .map(|(_, v)| v.into())
                },
                euid,
            );
            assert_eq!(got, want.map(PathBuf::from), "{env:?} uid {euid:?}");
        };
        let all = [
            ("STATE_DIRECTORY", "/var/lib/tapflow:/var/lib/other"),
            ("XDG_STATE_HOME", "/home/u/.state"),
            ("HOME", "/home/u"),
        ];
        let spool = "/var/lib/tapflow/influx-spool";
        check(&all, Some(1000), Some(spool));
        check(&all[1..], Some(0), Some(spool));
        check(
            &all[1..],
            Some(1000),
            Some("/home/u/.state/tapflow/influx-spool"),
        );
        check(
            &all[2..],
            Some(1000),
            Some("/home/u/.local/state/tapflow/influx-spool"),
        );
        check(
            &[("XDG_STATE_HOME", "rel"), ("HOME", "/h")],
            Some(7),
            Some("/h/.local/state/tapflow/influx-spool"),
        );
        check(&[("STATE_DIRECTORY", "")], None, None);
        check(&[], Some(1000), None);
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat a spool path").mode() & 0o7777
    }

    /// Root can give a file away (to `nobody`, 65534); others cannot, and skip that part.
    fn is_root() -> bool {
        effective_uid().expect("read the effective uid") == 0
    }

    #[test]
    fn a_new_spool_is_private() -> Result<(), SpoolError> {
        let top = tempfile::tempdir()?;
        let dir = top.path().join("state/influx-spool");
        let mut s = Spool::open(&dir, 1 << 20)?;
        s.push(&batch(0, 2))?;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&top.path().join("state")), 0o700);
        assert_eq!(mode(&s.path(0)), 0o600);
        Ok(())
    }

    #[test]
    fn a_spool_dir_others_can_write_or_own_is_refused() -> Result<(), SpoolError> {
        let top = tempfile::tempdir()?;
        let dir = top.path().join("spool");
        fs::create_dir(&dir)?;
        for m in [0o777, 0o770, 0o702] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(m))?;
            let e = Spool::open(&dir, 1 << 20).err();
            assert!(
                matches!(e, Some(SpoolError::Writable { mode }) if mode == m),
                "{m:o}: {e:?}"
            );
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Spool::open(&dir, 1 << 20)?;
        if is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534))?;
            let e = Spool::open(&dir, 1 << 20).err();
            assert!(
                matches!(
                    e,
                    Some(SpoolError::NotOwned {
                        owner: 65534,
                        euid: 0
                    })
                ),
                "{e:?}"
            );
            let text = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("--influx-spool-dir"), "{text}");
        } else {
            println!("not root: the foreign owner is not tested");
        }
        Ok(())
    }

    #[test]
    fn files_of_another_user_or_open_to_others_are_not_replayed() -> Result<(), SpoolError> {
        let top = tempfile::tempdir()?;
        let dir = top.path().join("spool");
        let mut s = Spool::open(&dir, 1 << 20)?;
        s.push(&batch(0, 2))?;
        drop(s);
        let forged = b"tapflow_alert,kind=syn_flood count=1i 1\n";
        let open = dir.join(format!("{:020}.lp", 5));
        fs::write(&open, forged)?;
        fs::set_permissions(&open, fs::Permissions::from_mode(0o666))?;
        let mut refused = 1;
        if is_root() {
            let foreign = dir.join(format!("{:020}.lp", 7));
            fs::write(&foreign, forged)?;
            fs::set_permissions(&foreign, fs::Permissions::from_mode(0o600))?;
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534))?;
            refused += 1;
        } else {
            println!("not root: a file of another user is not tested");
        }
        let mut s = Spool::open(&dir, 1 << 20)?;
        assert_eq!(
            (s.refused_files, s.recovered_points, s.files()),
            (refused, 2, 1)
        );
        let (seq, b) = s.take_oldest()?.expect("our own file");
        assert_eq!((seq, b), (0, batch(0, 2)));
        s.settle(seq, &Batch::default())?;
        assert!(s.take_oldest()?.is_none(), "a refused file was replayed");
        // New files go after the refused ones, which stay for the operator to look at.
        s.push(&batch(2, 1))?;
        let (seq, _) = s.take_oldest()?.expect("the new file");
        assert!(seq > 5 && open.exists(), "{seq}");
        Ok(())
    }
}
