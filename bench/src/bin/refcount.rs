//! `tapflow-refcount`: the simplest single Rust process that does what tapflow's collector and
//! processors do at their core, as a reference for `bench/run.sh`: read a capture with libpcap,
//! parse each frame with etherparse, count packets per directional five-tuple in a std
//! `HashMap` (default hasher, grown as it fills). No sessions, no checksums, no fragments, no
//! tunnels, no IPC.
//!
//! `tapflow-refcount --pcap bench/data/synth-5000000-200000.pcap`

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Counts packets and distinct five-tuples (addresses, ports, IP protocol; ports 0 for
/// protocols without them) in an Ethernet capture.
///
/// Example: tapflow-refcount --pcap bench/data/synth-5000000-200000.pcap
#[derive(Parser, Debug)]
#[command(name = "tapflow-refcount", version)]
struct Args {
    /// Capture file (pcap or pcapng, Ethernet link type).
    #[arg(long)]
    pcap: PathBuf,
}

/// Source and destination address (IPv4 in the first 4 bytes), source and destination port,
/// IP protocol number.
type Tuple = ([u8; 16], [u8; 16], u16, u16, u8);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let mut cap = pcap::Capture::from_file(&args.pcap)
        .with_context(|| format!("opening {}", args.pcap.display()))?;
    let dlt = cap.get_datalink().0;
    if dlt != 1 {
        bail!(
            "{}: link type {dlt}, only Ethernet (1) is parsed",
            args.pcap.display()
        );
    }
    let mut flows: HashMap<Tuple, u64> = HashMap::new();
    let (mut packets, mut unparsed) = (0u64, 0u64);
    loop {
        let p = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => bail!("{} after {packets} packets: {e}", args.pcap.display()),
        };
        packets += 1;
        match tuple(p.data) {
            Some(t) => *flows.entry(t).or_insert(0) += 1,
            None => unparsed += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tapflow-refcount: {packets} packets, {} distinct five-tuples, {unparsed} not IP or \
         unparsable, in {secs:.2} s ({:.0} packets/s)",
        flows.len(),
        packets as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn tuple(frame: &[u8]) -> Option<Tuple> {
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    let proto = match sliced.net? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            src[..4].copy_from_slice(&h.source());
            dst[..4].copy_from_slice(&h.destination());
            ip.payload_ip_number().0
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            src = h.source();
            dst = h.destination();
            ip.payload().ip_number.0
        }
        NetSlice::Arp(_) => return None,
    };
    let (sport, dport) = match sliced.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    Some((src, dst, sport, dport, proto))
}
