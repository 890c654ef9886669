//! `service` and `server_name` against independent truths (issue 17's acceptance): every trace
//! of Zeek's own tests (`../shared/zeek-corpus`, with the collector flags of its MANIFEST row)
//! and every shared capture (`../shared/pcaps`) goes through the real pipeline on loopback (one
//! collector, one processor, the aggregator), two at a time. Zeek's `service` column (corpus
//! baselines and `truth/*.zeek-conn.log`) is compared row by row, matched by five-tuple;
//! tshark's `tls.handshake.extensions_server_name` and `http.host` session by session (a
//! capture without a Zeek log is read with `--ignore-checksums`, as tshark reads it).
//!
//! Prints the figures (identical %, rows Zeek leaves unlabelled that we label) and every
//! difference (also written to `target/tmp/service_corpus_report.txt`); fails unless every
//! figure and difference equals `golden/service_corpus.tsv`. Regenerate it (keeping the reasons
//! written by hand) with
//! `UPDATE_GOLDEN=1 cargo nextest run -p tapflow-integration-tests --test service_corpus`.
//! A test Zeek ran in bare mode (`-b`) runs with the processor flags that reproduce its script's
//! configuration (`src/zeek_bare.tsv`: services it does not load disabled, `dns_max_queries`),
//! every bare test alike. `TAPFLOW_SERVICE_COLLECTOR_FLAGS` (e.g. a payload budget) adds collector flags to every run
//! and only prints the figures (for comparing budgets), without checking the golden table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::service_corpus::{
    golden_path, our_row, reasons_path, tshark_names, Named, Tally,
};
use tapflow_integration_tests::zeek::{golden_differences, parse_zeek_log, Row, IGNORE_CHECKSUMS};
use tapflow_integration_tests::zeek_bare::bare_test;
use tapflow_integration_tests::zeek_corpus::{corpus_dir, manifest};
use tapflow_integration_tests::{
    captures, read_text, shared_pcaps, start_pipeline_with, CollectorSpec,
};

/// Most time one trace's pipeline may take.
const TIMEOUT: Duration = Duration::from_secs(90);
/// Traces run at once (CI has 2 cores).
const PARALLEL: usize = 2;

/// One pipeline run to make: a source name, the trace, the collector's flags, Zeek's log.
struct Job {
    source: String,
    trace: PathBuf,
    flags: Vec<String>,
    /// The processor's flags (a bare-mode test's configuration).
    processor: Vec<String>,
    truth: Option<PathBuf>,
    /// Compare server names with tshark's.
    names: bool,
}

/// The corpus's tests, then the shared captures (with their Zeek log where there is one).
fn jobs(extra: &[String]) -> Vec<Job> {
    let mut jobs = Vec::new();
    if let Some(dir) = corpus_dir() {
        for e in manifest(&dir) {
            let bare = bare_test(&e.test);
            assert_eq!(
                bare.is_some(),
                e.bare,
                "{}: src/zeek_bare.tsv must hold every bare-mode test, and only those",
                e.test
            );
            jobs.push(Job {
                source: format!("corpus:{}", e.test),
                trace: e.trace,
                flags: e.collector_flags.iter().chain(extra).cloned().collect(),
                processor: bare.map(|b| b.processor_flags()).unwrap_or_default(),
                truth: Some(e.truth),
                names: false,
            });
        }
    }
    if let Some(dir) = shared_pcaps() {
        for pcap in captures(&dir) {
            let file = pcap
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let truth = dir.join("truth").join(format!("{file}.zeek-conn.log"));
            let name = file.trim_end_matches(".pcapng").trim_end_matches(".pcap");
            let mut flags: Vec<String> = extra.to_vec();
            // tshark verifies no checksum: a capture compared only with tshark is read alike
            // (many are taken on the sender, with checksums left to the card).
            if IGNORE_CHECKSUMS.contains(&name) || !truth.is_file() {
                flags.push("--ignore-checksums".into());
            }
            jobs.push(Job {
                source: format!("pcaps:{file}"),
                trace: pcap,
                flags,
                processor: Vec::new(),
                truth: truth.is_file().then_some(truth),
                names: true,
            });
        }
    }
    jobs
}

