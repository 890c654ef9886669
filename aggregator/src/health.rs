//! Pipeline self-alerts (sans-IO): a collector gone silent, a drop rate climbing.
//!
//! Processors report in their heartbeats which collectors they declared dead and each
//! collector's cumulative read and drop counts. A collector any processor calls silent raises a
//! `collector_silent` episode until it is heard again; a collector whose drops over the last
//! heartbeat interval exceed `drop_rate` of what it read raises `drop_rate` until the rate falls
//! back. These follow the wall clock (the time heartbeats arrive), not packet time: they are
//! about the pipeline, not the traffic.
//!
//! It also keeps what each processor incarnation last said it holds unacknowledged (with
//! acknowledged delivery), for the report's durability section ([`HealthWatch::unacked`]).

use std::collections::{BTreeMap, BTreeSet};

use tapflow_proto::upstream::{CollectorHealth, ProcessorHeartbeat, Unacked};

use crate::accounting::UnackedHeard;
use crate::detect::{AlertEvent, AlertKey, AlertKind, EventKind};

/// Processor incarnations whose last unacknowledged counts are kept; past it the one heard
/// longest ago is forgotten.
const MAX_INCARNATIONS: usize = 256;

pub struct HealthWatch {
    drop_rate: f64,
    silent: BTreeMap<String, BTreeSet<String>>,
    silent_since: BTreeMap<String, u64>,
    last: BTreeMap<String, (u64, u64)>,
    dropping: BTreeMap<String, (u64, u64)>,
    unacked: BTreeMap<(String, u64), UnackedHeard>,
}

impl HealthWatch {
    pub fn new(drop_rate: f64) -> HealthWatch {
        HealthWatch {
            drop_rate,
            silent: BTreeMap::new(),
            silent_since: BTreeMap::new(),
            last: BTreeMap::new(),
            dropping: BTreeMap::new(),
            unacked: BTreeMap::new(),
        }
    }

    /// What each processor incarnation last said it held unacknowledged, by name and
    /// incarnation.
    pub fn unacked(&self) -> Vec<UnackedHeard> {
        self.unacked.values().cloned().collect()
    }

    /// One processor heartbeat, received at `now_ns` (wall clock).
    pub fn heartbeat(&mut self, hb: &ProcessorHeartbeat, now_ns: u64, out: &mut Vec<AlertEvent>) {
        self.silent_collectors(hb, now_ns, out);
        // Drop rates over the last interval.
        for c in &hb.collectors {
            self.drop_rate(c, now_ns, out);
        }
        if let Some(u) = hb.unacked.as_deref() {
            self.note_unacked(hb, *u, now_ns);
        }
    }

    /// `processor`'s `incarnation` sent end-of-stream, taken in order: everything it held
    /// reached this aggregator, so it is kept as holding nothing (what it gave up stays; one
    /// not heard before is kept with `at_ns` 0).
    pub fn ended(&mut self, processor: &str, incarnation: u64) {
        let key = (processor.to_owned(), incarnation);
        if !self.unacked.contains_key(&key) {
            self.make_room();
        }
        let h = self.unacked.entry(key).or_insert_with(|| UnackedHeard {
            processor: processor.to_owned(),
            incarnation,
            ..UnackedHeard::default()
        });
        h.ended = true;
        h.unacked = Unacked {
            given_up_messages: h.unacked.given_up_messages,
            given_up_bytes: h.unacked.given_up_bytes,
            ..Unacked::default()
        };
    }

