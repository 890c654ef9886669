//! Clock skew between two taps: a capture split by direction into two collectors, one half's
//! timestamps moved forward, through collectors -> 2 processors -> aggregator.
//!
//! Collectors reading files at full speed race each other: their watermarks then say how far
//! each has read, not how its clock runs. So the skew runs feed each collector through a
//! FIFO, both halves in the original packet order at the capture's own pace, as two live taps
//! would see the traffic; the collectors send every summary as it is read (`--batch-size 1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::fifo::{feed_paced, mkfifo, read_pcap};
use tapflow_integration_tests::{
    run_pipeline, shared_pcaps, split_by_direction, start_pipeline_opts, without_cross_tap,
    CollectorSpec, PipelineRun,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const CAPTURE: &str = "chrissanders-http_espn.pcapng";
const SHIFT_NS: u64 = 5_000_000_000;

/// What one run showed.
#[derive(Debug)]
struct Figures {
    skew_max_ms: BTreeMap<String, u64>,
    late_by_collector: BTreeMap<String, u64>,
    merge_late: u64,
    merge_forced: u64,
    conns: Vec<Value>,
    conn_log: String,
}

fn figures(label: &str, run: &PipelineRun) -> Figures {
    assert!(
        run.all_exited(),
        "{label}: a process did not exit on its own within {TIMEOUT:?}: {:?} {:?} {:?}",
        run.collectors.iter().map(|c| c.0).collect::<Vec<_>>(),
        run.processors.iter().map(|c| c.0).collect::<Vec<_>>(),
        run.aggregator.0
    );
    for (code, stderr) in run
        .collectors
        .iter()
        .chain(&run.processors)
        .chain(std::iter::once(&run.aggregator))
    {
        assert_eq!(*code, Some(0), "{label}: {stderr}");
    }
    assert!(
        run.report.is_some(),
        "{label}: no report: {}",
        run.aggregator.1
    );
    let report = run.accounting();
    assert_eq!(report["reconciled"], true, "{label}: {report:#}");
    assert_eq!(report["complete"], true, "{label}: {report:#}");
    let mut f = Figures {
        skew_max_ms: BTreeMap::new(),
        late_by_collector: BTreeMap::new(),
        merge_late: 0,
        merge_forced: 0,
        conns: run
            .conn_log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect(),
        conn_log: run.conn_log.clone(),
    };
    for c in report["collectors"].as_array().into_iter().flatten() {
        let name = c["sender"].as_str().unwrap_or_default().to_owned();
        f.skew_max_ms
            .insert(name.clone(), c["skew_max_ms"].as_u64().unwrap_or(u64::MAX));
        let late = c["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["late"].as_u64().unwrap_or(0))
            .sum();
        f.late_by_collector.insert(name, late);
    }
    for p in report["processors"].as_array().into_iter().flatten() {
        f.merge_late += p["counters"]["merge_late"].as_u64().unwrap_or(0);
        f.merge_forced += p["counters"]["merge_forced"].as_u64().unwrap_or(0);
    }
    println!(
        "{label}: skew_max_ms {:?}, late {} {:?}, forced {}, {} connections, states {:?}",
        f.skew_max_ms,
        f.merge_late,
        f.late_by_collector,
        f.merge_forced,
        f.conns.len(),
        states(&f.conns)
    );
    f
}

/// What a connection record states, without its times and uid (which follow the shift).
fn stated(conns: &[Value]) -> Vec<String> {
    projected(
        conns,
        &[
            "id.orig_h",
            "id.orig_p",
            "id.resp_h",
            "id.resp_p",
            "proto",
            "conn_state",
            "history",
            "orig_pkts",
            "resp_pkts",
            "orig_bytes",
            "resp_bytes",
        ],
    )
}

/// Each record's `fields` as one line, sorted.
fn projected(conns: &[Value], fields: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = conns
        .iter()
        .map(|c| {
            fields
                .iter()
                .map(|k| c[*k].to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

fn states(conns: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        *m.entry(format!(
            "{} {}",
            c["proto"].as_str().unwrap_or("?"),
            c["conn_state"].as_str().unwrap_or("?")
        ))
        .or_default() += 1;
    }
    m
}

/// Runs the two halves through FIFOs at the capture's pace, the second moved by `shift_ns`.
fn paced_run(
    label: &str,
    dir: &Path,
    fwd: &Path,
    rev: &Path,
    shift_ns: u64,
    processor_extra: &[&str],
) -> Figures {
    let fifos = [
        dir.join(format!("{label}-a.fifo")),
        dir.join(format!("{label}-b.fifo")),
    ];
    for f in &fifos {
        mkfifo(f);
    }
    let specs: Vec<CollectorSpec> = fifos
        .iter()
        .map(|f| CollectorSpec {
            extra: vec!["--batch-size".into(), "1".into()],
            ..CollectorSpec::pcap(f, 2)
        })
        .collect();
    let running = start_pipeline_opts(&specs, 2, processor_extra, &[]);
    let [f0, f1] = fifos;
    let feeder = feed_paced(
        vec![(read_pcap(fwd), f0, 0), (read_pcap(rev), f1, shift_ns)],
        TIMEOUT,
    );
    let run = running.wait(TIMEOUT);
    let fed = feeder.join();
    assert!(fed.is_ok(), "{label}: feeding the FIFOs failed");
    figures(label, &run)
}

/// The capture split by direction (`fwd`, `rev`), and what one collector reports on the
/// whole of it (as rewritten by the split).
struct Setup {
    dir: tempfile::TempDir,
    fwd: PathBuf,
    rev: PathBuf,
    one: Figures,
}

fn setup(pcaps: &Path) -> Setup {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (all, fwd, rev) = (
        dir.path().join("all.pcap"),
        dir.path().join("fwd.pcap"),
        dir.path().join("rev.pcap"),
    );
    let halves = split_by_direction(&pcaps.join(CAPTURE), &all, &fwd, &rev)
        .expect("split the capture by direction");
    println!("{CAPTURE}: {halves:?} packets by direction");
    let run = run_pipeline(&[CollectorSpec::pcap(&all, 2)], 2, TIMEOUT);
    Setup {
        dir,
        fwd,
        rev,
        one: figures("one collector", &run),
    }
}

/// Two live-like taps, one 5 s ahead of the other. The merge waits for the slowest watermark,
/// so it holds the leading tap's summaries for 5 s of packet time and nothing is late; the
/// skew metric names the trailing tap; but every TCP connection, whose two directions come
/// from the two taps, is split in two: its answers arrive 5 s after its questions.
#[test]
fn five_seconds_of_skew_are_measured_absorbed_and_split_sessions() {
    let Some(pcaps) = shared_pcaps() else { return };
    let s = setup(&pcaps);
    let dir = s.dir.path();

    // Control: the two directions at their own pace, clocks agreeing.
    let control = paced_run("paced, no skew", dir, &s.fwd, &s.rev, 0, &[]);
    // Both collectors read the same wire in lockstep: what is left is scheduling (1-2 ms on an
    // idle host); 1 s leaves room for a loaded CI host and is still far below the 5 s shift.
    for (name, ms) in &control.skew_max_ms {
        assert!(*ms < 1_000, "control: {name} skew {ms} ms");
    }
    assert_eq!((control.merge_late, control.merge_forced), (0, 0));
    let (control_log, _) = without_cross_tap(&s.one.conn_log, &control.conn_log, "control");
    assert_eq!(
        s.one.conn_log, control_log,
        "two taps at their own pace report what one tap reports (but for rtt_cross_tap)"
    );

    // collector1's clock runs 5 s ahead: collector0 trails the leader by 5 s (the metric
    // cannot tell which clock is wrong, only which tap trails), within the control's 1 s.
    let skewed = paced_run("paced, collector1 +5 s", dir, &s.fwd, &s.rev, SHIFT_NS, &[]);
    let skew = |f: &Figures, c: &str| f.skew_max_ms.get(c).copied().unwrap_or(u64::MAX);
    assert!(
        (4_000..=6_000).contains(&skew(&skewed, "collector0")),
        "{:?}",
        skewed.skew_max_ms
    );
    assert!(
        skew(&skewed, "collector1") < 1_000,
        "{:?}",
        skewed.skew_max_ms
    );
    // The merge buffer (1,000,000 summaries) holds all of the leading tap's 5 s: nothing is
    // late or forced. The skew shows in the sessions instead.
    assert_eq!((skewed.merge_late, skewed.merge_forced), (0, 0));
    let split = split_sessions(&s.one.conns, &skewed.conns);
    println!("paced, collector1 +5 s: {split}");

    // The same skew with a merge buffer of 64 summaries: the leading tap's summaries are
    // forced out before the trailing tap's earlier ones arrive, which are then late (and
    // counted against the trailing collector); no hang, and the report still reconciles.
    let capped = paced_run(
        "paced, collector1 +5 s, --merge-cap 64",
        dir,
        &s.fwd,
        &s.rev,
        SHIFT_NS,
        &["--merge-cap", "64"],
    );
    assert!(
        capped.merge_forced > 0 && capped.merge_late > 0,
        "{capped:?}"
    );
    assert_eq!(
        capped.late_by_collector.get("collector0").copied(),
        Some(capped.merge_late),
        "the trailing tap's summaries are the late ones"
    );
    assert!((4_000..=6_000).contains(&skew(&capped, "collector0")));
}

/// Checks what 5 s of skew between the two directions' taps does to each connection one tap
/// reports: a TCP connection comes out as two records with its five-tuple (the originator's
/// half, then 5 s later the responder's: the SYN-ACK comes after the 5 s attempt timeout), a
/// UDP flow as one with a different history (its bad-checksum query, shifted, now follows
/// its answer), packets adding up. Returns a line of figures.
fn split_sessions(one: &[Value], skewed: &[Value]) -> String {
    let tuple = |c: &Value| {
        ["proto", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
            .iter()
            .map(|k| c[*k].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let pkts =
        |c: &Value| c["orig_pkts"].as_u64().unwrap_or(0) + c["resp_pkts"].as_u64().unwrap_or(0);
    let state = |c: &Value| {
        format!(
            "{} {} {}",
            c["proto"].as_str().unwrap_or("?"),
            c["conn_state"].as_str().unwrap_or("?"),
            c["history"].as_str().unwrap_or("?")
        )
    };
    let mut by_tuple: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in skewed {
        by_tuple.entry(tuple(c)).or_default().push(c);
    }
    assert_eq!(by_tuple.values().map(Vec::len).sum::<usize>(), skewed.len());
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    for c in one {
        let now = by_tuple.get(&tuple(c)).cloned().unwrap_or_default();
        let want = if c["proto"] == "tcp" { 2 } else { 1 };
        assert_eq!(now.len(), want, "{c} became {now:?}");
        assert_eq!(
            now.iter().map(|h| pkts(h)).sum::<u64>(),
            pkts(c),
            "{c}: {now:?}"
        );
        let after: Vec<String> = now.iter().map(|h| state(h)).collect();
        *changes
            .entry(format!("{} -> {}", state(c), after.join(" + ")))
            .or_default() += 1;
    }
    assert_eq!(
        by_tuple.len(),
        one.len(),
        "no connection appears from nowhere"
    );
    format!("{} connections: {changes:#?}", one.len())
}

/// How much skew split-direction taps tolerate on this capture (file input: the merge orders
/// everything, so each run is deterministic). Its shortest round trip (SYN to SYN-ACK) is
/// 10.02 ms. Below it, states, packet and byte counts stay as one tap reports them and only
/// history letters move (their order records which direction's event came first, which any
/// skew above the spacing of opposite-direction packets changes); past it, answers land
/// before questions and states break.
#[test]
fn skew_below_the_round_trip_keeps_states_and_counts() {
    let Some(pcaps) = shared_pcaps() else { return };
    let s = setup(&pcaps);
    let rev = read_pcap(&s.rev);
    let counts = |v: &[Value]| -> Vec<String> {
        projected(
            v,
            &[
                "id.orig_h",
                "id.orig_p",
                "id.resp_h",
                "id.resp_p",
                "proto",
                "conn_state",
                "orig_pkts",
                "resp_pkts",
                "orig_ip_bytes",
                "resp_ip_bytes",
                "orig_bytes",
                "resp_bytes",
            ],
        )
    };
    let base = counts(&s.one.conns);
    let base_stated = stated(&s.one.conns);
    for shift_us in [10u64, 100, 1_000, 10_000, 30_000, 100_000] {
        let shifted = s.dir.path().join(format!("rev+{shift_us}us.pcap"));
        rev.write_shifted(&shifted, shift_us * 1000);
        let run = run_pipeline(
            &[
                CollectorSpec::pcap(&s.fwd, 2),
                CollectorSpec::pcap(&shifted, 2),
            ],
            2,
            TIMEOUT,
        );
        let f = figures(&format!("files, collector1 +{shift_us} us"), &run);
        let mine = counts(&f.conns);
        let same_counts = mine.iter().filter(|c| base.contains(c)).count();
        let same_history = stated(&f.conns)
            .iter()
            .filter(|c| base_stated.contains(c))
            .count();
        println!(
            "   of {} connections: {same_counts} with the same state and counts, {same_history} also with the same history",
            base.len()
        );
        if shift_us <= 10_000 {
            assert_eq!(mine, base, "+{shift_us} us: states or counts changed");
        } else {
            assert!(same_counts < base.len(), "+{shift_us} us: nothing changed?");
        }
    }
}
