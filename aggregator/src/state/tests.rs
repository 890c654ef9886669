use std::cell::RefCell;
use std::rc::Rc;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::procset::Change;
use tapflow_proto::upstream::{ConnBatch, ProcessorAccount, ProcessorHeartbeat};

use super::*;
use crate::detect::{AlertKind, DetectConfig, Detector, EventKind};
use crate::detect_thread::InlineDetection;
use crate::sink::Sink;
use crate::testutil::scan_and_sessions;

/// What a sink was handed, in order.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    /// A released record's uid and last packet time.
    Conn(String, u64),
    Released,
    /// An alert event's kind, event and time.
    Alert(AlertKind, EventKind, u64),
    Interim(String),
    LiveHealth(String),
    Flush,
    EndOfRecords,
    Finish,
    /// The report's released record count.
    Report(u64),
}

/// A sink that records what it is handed.
#[derive(Clone, Default)]
struct Capture(Rc<RefCell<Vec<Out>>>);

impl Capture {
    fn take(&self) -> Vec<Out> {
        std::mem::take(&mut self.0.borrow_mut())
    }

    fn push(&self, o: Out) {
        self.0.borrow_mut().push(o);
    }
}

impl Sink for Capture {
    fn on_conn(&mut self, r: &ConnRecord, _parents: &[String]) -> Result<(), SinkError> {
        self.push(Out::Conn(r.uid.to_string(), last(r)));
        Ok(())
    }

    fn on_released(&mut self) -> Result<(), SinkError> {
        self.push(Out::Released);
        Ok(())
    }

    fn on_alerts(&mut self, events: &[AlertEvent]) -> Result<(), SinkError> {
        for e in events {
            self.push(Out::Alert(e.kind, e.event, e.ts_ns));
        }
        Ok(())
    }

    fn on_interim(&mut self, r: &ConnRecord) -> Result<(), SinkError> {
        self.push(Out::Interim(r.uid.to_string()));
        Ok(())
    }

    fn on_live_health(&mut self, hb: &ProcessorHeartbeat, _now_ns: u64) {
        self.push(Out::LiveHealth(hb.processor.clone()));
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.push(Out::Flush);
        Ok(())
    }

    fn end_of_records(&mut self) -> Result<(), SinkError> {
        self.push(Out::EndOfRecords);
        Ok(())
    }

    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        self.push(Out::Finish);
        Ok(())
    }

    fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        let released = report.conns.as_ref().map_or(0, |c| c.released);
        self.push(Out::Report(released));
        Ok(())
    }
}

fn last(r: &ConnRecord) -> u64 {
    r.ts_ns + r.duration_ns.unwrap_or(0)
}

fn machine(processors: usize, exit_on_eos: bool) -> (Aggregator, Capture) {
    let capture = Capture::default();
    let mut sinks = Sinks::default();
    sinks.push(capture.clone());
    let settings = Settings {
        processors,
        processor_set: None,
        exit_on_eos,
        conn_cap: 1 << 20,
        membership: crate::control::Policy::default(),
    };
    let detection = Box::new(InlineDetection::new(DetectConfig::default()));
    (Aggregator::new(settings, detection, sinks), capture)
}

fn batch(processor: &str, watermark_ns: u64, records: Vec<ConnRecord>) -> ConnBatch {
    ConnBatch {
        processor: processor.into(),
        incarnation: 1,
        watermark_ns,
        records,
        ..ConnBatch::default()
    }
}

fn eos(processor: &str) -> ProcessorAccount {
    ProcessorAccount {
        processor: processor.into(),
        incarnation: 1,
        ..ProcessorAccount::default()
    }
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: 1_800_000_000_000_000_000,
    }
}

fn conns(out: &[Out]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Out::Conn(uid, _) => Some(uid.clone()),
            _ => None,
        })
        .collect()
}

