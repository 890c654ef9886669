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
            Event::LastHeard(hb) => {
                self.upstream.on_heartbeat(hb);
            }
            Event::Suppressed { .. } => {}
        }
    }

    /// `processor` (member `id`) left the set and went silent: given up, kept with its last
    /// heartbeat.
    pub(super) fn note_given_up(&mut self, id: u16, processor: String) {
        self.note_last_heard(&processor);
        self.membership.note(Event::GivenUp { id, processor });
    }

    /// The last heartbeat of `processor`, kept: a restart names its dead incarnation with it.
    fn note_last_heard(&mut self, processor: &str) {
        if let Some(hb) = self.upstream.last_heartbeat(processor) {
            self.membership.note(Event::LastHeard(Box::new(hb.clone())));
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
                if !restored {
                    self.note_last_heard(&d.processor);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tapflow_proto::upstream::{ProcessorAccount, ProcessorHeartbeat};

    use super::*;
    use crate::state::Now;

    /// Members {0, 1, 2} by processor set, dead after 2 s, back after 3 s, exiting on
    /// end-of-stream.
    fn machine() -> Aggregator {
        crate::state::tests::member_machine(&[0, 1, 2])
    }

    fn hb(id: u16) -> ProcessorHeartbeat {
        ProcessorHeartbeat {
            processor: format!("p{id}"),
            incarnation: 1,
            watermark_ns: 5_000_000_000,
            member: Some(id),
            ..ProcessorHeartbeat::default()
        }
    }

    fn eos(id: u16) -> ProcessorAccount {
        ProcessorAccount {
            processor: format!("p{id}"),
            incarnation: 1,
            ..ProcessorAccount::default()
        }
    }

    /// Heartbeats of `ids` every 200 ms over `[from, to]` seconds past `t0`, ticking.
    fn run(m: &mut Aggregator, ids: &[u16], t0: Instant, from: u64, to: u64) -> Vec<Event> {
        let mut log = Vec::new();
        for tenth in from * 5..=to * 5 {
            let at = t0 + Duration::from_millis(tenth * 200);
            for &id in ids {
                let now = Now {
                    instant: at,
                    unix_ns: 0,
                };
                m.on_heartbeat(&hb(id), now).expect("heartbeat");
            }
            m.tick(at);
            log.extend(m.take_membership_log());
        }
        log
    }

    #[test]
    fn a_restarted_machine_holds_the_decisions_and_restarts_their_clocks() {
        let t0 = Instant::now();
        let mut a = machine();
        // p1 silent: removed at 2 s.
        let log = [
            run(&mut a, &[0, 1, 2], t0, 0, 0),
            run(&mut a, &[0, 2], t0, 1, 3),
        ]
        .concat();
        let heard: Vec<u16> = log
            .iter()
            .filter_map(|e| match e {
                Event::Heard { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(heard, [0, 1, 2], "each member logged once as heard");
        let changes: Vec<&Decision> = log
            .iter()
            .filter_map(|e| match e {
                Event::Change(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(changes.len(), 1, "{log:?}");
        assert_eq!(changes[0].change, Change::Remove(1));

        // The restart, 10 s later: the same history, p1 still removed, nothing to log again.
        let t1 = t0 + Duration::from_secs(10);
        let mut b = machine();
        for e in &log {
            b.restore_membership(e, t1);
        }
        assert_eq!(b.announced(), a.announced());
        assert!(b.take_membership_log().is_empty());
        let report = b.membership.report();
        assert_eq!((report.counts.removed, report.restored), (1, 1));
        // p0 and p2 end: the run ends without p1, whose removal is restored.
        b.on_eos(eos(0));
        b.on_eos(eos(2));
        assert!(b.tick(t1), "p1 is removed: not waited for");
        // Its last heartbeat was kept with the decision: the report names the dead incarnation.
        let report = b.finish(0, 0).expect("the report");
        let dead: Vec<&str> = report
            .dead_processors
            .iter()
            .map(|p| p.processor.as_str())
            .collect();
        assert_eq!(dead, ["p1"]);

        // p1 heard again right after the restart: not added back before a whole hold-down
        // counted from its first heartbeat after the restart; then added once.
        let mut c = machine();
        for e in &log {
            c.restore_membership(e, t1);
        }
        let early = run(&mut c, &[0, 1, 2], t1, 0, 2);
        assert!(
            !early.iter().any(|e| matches!(e, Event::Change(_))),
            "{early:?}"
        );
        let later = run(&mut c, &[0, 1, 2], t1, 3, 4);
        let added: Vec<&Event> = later
            .iter()
            .filter(|e| matches!(e, Event::Change(d) if d.change == Change::Add(1)))
            .collect();
        assert_eq!(added.len(), 1, "{later:?}");

        // A member heard before the restart and silent since is removed after dead-after
        // counted from the restart, not at once.
        let mut d = machine();
        for e in &log {
            d.restore_membership(e, t1);
        }
        let soon = run(&mut d, &[0], t1, 0, 1);
        assert!(
            !soon.iter().any(|e| matches!(e, Event::Change(_))),
            "{soon:?}"
        );
        let removed = run(&mut d, &[0], t1, 2, 3);
        assert!(
            removed
                .iter()
                .any(|e| matches!(e, Event::Change(d) if d.change == Change::Remove(2))),
            "{removed:?}"
        );
    }
}
