//! A membership decision survives a restart of the aggregator (issue 18): three processors
//! routed by a processor set, the generated capture fed to a collector through a FIFO at its
//! own pace (6,000 packets/s for 30 s of packet time), an aggregator with a state directory
//! (`--state-dir`, acknowledged delivery) deciding membership (`--processor-dead-after 2s`).
//! Processor 1 is killed with SIGKILL at +3 s; once the aggregator has removed it and the
//! collector has the new history, the aggregator is killed with SIGKILL too and started again
//! a second later with the same command line.
//!
//! Checked: the restarted aggregator restores the decision from its write-ahead log (it says
//! so), decides nothing again (no second removal, no return: the processor is dead), announces
//! the same history (the collector switches once), does not wait for the dead processor and
//! ends on its own at the end of the stream with every process exiting 0; every connection
//! that starts after the removal's switch is written as a run of the same capture through one
//! fixed processor writes it, none twice; the report lists the decision once (restored) and
//! the restart, and reconciles as a run without the restart does: what the dead processor
//! held is lost with it (`complete: false`, the dead incarnation named, from its last
//! heartbeat kept with the decision).
//!
//! Then the same with processor 1 started again after the aggregator's restart: the restarted
//! aggregator adds it back once it has been heard healthy for a whole hold-down (counted from
//! its first heartbeat after the restart, never from before it), and the report lists the
//! restored removal and the new addition.

use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::cluster::{
    accounting_report, lines, log_field, spawn, wait_all_ok, wait_for, Cluster, T0,
};
use tapflow_integration_tests::durable::{
    conn_summary as summary, conn_ts as ts, conns_by_uid as by_uid, dead_processors, decisions,
    log_of, Membership, Scene,
};
use tapflow_integration_tests::faults::signal;
use tapflow_integration_tests::{endpoint, free_ports, run_pipeline, CollectorSpec, Proc};

const TIMEOUT: Duration = Duration::from_secs(600);
/// 30 s of packet time at the generator's 6,000 packets/s.
const PACKETS: u32 = 180_000;
const DEAD_AFTER_MS: u64 = 2_000;
const HOLD_DOWN_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 200;

/// The scene after both crashes: processor 1 killed and removed, the aggregator killed after
/// announcing the removal and started again (`scene.aggregator`, as `aggregator-again`), its
/// decision restored.
struct Crashed {
    /// Processors 0 and 2 (1 is `dead`).
    scene: Scene,
    ack: String,
    dead: Proc,
    first_log: String,
}

fn crash_both() -> Crashed {
    let ack = endpoint(free_ports(1)[0]);
    let mut agg_args = Vec::new();
    let mut s = Scene::start(
        PACKETS,
        TIMEOUT,
        |c, control| {
            agg_args = aggregator_args(c, control, &ack);
            spawn("aggregator", "tapflow-aggregator", agg_args.clone(), &c.dir)
        },
        |c, id, control| processor(c, id, control, &ack, &format!("processor{id}")),
    );
    let deadline = s.deadline;
    std::thread::sleep(Duration::from_secs(3));
    signal(s.processors[1].child.id(), "KILL");
    let dead = s.processors.remove(1);
    wait_for(&s.aggregator, "processor declared dead", deadline);
    // Announced only once durable: the collector has it, so the log holds it.
    wait_for(
        &s.collector,
        "processor set announced by the aggregator",
        deadline,
    );
    let first_log = s.aggregator.stderr();
    signal(s.aggregator.child.id(), "KILL");
    let _ = s.aggregator.child.wait();
    std::thread::sleep(Duration::from_secs(1));
    s.aggregator = spawn("aggregator-again", "tapflow-aggregator", agg_args, &s.c.dir);
    wait_for(
        &s.aggregator,
        "membership decision restored from the write-ahead log",
        deadline,
    );
    Crashed {
        scene: s,
        ack,
        dead,
        first_log,
    }
}

