//! Processor membership decided by the aggregator (issue 18), sans-IO: it hears every
//! processor's heartbeats, so it is the one component that decides when one is dead.
//!
//! - A member of the latest epoch silent for `dead_after` (wall clock, from its last heartbeat)
//!   is removed: the new history is the set's with `remove = N` appended, switching at a
//!   packet-time instant `margin` past the newest watermark any processor reported (the
//!   collectors are ahead of the processors' watermarks by their batching and heartbeat lag;
//!   one already past it switches at once and counts it, as for a late SIGHUP reload).
//! - A processor this component removed that is heard again without a gap of `dead_after` for
//!   `hold_down` is added back (a new epoch): no flapping, and only what was removed
//!   automatically comes back (an operator's `remove = N` stays).
//! - `pinned`: nothing changes; what would have been decided is logged and counted once.
//! - The last member is never removed (there would be nowhere to send flows): counted once.
//! - Nothing is decided before any processor reported a watermark (no packet time to
//!   announce an instant in), nor for a member never heard (it may still be starting).
//!
//! The edge ([`publish`]) sends the history to every collector over the control channel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tapflow_proto::procset::{Change, ProcessorSet};

pub mod publish;
pub mod restore;

pub use restore::Event;

pub const DEFAULT_DEAD_AFTER_MS: u64 = 10_000;
pub const DEFAULT_HOLD_DOWN_MS: u64 = 30_000;
pub const DEFAULT_SWITCH_MARGIN_MS: u64 = 2_000;
/// Packet times at or past this (the year 2540) are not taken as event time, as set files
/// refuse them.
const MAX_PACKET_TIME_NS: u64 = 18_000_000_000 * 1_000_000_000;

/// How membership is decided (`--processor-dead-after`, `--processor-hold-down`,
/// `--processor-switch-margin-ms`, `--processor-set-pinned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub dead_after: Duration,
    pub hold_down: Duration,
    /// Packet time between the newest watermark heard and the announced switch.
    pub margin_ns: u64,
    pub pinned: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            dead_after: Duration::from_millis(DEFAULT_DEAD_AFTER_MS),
            hold_down: Duration::from_millis(DEFAULT_HOLD_DOWN_MS),
            margin_ns: DEFAULT_SWITCH_MARGIN_MS * 1_000_000,
            pinned: false,
        }
    }
}

/// One decision: the change, its switch instant, the processor it is about, and how long it
/// had been silent (a removal) or healthy (an addition) when decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub change: Change,
    pub switch_at_ns: u64,
    pub processor: String,
    pub for_ms: u64,
}

/// What [`Membership::decide`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it: a new epoch.
    Change(Decision),
    /// The set is pinned: this would have been decided (reported once).
    Pinned(Decision),
    /// The last member is silent: it stays (reported once).
    LastMember { id: u16, processor: String },
}

/// Decisions counted, for the accounting report and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MembershipCounts {
    pub removed: u64,
    pub added: u64,
    pub pinned_suppressed: u64,
    pub last_member_kept: u64,
}

/// The accounting report's `membership` section (with a processor set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MembershipReport {
    pub pinned: bool,
    pub dead_after_ms: u64,
    pub hold_down_ms: u64,
    #[serde(flatten)]
    pub counts: MembershipCounts,
    /// Every change decided, in order: the first `restored` of them before the last restart
    /// (restored from the write-ahead log), the others since.
    pub decisions: Vec<Decision>,
    pub restored: u64,
}

/// What one member id was last heard as.
struct Heard {
    processor: String,
    last: Instant,
    /// Since when heard without a gap of `dead_after`.
    healthy_since: Instant,
    ended: bool,
}

pub struct Membership {
    policy: Policy,
    heard: BTreeMap<u16, Heard>,
    /// The newest watermark any processor reported (packet time, ns).
    watermark_ns: u64,
    /// Members this component removed and has not added back.
    auto_removed: BTreeSet<u16>,
    /// (id, removal?) already reported as pinned or last member, until heard again.
    reported: BTreeSet<(u16, bool)>,
    pub counts: MembershipCounts,
    /// Every change decided, in order.
    pub decisions: Vec<Decision>,
    /// Events not yet handed to the edge ([`Membership::take_log`]).
    log: Vec<Event>,
    /// Decisions restored at restarts.
    restored: u64,
}

impl Membership {
    pub fn new(policy: Policy) -> Membership {
        Membership {
            policy,
            heard: BTreeMap::new(),
            watermark_ns: 0,
            auto_removed: BTreeSet::new(),
            reported: BTreeSet::new(),
            counts: MembershipCounts::default(),
            decisions: Vec::new(),
            log: Vec::new(),
            restored: 0,
        }
    }