/// The records' uids in release order: (last packet time, uid).
fn in_order(records: &[ConnRecord]) -> Vec<String> {
    let mut keyed: Vec<_> = records.iter().map(|r| (last(r), r.uid.clone())).collect();
    keyed.sort();
    keyed.into_iter().map(|(_, uid)| uid.to_string()).collect()
}

#[test]
fn records_wait_for_every_processor_and_come_out_in_order() {
    let records = scan_and_sessions(2_000);
    let (mut m, capture) = machine(2, false);
    // Each processor holds every other record, in reverse order.
    let mut p0: Vec<_> = records.iter().step_by(2).cloned().collect();
    let mut p1: Vec<_> = records.iter().skip(1).step_by(2).cloned().collect();
    p0.reverse();
    p1.reverse();
    let middle = last(&records[1_000]);
    m.on_conns(batch("p0", u64::MAX, p0)).expect("p0's batch");
    assert_eq!(conns(&capture.take()), Vec::<String>::new(), "p1 not heard");
    m.on_conns(batch("p1", middle, p1)).expect("p1's batch");
    let first = conns(&capture.take());
    let expected = in_order(&records);
    assert!(
        !first.is_empty() && first.len() < records.len(),
        "released up to p1's watermark: {}",
        first.len()
    );
    assert_eq!(first[..], expected[..first.len()]);
    m.on_eos(eos("p0"));
    m.on_eos(eos("p1"));
    let report = m.finish(0, 0).expect("finish");
    let out = capture.take();
    let rest = conns(&out);
    assert_eq!([first, rest].concat(), expected);
    assert_eq!(report.conns.map(|c| c.released), Some(2_000));
    assert_eq!(report.detection.map(|d| d.records), Some(2_000));
    assert_eq!(out.last(), Some(&Out::Report(2_000)));
}

#[test]
fn alerts_are_what_detection_decides_and_follow_the_records_behind_them() {
    let records = scan_and_sessions(30_000);
    let mut detector = Detector::new(DetectConfig::default());
    let mut expected = Vec::new();
    for r in &records {
        detector.on_record(r, &mut expected);
    }
    detector.finish(&mut expected);
    let expected: Vec<_> = expected.iter().map(|e| (e.kind, e.event)).collect();
    assert!(expected.contains(&(AlertKind::PortScan, EventKind::Start)));

    let (mut m, capture) = machine(1, false);
    for chunk in records.chunks(1_000) {
        let wm = chunk.iter().map(last).max().expect("a chunk has records");
        m.on_conns(batch("p0", wm + 1, chunk.to_vec()))
            .expect("a batch");
    }
    let during = capture.take();
    m.finish(0, 0).expect("finish");
    let at_end = capture.take();
    let alerts = |out: &[Out]| -> Vec<(AlertKind, EventKind)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Alert(k, e, _) => Some((*k, *e)),
                _ => None,
            })
            .collect()
    };
    assert!(!alerts(&during).is_empty(), "windows judged mid-stream");
    assert_eq!([alerts(&during), alerts(&at_end)].concat(), expected);
    // A window is judged once records well past its end were released: every alert comes
    // after such a record, and after the end of its release.
    let mut latest = 0;
    let mut released = true;
    for o in &during {
        match o {
            Out::Conn(_, t) => {
                latest = latest.max(*t);
                released = false;
            }
            Out::Released => released = true,
            Out::Alert(_, _, window_end) => {
                assert!(latest > *window_end && released, "{o:?} after {latest}");
            }
            _ => {}
        }
    }
    let end = at_end
        .iter()
        .position(|o| *o == Out::EndOfRecords)
        .expect("end of records");
    let first_alert = at_end
        .iter()
        .position(|o| matches!(o, Out::Alert(..)))
        .expect("episodes end at the end");
    assert!(end < first_alert, "{at_end:?}");
}

