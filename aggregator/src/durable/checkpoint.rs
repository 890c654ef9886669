//! Checkpoints of the write-ahead log: when one is due ([`Schedule`]), what its `C` frame
//! holds ([`Checkpoint`], MessagePack as on the wire), taking one ([`Durable::checkpoint`]) and reading one back at a
//! restart ([`read`]).
//!
//! Exactly sufficient: every `M` frame logged before the checkpoint has been taken by the
//! machine (the log is synced first, so every one is durable), and what it built is either
//! in the machine's snapshot or already in the logs, written and synced before their lengths
//! are noted. So the checkpoint replaces them all; the messages after it are appended after
//! it. A checkpoint is put off while a resumed log has not caught up (it still skips lines it
//! held before a restart, so its length is not where the machine stands), and when the
//! rewrite fails (the old log stays whole and in use).
//!
//! Nothing acknowledged is lost by a checkpoint: see [`crate::wal`] for the rename, the
//! previous generation and the fall-back on a damaged `C` frame.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::decisions::Refusals;
use super::{log_lengths, Durable, Key, CHECKPOINT};
use crate::accounting::DurabilityReport;
use crate::config::DurableConfig;
use crate::control::Event;
use crate::state::{Aggregator, Snapshot};

/// Each resumed log and its length.
type LogLengths = Vec<(PathBuf, u64)>;

/// A checkpoint put off is tried again this much later.
const RETRY: Duration = Duration::from_secs(1);

/// The `C` frame.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    /// Each resumed log and its length at the checkpoint.
    logs: LogLengths,
    /// Per processor incarnation, the highest sequence number taken (all durable).
    taken: Vec<(String, u64, u64)>,
    /// The report's figures that span the whole run.
    restarts: Vec<u64>,
    checkpoints: u64,
    trimmed_bytes: u64,
    checkpoints_postponed: u64,
    checkpoint_fell_back: u64,
    /// The messages refused over the run, and every membership decision, in order.
    #[serde(default)]
    refusals: Refusals,
    #[serde(default)]
    membership: Vec<Event>,
    machine: Snapshot,
}

/// When the next checkpoint is due: by bytes logged, or by age while messages come.
pub(super) struct Schedule {
    bytes: u64,
    age: Duration,
    /// The log's length after the last checkpoint (or the open), and when that was.
    base: u64,
    since: Instant,
    /// Put off until then.
    not_before: Option<Instant>,
}

impl Schedule {
    pub(super) fn new(config: &DurableConfig, base: u64) -> Schedule {
        Schedule {
            bytes: config.checkpoint_bytes,
            age: config.checkpoint_age,
            base,
            since: Instant::now(),
            not_before: None,
        }
    }
}

impl Durable {
    /// A checkpoint is due: `--wal-checkpoint-bytes` logged since the last and at least as
    /// much as that checkpoint took (so rewriting the state never costs more than what is
    /// logged: the log stays under twice the state plus the interval), or messages logged and
    /// the last `--wal-checkpoint-s` ago.
    pub fn checkpoint_due(&self, now: Instant) -> bool {
        let s = &self.checkpoints;
        let grown = self.wal.bytes().saturating_sub(s.base);
        s.not_before.is_none_or(|t| now >= t)
            && (grown >= s.bytes.max(s.base) || (grown > 0 && now.duration_since(s.since) >= s.age))
    }

    /// Takes a checkpoint of `machine` (between messages), or puts it off (counted).
    pub fn checkpoint(&mut self, machine: &mut Aggregator, now: Instant) {
        match machine.sync_outputs() {
            Ok(true) => {}
            Ok(false) => return self.put_off(now, "a resumed log has not caught up yet"),
            Err(e) => {
                error!(error = %e, "checkpoint: the logs cannot be synced");
                return self.put_off(now, "the logs cannot be synced");
            }
        }
        if let Err(e) = self.wal.sync() {
            error!(error = %e, "checkpoint: the write-ahead log cannot be synced");
            return self.put_off(now, "the write-ahead log cannot be synced");
        }
        self.durable = self.taken.clone();
        self.unsynced = false;
        let r = &self.report;
        let c = Checkpoint {
            logs: log_lengths(&self.logs),
            taken: self
                .taken
                .iter()
                .map(|((p, i), s)| (p.clone(), *i, *s))
                .collect(),
            restarts: r.restarts.clone(),
            checkpoints: r.checkpoints + 1,
            trimmed_bytes: r.trimmed_bytes + self.wal.bytes(),
            checkpoints_postponed: r.checkpoints_postponed,
            checkpoint_fell_back: r.checkpoint_fell_back,
            refusals: Refusals::of(r),
            membership: self.membership_events(),
            machine: machine.snapshot(),
        };
        let frame = match encode(c) {
            Ok(frame) => frame,
            Err(e) => {
                error!(error = %e, "checkpoint: cannot encode the state");
                return self.put_off(now, "the state cannot be encoded");
            }
        };
        match self.wal.rewrite(&[&frame]) {
            Ok(before) => {
                self.report.checkpoints += 1;
                self.report.trimmed_bytes += before;
                self.checkpoints.base = self.wal.bytes();
                self.checkpoints.since = now;
                self.checkpoints.not_before = None;
                self.last_publish = None;
                info!(
                    before,
                    after = self.wal.bytes(),
                    checkpoints = self.report.checkpoints,
                    "write-ahead log checkpoint"
                );
            }
            Err(e) => {
                error!(error = %e, "checkpoint failed; the log in use is whole and goes on growing");
                self.put_off(now, "the rewrite failed");
            }
        }
    }