    pub fn report(&self) -> MembershipReport {
        MembershipReport {
            pinned: self.policy.pinned,
            dead_after_ms: u64::try_from(self.policy.dead_after.as_millis()).unwrap_or(u64::MAX),
            hold_down_ms: u64::try_from(self.policy.hold_down.as_millis()).unwrap_or(u64::MAX),
            counts: self.counts,
            decisions: self.decisions.clone(),
            restored: self.restored,
        }
    }

    /// A heartbeat of `processor` (member `member`) with its watermark, at `now`.
    pub fn heartbeat(
        &mut self,
        processor: &str,
        member: Option<u16>,
        watermark_ns: u64,
        now: Instant,
    ) {
        let Some(id) = member else {
            return;
        };
        // A processor with no live input reports u64::MAX: not a packet time.
        if watermark_ns < MAX_PACKET_TIME_NS {
            self.watermark_ns = self.watermark_ns.max(watermark_ns);
        }
        self.reported.remove(&(id, true));
        let dead_after = self.policy.dead_after;
        let mut new = false;
        let h = self.heard.entry(id).or_insert_with(|| {
            new = true;
            Heard {
                processor: processor.to_owned(),
                last: now,
                healthy_since: now,
                ended: false,
            }
        });
        if now.saturating_duration_since(h.last) >= dead_after || h.processor != processor {
            h.healthy_since = now;
        }
        if new || h.processor != processor {
            self.log.push(Event::Heard {
                id,
                processor: processor.to_owned(),
            });
        }
        h.processor = processor.to_owned();
        h.last = now;
    }

    /// `processor` sent end-of-stream: it ended by itself, nothing is decided about it.
    pub fn ended(&mut self, processor: &str) {
        for h in self.heard.values_mut().filter(|h| h.processor == processor) {
            h.ended = true;
        }
    }

    /// The next change for `set` at `now`, if any (one at a time: removals first, lowest id).
    pub fn decide(&mut self, set: &ProcessorSet, now: Instant) -> Option<Verdict> {
        if self.watermark_ns == 0 {
            return None;
        }
        let latest = set.latest();
        let switch_at_ns = (self.watermark_ns.max(latest.starts_ns))
            .saturating_add(self.policy.margin_ns.max(1))
            .min(MAX_PACKET_TIME_NS);
        if switch_at_ns <= latest.starts_ns {
            return None;
        }
        let members = latest.table.members();
        let mut candidates: Vec<Decision> = self
            .heard
            .iter()
            .filter_map(|(&id, h)| self.candidate(set, id, h, now, switch_at_ns))
            .collect();
        // Removals first (a stable sort keeps ids ascending).
        candidates.sort_by_key(|d| matches!(d.change, Change::Add(_)));
        for d in candidates {
            let (id, removal) = match d.change {
                Change::Remove(id) => (id, true),
                Change::Add(id) => (id, false),
            };
            let last = removal && members.len() == 1;
            if (last || self.policy.pinned) && !self.reported.insert((id, removal)) {
                continue;
            }
            if last || self.policy.pinned {
                self.log.push(Event::Suppressed {
                    id,
                    removal,
                    last_member: last,
                });
            }
            if last {
                self.counts.last_member_kept += 1;
                return Some(Verdict::LastMember {
                    id,
                    processor: d.processor,
                });
            }
            if self.policy.pinned {
                self.counts.pinned_suppressed += 1;
                return Some(Verdict::Pinned(d));
            }
            if removal {
                self.auto_removed.insert(id);
                self.counts.removed += 1;
            } else {
                self.auto_removed.remove(&id);
                self.counts.added += 1;
            }
            self.decisions.push(d.clone());
            self.log.push(Event::Change(d.clone()));
            return Some(Verdict::Change(d));
        }
        None
    }

    /// The change member `id` (heard as `h`) calls for at `now`, if any.
    fn candidate(
        &self,
        set: &ProcessorSet,
        id: u16,
        h: &Heard,
        now: Instant,
        switch_at_ns: u64,
    ) -> Option<Decision> {
        if h.ended {
            return None;
        }
        let silent = now.saturating_duration_since(h.last);
        let healthy = now.saturating_duration_since(h.healthy_since);
        let member = set.latest().table.contains(id);
        let (change, for_d) = if member && silent >= self.policy.dead_after {
            (Change::Remove(id), silent)
        } else if !member
            && self.auto_removed.contains(&id)
            && silent < self.policy.dead_after
            && healthy >= self.policy.hold_down
        {
            (Change::Add(id), healthy)
        } else {
            return None;
        };
        Some(Decision {
            change,
            switch_at_ns,
            processor: h.processor.clone(),
            for_ms: u64::try_from(for_d.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

#[cfg(test)]
mod tests;