#[test]
fn interim_records_go_to_their_own_output() {
    let mut records = scan_and_sessions(10);
    records[3].interim = true;
    let interim = records[3].uid.to_string();
    let (mut m, capture) = machine(1, false);
    m.on_conns(batch("p0", u64::MAX, records)).expect("a batch");
    let out = capture.take();
    assert_eq!(conns(&out).len(), 9);
    assert!(!conns(&out).contains(&interim));
    assert_eq!(out.last(), Some(&Out::Interim(interim)));
}

#[test]
fn exit_on_eos_waits_for_every_processor() {
    let (mut m, _) = machine(2, true);
    assert!(!m.tick(Instant::now()));
    m.on_eos(eos("p0"));
    assert!(!m.tick(Instant::now()), "p1 has not ended");
    m.on_eos(eos("p1"));
    assert!(m.tick(Instant::now()));

    let (mut serving, _) = machine(1, false);
    serving.on_eos(eos("p0"));
    assert!(
        !serving.tick(Instant::now()),
        "without exit_on_eos it keeps serving"
    );
}

#[test]
fn pipeline_health_alerts_go_out_on_heartbeats() {
    let (mut m, capture) = machine(1, false);
    let hb = |silent: &[&str]| ProcessorHeartbeat {
        processor: "p0".into(),
        incarnation: 1,
        silent_collectors: silent.iter().map(|s| (*s).to_owned()).collect(),
        ..ProcessorHeartbeat::default()
    };
    m.on_heartbeat(&hb(&[]), now()).expect("heartbeat");
    m.on_heartbeat(&hb(&["tap-b"]), now()).expect("heartbeat");
    let t = now().unix_ns;
    assert_eq!(
        capture.take(),
        [
            Out::LiveHealth("p0".into()),
            Out::Flush,
            Out::LiveHealth("p0".into()),
            Out::Alert(AlertKind::CollectorSilent, EventKind::Start, t),
            Out::Flush,
        ]
    );
}

#[test]
fn malformed_messages_are_counted_in_the_metrics() {
    let (mut m, _) = machine(1, false);
    m.on_malformed("bad_magic", "not a tapflow frame", 3, Instant::now());
    m.on_malformed("bad_magic", "not a tapflow frame", 5, Instant::now());
    let text = m.metrics();
    assert!(
        text.contains("tapflow_aggregator_messages_malformed_total{reason=\"bad_magic\"} 2"),
        "{text}"
    );
}

#[test]
fn a_processor_declared_dead_is_not_waited_for_and_one_back_is_again() {
    let mut m = member_machine(&[0, 1]);
    let t0 = Instant::now();
    let at = |s: u64| Now {
        instant: t0 + std::time::Duration::from_secs(s),
        unix_ns: 0,
    };
    let hb = |p: &str, id: u16| ProcessorHeartbeat {
        processor: p.into(),
        incarnation: 1,
        watermark_ns: 5_000_000_000,
        member: Some(id),
        ..ProcessorHeartbeat::default()
    };
    for s in 0..=2 {
        m.on_heartbeat(&hb("p0", 0), at(s)).expect("heartbeat");
    }
    m.on_heartbeat(&hb("p1", 1), at(0)).expect("heartbeat");
    assert!(!m.tick(at(1).instant));
    assert_eq!(m.announced(), None, "nothing decided: nothing announced");
    // p1 silent for 2 s: removed, announced, and no longer waited for.
    assert!(!m.tick(at(2).instant));
    let h = m.announced().expect("a history to announce");
    assert_eq!(h.initial, [0, 1]);
    assert_eq!(h.changes, [(Change::Remove(1), 6_000_000_000)]);
    m.on_eos(eos("p0"));
    assert!(
        m.tick(at(2).instant),
        "p0 ended and p1 is dead: the run ends"
    );

    // Had p1 come back for the hold-down before that, the run waits for it again.
    let mut m = member_machine(&[0, 1]);
    m.on_heartbeat(&hb("p1", 1), at(0)).expect("heartbeat");
    for s in 0..=9 {
        m.on_heartbeat(&hb("p0", 0), at(s)).expect("heartbeat");
        if s >= 5 {
            m.on_heartbeat(&hb("p1", 1), at(s)).expect("heartbeat");
        }
        m.tick(at(s).instant);
    }
    let h = m.announced().expect("a history to announce");
    assert_eq!(
        h.changes.iter().map(|c| c.0).collect::<Vec<_>>(),
        [Change::Remove(1), Change::Add(1)]
    );
    m.on_eos(eos("p0"));
    assert!(!m.tick(at(9).instant), "p1 is a member again");
    m.on_eos(eos("p1"));
    assert!(m.tick(at(9).instant));
    let report = m.finish(0, 0).expect("the report");
    let membership = report.membership.expect("a membership section");
    assert_eq!((membership.counts.removed, membership.counts.added), (1, 1));
}

