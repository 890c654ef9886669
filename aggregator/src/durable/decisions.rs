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
//!
//! Both are control frames: past `--wal-max-bytes` they go into the log's reserve
//! ([`crate::wal::RESERVE_BYTES`]), which data messages cannot use. While the log is past its
//! bound, messages refused change the counts at every service, so an `F` frame goes into the
//! reserve at most every [`FIGURES_IN_RESERVE_EVERY`] (and at the end): the reserve is kept
//! for decisions until a checkpoint trims the log.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::error;

use super::{Durable, DECISION, FIGURES};
use crate::accounting::DurabilityReport;
use crate::control::Event;

/// The least time between two `F` frames written into the log's reserve.
pub(super) const FIGURES_IN_RESERVE_EVERY: Duration = Duration::from_secs(10);

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
            if let Err(err) = self.wal.append_control(&[&[DECISION], &json]) {
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
        let recent = self
            .wal
            .reserve_last
            .is_some_and(|t| now.saturating_duration_since(t) < FIGURES_IN_RESERVE_EVERY);
        if self.wal.past_bound(1 + json.len()) && recent && !force {
            return;
        }
        if self.wal.append_control(&[&[FIGURES], &json]).is_ok() {
            self.refusals_logged = r;
        }
    }

    /// The membership events a checkpoint holds (all of the run's that are in the log).
    pub(super) fn membership_events(&self) -> Vec<Event> {
        self.membership.clone()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tapflow_proto::procset::Change;

    use super::*;
    use crate::config::{Args, Config, Options};
    use crate::control::Decision;

    fn config(dir: &std::path::Path) -> Config {
        config_args(dir, &[])
    }

    fn config_args(dir: &std::path::Path, more: &[&str]) -> Config {
        let state = dir.join("state").display().to_string();
        let mut args = vec![
            "a",
            "--listen",
            "tcp://127.0.0.1:5700",
            "--plain",
            "--processors",
            "2",
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(more);
        let args = Args::try_parse_from(args).expect("parse the arguments");
        Config::merge(args, Options::default()).expect("a config")
    }

    fn removal(id: u16) -> Event {
        Event::Change(Decision {
            change: Change::Remove(id),
            switch_at_ns: 9_000,
            processor: format!("p{id}"),
            for_ms: 2_000,
        })
    }

    fn open(c: &Config, at: u64) -> (Durable, super::super::Replay) {
        let dir = c.durable.state_dir.clone().expect("a state dir");
        Durable::open(c, &dir, at).expect("open the state directory")
    }

    fn decisions(r: &super::super::Replay) -> Vec<Event> {
        r.decisions()
    }

    #[test]
    fn decisions_and_refusal_counts_survive_restarts_and_a_checkpoint() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let c = config(tmp.path());
        let heard = Event::Heard {
            id: 1,
            processor: "p1".into(),
        };
        let (mut d, replay) = open(&c, 1);
        assert!(decisions(&replay).is_empty());
        d.decided(vec![heard.clone(), removal(1)]);
        assert!(d.decisions_durable(), "appended and synced at once");
        d.report.duplicates += 3;
        d.report.refused += 2;
        d.service(Instant::now(), true);
        drop(d);

        // A restart (as after SIGKILL: nothing more was written): both decisions, the counts.
        let (mut d, replay) = open(&c, 2);
        assert_eq!(decisions(&replay), [heard.clone(), removal(1)]);
        assert_eq!((d.report.duplicates, d.report.refused), (3, 2));
        assert_eq!(d.report.restarts, [2]);
        // Counted on from there: the second incarnation's duplicates add to the first's.
        d.report.duplicates += 1;
        d.decided(vec![removal(2)]);
        d.service(Instant::now(), true);
        drop(d);
        let (mut d, replay) = open(&c, 3);
        assert_eq!(decisions(&replay), [heard.clone(), removal(1), removal(2)]);
        assert_eq!((d.report.duplicates, d.report.refused), (4, 2));

        // A checkpoint replaces the log: the decisions and counts are in its `C` frame.
        let settings = crate::state::Settings::of(&c);
        let detection = crate::detect_thread::InlineDetection::new(Default::default());
        let mut machine =
            crate::state::Aggregator::new(settings, Box::new(detection), Default::default());
        d.checkpoint(&mut machine, Instant::now());
        assert_eq!(d.report.checkpoints, 1, "the checkpoint was taken");
        drop(d);
        let (d, replay) = open(&c, 4);
        assert!(replay.snapshot.is_some());
        assert_eq!(decisions(&replay), [heard, removal(1), removal(2)]);
        assert_eq!((d.report.duplicates, d.report.refused), (4, 2));
        assert_eq!(d.report.restarts, [2, 3, 4]);
    }

    #[test]
    fn a_full_log_still_takes_decisions_counts_and_restarts_in_its_reserve() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let c = config_args(tmp.path(), &["--wal-max-bytes", "4096"]);
        let (mut d, _) = open(&c, 1);
        let data = [b'M'; 1];
        let mut taken = 0;
        while d.wal.append(&[&data]).is_ok() {
            taken += 1;
        }
        assert!(
            taken > 0 && d.wal.past_bound(data.len()),
            "data fills the log"
        );
        d.decided(vec![removal(1)]);
        assert!(d.decisions_durable(), "the decision went into the reserve");
        d.report.refused += 1;
        d.service(Instant::now(), false);
        assert_eq!(
            d.report().reserve_frames,
            1,
            "counts not written so soon after"
        );
        d.service(Instant::now() + FIGURES_IN_RESERVE_EVERY, false);
        assert_eq!(d.report().reserve_frames, 2, "then written");
        d.report.refused += 1;
        d.service(Instant::now(), true);
        assert_eq!(
            d.report().reserve_frames,
            3,
            "and at the end whatever the time"
        );
        drop(d);

        // The restart's `R` frame too: the log past its bound does not stop a restart.
        let (d, replay) = open(&c, 2);
        assert_eq!(decisions(&replay), [removal(1)]);
        assert_eq!((d.report.refused, d.report().reserve_frames), (2, 1));
        assert_eq!(d.report.restarts, [2]);
    }
}
