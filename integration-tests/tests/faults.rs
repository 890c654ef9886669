//! Faults with real processes (issue 7): a processor, the aggregator or a collector SIGKILLed
//! mid-run and started again with the same command line, while a live collector on `lo`
//! captures a steady stream the test sends. Each test prints what was sent, received and lost,
//! and where, and asserts what is deterministic exactly (the accounting identities, exit codes,
//! nothing hangs) and the rest as bounds.

use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::faults::{kill_for_restart, restart, Role, TcpSessions, UdpFlows};
use tapflow_integration_tests::{free_port, is_root, start_pipeline_with, CollectorSpec};

/// Every process must be gone this long after the collectors' end of stream.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const FLOWS: usize = 40;
const ROUND: Duration = Duration::from_millis(100);

fn n(v: &Value) -> u64 {
    assert!(v.is_u64(), "not a count: {v}");
    v.as_u64().expect("a count")
}

/// A live collector on `lo` seeing UDP and TCP to `port`.
fn spec(port: u16, n: usize) -> CollectorSpec {
    let mut s = CollectorSpec::loopback(port, n, &["--immediate", "--ignore-checksums"]);
    s.extra[1] = format!("port {port}");
    s
}

fn report(run: &tapflow_integration_tests::PipelineRun) -> &Value {
    run.accounting()
}

fn assert_all_exited_0(run: &tapflow_integration_tests::PipelineRun) {
    for (what, (code, log)) in run
        .collectors
        .iter()
        .map(|c| ("collector", c))
        .chain(run.processors.iter().map(|p| ("processor", p)))
        .chain(std::iter::once(("aggregator", &run.aggregator)))
    {
        assert_eq!(*code, Some(0), "{what} did not exit 0 by itself:\n{log}");
    }
}

#[test]
fn processor_killed_and_restarted() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let mut flows = UdpFlows::new(port, FLOWS, 2);
    let on_1 = flows.on_shard(1);
    let mut p = start_pipeline_with(&[spec(port, 2)], 2, &["--heartbeat-ms", "200"]);
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    flows.run_until(start + Duration::from_secs(3), ROUND);
    // Traffic goes on while processor 1 is down (the collector buffers for it) and after.
    let (killed, again) = kill_for_restart(&mut p, Role::Processor(1));
    flows.run_until(Instant::now() + Duration::from_secs(2), ROUND);
    restart(&mut p, again);
    flows.run_until(Instant::now() + Duration::from_secs(3), ROUND);
    std::thread::sleep(Duration::from_millis(800));
    p.signal_collector(0, "TERM");
    let waited = Instant::now();
    let run = p.wait(EXIT_TIMEOUT);
    eprintln!(
        "exited {:.1} s after SIGTERM",
        waited.elapsed().as_secs_f64()
    );
    assert!(
        killed.status.is_some_and(|s| s.code().is_none()),
        "killed by a signal"
    );
    assert_all_exited_0(&run);
    let r = report(&run);
    let c = &r["collectors"][0];
    let l1 = &c["links"][1];
    let dead = &r["dead_processors"][0];
    let split = n(&r["processors"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["processor"] == "processor1"))
        .expect("processor1 in the report")["counters"]["flows_split"]);
    eprintln!(
        "processor kill: datagrams sent {} ({} flows, {} on shard 1); collector read {}; \
         link 1: sent {} = received {} + gaps {} + lost with the dead incarnation {} \
         (of which it received {} per its last heartbeat, {} after it); \
         sessions lost <= {} (open flows at its last heartbeat {}); split flows {}",
        flows.sent,
        FLOWS,
        on_1,
        c["packets_read"],
        l1["sent"],
        l1["received"],
        l1["gaps"],
        l1["lost_with_dead_processor"],
        dead["summaries_received"],
        dead["summaries_after_last_heartbeat"],
        dead["sessions_lost_upper_bound"],
        dead["flows_open"],
        split,
    );
    assert_eq!(r["reconciled"], Value::Bool(true), "{r:#}");
    assert_eq!(r["complete"], Value::Bool(false), "{r:#}");
    assert_eq!(n(&c["packets_read"]), flows.sent, "{c:#}");
    // Link 0 lost nothing; link 1's loss is named exactly.
    let l0 = &c["links"][0];
    assert_eq!(n(&l0["sent"]), n(&l0["received"]), "{l0:#}");
    let lost = n(&l1["lost_with_dead_processor"]);
    assert_eq!(
        n(&l1["sent"]),
        n(&l1["received"]) + n(&l1["gaps"]) + lost,
        "{l1:#}"
    );
    assert!(
        lost > 0,
        "the first seconds of shard 1 died with it: {l1:#}"
    );
    assert_eq!(dead["processor"], "processor1", "{r:#}");
    assert_eq!(
        lost,
        n(&dead["summaries_received"])
            + n(&dead["gaps"])
            + n(&dead["summaries_after_last_heartbeat"]),
        "{dead:#}"
    );
    // Every shard-1 flow was open when it died, and every one resumed after the restart.
    assert!(n(&dead["sessions_lost_upper_bound"]) >= on_1, "{dead:#}");
    assert_eq!(split, on_1, "{r:#}");
    // One record per flow; shard 1's hold what the new incarnation received.
    assert_eq!(
        run.conn_log.lines().count() as u64,
        FLOWS as u64,
        "{}",
        run.conn_log
    );
    let pkts: u64 = run
        .conn_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| n(&v["orig_pkts"]))
        .sum();
    assert_eq!(
        pkts,
        n(&l0["received"]) + n(&l1["received"]),
        "{}",
        run.conn_log
    );
}

