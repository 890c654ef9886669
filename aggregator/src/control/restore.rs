//! Membership kept across a restart of the aggregator (issue 18): every decision, and what it
//! rests on, is an [`Event`] the edge makes durable in the write-ahead log (a `D` frame,
//! synced) before the history it changes is announced; a checkpoint carries them all. A
//! restarted aggregator restores them in order ([`Membership::restore`]) and so holds the
//! same set, epochs, removed and given-up processors and counts, and announces the same
//! history (the collectors, which apply only a history that differs, do nothing).
//!
//! The clocks are wall-clock durations of a process that is gone, so they start again at the
//! restart, on the safe side: a member (heard before) silent since the restart is removed
//! after `dead_after` counted from the restart, never sooner; a processor removed
//! automatically is added back only once heard healthy for the whole hold-down after the
//! restart (it is forgotten as heard until then); a processor the set no longer has is given
//! up after [`crate::members::SILENT_AFTER`] from the restart.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tapflow_proto::procset::Change;
use tapflow_proto::upstream::ProcessorHeartbeat;

use super::{Decision, Heard, Membership};

/// What membership keeps across a restart, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Member `id` heard for the first time, or under a new processor name.
    Heard { id: u16, processor: String },
    /// A change decided and applied (a new epoch).
    Change(Decision),
    /// A change not made, reported once: the set is pinned, or it is its last member.
    Suppressed {
        id: u16,
        removal: bool,
        last_member: bool,
    },
    /// A processor the set no longer has, silent: no longer waited for (`members`).
    GivenUp { id: u16, processor: String },
    /// The last heartbeat of a processor removed or given up: what its dead incarnation had
    /// received, which the report names (it will never send it again).
    LastHeard(Box<ProcessorHeartbeat>),
}

impl Membership {
    /// The events since the last call, for the edge to make durable.
    pub fn take_log(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.log)
    }

    /// An event to keep that another part decided (a processor given up).
    pub fn note(&mut self, e: Event) {
        self.log.push(e);
    }

    /// Decisions restored from the write-ahead log (made before the last restart).
    pub fn restored(&self) -> u64 {
        self.restored
    }

    /// An event from the write-ahead log, restored at a restart at `now` (not logged again).
    pub fn restore(&mut self, e: &Event, now: Instant) {
        match e {
            Event::Heard { id, processor } => {
                if !self.auto_removed.contains(id) {
                    self.heard.insert(*id, seeded(processor, now));
                }
            }
            Event::Change(d) => {
                self.restored += 1;
                self.decisions.push(d.clone());
                match d.change {
                    Change::Remove(id) => {
                        self.counts.removed += 1;
                        self.auto_removed.insert(id);
                        self.heard.remove(&id);
                    }
                    Change::Add(id) => {
                        self.counts.added += 1;
                        self.auto_removed.remove(&id);
                        self.heard.insert(id, seeded(&d.processor, now));
                    }
                }
            }
            Event::Suppressed {
                id,
                removal,
                last_member,
            } => {
                self.reported.insert((*id, *removal));
                if *last_member {
                    self.counts.last_member_kept += 1;
                } else {
                    self.counts.pinned_suppressed += 1;
                }
            }
            Event::GivenUp { .. } | Event::LastHeard(_) => {}
        }
    }
}

/// A member as heard at the restart: silent and healthy since then.
fn seeded(processor: &str, now: Instant) -> Heard {
    Heard {
        processor: processor.to_owned(),
        last: now,
        healthy_since: now,
        ended: false,
    }
}
