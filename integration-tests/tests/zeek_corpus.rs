//! tapflow's conn log against Zeek's on every test of Zeek's own regression suite that has a
//! conn.log baseline (`../shared/zeek-corpus/MANIFEST.tsv`): each trace goes through the real
//! three-process pipeline on loopback (one collector with the row's flags, one processor, the
//! aggregator writing the JSON conn log), two traces at a time. Prints a table per test, the
//! totals and every remaining difference (also written to a file whose path is printed); fails
//! unless every process exited 0 on every trace, every test's counts equal its row of
//! `golden/zeek_corpus.tsv` and the totals equal `zeek_corpus::TOTAL_*`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::zeek::{golden_differences, json_row, parse_zeek_log, Row};
use tapflow_integration_tests::zeek_corpus::{
    corpus_dir, golden_path, manifest, Corpus, Entry, Exits,
};
use tapflow_integration_tests::{read_text, run_pipeline, CollectorSpec};

/// Most time one trace's pipeline may take (the largest trace takes a few seconds).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Traces run at once (CI has 2 cores).
const PARALLEL: usize = 2;

/// What one run gave: see [`run`].
type Outcome = (Exits, Vec<Row>, String);

/// One trace through the pipeline: the exit codes, our records as Zeek rows (interim records
/// left out: Zeek has none) and the processes' stderr for a failed run.
fn run(entry: &Entry) -> Outcome {
    let spec = CollectorSpec {
        extra: entry.collector_flags.clone(),
        ..CollectorSpec::pcap(&entry.trace, 1)
    };
    let run = run_pipeline(&[spec], 1, TIMEOUT);
    let exits = Exits {
        collector: run.collectors[0].0,
        processor: run.processors[0].0,
        aggregator: run.aggregator.0,
    };
    let rows = run
        .conn_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["interim"] != Value::Bool(true))
        .map(|v| json_row(&v))
        .collect();
    let stderr = if exits.clean() {
        String::new()
    } else {
        format!(
            "{}: {}{}{}{}",
            entry.test,
            run.exit_codes(),
            stderr_of("collector", &run.collectors[0]),
            stderr_of("processor", &run.processors[0]),
            stderr_of("aggregator", &run.aggregator),
        )
    };
    (exits, rows, stderr)
}

/// `\n  NAME: stderr in short` for a process that did not exit 0, else nothing.
fn stderr_of(name: &str, (code, stderr): &(Option<i32>, String)) -> String {
    if *code == Some(0) {
        return String::new();
    }
    format!("\n  {name}: {}", last_lines(stderr))
}

