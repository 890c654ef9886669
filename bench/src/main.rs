//! `tapflow-gen`: writes a deterministic synthetic capture for benchmarks.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tapflow_bench::gen::attack::SynFlood;
use tapflow_bench::gen::{GenConfig, Generator, Mix};
use tapflow_bench::pcap::write_capture;

/// Writes a synthetic classic pcap (Ethernet, microsecond timestamps): TCP sessions, DNS, other
/// UDP, ICMP echo, some IPv6, a spoofed SYN flood and a port scan, every checksum correct.
/// The same arguments always give the same bytes.
///
/// Example: tapflow-gen --packets 5000000 --flows 200000 --seed 1 --out bench/data/synth-5m.pcap
///
/// `--mix` picks how many packets open a session: `bench` (the above, one five-tuple per 25
/// packets unless `--flows` says otherwise), `session-heavy` (one per six packets) or
/// `flood-heavy` (ordinary traffic plus a spoofed SYN flood of 24% of the packets, each SYN its
/// own five-tuple: more than one packet in four opens a session). Example:
/// tapflow-gen --mix flood-heavy --packets 1000000 --out bench/data/flood-1m.pcap
///
/// With `--syn-flood`, only a spoofed SYN flood: `--packets` SYNs, each its own five-tuple,
/// evenly spaced at `--rate` (`--flows` and `--active` are ignored). Example (2.5M flows in
/// 2.5 s of capture time): tapflow-gen --syn-flood --packets 2500000 --rate 1000000 --out f.pcap
#[derive(Parser, Debug)]
#[command(name = "tapflow-gen", version)]
struct Args {
    /// Frames to write, exactly.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Distinct five-tuples, exactly. Default: the mix's (packets/25 for bench, packets/6 for
    /// session-heavy, the flood's SYNs plus a 25th of the other packets for flood-heavy).
    #[arg(long)]
    flows: Option<u64>,
    /// Traffic mix: bench, session-heavy or flood-heavy.
    #[arg(long, default_value_t = Mix::Bench, conflicts_with = "syn_flood")]
    mix: Mix,
    /// PRNG seed: the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mean packet rate of the timestamps (packets per second of capture time).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Ordinary flows in progress at once (bounds memory and interleaving).
    #[arg(long, default_value_t = 4096)]
    active: usize,
    /// Write only a spoofed SYN flood of `--packets` distinct five-tuples (at most 2^24).
    #[arg(long)]
    syn_flood: bool,
    /// Output file (its directory is created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = GenConfig {
        packets: args.packets,
        flows: args
            .flows
            .unwrap_or_else(|| args.mix.default_flows(args.packets)),
        mix: args.mix,
        seed: args.seed,
        rate_pps: args.rate,
        active: args.active,
        ..GenConfig::default()
    };
    if args.syn_flood && args.packets > 1 << 24 {
        anyhow::bail!("--syn-flood: at most 2^24 packets (distinct spoofed sources)");
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let start = Instant::now();
    let out = BufWriter::with_capacity(1 << 20, file);
    let (s, flows) = if args.syn_flood {
        let mut flood = SynFlood::new(args.packets, args.rate, args.seed, cfg.start_ns);
        let (_, s) = write_capture(&mut flood, out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        (s, args.packets)
    } else {
        let mut gen = Generator::new(&cfg)?;
        let (_, s) = write_capture(&mut gen, out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        (s, gen.plan().flows)
    };
    let secs = start.elapsed().as_secs_f64();
    let frames = s.bytes - 24 - 16 * s.packets;
    println!(
        "tapflow-gen: {} packets, {} flows, {} mix, {} bytes (avg frame {:.0} B), {:.1} s of capture time, \
         written in {:.2} s ({:.0} packets/s) to {}",
        s.packets,
        flows,
        if args.syn_flood { "syn-flood" } else { args.mix.name() },
        s.bytes,
        frames as f64 / s.packets.max(1) as f64,
        (s.last_ts_ns - s.first_ts_ns) as f64 / 1e9,
        secs,
        s.packets as f64 / secs,
        args.out.display()
    );
    Ok(())
}