    /// Forgets the incarnation heard longest ago when the map is full.
    fn make_room(&mut self) {
        if self.unacked.len() < MAX_INCARNATIONS {
            return;
        }
        let oldest = self
            .unacked
            .iter()
            .min_by_key(|(_, h)| h.at_ns)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.unacked.remove(&k);
        }
    }

    fn note_unacked(&mut self, hb: &ProcessorHeartbeat, unacked: Unacked, now_ns: u64) {
        let key = (hb.processor.clone(), hb.incarnation);
        if !self.unacked.contains_key(&key) {
            self.make_room();
        }
        // A heartbeat after end-of-stream (sent while its processor waits for the
        // acknowledgement) does not undo what the end-of-stream settled.
        if self.unacked.get(&key).is_some_and(|h| h.ended) {
            return;
        }
        let heard = UnackedHeard {
            processor: hb.processor.clone(),
            incarnation: hb.incarnation,
            at_ns: now_ns,
            unacked,
            ended: false,
        };
        self.unacked.insert(key, heard);
    }

    /// Silent collectors: each processor's view, merged; an episode per collector any
    /// processor calls silent.
    fn silent_collectors(
        &mut self,
        hb: &ProcessorHeartbeat,
        now_ns: u64,
        out: &mut Vec<AlertEvent>,
    ) {
        for by in self.silent.values_mut() {
            by.remove(&hb.processor);
        }
        for c in &hb.silent_collectors {
            self.silent
                .entry(c.clone())
                .or_default()
                .insert(hb.processor.clone());
        }
        let now_silent: BTreeSet<String> = self
            .silent
            .iter()
            .filter(|(_, by)| !by.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        for c in &now_silent {
            if !self.silent_since.contains_key(c) {
                self.silent_since.insert(c.clone(), now_ns);
                let key = AlertKey::new(AlertKind::CollectorSilent, c, &hb.processor);
                out.push(event(EventKind::Start, key, (now_ns, now_ns), 1, 1));
            }
        }
        let back: Vec<String> = self
            .silent_since
            .keys()
            .filter(|c| !now_silent.contains(*c))
            .cloned()
            .collect();
        for c in back {
            if let Some(since) = self.silent_since.remove(&c) {
                let key = AlertKey::new(AlertKind::CollectorSilent, c, "*");
                out.push(event(EventKind::End, key, (since, now_ns), 1, 1));
            }
        }
    }

    /// One collector's drops over the last interval: an episode while they exceed the rate.
    fn drop_rate(&mut self, c: &CollectorHealth, now_ns: u64, out: &mut Vec<AlertEvent>) {
        let (read0, drops0) = self
            .last
            .insert(c.sender.clone(), (c.packets_read, c.drops))
            .unwrap_or((c.packets_read, c.drops));
        let (read, drops) = (
            c.packets_read.saturating_sub(read0),
            c.drops.saturating_sub(drops0),
        );
        if read + drops == 0 {
            return;
        }
        let permille = drops * 1000 / (read + drops);
        let climbing = drops as f64 > self.drop_rate * (read + drops) as f64;
        let key = || AlertKey::new(AlertKind::DropRate, &c.sender, "*");
        match (climbing, self.dropping.get_mut(&c.sender)) {
            (true, None) => {
                self.dropping.insert(c.sender.clone(), (now_ns, permille));
                out.push(event(
                    EventKind::Start,
                    key(),
                    (now_ns, now_ns),
                    permille,
                    permille,
                ));
            }
            (true, Some((_, peak))) => *peak = (*peak).max(permille),
            (false, Some(_)) => {
                if let Some((since, peak)) = self.dropping.remove(&c.sender) {
                    out.push(event(
                        EventKind::End,
                        key(),
                        (since, now_ns),
                        permille,
                        peak,
                    ));
                }
            }
            (false, None) => {}
        }
    }
}

