//! Membership decisions and refusal counts in the write-ahead log.
//!
//! A decision ([`Event`]) is a `D` frame, appended and synced (a group commit of its own, the
//! messages waiting going with it) before the history it changes is announced: the edge asks
//! [`Durable::decisions_durable`] first. One that cannot be appended or synced (a full disk,
//! `--wal-max-bytes`) is tried again at every service, and its announcement waits: the
//! collectors keep the set they have (and count a late switch, as for a late SIGHUP), and no
//! decision is announced that a restart would forget.
//!
//! The refusal counts ([`Refusals`]) are an `F` frame, appended when they changed, with the
//! next group commit (or starting one when nothing waits): at most one per sync, none per
//! message. Each holds the run's totals, so the last one read at a restart is the count.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::error;

use super::{Durable, DECISION, FIGURES};
use crate::accounting::DurabilityReport;
use crate::control::Event;

/// The messages refused over the run (every incarnation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Refusals {
    duplicates: u64,
    out_of_order: u64,
    heartbeats_ahead: u64,
    refused: u64,
    given_up: u64,
}

impl Refusals {
    pub(super) fn of(r: &DurabilityReport) -> Refusals {
        Refusals {
            duplicates: r.duplicates,
            out_of_order: r.out_of_order,
            heartbeats_ahead: r.heartbeats_ahead,
            refused: r.refused,
            given_up: r.given_up,
        }
    }

    /// The counts restored into `r`.
    pub(super) fn put(self, r: &mut DurabilityReport) {
        r.duplicates = self.duplicates;
        r.out_of_order = self.out_of_order;
        r.heartbeats_ahead = self.heartbeats_ahead;
        r.refused = self.refused;
        r.given_up = self.given_up;
    }
}

impl Durable {
    /// Membership events the machine decided: appended and synced now.
    pub fn decided(&mut self, events: Vec<Event>) {
        if events.is_empty() && self.decisions_durable() {
            return;
        }
        self.unlogged.extend(events);
        self.log_decisions();
    }

    /// Every membership decision is durable: the history may be announced.
    pub fn decisions_durable(&self) -> bool {
        self.unlogged.is_empty() && !self.unsynced
    }

    /// Appends the decisions waiting, in order, then syncs.
    pub(super) fn log_decisions(&mut self) {
        while let Some(e) = self.unlogged.first() {
            let json = serde_json::to_vec(e).unwrap_or_default();
            if let Err(err) = self.wal.append(&[&[DECISION], &json]) {
                self.not_durable(&err.to_string());
                return;
            }
            let e = self.unlogged.remove(0);
            self.membership.push(e);
            self.unsynced = true;
        }
        if let Err(err) = self.sync() {
            self.not_durable(&err.to_string());
        }
    }

    fn not_durable(&mut self, err: &str) {
        if let Some(l) = self.log.hit("decision", Instant::now()) {
            error!(error = %err, suppressed = l.suppressed, waiting = self.unlogged.len(), "membership decision not yet durable in the write-ahead log: its announcement waits (tried again)");
        }
    }

    /// Appends the refusal counts if they changed and a group commit is due or none waits.
    pub(super) fn log_refusals(&mut self, now: Instant, force: bool) {
        let r = Refusals::of(&self.report);
        if r == self.refusals_logged
            || !(force || self.wal.due(now) || self.wal.due_in(now).is_none())
        {
            return;
        }
        let json = serde_json::to_vec(&r).unwrap_or_default();
        if self.wal.append(&[&[FIGURES], &json]).is_ok() {
            self.refusals_logged = r;
        }
    }

    /// The membership events a checkpoint holds (all of the run's that are in the log).
    pub(super) fn membership_events(&self) -> Vec<Event> {
        self.membership.clone()
    }
}
