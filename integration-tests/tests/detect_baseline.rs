//! The evidence behind issue 22's defaults: on the normal captures of `../shared/pcaps` (those
//! the golden table expects no alert from) and on every trace of `../shared/zeek-corpus`, the
//! largest peak rate over 100 ms, new flows per second and one-way sources of reflection's
//! shape that any victim shows, printed and held below the defaults with a margin; and the new
//! triggers add no alert there. Sessions come from the session engine in process (the
//! processor's flow table), released in the aggregator's order (last packet, uid).

use std::path::{Path, PathBuf};

use tapflow_aggregator::detect::{
    AlertEvent, DetectConfig, Detector, DEFAULT_NEW_FLOWS_PER_S, DEFAULT_PEAK_BPS, DEFAULT_PEAK_PPS,
};
use tapflow_integration_tests::inprocess::sessions;
use tapflow_integration_tests::zeek_corpus::{corpus_dir, manifest};
use tapflow_integration_tests::{shared_pcaps, REJECTED_CAPTURES};
use tapflow_processor::session::ConnRecord;

fn detect(cfg: DetectConfig, records: &[ConnRecord]) -> Vec<AlertEvent> {
    let mut sorted: Vec<&ConnRecord> = records.iter().collect();
    sorted.sort_by(|a, b| {
        let last = |r: &ConnRecord| r.ts_ns + r.duration_ns.unwrap_or(0);
        last(a).cmp(&last(b)).then_with(|| a.uid.cmp(&b.uid))
    });
    let mut d = Detector::new(cfg);
    let mut out = Vec::new();
    for r in sorted {
        d.on_record(r, &mut out);
    }
    d.finish(&mut out);
    out
}

/// Every threshold of issue 22 at its most sensitive, so each victim's figures show.
fn sensitive() -> DetectConfig {
    DetectConfig {
        peak_pps: 1,
        peak_bps: 1,
        new_flows_per_s: 0,
        reflection_sources: 1,
        ..DetectConfig::default()
    }
}

/// The defaults without issue 22's triggers.
fn without_new_triggers() -> DetectConfig {
    DetectConfig {
        peak_pps: u64::MAX,
        peak_bps: u64::MAX,
        new_flows_per_s: u64::MAX,
        reflection_port_share_pct: 101,
        ..DetectConfig::default()
    }
}

/// The largest of each figure, and where it was seen.
#[derive(Default, Debug)]
struct Figures {
    peak_pps: (u64, String),
    peak_bps: (u64, String),
    new_flows_per_s: (u64, String),
    one_way_sources: (u64, String),
}

impl Figures {
    fn add(&mut self, name: &str, events: &[AlertEvent]) {
        for e in events {
            for (field, max) in [
                ("peak_pps", &mut self.peak_pps),
                ("peak_bps", &mut self.peak_bps),
                ("new_flows_per_s", &mut self.new_flows_per_s),
                ("one_way_sources", &mut self.one_way_sources),
            ] {
                if let Some(v) = e.evidence.get(field).filter(|v| **v > max.0) {
                    *max = (*v, format!("{name} ({} {})", e.kind, e.dst));
                }
            }
        }
    }
}

/// The captures the golden table expects no alert from, under the default flags.
fn normal_captures(dir: &Path) -> Vec<PathBuf> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/alerts.tsv");
    let text = std::fs::read_to_string(&golden).expect("reading golden/alerts.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.len() == 4 && c[1] == "-" && c[2] == "-")
        .filter(|c| !REJECTED_CAPTURES.contains(&c[0]))
        .map(|c| dir.join(c[0]))
        .collect()
}

/// Checks one normal input and adds its figures.
fn check(name: &str, records: &[ConnRecord], figures: &mut Figures, failures: &mut Vec<String>) {
    let with = detect(DetectConfig::default(), records);
    let without = detect(without_new_triggers(), records);
    if with != without {
        failures.push(format!(
            "{name}: {with:?}\nwithout the new triggers: {without:?}"
        ));
    }
    figures.add(name, &detect(sensitive(), records));
}

#[test]
fn normal_traffic_stays_below_the_new_defaults() {
    let (Some(pcaps), Some(corpus)) = (shared_pcaps(), corpus_dir()) else {
        return;
    };
    let (mut figures, mut failures, mut inputs) = (Figures::default(), Vec::new(), 0);
    for pcap in normal_captures(&pcaps) {
        let name = pcap
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        let records = sessions(&pcap, true).expect("sessions of a shared capture");
        let alerts = detect(DetectConfig::default(), &records);
        assert!(alerts.is_empty(), "{name}: {alerts:?}");
        check(&name, &records, &mut figures, &mut failures);
        inputs += 1;
    }
    for e in manifest(&corpus) {
        let verify = !e.collector_flags.iter().any(|f| f == "--ignore-checksums");
        let Ok(records) = sessions(&e.trace, verify) else {
            continue;
        };
        check(&e.test, &records, &mut figures, &mut failures);
        inputs += 1;
    }
    println!("{inputs} normal inputs; largest figures: {figures:#?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        inputs >= 100,
        "the captures and the corpus were read: {inputs}"
    );
    // The defaults sit well above what normal traffic shows.
    assert!(figures.peak_pps.0 * 4 <= DEFAULT_PEAK_PPS, "{figures:?}");
    assert!(figures.peak_bps.0 * 4 <= DEFAULT_PEAK_BPS, "{figures:?}");
    assert!(
        figures.new_flows_per_s.0 * 4 <= DEFAULT_NEW_FLOWS_PER_S,
        "{figures:?}"
    );
    let sources = DetectConfig::default().reflection_sources as u64;
    assert!(figures.one_way_sources.0 * 2 <= sources, "{figures:?}");
}

/// The attack captures' figures, printed for the README, and each still raising what the
/// golden table says (checked through the pipeline by `alerts.rs`).
#[test]
fn attack_captures_show_their_figures() {
    let Some(pcaps) = shared_pcaps() else { return };
    let mut figures = Figures::default();
    for name in [
        "stopddos-pkt-tcp-synflood-spoofed.pcap",
        "stopddos-amp-dns-rrsig-fragmented.pcap",
        "markofu-ppa-dosattack.pcap",
        "suricata-syn-flood-drop-precedence.pcap",
    ] {
        let records = sessions(&pcaps.join(name), true).expect("sessions of a shared capture");
        let mut one = Figures::default();
        one.add(name, &detect(sensitive(), &records));
        println!("{name}: {one:?}");
        figures.add(name, &detect(sensitive(), &records));
    }
    // The DNS amplification is reflection by its shape too.
    assert!(
        figures.one_way_sources.0 >= 20,
        "the DNS amplification's reflectors: {figures:?}"
    );
}