    fn put_off(&mut self, now: Instant, why: &'static str) {
        self.report.checkpoints_postponed += 1;
        self.checkpoints.not_before = Some(now + RETRY);
        if let Some(l) = self.log.hit("checkpoint", now) {
            info!(why, suppressed = l.suppressed, "checkpoint put off");
        }
    }
}

/// The `C` frame: its tag, the length of the checkpoint (MessagePack with field names, 4
/// bytes little-endian), the checkpoint, then the records held for ordering (MessagePack as
/// the wire has them: compact).
fn encode(mut c: Checkpoint) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let records = c.machine.take_records();
    let head = rmp_serde::to_vec_named(&c)?;
    let mut frame = vec![CHECKPOINT];
    frame.extend_from_slice(&(head.len() as u32).to_le_bytes());
    frame.extend_from_slice(&head);
    rmp_serde::encode::write(&mut frame, &records)?;
    Ok(frame)
}

/// A checkpoint from its bytes (past the tag); `None` if they are not one.
fn decode(b: &[u8]) -> Option<Checkpoint> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let head = b.get(4..4 + len)?;
    let mut c: Checkpoint = rmp_serde::from_slice(head).ok()?;
    c.machine
        .put_records(rmp_serde::from_slice(&b[4 + len..]).ok()?);
    Some(c)
}

/// A log's first frame if it is a checkpoint: the logs' lengths, the machine's snapshot and
/// the membership decisions; the dedup positions go to `taken`, the run's figures to
/// `report`. `None`: not a checkpoint (or not one that can be read: the caller says so).
pub(super) fn read(
    first: &[u8],
    report: &mut DurabilityReport,
    taken: &mut BTreeMap<Key, u64>,
) -> Option<(LogLengths, Option<Snapshot>, Vec<Event>)> {
    let c = decode(first.strip_prefix(&[CHECKPOINT])?)?;
    taken.extend(c.taken.into_iter().map(|(p, i, s)| ((p, i), s)));
    report.restarts = c.restarts;
    report.checkpoints = c.checkpoints;
    report.trimmed_bytes = c.trimmed_bytes;
    report.checkpoints_postponed = c.checkpoints_postponed;
    report.checkpoint_fell_back += c.checkpoint_fell_back;
    c.refusals.put(report);
    Some((c.logs, Some(c.machine), c.membership))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Decision;
    use tapflow_proto::procset::Change;

    fn decided() -> Vec<Event> {
        vec![
            Event::Heard {
                id: 1,
                processor: "p1".into(),
            },
            Event::Change(Decision {
                change: Change::Remove(1),
                switch_at_ns: 7,
                processor: "p1".into(),
                for_ms: 2_000,
            }),
            Event::Suppressed {
                id: 0,
                removal: true,
                last_member: true,
            },
            Event::GivenUp {
                id: 3,
                processor: "p3".into(),
            },
        ]
    }

    fn check(bytes: &[u8], back: bool) {
        let mut report = DurabilityReport::default();
        let mut taken = BTreeMap::new();
        let r = read(bytes, &mut report, &mut taken);
        assert_eq!(r.is_some(), back, "{bytes:?}");
        if back {
            assert_eq!(taken.get(&("p0".to_string(), 7)), Some(&42));
            assert_eq!((report.restarts, report.checkpoints), (vec![5], 3));
            assert_eq!((report.duplicates, report.refused), (4, 2));
            let (logs, _, membership) = r.expect("read");
            assert_eq!(logs, vec![("conn".into(), 99)]);
            assert_eq!(membership, decided());
        }
    }

    #[test]
    fn a_checkpoint_reads_back_and_a_damaged_one_is_refused() {
        let c = Checkpoint {
            logs: vec![("conn".into(), 99)],
            taken: vec![("p0".into(), 7, 42)],
            restarts: vec![5],
            checkpoints: 3,
            refusals: Refusals::of(&DurabilityReport {
                duplicates: 4,
                refused: 2,
                ..DurabilityReport::default()
            }),
            membership: decided(),
            ..Checkpoint::default()
        };
        let frame = encode(c).expect("encode");
        check(&frame, true);
        // Not a checkpoint, cut short anywhere, a length past the end: refused, no panic.
        check(b"S{}", false);
        for cut in [1, 3, 5, frame.len() / 2, frame.len() - 1] {
            check(&frame[..cut], false);
        }
        let mut long = frame.clone();
        long[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&long, false);
    }
}
