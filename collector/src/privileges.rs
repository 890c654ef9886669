//! Capabilities. A live capture needs `CAP_NET_RAW` (and `CAP_NET_ADMIN` for promiscuous mode)
//! only to open the interface; nothing after that needs any. So once the capture is open, and
//! before the collector starts any thread that handles its input or talks to the network (links,
//! ZeroMQ's I/O threads, the metrics server; threads inherit their creator's sets), it drops:
//!
//! - every capability from the effective set: nothing is exercised while packets are decoded;
//! - every capability but those two from the permitted set, and those too unless the collector
//!   may reopen a live interface that fails (`--interface-retry-s`, not 0): a file needs none;
//! - the inheritable and ambient sets, and (with `CAP_SETPCAP`, i.e. when run as root) the
//!   bounding set down to what is kept.
//!
//! Reopening raises the two kept capabilities into the effective set for the open only.
//! Whether the collector runs as root, with file capabilities (`setcap
//! cap_net_raw,cap_net_admin=ep`) or under the systemd unit's `AmbientCapabilities`, the
//! result is the same. The signal-handling thread, started before the capture is opened, keeps
//! its sets: it only waits for signals.

use caps::{CapSet, Capability, CapsHashSet};

/// What opening a live capture needs.
pub const CAPTURE: [Capability; 2] = [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN];

/// Drops what the collector no longer needs (module docs); `keep_for_reopen` keeps [`CAPTURE`]
/// in the permitted set. Returns the permitted set left, for the log.
pub fn drop_after_open(keep_for_reopen: bool) -> Result<Vec<String>, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = CAPTURE
        .into_iter()
        .filter(|c| keep_for_reopen && permitted.contains(c))
        .collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c)? {
                caps::drop(None, CapSet::Bounding, c)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Effective)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    let mut left: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    left.sort();
    Ok(left)
}

/// Raises the kept capture capabilities for a reopen; [`lower`] after it.
pub fn raise_for_open() {
    for c in CAPTURE {
        if caps::has_cap(None, CapSet::Permitted, c).unwrap_or(false) {
            let _ = caps::raise(None, CapSet::Effective, c);
        }
    }
}

/// Empties the effective set again.
pub fn lower() {
    let _ = caps::clear(None, CapSet::Effective);
}
