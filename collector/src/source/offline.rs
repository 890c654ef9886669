//! Opening a capture file for libpcap with a large stdio buffer.
//!
//! `pcap_open_offline` reads through a `FILE` whose buffer glibc sizes from `st_blksize`, 4 KiB on
//! ext4, overlayfs and tmpfs: one `read(2)` per 4 KiB, about 154,000 syscalls for a 630 MB
//! capture, near half of the collector's CPU time (see bench/RESULTS.md). libpcap has no call to
//! size that buffer, so this module opens the `FILE` itself, gives it a 64 KiB buffer with
//! `setvbuf`, and hands it to `pcap_fopen_offline_with_tstamp_precision`. It also runs a
//! compiled BPF filter over a packet read without libpcap (`pcapng.rs`), with the packet's real
//! wire length, which the pcap crate's `BpfProgram::filter` does not take. This is the crate's
//! only `unsafe`: five C calls whose contracts are stated at each block.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use pcap::{BpfProgram, Capture, Offline};

/// Bytes of stdio buffer per capture file. Measured on the 1M-packet bench capture (collector
/// into tapflow-nullsink, system CPU): 4 KiB (glibc's choice) 0.25 s, 32 KiB 0.15 s, 64 KiB
/// 0.15 s, 128 KiB 0.16 s, 256 KiB 0.33 s, 1 MiB 0.37 s; past L2-sized chunks the copy out of the
/// page cache gets slower again.
pub const BUFFER_BYTES: usize = 1 << 16;

/// libpcap's `PCAP_ERRBUF_SIZE`.
const ERRBUF_SIZE: usize = 256;

/// libpcap's `PCAP_TSTAMP_PRECISION_NANO`.
const PRECISION_NANO: c_uint = 1;

unsafe extern "C" {
    // From libpcap (already linked by the pcap crate); returns NULL and fills `errbuf` on error,
    // leaving `fp` open; on success the returned handle owns `fp` and `pcap_close` closes it.
    fn pcap_fopen_offline_with_tstamp_precision(
        fp: *mut libc::FILE,
        precision: c_uint,
        errbuf: *mut c_char,
    ) -> *mut std::ffi::c_void;

    // From libpcap: runs `prog` over the `hdr.caplen` bytes at `pkt`; non-zero if it matches.
    fn pcap_offline_filter(
        prog: *const std::ffi::c_void,
        hdr: *const PacketHeader,
        pkt: *const u8,
    ) -> c_int;
}

/// libpcap's `struct pcap_pkthdr`.
#[repr(C)]
struct PacketHeader {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

/// Whether the compiled `program` accepts the packet `data` whose wire length is `wire_len`,
/// as libpcap's own reading loop decides it.
pub fn filter_accepts(program: &BpfProgram, data: &[u8], wire_len: u32) -> bool {
    let header = PacketHeader {
        ts: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        caplen: u32::try_from(data.len()).unwrap_or(u32::MAX),
        len: wire_len,
    };
    // SAFETY: `BpfProgram` is `#[repr(transparent)]` over libpcap's `struct bpf_program`, so a
    // pointer to it is a pointer to that struct, valid (the program compiled, not freed) while
    // `program` is borrowed; `header` is a live `pcap_pkthdr` whose `caplen` is `data`'s length,
    // so the filter reads at most the `data.len()` bytes at `data.as_ptr()`.
    let rc =
        unsafe { pcap_offline_filter(std::ptr::from_ref(program).cast(), &header, data.as_ptr()) };
    rc != 0
}

/// An offline capture and the stdio buffer its `FILE` reads into. Field order matters: the
/// capture (whose drop runs `pcap_close`, hence `fclose`) is dropped before the buffer.
pub struct BufferedFile {
    pub capture: Capture<Offline>,
    _buffer: Box<[u8]>,
}

/// Why a capture file could not be opened; the text is the OS's or libpcap's message, for
/// `SourceError::Open`.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the path contains a NUL byte")]
    NulInPath,
    #[error("{0}")]
    Os(std::io::Error),
    /// libpcap refused the file (not a capture, unknown format, ...): its message.
    #[error("{0}")]
    Pcap(String),
}

/// Opens `path` for libpcap with nanosecond timestamps and a `BUFFER_BYTES` stdio buffer.
pub fn open(path: &Path) -> Result<BufferedFile, OpenError> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| OpenError::NulInPath)?;
    let mut buffer = vec![0u8; BUFFER_BYTES].into_boxed_slice();
    // SAFETY: both arguments are valid NUL-terminated strings for the duration of the call.
    let fp = unsafe { libc::fopen(cpath.as_ptr(), c"rb".as_ptr()) };
    if fp.is_null() {
        return Err(OpenError::Os(std::io::Error::last_os_error()));
    }
    // SAFETY: `fp` is a freshly opened stream on which no I/O has happened yet, as setvbuf
    // requires; `buffer` is BUFFER_BYTES long and, being moved into the returned BufferedFile
    // (a boxed slice never moves its heap memory), outlives the stream, which only `pcap_close`
    // closes, and BufferedFile drops the capture first.
    let rc = unsafe {
        libc::setvbuf(
            fp,
            buffer.as_mut_ptr().cast::<c_char>(),
            libc::_IOFBF,
            BUFFER_BYTES,
        )
    };
    if rc != 0 {
        // Not fatal: the stream keeps glibc's own buffer, which is only slower.
        tracing::debug!("setvbuf refused a {BUFFER_BYTES}-byte buffer; reading with the default");
    }
    let mut errbuf = [0 as c_char; ERRBUF_SIZE];
    // SAFETY: `fp` is an open stream, `errbuf` has libpcap's PCAP_ERRBUF_SIZE bytes.
    let handle = unsafe {
        pcap_fopen_offline_with_tstamp_precision(fp, PRECISION_NANO, errbuf.as_mut_ptr())
    };
    let Some(handle) = NonNull::new(handle) else {
        // SAFETY: errbuf is NUL-terminated by libpcap on error (and zeroed before); `fp` is
        // still ours to close because libpcap failed to take it.
        let msg = unsafe { CStr::from_ptr(errbuf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let _: c_int = unsafe { libc::fclose(fp) };
        return Err(OpenError::Pcap(msg));
    };
    // The pcap crate builds a Capture from a handle it did not open; its drop runs pcap_close.
    let capture = Capture::<Offline>::from(handle.cast());
    Ok(BufferedFile {
        capture,
        _buffer: buffer,
    })
}
