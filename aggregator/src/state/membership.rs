//! Membership decisions applied to the machine: a change decided now ([`Aggregator::on_verdict`])
//! or one restored from the write-ahead log at a restart ([`Aggregator::restore_membership`]),
//! applied the same way: a new epoch of the set in use, the processor removed no longer
//! waited for, one added back waited for again.

use std::time::Instant;

use tapflow_proto::procset::Change;
use tracing::{error, info, warn};

use super::Aggregator;
use crate::control::{Decision, Event, Verdict};

impl Aggregator {
    /// The membership events since the last call: the edge makes them durable before it
    /// announces the history they change.
    pub fn take_membership_log(&mut self) -> Vec<Event> {
        self.membership.take_log()
    }

    /// A membership event from the write-ahead log, at a restart at `now`: applied as when it
    /// was decided, in its place among the messages (or before a checkpoint's snapshot is
    /// restored, which then sets the records' order state it holds).
    pub fn restore_membership(&mut self, e: &Event, now: Instant) {
        self.membership.restore(e, now);
        match e {
            Event::Heard { id, processor } => self.members.heartbeat(processor, Some(*id), now),
            Event::Change(d) => self.apply_change(d, true),
            Event::GivenUp { id, processor } => {
                info!(%processor, id, "restored from the write-ahead log: processor given up (it left the set and went silent before the restart)");
                if self.members.give_up(processor) {
                    self.end_processor(processor);
                }
            }
            Event::Suppressed { .. } => {}
        }
    }

    /// What membership decided now. Each is logged.
    pub(super) fn on_verdict(&mut self, v: Verdict) {
        match v {
            Verdict::Change(d) => self.apply_change(&d, false),
            Verdict::Pinned(d) => {
                warn!(processor = %d.processor, change = ?d.change, for_ms = d.for_ms, "processor set pinned (--processor-set-pinned): this change is not made; an operator decides");
            }
            Verdict::LastMember { id, processor } => {
                error!(%processor, id, "the last processor of the set is silent: it stays in the set (there is no other to take its flows)");
            }
        }
    }

    /// A change becomes a new epoch of the set in use (as if appended to its file).
    /// `restored`: decided before a restart, taken back from the write-ahead log.
    fn apply_change(&mut self, d: &Decision, restored: bool) {
        let Some((path, set)) = self.processor_set.as_ref() else {
            return;
        };
        let (initial, mut changes) = set.history();
        changes.push((d.change, d.switch_at_ns));
        let new = match set.with_history(&initial, &changes, false) {
            Ok(new) => new,
            Err(e) => {
                error!(processor = %d.processor, change = ?d.change, restored, "processor set: the decided change cannot apply: {e}");
                return;
            }
        };
        let epoch = new.latest().table.epoch();
        let members = new.latest().table.members().to_vec();
        self.processor_set = Some((path.clone(), new));
        if restored {
            info!(processor = %d.processor, change = ?d.change, epoch, switch_at_ns = d.switch_at_ns, ?members, "membership decision restored from the write-ahead log");
        }
        match d.change {
            Change::Remove(id) => {
                if !restored {
                    warn!(processor = %d.processor, id, epoch, switch_at_ns = d.switch_at_ns, silent_ms = d.for_ms, ?members, "processor declared dead: removed from the processor set; collectors switch at the announced instant; what it held is lost (see dead_processors in the report)");
                }
                if self.members.give_up(&d.processor) {
                    self.end_processor(&d.processor);
                }
            }
            Change::Add(id) => {
                if !restored {
                    info!(processor = %d.processor, id, epoch, switch_at_ns = d.switch_at_ns, healthy_ms = d.for_ms, ?members, "processor back for its hold-down: added to the processor set again");
                }
                self.members.revive(&d.processor);
                self.sorter.revive(&d.processor, d.switch_at_ns);
            }
        }
    }
}
