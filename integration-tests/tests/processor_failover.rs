//! A dead processor replaced without an operator (issue 18): three processors routed by a
//! processor set, the bench generator's capture fed to a collector through a FIFO at its own
//! pace (6,000 packets/s for 30 s of packet time). Processor 1 is killed with SIGKILL at +3 s;
//! nobody edits the set file nor sends a signal. The aggregator (`--processor-dead-after 2s`)
//! declares it dead, removes it and announces the new history on its control channel; the
//! collector (`--control`) switches at the announced packet-time instant and gives its link up.
//! At +8 s processor 1 is started again: once heard healthy for the hold-down (3 s) the
//! aggregator adds it back, the collector links to it again, and the run ends with every
//! process exiting 0 on its own (the `--exit-on-eos` aggregator does not wait for the dead
//! incarnation).
//!
//! Checked: the removal was decided within dead-after plus one heartbeat of the last one heard
//! (plus the aggregator's loop period, 250 ms at most), the return after the hold-down; both
//! are in the accounting report; the processors (`--control`) hear both decisions and switch
//! with the collector, so none takes summaries of an epoch it does not know; and every
//! connection that starts after the removal's switch is written exactly as a run of the same
//! capture through one fixed processor writes it (but for those the return's switch splits, as
//! any switch does: marked `tapflow_split` closed by the survivor that gave them up).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::cluster::{
    accounting_report, lines, log_field, spawn, wait_all_ok, wait_for, Cluster, T0,
};
use tapflow_integration_tests::durable::{
    conn_summary as summary, conn_ts as ts, conn_uid as uid, conns_by_uid as by_uid,
    dead_processors, decisions, log_of, Membership, Scene,
};
use tapflow_integration_tests::faults::signal;
use tapflow_integration_tests::{run_pipeline, CollectorSpec, Proc};

const TIMEOUT: Duration = Duration::from_secs(600);
/// 30 s of packet time at the generator's 6,000 packets/s; `TAPFLOW_FAILOVER_PACKETS` sets
/// another count (1,080,000: the acceptance's few minutes, 180 s of packet time).
const PACKETS: u32 = 180_000;
const DEAD_AFTER_MS: u64 = 2_000;
const HOLD_DOWN_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 200;
/// The aggregator looks at the time at least this often (its receive timeout).
const AGGREGATOR_LOOP_MS: u64 = 250;

