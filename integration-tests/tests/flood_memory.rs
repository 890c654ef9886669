//! A spoofed SYN flood of a million random five-tuples through the whole pipeline with small
//! caps: every process's memory stays bounded by its caps, not by the flood (DESIGN invariant
//! 6), every eviction and forced release is counted, the accounting reconciles, and the flood is
//! still reported as one `syn_flood` episode against its victim.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{start_pipeline_opts, CollectorSpec};

const FLOOD_PACKETS: u32 = 1_000_000;
const VICTIM: [u8; 4] = [10, 0, 0, 80];
const MAX_FLOWS: &str = "20000";
const CONN_CAP: &str = "20000";
const KEYS_CAP: &str = "50000";

fn checksum(words: impl Iterator<Item = u16>) -> u16 {
    let mut sum: u32 = words.map(u32::from).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be_words(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
}

/// One Ethernet/IPv4/TCP SYN with valid checksums.
fn syn(src: [u8; 4], sport: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x80, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let mut ip = [
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, src[0], src[1], src[2], src[3], VICTIM[0],
        VICTIM[1], VICTIM[2], VICTIM[3],
    ];
    let c = checksum(be_words(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&u32::from(sport).wrapping_mul(2_654_435_761).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&VICTIM);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(be_words(&pseudo));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&tcp);
}

/// A microsecond pcap: `FLOOD_PACKETS` SYNs from random sources and ports, 2 µs apart.
fn write_flood(path: &Path) {
    let f = std::fs::File::create(path).expect("create the capture");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&header).expect("write the capture header");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut frame = Vec::with_capacity(64);
    let start_us: u64 = 1_700_000_000 * 1_000_000;
    for i in 0..u64::from(FLOOD_PACKETS) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = [
            1 + (x % 223) as u8,
            (x >> 8) as u8,
            (x >> 16) as u8,
            1 + ((x >> 24) % 254) as u8,
        ];
        let sport = 1024 + ((x >> 32) % 64000) as u16;
        syn(src, sport, &mut frame);
        let ts = start_us + i * 2;
        let mut rec = Vec::with_capacity(16);
        rec.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        rec.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        w.write_all(&rec).expect("write a record header");
        w.write_all(&frame).expect("write a frame");
    }
    w.flush().expect("flush the capture");
}

/// The largest resident set a process has had so far (VmHWM), in KiB; `None` once it is gone
/// (a process that has just started may still be under 1 MiB: it is not gone).
fn hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
}

#[test]
fn a_million_spoofed_sources_stay_within_the_caps_and_are_reported() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = dir.path().join("flood.pcap");
    write_flood(&pcap);
    let running = start_pipeline_opts(
        &[CollectorSpec::pcap(&pcap, 2)],
        2,
        &["--max-flows", MAX_FLOWS],
        &["--conn-cap", CONN_CAP, "--detect-keys-cap", KEYS_CAP],
    );
    let pids: Vec<(String, u32)> = running
        .processors
        .iter()
        .chain(std::iter::once(&running.aggregator))
        .map(|p| (p.name.clone(), p.child.id()))
        .collect();
    // Sample the high-water marks while the run goes on (a process's own is gone with it).
    let sampler = std::thread::spawn(move || {
        let mut peak = vec![0u64; pids.len()];
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let now: Vec<Option<u64>> = pids.iter().map(|(_, pid)| hwm_kib(*pid)).collect();
            if now.iter().all(Option::is_none) || Instant::now() > deadline {
                break;
            }
            for (p, n) in peak.iter_mut().zip(now) {
                *p = (*p).max(n.map_or(0, |kib| kib / 1024));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pids.into_iter()
            .map(|(name, _)| name)
            .zip(peak)
            .collect::<Vec<_>>()
    });
    let run = running.wait(Duration::from_secs(300));
    let peaks = sampler.join().expect("join the memory sampler");
    assert!(run.all_exited(), "{}", run.aggregator.1);
    let report = run.accounting();
    assert_eq!(report["reconciled"], true, "{report}");

    let evicted: u64 = report["processors"]
        .as_array()
        .expect("the processors in the report")
        .iter()
        .map(|p| p["counters"]["flows_evicted"].as_u64().unwrap_or(0))
        .sum();
    let records: u64 = report["processors"]
        .as_array()
        .expect("the processors in the report")
        .iter()
        .map(|p| p["counters"]["records"].as_u64().unwrap_or(0))
        .sum();
    let conns = &report["conns"];
    eprintln!(
        "{FLOOD_PACKETS} spoofed SYNs: {records} records, {evicted} flows evicted at \
         --max-flows {MAX_FLOWS} per processor, {} records released early at --conn-cap \
         {CONN_CAP}, {} detection keys left out at --detect-keys-cap {KEYS_CAP}; peak RSS \
         (MiB): {peaks:?}",
        conns["forced"], report["detection"]["cap_hits"]
    );
    // Nearly every SYN is its own five-tuple (random source and port).
    assert!(records > u64::from(FLOOD_PACKETS) * 9 / 10, "{report}");
    assert!(
        evicted > u64::from(FLOOD_PACKETS) / 2,
        "evictions not counted: {report}"
    );
    assert!(
        conns["forced"].as_u64() > Some(0),
        "forced releases not counted: {report}"
    );
    for (name, peak) in &peaks {
        // 20,000 flows of ~250 B, 20,000 pending records of ~600 B and 50,000 detection keys
        // per map of ~100 B are a few MiB each; a debug build's baseline is ~20 MiB. Unbounded,
        // the flow table alone would pass 250 MiB and detection 500 MiB.
        assert!(
            *peak > 0 && *peak < 150,
            "{name}: peak RSS {peak} MiB, not bounded by the caps"
        );
    }

    let alerts: Vec<Value> = run
        .alerts_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let floods: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "syn_flood" && a["dst"] == "10.0.0.80" && a["event"] == "end")
        .collect();
    eprintln!("syn_flood episodes: {floods:?}");
    assert_eq!(floods.len(), 1, "the flood is one episode: {alerts:?}");
}
