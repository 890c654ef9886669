//! tapflow-blast: sends a capture's frames out of an interface at a set packet rate, or as fast
//! as one core can, for `bench/live.sh`: a raw `AF_PACKET` socket with `PACKET_QDISC_BYPASS`,
//! batches of `sendmmsg(2)` (64 frames a call), paced on the monotonic clock per batch (never
//! above the asked rate: a late sender restarts its schedule rather than bursting). The
//! first `--frames` frames of `--pcap` are held in memory and sent round and round until
//! `--packets` are out. tcpreplay sends one frame per syscall and tops out near 1M packets/s;
//! this sends several million into a veth from one core.
//!
//! Prints one line: `sent=N seconds=S pps=R cpu_s=C errors=E`.
//!
//! Example: tapflow-blast --interface tx0 --pcap bench/data/synth-1000000-40000.pcap
//!          --packets 5000000 --rate 2000000

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Sends a capture's frames out of an interface at a packet rate (raw socket, sendmmsg)"
)]
struct Args {
    /// Interface to send on (needs CAP_NET_RAW).
    #[arg(long)]
    interface: String,
    /// Capture whose frames are sent (classic pcap or pcapng, Ethernet).
    #[arg(long)]
    pcap: PathBuf,
    /// Frames of the capture held in memory and cycled through.
    #[arg(long, default_value_t = 200_000)]
    frames: usize,
    /// Packets to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Packets per second; 0: as fast as the socket takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

const BATCH: usize = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    let frames = match load(&args.pcap, args.frames) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return fail(format!("{}: no frames", args.pcap.display())),
        Err(e) => return fail(format!("{}: {e}", args.pcap.display())),
    };
    let sock = match raw::Sender::open(&args.interface) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", args.interface)),
    };
    let cpu0 = raw::cpu_seconds();
    let start = Instant::now();
    let (mut sent, mut errors, mut next) = (0u64, 0u64, 0usize);
    // The schedule's origin: packet `k` is due at `base.0 + (k - base.1) / rate`.
    let mut base = (start, 0u64);
    while sent < args.packets {
        if args.rate > 0 {
            base = pace(base, sent, args.rate);
        }
        let want = BATCH.min((args.packets - sent) as usize);
        let batch: Vec<&[u8]> = (0..want)
            .map(|i| frames[(next + i) % frames.len()].as_slice())
            .collect();
        match sock.send_batch(&batch) {
            Ok(n) => {
                sent += n as u64;
                next = (next + n) % frames.len();
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                errors += 1;
                std::hint::spin_loop();
            }
            Err(e) => return fail(format!("sendmmsg on {}: {e}", args.interface)),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} seconds={secs:.3} pps={:.0} cpu_s={:.2} errors={errors}",
        sent as f64 / secs,
        raw::cpu_seconds() - cpu0
    );
    ExitCode::SUCCESS
}

/// Waits until packet `sent` is due at `rate` packets/s on the schedule `base`: sleeps when
/// more than a millisecond early, spins for the rest. A sender that fell more than a
/// millisecond behind (descheduled on a busy machine) does not catch up in a burst above
/// `rate`: the schedule restarts from now, so the rate asked is never exceeded, only missed
/// (the rate achieved is printed).
fn pace(base: (Instant, u64), sent: u64, rate: u64) -> (Instant, u64) {
    let ns = u128::from(sent - base.1) * 1_000_000_000 / u128::from(rate);
    let due = base.0 + Duration::from_nanos(ns as u64);
    loop {
        let now = Instant::now();
        if now >= due {
            if now - due > Duration::from_millis(1) {
                return (now, sent);
            }
            return base;
        }
        let early = due - now;
        if early > Duration::from_millis(1) {
            std::thread::sleep(early - Duration::from_micros(500));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn load(path: &std::path::Path, max: usize) -> Result<Vec<Vec<u8>>, pcap::Error> {
    let mut cap = pcap::Capture::from_file(path)?;
    let mut out = Vec::with_capacity(max.min(1 << 20));
    while out.len() < max {
        match cap.next_packet() {
            Ok(p) => out.push(p.data.to_vec()),
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn fail(msg: String) -> ExitCode {
    eprintln!("tapflow-blast: {msg}");
    ExitCode::from(1)
}

/// The raw socket: the only unsafe code of the bench crate (FFI to socket(2), bind(2),
/// setsockopt(2), sendmmsg(2) and getrusage(2)).
#[allow(unsafe_code)]
mod raw {
    use std::ffi::CString;
    use std::io;

    pub struct Sender {
        fd: libc::c_int,
    }

    impl Sender {
        /// A raw `AF_PACKET` socket bound to `interface` that receives nothing (protocol 0)
        /// and bypasses the qdisc.
        pub fn open(interface: &str) -> io::Result<Sender> {
            let name = CString::new(interface).map_err(|_| io::ErrorKind::InvalidInput)?;
            // SAFETY: plain FFI calls with valid pointers to locals that outlive them.
            unsafe {
                let ifindex = libc::if_nametoindex(name.as_ptr());
                if ifindex == 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let sender = Sender { fd };
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                if libc::bind(fd, (&raw const sll).cast(), len) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let one: libc::c_int = 1;
                let olen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // Best effort: without it the frames go through the qdisc, a little slower.
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&raw const one).cast(),
                    olen,
                );
                Ok(sender)
            }
        }

        /// Sends the frames with one `sendmmsg`; returns how many went out.
        pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
            let mut iov: Vec<libc::iovec> = frames
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                })
                .collect();
            // SAFETY: zeroed mmsghdr is valid; each points at one iovec of `iov`, which lives
            // until sendmmsg returns, and the kernel only reads the frames.
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = v;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            // SAFETY: `msgs` holds `msgs.len()` initialised headers.
            let n = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
    }

    impl Drop for Sender {
        fn drop(&mut self) {
            // SAFETY: `fd` is ours and closed once.
            unsafe { libc::close(self.fd) };
        }
    }

    /// User + system CPU seconds of this process so far.
    pub fn cpu_seconds() -> f64 {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    }
}