#[test]
fn a_removal_decided_before_an_aggregator_crash_holds_after_its_restart() {
    let Crashed {
        scene:
            Scene {
                dir,
                capture,
                processors,
                collector,
                aggregator: again,
                feeder,
                deadline,
                ..
            },
        dead: crashed,
        first_log,
        ..
    } = crash_both();
    let d = dir.path();
    feeder.join().expect("join the FIFO feeder");
    let mut all = processors;
    all.push(collector);
    all.push(again);
    wait_all_ok(&mut all, deadline);
    drop(crashed);
    let (collector_log, again_log) = (log_of(&all, "collector"), log_of(&all, "aggregator-again"));

    // Decided once, before the crash; restored, not decided again, after it.
    let remove_ns = log_field(&first_log, "processor declared dead", "switch_at_ns");
    let restored_ns = log_field(
        &again_log,
        "membership decision restored from the write-ahead log",
        "switch_at_ns",
    );
    assert!(remove_ns.is_some(), "{first_log}");
    assert_eq!(restored_ns, remove_ns, "{again_log}");
    for decided in [
        "processor declared dead",
        "processor back for its hold-down",
    ] {
        assert!(!again_log.contains(decided), "{decided}:\n{again_log}");
    }
    assert_eq!(
        collector_log
            .matches("processor set: switched epoch")
            .count(),
        1,
        "the restarted aggregator announced the same history: {collector_log}"
    );

    let report = accounting_report(d);
    let m = &report["membership"];
    assert_eq!(
        (
            m["removed"].as_u64(),
            m["added"].as_u64(),
            m["restored"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(decisions(&report), [r#"{"Remove":1}"#], "{report}");
    let restarts = report["durability"]["restarts"].as_array().map(Vec::len);
    assert_eq!(restarts, Some(1), "{report}");
    // As in a run without the restart: the link to the member removed for good is counted
    // lost with it (its last heartbeat was kept with the decision), so the run reconciles and
    // is incomplete, the dead incarnation named.
    assert_eq!(
        (&report["reconciled"], &report["complete"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{report}"
    );
    assert_eq!(dead_processors(&report), ["processor1"], "{report}");

    // Connections that start after the removal's switch (and a second of margin): each as
    // without the failure; none written twice.
    let remove_s = remove_ns.unwrap_or(0) as f64 / 1e9;
    let conns = lines(&std::fs::read_to_string(d.join("conn.jsonl")).unwrap_or_default());
    let got = by_uid(&conns);
    assert_eq!(got.len(), conns.len(), "a record written twice");
    let base = run_pipeline(&[CollectorSpec::pcap(&capture, 1)], 1, TIMEOUT);
    assert!(
        base.all_exited(),
        "baseline run failed: {:?}",
        base.aggregator
    );
    let want = by_uid(&lines(&base.conn_log));
    let (mut same, mut differ) = (0, Vec::new());
    for (u, w) in want.iter().filter(|(_, w)| ts(w) >= remove_s + 1.0) {
        if got.get(u).is_some_and(|g| summary(g) == summary(w)) {
            same += 1;
        } else {
            differ.push(w.to_string());
        }
    }
    eprintln!(
        "processor1 killed at +3 s, removed with a switch at +{:.3} s; aggregator killed and \
         restarted: decision restored; connections starting after +{:.3} s: {same} written as \
         without the failure, {} differ; records in all {} (fixed run: {})",
        remove_s - T0,
        remove_s + 1.0 - T0,
        differ.len(),
        conns.len(),
        want.len(),
    );
    assert!(same >= 1000, "too few connections after the switch");
    assert!(
        differ.is_empty(),
        "connections after the switch differ: {differ:?}"
    );
}

#[test]
fn a_processor_removed_before_an_aggregator_crash_rejoins_after_a_whole_hold_down() {
    let Crashed {
        scene:
            Scene {
                dir,
                c,
                control,
                processors,
                collector,
                aggregator: again,
                feeder,
                started,
                deadline,
                ..
            },
        ack,
        dead,
        ..
    } = crash_both();
    // Back after the restart: the hold-down counts from its first heartbeat to the restarted
    // aggregator, which adds it back once, with the removal restored before it.
    let back = processor(&c, 1, &control, &ack, "processor1-again");
    let back_at = Instant::now();
    wait_for(&again, "processor back for its hold-down", deadline);
    let waited = back_at.elapsed();
    assert!(
        waited >= Duration::from_millis(HOLD_DOWN_MS),
        "added back {waited:?} after it started"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the return came too late in the capture"
    );
    feeder.join().expect("join the FIFO feeder");
    let mut all = processors;
    all.push(back);
    all.push(collector);
    all.push(again);
    wait_all_ok(&mut all, deadline);
    drop(dead);
    let again_log = log_of(&all, "aggregator-again");
    let healthy_ms = log_field(&again_log, "processor back for its hold-down", "healthy_ms");
    assert!(
        healthy_ms.is_some_and(|ms| ms >= HOLD_DOWN_MS),
        "{again_log}"
    );
    assert!(
        !again_log.contains("processor declared dead"),
        "{again_log}"
    );
    let report = accounting_report(dir.path());
    let m = &report["membership"];
    assert_eq!(
        decisions(&report),
        [r#"{"Remove":1}"#, r#"{"Add":1}"#],
        "{report}"
    );
    assert_eq!(m["restored"].as_u64(), Some(1), "{report}");
    assert_eq!(report["reconciled"], true, "{report}");
    let epochs = report["processor_set"]["epochs"].as_array().map(Vec::len);
    assert_eq!(epochs, Some(3), "{report}");
}

/// The cluster's timings: dead after 2 s of silence, back after a 3 s hold-down.
const MEMBERSHIP: Membership = Membership {
    dead_after_ms: DEAD_AFTER_MS,
    hold_down_ms: HOLD_DOWN_MS,
    heartbeat_ms: HEARTBEAT_MS,
};

/// The aggregator: durable (`--state-dir`, acknowledgements on `ack`), deciding membership
/// and announcing it on `control`. The same command line at the restart.
fn aggregator_args(c: &Cluster, control: &str, ack: &str) -> Vec<String> {
    let durable = ["--state-dir", &c.log("state"), "--ack-listen", ack].map(str::to_owned);
    MEMBERSHIP.aggregator_args(c, control, &durable)
}

/// Processor `id` of the set, subscribed to the control channel, keeping what the aggregator
/// has not acknowledged and sending it again to the next incarnation.
fn processor(c: &Cluster, id: usize, control: &str, ack: &str, name: &str) -> Proc {
    let acks = ["--aggregator-acks", ack, "--resend-after-ms", "1000"].map(str::to_owned);
    MEMBERSHIP.processor(c, id, control, name, &acks)
}
