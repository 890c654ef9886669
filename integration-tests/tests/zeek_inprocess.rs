//! The session engine against Zeek's own conn.log, in process: every shared capture with a Zeek
//! truth (`truth/NAME.zeek-conn.log`) is decoded with the checksum setting that truth was made
//! with, fed summary by summary to one `FlowTable`, flushed, and compared with Zeek's rows
//! field by field. Prints a table per capture and every mismatch; fails unless every capture's
//! counts equal its row of `golden/zeek.tsv` and the totals equal the README's figures.

use std::path::{Path, PathBuf};

use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
use tapflow_integration_tests::inprocess::{row, sessions};
use tapflow_integration_tests::zeek::{
    assert_golden, golden_path, parse_zeek_log, Tally, IGNORE_CHECKSUMS,
};
use tapflow_processor::session::{FlowTable, SessionConfig};

fn pcaps_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/pcaps")).to_path_buf();
    if dir.join("truth").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (the shared captures sit beside the clone in CI)",
            dir.display()
        );
        None
    }
}

#[test]
fn sessions_agree_with_zeek_conn_logs() {
    let Some(dir) = pcaps_dir() else { return };
    let mut truths: Vec<PathBuf> = std::fs::read_dir(dir.join("truth"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    truths.retain(|p| p.to_string_lossy().ends_with(".zeek-conn.log"));
    truths.sort();
    assert!(!truths.is_empty(), "no Zeek truth in {}", dir.display());

    let mut tally = Tally::default();
    for truth in &truths {
        let file = truth
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .trim_end_matches(".zeek-conn.log")
            .to_owned();
        let name = file.trim_end_matches(".pcapng").trim_end_matches(".pcap");
        let verify = !IGNORE_CHECKSUMS.contains(&name);
        let rows = parse_zeek_log(&std::fs::read_to_string(truth).unwrap_or_default());
        let records = sessions(&dir.join(&file), verify)
            .map_err(|e| format!("{file}: {e}"))
            .expect("decoding the capture into sessions");
        tally.add(&file, &rows, records.iter().map(row).collect());
    }
    let readme = tally.readme_differences();
    println!("{}", tally.report);
    assert_golden(&golden_path(), &tally.table());
    assert!(readme.is_empty(), "{}\n{}", readme.join("\n"), tally.report);
}

/// Every capture: every summary is in exactly one record's packet counts, or accounted as not
/// counted (bad checksum, IP-tunnel outer, truncated datagram), and no cap is hit.
#[test]
fn every_summary_is_counted_once() {
    let Some(dir) = pcaps_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        )
    });
    files.sort();
    for pcap in files {
        let Ok(mut cap) = pcap::Capture::from_file_with_precision(&pcap, pcap::Precision::Nano)
        else {
            continue;
        };
        let Some(link) = LinkType::from_dlt(cap.get_datalink().0) else {
            continue;
        };
        let mut decoder = Decoder::new(DecodeConfig::default());
        let mut table = FlowTable::new(SessionConfig {
            max_flows: 200_000,
            ..SessionConfig::default()
        });
        let (mut summaries, mut records, mut fed, mut last_ts) =
            (Vec::new(), Vec::new(), 0u64, 0u64);
        while let Ok(p) = cap.next_packet() {
            let ts = u64::try_from(p.header.ts.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
            summaries.clear();
            decoder.decode(link, ts, p.data, p.header.len, &mut summaries);
            for s in &summaries {
                table.on_summary(s, &mut records);
                fed += 1;
                last_ts = last_ts.max(s.ts_ns);
            }
            // Sweep as a processor would, a little behind the newest packet.
            table.sweep(last_ts.saturating_sub(1_000_000_000), &mut records);
        }
        table.flush(&mut records);
        let st = table.stats();
        let counted: u64 = records
            .iter()
            .filter(|r| !r.interim)
            .map(|r| r.orig_pkts + r.resp_pkts)
            .sum();
        let name = pcap
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        println!(
            "{name:<42} summaries {fed:>6} records {:>6} bad_checksum {:>4} ip_tunnel_outer {:>3} truncated {:>3} swept {:>6} by_packet {:>4} reuse {:>4}",
            records.len(), st.bad_checksum, st.tunnel_outer_skipped, st.truncated_uncounted, st.ended_by_sweep, st.ended_by_packet, st.ended_by_reuse,
        );
        assert_eq!(st.summaries, fed, "{name}");
        assert_eq!(
            counted,
            fed - st.bad_checksum - st.tunnel_outer_skipped - st.truncated_uncounted,
            "{name}: {st:?}"
        );
        assert_eq!((st.evicted, st.open_flows), (0, 0), "{name}");
        assert_eq!(
            st.records,
            records.iter().filter(|r| !r.interim).count() as u64,
            "{name}"
        );
    }
}