fn start() -> Scene {
    let packets = std::env::var("TAPFLOW_FAILOVER_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PACKETS);
    Scene::start(packets, TIMEOUT, aggregator, |c, id, control| {
        processor(c, id, control, &format!("processor{id}"))
    })
}

#[test]
fn a_killed_processor_is_removed_and_rejoins_after_the_hold_down() {
    let Scene {
        dir,
        capture,
        c,
        control,
        aggregator,
        mut processors,
        collector,
        feeder,
        started,
        deadline,
    } = start();
    let d = dir.path();

    std::thread::sleep(Duration::from_secs(3));
    signal(processors[1].child.id(), "KILL");
    let crashed = processors.remove(1);
    wait_for(&aggregator, "processor declared dead", deadline);
    std::thread::sleep(Duration::from_secs(8).saturating_sub(started.elapsed()));
    let back = processor(&c, 1, &control, "processor1-again");
    wait_for(&aggregator, "processor back for its hold-down", deadline);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the return came too late in the capture to check connections after it"
    );
    feeder.join().expect("join the FIFO feeder");

    let mut all = processors;
    all.push(back);
    all.push(collector);
    all.push(aggregator);
    wait_all_ok(&mut all, deadline);
    drop(crashed);
    let (collector_log, aggregator_log) = (log_of(&all, "collector"), log_of(&all, "aggregator"));

    // The decisions, as logged.
    let silent_ms = log_field(&aggregator_log, "processor declared dead", "silent_ms");
    let healthy_ms = log_field(
        &aggregator_log,
        "processor back for its hold-down",
        "healthy_ms",
    );
    let remove_ns = log_field(&aggregator_log, "processor declared dead", "switch_at_ns");
    let add_ns = log_field(
        &aggregator_log,
        "processor back for its hold-down",
        "switch_at_ns",
    );
    let (Some(silent_ms), Some(healthy_ms), Some(remove_ns), Some(add_ns)) =
        (silent_ms, healthy_ms, remove_ns, add_ns)
    else {
        panic!("decisions not logged with their fields:\n{aggregator_log}");
    };
    assert!(
        (DEAD_AFTER_MS..=DEAD_AFTER_MS + HEARTBEAT_MS + AGGREGATOR_LOOP_MS).contains(&silent_ms),
        "removed {silent_ms} ms after the last heartbeat heard"
    );
    assert!(
        healthy_ms >= HOLD_DOWN_MS,
        "added back after {healthy_ms} ms"
    );
    assert!(add_ns > remove_ns);
    // The collector applied both announcements as reloads: two switches, the dead link given
    // up (without end-of-stream, which would end the returning incarnation), a new link to the
    // returning member.
    for expected in [
        "processor set announced by the aggregator",
        "processor declared dead by the aggregator left the set",
        "processor set: link to a new member",
    ] {
        assert!(
            collector_log.contains(expected),
            "{expected}:\n{collector_log}"
        );
    }
    assert_eq!(
        collector_log
            .matches("processor set: switched epoch")
            .count(),
        2,
        "{collector_log}"
    );

    // The report: both decisions, the dead incarnation, three epochs.
    let report = accounting_report(d);
    let m = &report["membership"];
    assert_eq!(
        (m["removed"].as_u64(), m["added"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(
        decisions(&report),
        [r#"{"Remove":1}"#, r#"{"Add":1}"#],
        "{report}"
    );
    assert_eq!(dead_processors(&report), ["processor1"], "{report}");
    // The returning member's new link continues its sequence: every summary sent to member 1
    // is received by one of its incarnations or lost with the dead one.
    assert_eq!(report["reconciled"], true, "{report}");
    let epochs = report["processor_set"]["epochs"].as_array().map(Vec::len);
    assert_eq!(epochs, Some(3), "{report}");
    // The processors (`--control`) heard both decisions too: the survivors switched at both
    // instants, and no processor took summaries of an epoch it did not know.
    for p in ["processor0", "processor2"] {
        let log = log_of(&all, p);
        for epoch in [2, 3] {
            let switched = format!("processor set: switched epoch epoch={epoch}");
            assert!(log.contains(&switched), "{p}: {switched}:\n{log}");
        }
    }
    let unknown: Vec<(String, u64)> = report["processors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["processor"].as_str().unwrap_or_default().to_owned();
            (
                name,
                p["counters"]["epoch_unknown"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert!(
        unknown.len() >= 3 && unknown.iter().all(|(_, n)| *n == 0),
        "summaries of an unknown epoch: {unknown:?}\n{report}"
    );

    // Connections that start after the removal's switch (and a second of margin): each as
    // without the failure, matched by uid (the canonical key and the first packet's time).
    // One that began before the return's switch and still had packets after it is split
    // there, as any switch splits (docs/scaling.md): recognised by a piece of its five-tuple
    // that starts after that switch and is not in the run without the failure.
    let (remove_s, add_s) = (remove_ns as f64 / 1e9, add_ns as f64 / 1e9);
    let conns = lines(&std::fs::read_to_string(d.join("conn.jsonl")).unwrap_or_default());
    let base = run_pipeline(&[CollectorSpec::pcap(&capture, 1)], 1, TIMEOUT);
    assert!(
        base.all_exited(),
        "baseline run failed: {:?}",
        base.aggregator
    );
    let base_conns = lines(&base.conn_log);
    let (got, want) = (by_uid(&conns), by_uid(&base_conns));
    let pieces_after_return: BTreeSet<String> = conns
        .iter()
        .filter(|c| ts(c) >= add_s && !want.contains_key(&uid(c)))
        .map(tuple)
        .collect();
    let (mut same, mut crossed, mut differ) = (0, 0, Vec::new());
    // The survivor that gave such a connection up at the return's switch marked it closed.
    let closed_at_switch = |g: &Value| {
        g["tapflow_split"]
            .as_str()
            .is_some_and(|m| m.contains("closed"))
    };
    for (u, w) in want.iter().filter(|(_, w)| ts(w) >= remove_s + 1.0) {
        if got.get(u).is_some_and(|g| summary(g) == summary(w)) {
            same += 1;
        } else if ts(w) < add_s
            && pieces_after_return.contains(&tuple(w))
            && got.get(u).is_some_and(closed_at_switch)
        {
            crossed += 1;
        } else {
            differ.push(w.to_string());
        }
    }
    eprintln!(
        "processor1 killed at +3 s: declared dead after {silent_ms} ms silent, switch at +{:.3} s; \
         restarted at +8 s: added back after {healthy_ms} ms healthy, switch at +{:.3} s; \
         connections starting after +{:.3} s: {same} written as without the failure, {crossed} \
         split by the return's switch, {} differ; records in all {} (fixed run: {})",
        remove_s - T0,
        add_s - T0,
        remove_s + 1.0 - T0,
        differ.len(),
        conns.len(),
        base_conns.len(),
    );
    assert!(same >= 1000, "too few connections after the switch");
    assert!(
        differ.is_empty(),
        "connections after the switch differ: {differ:?}"
    );
}

#[test]
fn a_processor_that_never_returns_is_counted_lost_and_the_run_reconciles() {
    let Scene {
        dir,
        mut processors,
        collector,
        aggregator,
        feeder,
        deadline,
        ..
    } = start();
    std::thread::sleep(Duration::from_secs(3));
    signal(processors[1].child.id(), "KILL");
    let crashed = processors.remove(1);
    wait_for(&aggregator, "processor declared dead", deadline);
    feeder.join().expect("join the FIFO feeder");
    let mut all = processors;
    all.push(collector);
    all.push(aggregator);
    wait_all_ok(&mut all, deadline);
    drop(crashed);
    // The link to the member removed for good ends without end-of-stream (the collector gave
    // it up at the switch): all it was sent is counted lost with the dead processor, so the
    // run reconciles and is reported incomplete, the dead incarnation listed.
    let report = accounting_report(dir.path());
    assert_eq!(
        (&report["reconciled"], &report["complete"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{report}"
    );
    let links = report["collectors"][0]["links"].as_array().cloned();
    let gone: Vec<Value> = links
        .into_iter()
        .flatten()
        .filter(|l| l["processor"] == "processor1")
        .collect();
    let [link] = gone.as_slice() else {
        panic!("one link to processor1 expected: {report}");
    };
    let sent = link["sent"].as_u64().unwrap_or(0);
    assert!(sent > 0, "{link}");
    assert_eq!(
        link["lost_with_dead_processor"].as_u64(),
        Some(sent),
        "{link}"
    );
    assert_eq!(
        report["dead_processors"][0]["processor"], "processor1",
        "{report}"
    );
    let log = log_of(&all, "aggregator");
    assert!(
        log.contains("accounting\n") && !log.contains("MISMATCH"),
        "{log}"
    );
}

/// The five-tuple, endpoints in either order.
fn tuple(c: &Value) -> String {
    let a = format!("{}:{}", c["id.orig_h"], c["id.orig_p"]);
    let b = format!("{}:{}", c["id.resp_h"], c["id.resp_p"]);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{} {lo} {hi}", c["proto"])
}

/// The cluster's timings: dead after 2 s of silence, back after a 3 s hold-down.
const MEMBERSHIP: Membership = Membership {
    dead_after_ms: DEAD_AFTER_MS,
    hold_down_ms: HOLD_DOWN_MS,
    heartbeat_ms: HEARTBEAT_MS,
};

/// The cluster's aggregator, deciding membership and announcing it on `control`.
fn aggregator(c: &Cluster, control: &str) -> Proc {
    let args = MEMBERSHIP.aggregator_args(c, control, &[]);
    spawn("aggregator", "tapflow-aggregator", args, &c.dir)
}

/// Processor `id` of the set, subscribed to the aggregator's control channel (its decisions
/// reach it as a SIGHUP reload would), spawned as `name`.
fn processor(c: &Cluster, id: usize, control: &str, name: &str) -> Proc {
    MEMBERSHIP.processor(c, id, control, name, &[])
}
