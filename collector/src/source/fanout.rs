//! `PACKET_FANOUT`: several packet sockets on one interface share its packets, each packet to
//! exactly one of them by a hash of its flow (symmetric: both directions of a flow hash
//! alike), after the kernel has reassembled IP fragments (`PACKET_FANOUT_FLAG_DEFRAG`), so a
//! fragmented datagram reaches the socket of its flow whole. The one `unsafe` call
//! (setsockopt) is here.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// The fanout group of this process: one group per process and interface is enough (groups
/// are per network namespace; the pid keeps two collectors apart).
pub fn group_id() -> u16 {
    (std::process::id() & 0xffff) as u16
}

/// Joins the packet socket `fd` (a libpcap handle, activated, so bound to its interface) to
/// fanout group `group` in hash mode with kernel defragmentation.
pub fn join(fd: &impl AsRawFd, group: u16) -> std::io::Result<()> {
    let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
    let arg: libc::c_int = (u32::from(group) | (mode << 16)) as libc::c_int;
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a pointer to a live
    // c_int on this stack frame; the fd is a socket libpcap keeps open for as long as `fd`
    // lives (an invalid fd only makes the call fail with EBADF/ENOTSOCK).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&raw const arg).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
