//! Captures fed to collectors through FIFOs at the capture's own pace, as live taps would see
//! the traffic (a collector reading a file at full speed races the others, and its watermark
//! then says how far it has read, not how its clock runs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A classic pcap file: its 24-byte file header and its records (16-byte header + data).
pub struct Pcap {
    pub header: Vec<u8>,
    /// Timestamps are in nanoseconds (magic a1b23c4d) rather than microseconds.
    nanos: bool,
    little_endian: bool,
    pub records: Vec<(u64, Vec<u8>)>,
}

pub fn read_pcap(path: &Path) -> Pcap {
    let bytes = crate::read_file(path);
    assert!(bytes.len() >= 24, "{}: too short", path.display());
    let (nanos, little_endian) = match bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, false),
        _ => panic!("{}: not a classic pcap (pcapng?)", path.display()),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        u64::from(if little_endian {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32_at(&bytes, at + 8) as usize;
        let end = (at + 16 + caplen).min(bytes.len());
        let frac = u32_at(&bytes, at + 4);
        let ts_ns = u32_at(&bytes, at) * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        records.push((ts_ns, bytes[at..end].to_vec()));
        at = end;
    }
    Pcap {
        header: bytes[..24].to_vec(),
        nanos,
        little_endian,
        records,
    }
}

impl Pcap {
    /// Record `i` with its timestamp moved forward by `shift_ns`.
    pub fn record(&self, i: usize, shift_ns: u64) -> Vec<u8> {
        let (ts, bytes) = &self.records[i];
        let ts = ts + shift_ns;
        let (sec, frac) = (ts / 1_000_000_000, ts % 1_000_000_000);
        let frac = if self.nanos { frac } else { frac / 1000 };
        let mut out = bytes.clone();
        for (at, v) in [(0, sec), (4, frac)] {
            let v = u32::try_from(v).expect("a timestamp that fits 32 bits");
            let w = if self.little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            out[at..at + 4].copy_from_slice(&w);
        }
        out
    }

    /// The whole file with every timestamp moved forward by `shift_ns`.
    pub fn write_shifted(&self, path: &Path, shift_ns: u64) {
        let mut out = self.header.clone();
        for i in 0..self.records.len() {
            out.extend(self.record(i, shift_ns));
        }
        std::fs::write(path, out).expect("write the capture");
    }
}

/// Writes each capture into its FIFO at the captures' own pace, in packet order across all
/// of them (a capture's timestamps moved by its `shift_ns`): live taps watching one wire. Gives
/// up (panics) past `timeout`.
pub fn feed_paced(
    sources: Vec<(Pcap, PathBuf, u64)>,
    timeout: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut files: Vec<std::fs::File> = sources
            .iter()
            .map(|(_, p, _)| open_fifo_for_writing(p, deadline))
            .collect();
        for (f, (pcap, _, _)) in files.iter_mut().zip(&sources) {
            write_all(f, &pcap.header, deadline);
        }
        let mut order: Vec<(u64, usize, usize)> = sources
            .iter()
            .enumerate()
            .flat_map(|(k, (pcap, _, _))| {
                pcap.records
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (r.0, k, i))
            })
            .collect();
        order.sort();
        let (t0, start) = (order.first().map_or(0, |o| o.0), Instant::now());
        for (ts, k, i) in order {
            let due = start + Duration::from_nanos(ts - t0);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (pcap, _, shift) = &sources[k];
            write_all(&mut files[k], &pcap.record(i, *shift), deadline);
        }
    })
}

/// Opens a FIFO for writing once its reader (a collector) has opened it; non-blocking, so a
/// collector that never starts fails the test instead of hanging it.
pub fn open_fifo_for_writing(path: &Path, deadline: Instant) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt as _;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::ENXIO) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            f => {
                assert!(f.is_ok(), "{}: {f:?}", path.display());
                return f.expect("open the FIFO for writing");
            }
        }
    }
}

pub fn write_all(f: &mut std::fs::File, mut buf: &[u8], deadline: Instant) {
    while !buf.is_empty() {
        match f.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            n => buf = &buf[n.expect("write to a FIFO")..],
        }
    }
}

pub fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {} failed", path.display());
}
