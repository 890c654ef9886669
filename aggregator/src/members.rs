//! Processor-set members as the aggregator hears them (sans-IO; `docs/scaling.md`).
//!
//! A processor removed by plan drains and sends end-of-stream. One removed because it crashed
//! never will, so once the set no longer has it and it has been silent for [`SILENT_AFTER`], the
//! aggregator stops waiting for it. From then on, records and traffic windows are released
//! behind the other processors' watermarks, and `--exit-on-eos` does not wait for it. What it
//! held is reported lost, as for any processor incarnation that dies (`dead_processors`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tapflow_proto::procset::ProcessorSet;

/// How long a processor the set no longer has may stay silent before it is given up: five
/// heartbeats at the processors' default period, or two at a slow one.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Members {
    /// Processor name -> its member id and when it was last heard (wall clock).
    heard: HashMap<String, (u16, Instant)>,
    ended: BTreeSet<String>,
    gone: BTreeSet<String>,
}

impl Members {
    pub fn heartbeat(&mut self, processor: &str, member: Option<u16>, now: Instant) {
        if let Some(id) = member {
            self.heard.insert(processor.to_owned(), (id, now));
        }
    }

    /// The processor sent end-of-stream.
    pub fn ended(&mut self, processor: &str) {
        self.ended.insert(processor.to_owned());
    }

    /// Processors the latest epoch of `set` leaves out, silent for [`SILENT_AFTER`] at `now`,
    /// and not ended: each is returned once, when it is given up.
    pub fn newly_gone(&mut self, set: &ProcessorSet, now: Instant) -> Vec<(String, u16)> {
        let latest = &set.latest().table;
        let mut out = Vec::new();
        for (name, &(id, at)) in &self.heard {
            if !latest.contains(id)
                && now.saturating_duration_since(at) >= SILENT_AFTER
                && !self.ended.contains(name)
                && !self.gone.contains(name)
            {
                out.push((name.clone(), id));
            }
        }
        out.sort();
        self.gone.extend(out.iter().map(|(n, _)| n.clone()));
        out
    }

    /// `processor` is given up now (declared dead: the aggregator removed it from the set).
    /// Returns false if it already was.
    pub fn give_up(&mut self, processor: &str) -> bool {
        self.gone.insert(processor.to_owned())
    }

    /// `processor` is a member again (added back after its hold-down): waited for again.
    pub fn revive(&mut self, processor: &str) {
        self.gone.remove(processor);
        self.ended.remove(processor);
    }

    /// Processors given up so far.
    pub fn gone(&self) -> &BTreeSet<String> {
        &self.gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_removed_and_silent_processor_is_given_up_once() {
        let kept = ProcessorSet::parse("initial = [0, 1]\n", false).expect("set");
        let removed = ProcessorSet::parse(
            "initial = [0, 1]\n[[change]]\nremove = 1\nswitch_at = 100\n",
            false,
        )
        .expect("set");
        let t0 = Instant::now();
        let mut m = Members::default();
        m.heartbeat("p0", Some(0), t0);
        m.heartbeat("p1", Some(1), t0);
        m.heartbeat("fixed", None, t0);
        let later = t0 + SILENT_AFTER;
        // Still a member: never given up, however silent.
        assert!(m.newly_gone(&kept, later).is_empty());
        // Removed but heard recently: not yet.
        assert!(m.newly_gone(&removed, t0 + SILENT_AFTER / 2).is_empty());
        assert_eq!(m.newly_gone(&removed, later), vec![("p1".to_owned(), 1)]);
        assert!(m.newly_gone(&removed, later + SILENT_AFTER).is_empty());
        assert!(m.gone().contains("p1") && !m.gone().contains("p0"));
        // A processor that ended by itself is not "given up".
        let mut m = Members::default();
        m.heartbeat("p1", Some(1), t0);
        m.ended("p1");
        assert!(m.newly_gone(&removed, later).is_empty());
    }
}
