//! `tapflow-procbench`: the processor's flow table on its own, per core.
//!
//! 1. Summaries/s: every packet of a capture (the synthetic 5M/200k one by default, generated
//!    in memory) is decoded once up front, then fed to one `FlowTable` with sweeps every second
//!    of packet time, as the processor does; and again split by flow hash over two threads that
//!    each own a table, to see whether parallelism inside a processor pays on this machine.
//! 2. Bytes per tracked flow: the table's own figure, and RSS growth while it fills.
//! 3. RSS while flows keep arriving past the cap: `--rss-flows` distinct flows (SYNs) into a
//!    table capped at `--max-flows`; RSS sampled as it goes must level off at the cap.
//!
//! `cargo run --release -p tapflow-bench --bin tapflow-procbench -- [--pcap F] [--packets N]
//! [--flows N] [--max-flows N] [--rss-flows N]`

use std::time::Instant;

use anyhow::{bail, Context, Result};
use tapflow_bench::gen::{GenConfig, Generator};
use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
use tapflow_processor::session::{FlowTable, SessionConfig};
use tapflow_proto::summary::tcp;
use tapflow_proto::{flow_hash, Addr, FiveTuple, PacketSummary};

struct Args {
    pcap: Option<String>,
    packets: u64,
    flows: u64,
    max_flows: usize,
    rss_flows: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        pcap: None,
        packets: 5_000_000,
        flows: 200_000,
        max_flows: 1_000_000,
        rss_flows: 3_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pcap" => a.pcap = Some(value()?),
            "--packets" => a.packets = value()?.parse()?,
            "--flows" => a.flows = value()?.parse()?,
            "--max-flows" => a.max_flows = value()?.parse()?,
            "--rss-flows" => a.rss_flows = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn summaries(args: &Args) -> Result<Vec<PacketSummary>> {
    let mut decoder = Decoder::new(DecodeConfig::default());
    let mut out = Vec::with_capacity(args.packets as usize + 1024);
    if let Some(path) = &args.pcap {
        let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano)?;
        let link = LinkType::from_dlt(cap.get_datalink().0).context("unsupported link type")?;
        while let Ok(p) = cap.next_packet() {
            let ts = u64::try_from(p.header.ts.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
            decoder.decode(link, ts, p.data, p.header.len, &mut out);
        }
    } else {
        let mut gen = Generator::new(&GenConfig {
            packets: args.packets,
            flows: args.flows,
            ..GenConfig::default()
        })?;
        let mut frame = Vec::new();
        while let Some(p) = gen.next_packet(&mut frame) {
            decoder.decode(
                LinkType::Ethernet,
                p.ts_ns,
                &frame,
                frame.len() as u32,
                &mut out,
            );
        }
    }
    decoder.finish();
    Ok(out)
}

/// Feeds summaries to one table as the processor does (sweep each second of packet time).
fn run_table(summaries: &[PacketSummary], max_flows: usize) -> (u64, u64, u64) {
    let mut table = FlowTable::new(SessionConfig {
        max_flows,
        ..SessionConfig::default()
    });
    let mut out = Vec::with_capacity(4096);
    let (mut records, mut next_sweep, mut peak) = (0u64, 0u64, 0u64);
    for s in summaries {
        table.on_summary(s, &mut out);
        if s.ts_ns >= next_sweep {
            table.sweep(s.ts_ns, &mut out);
            next_sweep = s.ts_ns + 1_000_000_000;
            peak = peak.max(table.stats().open_flows);
        }
        records += out.len() as u64;
        out.clear();
    }
    table.flush(&mut out);
    records += out.len() as u64;
    (records, peak, table.stats().evicted)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let t = Instant::now();
    let all = summaries(&args)?;
    eprintln!(
        "decoded {} summaries in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );

    // 1. One table, one core.
    let mut single = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (records, peak, evicted) = run_table(&all, args.max_flows);
        let secs = t.elapsed().as_secs_f64();
        single.push(all.len() as f64 / secs);
        println!("one table: {:.2} M summaries/s ({records} records, peak {peak} open flows, {evicted} evicted)", all.len() as f64 / secs / 1e6);
    }
    // Two tables on two threads, split by flow hash (the partition is done beforehand).
    let (a, b): (Vec<PacketSummary>, Vec<PacketSummary>) = all
        .iter()
        .cloned()
        .partition(|s| flow_hash(&s.key) & 1 == 0);
    let mut dual = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        std::thread::scope(|sc| {
            let h = sc.spawn(|| run_table(&a, args.max_flows / 2));
            run_table(&b, args.max_flows / 2);
            let _ = h.join();
        });
        let secs = t.elapsed().as_secs_f64();
        dual.push(all.len() as f64 / secs);
        println!(
            "two tables, two threads: {:.2} M summaries/s",
            all.len() as f64 / secs / 1e6
        );
    }
    single.sort_by(f64::total_cmp);
    dual.sort_by(f64::total_cmp);
    println!(
        "MEDIAN one core: {:.2} M summaries/s; two threads: {:.2} M/s (x{:.2})",
        single[1] / 1e6,
        dual[1] / 1e6,
        dual[1] / single[1]
    );
    drop((a, b));
    drop(all);

    // 2 and 3. Memory per flow, and RSS as flows keep arriving past the cap.
    println!(
        "table entry: {} bytes per tracked flow at capacity (entry, index, timer heap)",
        FlowTable::new(SessionConfig {
            max_flows: 1024,
            ..SessionConfig::default()
        })
        .bytes_per_flow()
    );
    let before = rss_kib();
    let mut table = FlowTable::new(SessionConfig {
        max_flows: args.max_flows,
        ..SessionConfig::default()
    });
    let mut out = Vec::new();
    let step = (args.rss_flows / 12).max(1);
    println!("flows_offered  open_flows  evicted  rss_MiB  rss_growth_bytes_per_open_flow");
    for i in 0..args.rss_flows {
        let src = Addr::from_v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let t = FiveTuple {
            proto: 6,
            src,
            dst: Addr::from_v4([192, 0, 2, 1]),
            sport: 1024 + (i % 50_000) as u16,
            dport: 443,
        };
        let mut s = PacketSummary {
            ts_ns: 1_700_000_000_000_000_000 + i * 1_000,
            ip_len: 60,
            tcp_flags: tcp::SYN,
            seq: i as u32,
            window: 64240,
            ..PacketSummary::default()
        };
        s.set_tuple(&t, (i >> 24) as u16);
        table.on_summary(&s, &mut out);
        out.clear();
        if (i + 1) % step == 0 {
            let st = table.stats();
            let rss = rss_kib();
            let growth = (rss.saturating_sub(before) * 1024) as f64 / st.open_flows.max(1) as f64;
            println!(
                "{:>13}  {:>10}  {:>7}  {:>7.1}  {:>6.0}",
                i + 1,
                st.open_flows,
                st.evicted,
                rss as f64 / 1024.0,
                growth
            );
        }
    }
    Ok(())
}