/// A process's stderr in short: its error and warning lines (or else its last two lines), each
/// cut to 300 characters.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("panicked"))
        .collect();
    if shown.is_empty() {
        shown = lines[lines.len().saturating_sub(2)..].to_vec();
    }
    shown
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn conn_logs_agree_with_zeek_on_zeeks_own_tests() {
    let Some(dir) = corpus_dir() else { return };
    let entries = manifest(&dir);
    assert!(!entries.is_empty(), "no test in {}", dir.display());
    let started = Instant::now();
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; entries.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(entry) = entries.get(i) else { break };
                let out = run(entry);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut corpus = Corpus::default();
    let mut failed_runs = Vec::new();
    for (entry, result) in entries.iter().zip(results) {
        let (exits, ours, stderr) = result.unwrap_or_default();
        let zeek = parse_zeek_log(&read_text(&entry.truth));
        assert_eq!(
            zeek.len(),
            entry.zeek_conns,
            "{}: baseline rows",
            entry.test
        );
        corpus.add(entry, exits, &zeek, ours);
        if !stderr.is_empty() {
            failed_runs.push(stderr);
        }
    }
    let mut report = corpus.report();
    report += &format!("\nruns not exiting 0 ({}):\n", failed_runs.len());
    for f in &failed_runs {
        report += f;
        report.push('\n');
    }
    println!("{report}");
    // Cargo's temp dir for integration tests (`target/tmp`), kept after the run for reading.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("zeek_corpus_report.txt");
    std::fs::write(&path, &report).expect("write the report");
    println!(
        "report written to {} ({} traces in {:.1} s)",
        path.display(),
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    // Every failure at once: the golden table, the totals, the exit codes.
    let mut failures = Vec::new();
    let golden = golden_differences(&golden_path(), &corpus.table());
    if !golden.is_empty() {
        failures.push(format!(
            "{} differs (- golden, + now):\n{}\nIf the change is intended, refresh with \
             UPDATE_GOLDEN=1 and review the diff.",
            golden_path().display(),
            golden.join("\n")
        ));
    }
    let totals = corpus.total_differences();
    if !totals.is_empty() {
        failures.push(format!(
            "totals differ from zeek_corpus::TOTAL_*:\n{}",
            totals.join("\n")
        ));
    }
    if !failed_runs.is_empty() {
        failures.push(format!(
            "a valid capture must give exit 0 from every process; {} traces did not:\n{}",
            failed_runs.len(),
            failed_runs.join("\n")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A Zeek row from `column=value` pairs.
fn row(cells: &[(&str, &str)]) -> Row {
    cells
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The bare-mode rule on made-up rows (the corpus has no such case today): a lone SYN-ACK from
/// port 80 that bare Zeek kept (`OTH H`) and we flipped (`^h`) is explained and its fields
/// agree once mirrored; the same connection in a full-mode test, or one towards the broadcast
/// address, is a disagreement.
#[test]
fn bare_mode_direction_is_explained_only_where_full_mode_zeek_flips() {
    let zeek = row(&[
        ("id.orig_h", "10.0.0.2"),
        ("id.orig_p", "80"),
        ("id.resp_h", "10.0.0.1"),
        ("id.resp_p", "40000"),
        ("proto", "tcp"),
        ("conn_state", "OTH"),
        ("history", "H"),
        ("orig_pkts", "1"),
        ("resp_pkts", "0"),
    ]);
    let ours = row(&[
        ("id.orig_h", "10.0.0.1"),
        ("id.orig_p", "40000"),
        ("id.resp_h", "10.0.0.2"),
        ("id.resp_p", "80"),
        ("proto", "tcp"),
        ("conn_state", "OTH"),
        ("history", "^h"),
        ("orig_pkts", "0"),
        ("resp_pkts", "1"),
    ]);
    let entry = |bare: bool| Entry {
        test: format!("made-up bare={bare}"),
        truth: Default::default(),
        trace: Default::default(),
        bare,
        collector_flags: vec![],
        zeek_conns: 1,
    };
    let mut corpus = Corpus::default();
    corpus.add(
        &entry(true),
        Exits::default(),
        std::slice::from_ref(&zeek),
        vec![ours.clone()],
    );
    let t = &corpus.tests[0];
    assert_eq!((t.found, t.flipped, t.explained), (1, 0, 1), "{t:?}");
    assert_eq!(t.values(), (4, 4), "mirrored fields agree: {t:?}");
    assert!(corpus.differences.is_empty(), "{:?}", corpus.differences);
    assert!(
        corpus.explained[0].reason.contains("80/tcp"),
        "{:?}",
        corpus.explained
    );

    corpus.add(
        &entry(false),
        Exits::default(),
        std::slice::from_ref(&zeek),
        vec![ours.clone()],
    );
    let t = &corpus.tests[1];
    assert_eq!((t.found, t.flipped, t.explained), (1, 1, 0), "{t:?}");
    assert_eq!(
        t.values(),
        (1, 4),
        "only conn_state agrees unmirrored: {t:?}"
    );

    // A baseline without id columns: only the history, compared as a multiset.
    corpus.add(
        &entry(true),
        Exits::default(),
        &[row(&[("history", "H")])],
        vec![ours.clone()],
    );
    let t = &corpus.tests[2];
    assert_eq!(
        (t.mode, t.found, t.explained, t.values()),
        ("multiset", 1, 1, (1, 1)),
        "{t:?}"
    );

    let mut broadcast = (zeek.clone(), ours);
    broadcast
        .0
        .insert("id.resp_h".into(), "255.255.255.255".into());
    broadcast
        .1
        .insert("id.orig_h".into(), "255.255.255.255".into());
    corpus.add(
        &entry(true),
        Exits::default(),
        &[broadcast.0],
        vec![broadcast.1],
    );
    let t = &corpus.tests[3];
    assert_eq!((t.flipped, t.explained), (1, 0), "{t:?}");
}
