//! The health log: the accounting report as one JSON line (`"kind":"accounting"`) at the end
//! of the run. If the line cannot be written, the report goes to the process log (stderr)
//! instead, whole.
//!
//! Before it, with acknowledged delivery, a `"kind":"unacked"` line per processor when what it
//! holds unacknowledged changes (from its heartbeats, wall-clock `ts_ns`): when it starts or
//! stops holding anything, when it gives up more, when a new incarnation is heard, and
//! otherwise at most every [`UNACKED_EVERY_NS`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use tapflow_proto::upstream::{ProcessorHeartbeat, Unacked};
use tracing::error;

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::logfile::LogFile;

/// The most often a processor's `unacked` line is written while only its amounts change.
pub const UNACKED_EVERY_NS: u64 = 10_000_000_000;
/// Processors whose last line is remembered; past it the map starts over (a line more).
const MAX_PROCESSORS: usize = 4096;

pub struct HealthLog {
    log: LogFile,
    /// Per processor: the incarnation, counts and wall clock of its last `unacked` line.
    unacked: BTreeMap<String, (u64, Unacked, u64)>,
}

impl HealthLog {
    pub fn create(path: &Path) -> Result<HealthLog, SinkError> {
        Ok(HealthLog {
            log: LogFile::create(Some(path))?,
            unacked: BTreeMap::new(),
        })
    }
}

/// One `unacked` line.
#[derive(Serialize)]
struct UnackedLine<'a> {
    kind: &'static str,
    ts_ns: u64,
    processor: &'a str,
    incarnation: u64,
    #[serde(flatten)]
    unacked: Unacked,
}

/// Whether `now` (heard at `now_ns`) is worth a line after `last`.
fn worth_a_line(
    last: Option<&(u64, Unacked, u64)>,
    incarnation: u64,
    now: &Unacked,
    now_ns: u64,
) -> bool {
    let Some((inc, before, at)) = last else {
        return true;
    };
    *inc != incarnation
        || before.is_empty() != now.is_empty()
        || before.given_up_messages != now.given_up_messages
        || (before != now && now_ns.saturating_sub(*at) >= UNACKED_EVERY_NS)
}

impl Sink for HealthLog {
    fn on_live_health(&mut self, hb: &ProcessorHeartbeat, now_ns: u64) {
        let Some(&unacked) = hb.unacked.as_deref() else {
            return;
        };
        if !worth_a_line(
            self.unacked.get(&hb.processor),
            hb.incarnation,
            &unacked,
            now_ns,
        ) {
            return;
        }
        let line = UnackedLine {
            kind: "unacked",
            ts_ns: now_ns,
            processor: &hb.processor,
            incarnation: hb.incarnation,
            unacked,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        self.log.write(&mut text);
        self.log.flush();
        if self.unacked.len() >= MAX_PROCESSORS && !self.unacked.contains_key(&hb.processor) {
            self.unacked.clear();
        }
        self.unacked
            .insert(hb.processor.clone(), (hb.incarnation, unacked, now_ns));
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        self.log.reopen();
        Ok(())
    }

    fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        let mut line = format!("{json}\n");
        let before = self.log.unwritten();
        self.log.write(&mut line);
        self.log.flush();
        if self.log.unwritten() > before {
            error!(
                "the accounting report could not be written to {}; here it is: {json}",
                self.log.path()
            );
        }
        Ok(())
    }

    fn unwritten(&self, out: &mut BTreeMap<String, u64>) {
        super::count_unwritten(out, "health_log", self.log.unwritten());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(bytes: u64, given_up: u64) -> Unacked {
        Unacked {
            memory_messages: u64::from(bytes > 0),
            memory_bytes: bytes,
            given_up_messages: given_up,
            ..Unacked::default()
        }
    }

    fn check(dt_s: u64, incarnation: u64, now: Unacked, expected: bool) {
        let last = (1, held(500, 0), 100 * 1_000_000_000);
        let now_ns = last.2 + dt_s * 1_000_000_000;
        assert_eq!(
            worth_a_line(Some(&last), incarnation, &now, now_ns),
            expected,
            "{dt_s} s later, incarnation {incarnation}: {now:?}"
        );
    }

    #[test]
    fn a_line_when_holding_starts_or_stops_given_up_grows_or_a_while_passed() {
        assert!(worth_a_line(None, 1, &held(0, 0), 0));
        check(1, 1, held(500, 0), false);
        check(1, 1, held(600, 0), false);
        check(10, 1, held(600, 0), true);
        check(30, 1, held(500, 0), false);
        check(1, 1, held(0, 0), true);
        check(1, 1, held(500, 1), true);
        check(1, 2, held(500, 0), true);
    }

    #[test]
    fn the_lines_go_before_the_report() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("health.jsonl");
        let mut log = HealthLog::create(&path).expect("create");
        let hb = |bytes| ProcessorHeartbeat {
            processor: "p0".into(),
            incarnation: 3,
            unacked: Some(Box::new(held(bytes, 0))),
            ..ProcessorHeartbeat::default()
        };
        for (bytes, at) in [(900, 1), (800, 2), (0, 3)] {
            log.on_live_health(&hb(bytes), at);
        }
        log.on_live_health(&ProcessorHeartbeat::default(), 4);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        let got: Vec<(u64, u64)> = lines
            .iter()
            .map(|l| {
                (
                    l["ts_ns"].as_u64().unwrap_or(0),
                    l["memory_bytes"].as_u64().unwrap_or(9),
                )
            })
            .collect();
        assert_eq!(got, [(1, 900), (3, 0)]);
        assert!(lines
            .iter()
            .all(|l| l["kind"] == "unacked" && l["processor"] == "p0"));
    }
}
