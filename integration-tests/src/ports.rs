//! Loopback ports reserved across every test process running at once.
//!
//! Binding port 0 and releasing it before the real process binds hands out ports from the kernel's
//! ephemeral range, where a concurrent test (nextest runs each test in its own process) can be given
//! the same one, and where outgoing connections take theirs too. Ports here come instead from
//! [`RANGE`], below Linux's ephemeral range, starting at a random place; each is reserved with an
//! exclusive `flock` on `/tmp/tapflow-test-ports/<port>.lock`, held by this process until it exits
//! (the kernel drops the lock then, so a crashed test leaves nothing that blocks a port), and taken
//! only if it can be bound on 127.0.0.1 right now.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where ports are chosen: below `ip_local_port_range` (32768-60999 by default), so no socket
/// bound to port 0 and no outgoing connection is ever given one of them by the kernel.
pub const RANGE: std::ops::Range<u16> = 20000..32000;

/// The directory of lock files, shared by every worktree and user on the machine.
pub const LOCK_DIR: &str = "/tmp/tapflow-test-ports";

/// The lock files this process holds: its reservations last as long as it does.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// `k` distinct loopback ports, each reserved for the rest of this process's life.
pub fn reserve(k: usize) -> Vec<u16> {
    let dir = Path::new(LOCK_DIR);
    lock_dir(dir).expect("create the port lock directory");
    let span = RANGE.end - RANGE.start;
    let start = random_below(span);
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    let mut ports = Vec::with_capacity(k);
    for i in 0..span {
        if ports.len() == k {
            break;
        }
        let port = RANGE.start + (start + i) % span;
        if let Some(lock) = try_reserve(dir, port) {
            held.push(lock);
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        k,
        "ports reserved in {RANGE:?} under {LOCK_DIR}"
    );
    ports
}

/// The lock file of `port`, locked, if no other process holds it and the port is bindable.
fn try_reserve(dir: &Path, port: u16) -> Option<File> {
    let file = open_lock(&dir.join(format!("{port}.lock"))).ok()?;
    if !try_flock(&file) {
        return None;
    }
    let bindable = TcpListener::bind(("127.0.0.1", port)).is_ok()
        && UdpSocket::bind(("127.0.0.1", port)).is_ok();
    bindable.then_some(file)
}

/// Opens (creating if needed) a lock file any user can lock: `flock` needs only a read handle.
fn open_lock(path: &PathBuf) -> io::Result<File> {
    match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(path),
        other => other,
    }
}

/// The lock directory, writable by every user (a root test run must not lock others out).
fn lock_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o1777 != 0o1777 {
        // Only the owner may change it; anyone else has to live with what is there.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    Ok(())
}

/// An exclusive, non-blocking `flock(2)`: locks conflict between open files, also within one
/// process, and the kernel releases them when the process exits however it exits.
#[allow(unsafe_code)] // FFI: the crate's one call into libc (STYLE: forbid unsafe except for FFI)
fn try_flock(file: &File) -> bool {
    // SAFETY: `flock` only reads its arguments; the descriptor is open, owned by `file`, which
    // outlives the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// A number below `n`, different in each process and call (std's per-process random hash keys).
fn random_below(n: u16) -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    u16::try_from(h.finish() % u64::from(n)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_locked_and_in_range() {
        let ports = reserve(8);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "{ports:?}");
        for p in &ports {
            assert!(RANGE.contains(p), "{p}");
            // Another open file description of the same lock cannot take it, even in this process.
            let again = open_lock(&Path::new(LOCK_DIR).join(format!("{p}.lock")))
                .expect("open a held lock file");
            assert!(!try_flock(&again), "{p} is locked");
        }
        assert!(reserve(8).iter().all(|p| !ports.contains(p)));
    }
}