/// What one job gave: our rows (interim records left out), the failure if a process did not
/// exit 0, and tshark's named sessions (`None`: not asked, or tshark is not installed).
#[derive(Default)]
struct Outcome {
    rows: Vec<Row>,
    failure: Option<String>,
    named: Option<Vec<Named>>,
    no_tshark: bool,
}

/// One job: tshark first where names are compared; the pipeline unless there is nothing to
/// compare (no Zeek log, no name).
fn run(job: &Job) -> Outcome {
    let named = job.names.then(|| tshark_names(&job.trace)).flatten();
    let no_tshark = job.names && named.is_none();
    if job.truth.is_none() && named.as_ref().is_none_or(Vec::is_empty) {
        return Outcome {
            no_tshark,
            ..Outcome::default()
        };
    }
    let spec = CollectorSpec {
        extra: job.flags.clone(),
        ..CollectorSpec::pcap(&job.trace, 1)
    };
    let processor: Vec<&str> = job.processor.iter().map(String::as_str).collect();
    let run = start_pipeline_with(&[spec], 1, &processor).wait(TIMEOUT);
    let rows = run
        .conn_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["interim"] != Value::Bool(true))
        .map(|v| our_row(&v))
        .collect();
    let clean = run.collectors[0].0 == Some(0)
        && run.processors[0].0 == Some(0)
        && run.aggregator.0 == Some(0);
    let failure = (!clean).then(|| format!("{}: {}", job.source, run.exit_codes()));
    Outcome {
        rows,
        failure,
        named,
        no_tshark,
    }
}

/// Every job's rows, `PARALLEL` at a time, in the jobs' order.
fn run_all(jobs: &[Job]) -> Vec<Outcome> {
    let results: Mutex<BTreeMap<usize, Outcome>> = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let out = run(job);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(i, out);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_values()
        .collect()
}

#[test]
fn services_and_server_names_agree_with_zeek_and_tshark() {
    let extra: Vec<String> = std::env::var("TAPFLOW_SERVICE_COLLECTOR_FLAGS")
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let jobs = jobs(&extra);
    if jobs.is_empty() {
        eprintln!("SKIP: neither ../shared/zeek-corpus nor ../shared/pcaps is present");
        return;
    }
    let started = Instant::now();
    let results = run_all(&jobs);
    let mut tally = Tally::default();
    let mut failed = Vec::new();
    let mut no_tshark = false;
    for (job, out) in jobs.iter().zip(results) {
        failed.extend(out.failure);
        no_tshark |= out.no_tshark;
        if let Some(named) = &out.named {
            tally.add_names(&job.source, named, &out.rows);
        }
        if let Some(truth) = &job.truth {
            tally.add_services(&job.source, &parse_zeek_log(&read_text(truth)), out.rows);
        }
    }
    let mut report = format!(
        "{}\n{} runs in {:.1} s\n\ndifferences ({}):\n",
        tally.summary(),
        jobs.len(),
        started.elapsed().as_secs_f64(),
        tally.differences.len()
    );
    for d in &tally.differences {
        report += &format!(
            "  {} [{}]: truth {:?}, ours {:?}\n",
            d.key, d.kind, d.truth, d.ours
        );
    }
    println!("{report}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("service_corpus_report.txt");
    std::fs::write(&path, &report).expect("write the report");
    println!("report written to {}", path.display());
    assert!(
        failed.is_empty(),
        "runs not exiting 0:\n{}",
        failed.join("\n")
    );
    assert!(
        !no_tshark,
        "tshark is not installed (deploy/install-deps.sh --test installs it)"
    );
    if !extra.is_empty() {
        println!(
            "TAPFLOW_SERVICE_COLLECTOR_FLAGS={extra:?}: figures only, golden table not checked"
        );
        return;
    }
    // Reasons by hand: the reasons file's, then the golden table's own (which win).
    let previous = [reasons_path(), golden_path()]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let golden = golden_differences(&golden_path(), &tally.table(&previous));
    assert!(
        golden.is_empty(),
        "{} differs (- golden, + now):\n{}\nIf the change is intended, refresh with \
         UPDATE_GOLDEN=1 and review the diff.",
        golden_path().display(),
        golden.join("\n")
    );
}