#[test]
fn aggregator_killed_and_restarted() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let mut flows = UdpFlows::new(port, FLOWS, 2);
    let mut tcp = TcpSessions::new(port);
    let mut p = start_pipeline_with(&[spec(port, 2)], 2, &["--heartbeat-ms", "200"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Short TCP sessions whose records reach the aggregator before it dies (they end 5 s of
    // packet time after their FIN; the live watermark trails the wall clock by 1 s).
    const BEFORE: u64 = 20;
    for _ in 0..BEFORE {
        tcp.one();
    }
    let start = Instant::now();
    flows.run_until(start + Duration::from_secs(8), ROUND);
    let (killed, again) = kill_for_restart(&mut p, Role::Aggregator);
    flows.run_until(Instant::now() + Duration::from_secs(2), ROUND);
    restart(&mut p, again);
    for _ in 0..10 {
        tcp.one();
    }
    flows.run_until(Instant::now() + Duration::from_secs(2), ROUND);
    std::thread::sleep(Duration::from_millis(800));
    p.signal_collector(0, "TERM");
    let run = p.wait(EXIT_TIMEOUT);
    assert!(killed.status.is_some_and(|s| s.code().is_none()));
    assert_all_exited_0(&run);
    let r = report(&run);
    let c = &r["collectors"][0];
    let ps = r["processors"].as_array().cloned().unwrap_or_default();
    let handed: u64 = ps.iter().map(|p| n(&p["records_handed"])).sum();
    let received: u64 = ps.iter().map(|p| n(&p["records_received"])).sum();
    let before: u64 = ps.iter().map(|p| n(&p["records_before_start"])).sum();
    let gaps: u64 = ps.iter().map(|p| n(&p["records_gaps"])).sum();
    eprintln!(
        "aggregator kill: datagrams {} + TCP sessions {}; collector read {}, links reconcile: {}; \
         connection records handed to ZeroMQ {} = received by the new aggregator {} + \
         lost with the killed one {} + gaps {}; conn log lines {}",
        flows.sent,
        tcp.made,
        c["packets_read"],
        r["reconciled"],
        handed,
        received,
        before,
        gaps,
        run.conn_log.lines().count()
    );
    assert_eq!(r["reconciled"], Value::Bool(true), "{r:#}");
    for p in &ps {
        assert_eq!(p["records_reconcile"], Value::Bool(true), "{p:#}");
    }
    assert_eq!(handed, received + before + gaps);
    assert_eq!(
        before, BEFORE,
        "the first sessions' records died with the aggregator: {r:#}"
    );
    assert_eq!(gaps, 0, "{r:#}");
    assert_eq!(received, run.conn_log.lines().count() as u64);
    assert_eq!(
        received,
        FLOWS as u64 + tcp.made - BEFORE,
        "{}",
        run.conn_log
    );
}

#[test]
fn collector_killed_and_restarted_rejoins() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let mut flows = UdpFlows::new(port, FLOWS, 2);
    let mut p = start_pipeline_with(
        &[spec(port, 2)],
        2,
        &["--heartbeat-ms", "200", "--dead-after-ms", "1000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    flows.run_until(Instant::now() + Duration::from_secs(3), ROUND);
    let sent_before = flows.sent;
    // Down longer than --dead-after-ms: declared dead. What is sent meanwhile is captured by
    // no one (not a tapflow count).
    let (killed, again) = kill_for_restart(&mut p, Role::Collector(0));
    flows.run_until(Instant::now() + Duration::from_millis(2500), ROUND);
    restart(&mut p, again);
    flows.run_until(Instant::now() + Duration::from_millis(1000), ROUND);
    let sent_down = flows.sent - sent_before;
    let after_start = flows.sent;
    flows.run_until(Instant::now() + Duration::from_secs(3), ROUND);
    let sent_after = flows.sent - after_start;
    std::thread::sleep(Duration::from_millis(800));
    p.signal_collector(0, "TERM");
    let run = p.wait(EXIT_TIMEOUT);
    assert!(killed.status.is_some_and(|s| s.code().is_none()));
    assert_all_exited_0(&run);
    let r = report(&run);
    let rows = r["collectors"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "two incarnations: {r:#}");
    let dead = rows.iter().find(|c| c["dead"] == Value::Bool(true));
    assert!(
        dead.is_some(),
        "the killed incarnation is reported dead: {r:#}"
    );
    let dead = dead.expect("the dead incarnation's row");
    let live = rows
        .iter()
        .find(|c| c["dead"] == Value::Bool(false))
        .expect("the live incarnation's row");
    let links = dead["links"].as_array().cloned().unwrap_or_default();
    let received_dead: u64 = links.iter().map(|l| n(&l["received"])).sum();
    let sent_dead: u64 = links.iter().map(|l| n(&l["sent"])).sum();
    let lost_dead: u64 = links
        .iter()
        .map(|l| n(&l["lost_with_collector_at_least"]))
        .sum();
    eprintln!(
        "collector kill: datagrams sent before the kill {sent_before}, while down and just \
         after the restart {sent_down}, after {sent_after}; dead incarnation: read {} and sent \
         {sent_dead} as of its last heartbeat, processors received {received_dead} from it, \
         lost with it at least {lost_dead}; new incarnation read {} and reconciles: {}",
        dead["packets_read"], live["packets_read"], r["reconciled"]
    );
    assert_eq!(r["reconciled"], Value::Bool(true), "{r:#}");
    assert_eq!(r["complete"], Value::Bool(false), "{r:#}");
    assert!(received_dead <= sent_before, "{dead:#}");
    assert!(
        n(&dead["packets_read"]) > 0,
        "its last heartbeat's counters: {dead:#}"
    );
    assert!(sent_dead <= received_dead + lost_dead, "{dead:#}");
    assert!(n(&live["packets_read"]) >= sent_after, "{live:#}");
    // Declared dead, a self-alert raised, and ended when the new incarnation spoke.
    let alerts: Vec<Value> = run
        .alerts_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|a: &Value| a["kind"] == "collector_silent")
        .collect();
    eprintln!("self-alerts: {alerts:?}");
    assert!(
        alerts.iter().any(|a| a["event"] == "start") && alerts.iter().any(|a| a["event"] == "end"),
        "{}",
        run.alerts_log
    );
    for (_, log) in &run.processors {
        assert!(log.contains("declared dead"), "{log}");
    }
    // The processors kept the sessions open across the collector's restart: one record per flow.
    assert_eq!(
        run.conn_log.lines().count() as u64,
        FLOWS as u64,
        "{}",
        run.conn_log
    );
}