/// Members `members` by processor set, dead after 2 s, back after 3 s, exiting on
/// end-of-stream (also the membership module's tests' machine).
pub(super) fn member_machine(members: &[u16]) -> Aggregator {
    use std::time::Duration;
    let set = ProcessorSet::replay(members, &[], Default::default()).expect("a set");
    let settings = Settings {
        processors: members.len(),
        processor_set: Some((PathBuf::from("set.toml"), set)),
        exit_on_eos: true,
        conn_cap: 1 << 20,
        membership: crate::control::Policy {
            dead_after: Duration::from_secs(2),
            hold_down: Duration::from_secs(3),
            margin_ns: 1_000_000_000,
            pinned: false,
        },
    };
    let detection = Box::new(InlineDetection::new(DetectConfig::default()));
    Aggregator::new(settings, detection, Sinks::default())
}

#[test]
fn a_restored_snapshot_goes_on_as_the_machine_it_was_taken_from() {
    let records = scan_and_sessions(3_000);
    let mut batches = Vec::new();
    for (i, chunk) in records.chunks(200).enumerate() {
        let p = if i % 2 == 0 { "p0" } else { "p1" };
        let mut b = batch(p, last(&chunk[0]), chunk.to_vec());
        b.records_seq = (i / 2 * 200) as u64;
        batches.push(b);
    }
    let (mut a, a_out) = machine(2, false);
    let half = batches.len() / 2;
    for b in &batches[..half] {
        a.on_conns(b.clone()).expect("a batch");
    }
    let before = conns(&a_out.take());
    let held = 3_000 / 2 - before.len();
    assert!(before.len() > 100 && held > 100, "some released, some held");
    let mut snapshot = a.snapshot();
    let records_held = rmp_serde::to_vec(&snapshot.take_records()).expect("encode");
    let bytes = rmp_serde::to_vec_named(&snapshot).expect("encode");
    let mut snapshot: Snapshot = rmp_serde::from_slice(&bytes).expect("decode");
    snapshot.put_records(rmp_serde::from_slice(&records_held).expect("decode"));
    let (mut b, b_out) = machine(2, false);
    b.restore(snapshot);
    let mut reports = Vec::new();
    for m in [&mut a, &mut b] {
        for x in &batches[half..] {
            m.on_conns(x.clone()).expect("a batch");
        }
        m.on_eos(eos("p0"));
        m.on_eos(eos("p1"));
    }
    for m in [a, b] {
        let r = m.finish(0, 0).expect("finish");
        reports.push(serde_json::to_value(&r).expect("the report"));
    }
    let (after_a, after_b) = (conns(&a_out.take()), conns(&b_out.take()));
    assert_eq!(after_a, after_b);
    assert_eq!([before, after_a].concat(), in_order(&records));
    assert_eq!(reports[0]["conns"], reports[1]["conns"]);
    assert_eq!(reports[0]["processors"], reports[1]["processors"]);
    assert_eq!(reports[1]["conns"]["released"], 3_000);
}