/// A pipeline-health event over `(start, now)`.
fn event(
    event: EventKind,
    key: AlertKey,
    (start, now): (u64, u64),
    count: u64,
    peak: u64,
) -> AlertEvent {
    AlertEvent {
        ts_ns: now,
        event,
        kind: key.kind,
        src: key.src,
        dst: key.dst,
        window_start_ns: start,
        window_end_ns: now,
        count,
        peak,
        episode_start_ns: start,
        windows: 1,
        evidence: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::upstream::CollectorHealth;

    fn hb(silent: &[&str], read: u64, drops: u64) -> ProcessorHeartbeat {
        ProcessorHeartbeat {
            processor: "p0".into(),
            silent_collectors: silent.iter().map(|s| (*s).to_owned()).collect(),
            collectors: vec![CollectorHealth {
                sender: "tap-a".into(),
                packets_read: read,
                drops,
            }],
            ..Default::default()
        }
    }

    fn kinds(out: &[AlertEvent]) -> Vec<(&str, &str, &str)> {
        out.iter()
            .map(|e| (e.event.as_str(), e.kind.as_str(), e.src.as_str()))
            .collect()
    }

    #[test]
    fn the_last_unacknowledged_counts_are_kept_per_incarnation() {
        let mut w = HealthWatch::new(0.01);
        let mut out = Vec::new();
        let held = |incarnation, bytes| ProcessorHeartbeat {
            incarnation,
            unacked: Some(Box::new(Unacked {
                memory_messages: u64::from(bytes > 0),
                memory_bytes: bytes,
                ..Unacked::default()
            })),
            ..hb(&[], 0, 0)
        };
        w.heartbeat(&held(1, 500), 1, &mut out);
        w.heartbeat(&held(1, 0), 2, &mut out);
        w.heartbeat(&held(2, 700), 3, &mut out);
        w.heartbeat(&hb(&[], 0, 0), 4, &mut out); // a heartbeat without the field
        let got: Vec<(u64, u64, u64)> = w
            .unacked()
            .iter()
            .map(|h| (h.incarnation, h.at_ns, h.unacked.memory_bytes))
            .collect();
        assert_eq!(got, [(1, 2, 0), (2, 3, 700)]);
        // Incarnation 2's end-of-stream taken: it holds nothing; a later heartbeat is ignored.
        w.ended("p0", 2);
        w.heartbeat(&held(2, 300), 5, &mut out);
        let last = &w.unacked()[1];
        assert_eq!(
            (last.ended, last.at_ns, last.unacked.memory_bytes),
            (true, 3, 0)
        );
        // One whose end-of-stream came before any heartbeat: kept, ended, never heard.
        w.ended("p0", 4);
        w.heartbeat(&held(4, 300), 6, &mut out);
        let last = &w.unacked()[2];
        assert_eq!((last.ended, last.at_ns, last.incarnation), (true, 0, 4));
        w.unacked.retain(|(_, i), _| *i != 4);
        for i in 0..MAX_INCARNATIONS as u64 + 5 {
            w.heartbeat(&held(10 + i, 1), 10 + i, &mut out);
        }
        let kept = w.unacked();
        assert_eq!(kept.len(), MAX_INCARNATIONS);
        assert_eq!(
            kept[0].incarnation, 15,
            "the ones heard longest ago forgotten"
        );
    }

    #[test]
    fn silent_collector_starts_and_ends_an_episode() {
        let mut w = HealthWatch::new(0.01);
        let mut out = Vec::new();
        w.heartbeat(&hb(&[], 100, 0), 1, &mut out);
        w.heartbeat(&hb(&["tap-b"], 200, 0), 2, &mut out);
        w.heartbeat(&hb(&["tap-b"], 300, 0), 3, &mut out);
        w.heartbeat(&hb(&[], 400, 0), 4, &mut out);
        assert_eq!(
            kinds(&out),
            [
                ("start", "collector_silent", "tap-b"),
                ("end", "collector_silent", "tap-b")
            ]
        );
    }

    #[test]
    fn climbing_drop_rate_is_an_episode_a_steady_one_is_not() {
        let mut w = HealthWatch::new(0.01);
        let mut out = Vec::new();
        w.heartbeat(&hb(&[], 1000, 5), 1, &mut out);
        w.heartbeat(&hb(&[], 2000, 10), 2, &mut out); // 0.5%: fine
        assert!(out.is_empty());
        w.heartbeat(&hb(&[], 3000, 110), 3, &mut out); // 100 of 1100: climbing
        w.heartbeat(&hb(&[], 4000, 300), 4, &mut out); // still
        w.heartbeat(&hb(&[], 5000, 301), 5, &mut out); // back
        assert_eq!(
            kinds(&out),
            [
                ("start", "drop_rate", "tap-a"),
                ("end", "drop_rate", "tap-a")
            ]
        );
        assert_eq!(out[1].peak, 159);
    }
}
