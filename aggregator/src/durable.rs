//! Nothing lost when the aggregator restarts (`--state-dir`): the write-ahead log of the
//! processors' data messages ([`crate::wal`]), the acknowledgements published on
//! `--ack-listen` once they are durable, duplicates and gaps refused by (processor
//! incarnation, sequence number), and the replay at a restart.
//!
//! The log's first frame (`S`) holds where the run began writing its conn and alerts logs;
//! each restart appends an `R` frame (its wall-clock start); every accepted data message is an
//! `M` frame, the bytes as received. A restart replays the `M` frames through the same state
//! machine in the order they came: the records are released in the same order (by last packet
//! time and uid, behind the processors' watermarks, whatever the arrival order), and the logs,
//! resumed ([`crate::logfile::resume`]), skip as many lines as they already hold. Messages the
//! processors sent that were not acknowledged come again and are taken in order; duplicates
//! are dropped. A run that ends with everything written empties the log.
//!
//! Checkpoints keep the log small during a run that never ends (a live tap;
//! [`checkpoint`]): every `--wal-checkpoint-bytes` logged, or `--wal-checkpoint-s` while
//! messages come, the log is replaced, atomically ([`Wal::rewrite`]), by one `C` frame
//! holding the state the `M` frames built — the machine's snapshot
//! ([`crate::state::Snapshot`]), the dedup positions, where each resumed log stands (its
//! length, once every line handed over is written and synced) — and the `M` frames that follow
//! are appended after it. A restart from a `C` frame restores the snapshot, resumes the logs
//! at the lengths it names and replays the `M` frames after it: the records are released in
//! the same order as from the whole log. No `M` frame is older than `--wal-checkpoint-s` plus
//! one checkpoint: that is the log's bound by age.
//!
//! A checkpoint changes nothing in a run without a fault. A restart from one rebuilds what a
//! restart from the whole log would: the conn log byte for byte, the alerts log's events (the
//! snapshot holds the detector's windows, open episodes, latency baselines and counters, taken
//! on its thread after every record released before the checkpoint, and the events they
//! decided are written before the logs' lengths are noted), announced FTP/IRC data
//! connections, and the report's record and detection counts. With InfluxDB, every point sent
//! before the checkpoint is written or in its spool, synced, and the sink's open windows and
//! used point times are in the snapshot, so the points rebuilt after a restart are the same
//! points at the same times and InfluxDB holds each once ([`crate::sink::Influx`]). So the log
//! is trimmed with InfluxDB too. Not restored: pipeline health (wall clock, from heartbeats,
//! which are not logged) starts again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tapflow_proto::delivery::{Ack, AckMessage, Delivered, Seq};
use tapflow_proto::upstream::UpMessage;
use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

use crate::accounting::DurabilityReport;
use crate::config::Config;
use crate::control::Event;
use crate::state::Snapshot;
use crate::wal::{Commit, Wal, WalError};

mod checkpoint;
/// Membership decisions (`D` frames, synced before they are announced, replayed in their place
/// among the messages) and the refusal counts (`F` frames, with a group commit): a checkpoint
/// holds both, so a restart's report has them over every incarnation.
mod decisions;

/// Frame tags.
const START: u8 = b'S';
const RESTART: u8 = b'R';
const MESSAGE: u8 = b'M';
const CHECKPOINT: u8 = b'C';
const DECISION: u8 = b'D';
const FIGURES: u8 = b'F';

/// How often acknowledgements are published when nothing new is durable (so a processor
/// learns of a restarted aggregator).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("write-ahead log {0}: its first frame is neither the run's start nor a checkpoint (not a tapflow write-ahead log?)")]
    NoStart(String),
    #[error("cannot {what} {endpoint}: {source}")]
    Socket {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
}

/// Where the interrupted run began writing its logs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Start {
    logs: Vec<(PathBuf, u64)>,
}

/// What to do with a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Take,
    Drop,
}

type Key = (String, u64);

/// What a restart rebuilds from: a checkpoint's membership decisions and snapshot of the
/// machine (restored first), then the messages and decisions logged after it, in order.
#[derive(Default)]
pub struct Replay {
    pub snapshot: Option<Snapshot>,
    pub membership: Vec<Event>,
    pub items: Vec<Replayed>,
}

/// One frame after the start or checkpoint, to replay.
pub enum Replayed {
    Message(Delivered),
    Membership(Event),
}

pub struct Durable {
    wal: Wal,
    /// The logs resumed at a restart (conn, alerts).
    logs: Vec<PathBuf>,
    checkpoints: checkpoint::Schedule,
    incarnation: u64,
    /// Per processor incarnation: the highest sequence number taken, and durable.
    taken: BTreeMap<Key, u64>,
    durable: BTreeMap<Key, u64>,
    acks: Option<Publisher>,
    last_publish: Option<Instant>,
    report: DurabilityReport,
    log: RateLimit<&'static str>,
    /// Every membership event of the run that is in the log (a checkpoint holds them all).
    membership: Vec<Event>,
    /// Membership events not yet appended; appended ones not yet synced.
    unlogged: Vec<Event>,
    unsynced: bool,
    /// The refusal counts last appended (an `F` frame).
    refusals_logged: decisions::Refusals,
}

/// The PUB socket acknowledgements go out on, in a context of its own (its own ZAP handler).
struct Publisher {
    socket: zmq::Socket,
    _auth: Option<tapflow_runtime::curve::Authenticator>,
    _ctx: zmq::Context,
    buf: Vec<u8>,
}

impl Durable {
    /// Opens the state directory of `config`: a fresh run records where its logs begin; a
    /// restart resumes them and returns the messages to replay.
    pub fn open(
        config: &Config,
        dir: &Path,
        now_unix_ns: u64,
    ) -> Result<(Durable, Replay), DurableError> {
        std::fs::create_dir_all(dir).map_err(|source| DurableError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let commit = Commit {
            frames: config.durable.commit_messages,
            age: config.durable.commit_age,
        };
        let path = crate::wal::path_in(dir);
        let (mut wal, recovered) = Wal::open(&path, config.durable.wal_max_bytes, commit)?;
        let mut report = DurabilityReport {
            damaged_bytes: recovered.damaged_bytes,
            checkpoint_fell_back: u64::from(recovered.fell_back),
            ..DurabilityReport::default()
        };
        if recovered.fell_back {
            error!(path = %path.display(), "write-ahead log: its checkpoint is damaged; restarting from the previous generation and the messages logged after the checkpoint");
        } else if recovered.damaged_bytes > 0 {
            error!(path = %path.display(), bytes = recovered.damaged_bytes, "write-ahead log: a torn or damaged tail was cut off (it was never acknowledged: the processors send it again)");
        }
        let mut taken = BTreeMap::new();
        let replay = match recovered.frames.split_first() {
            None => {
                begin(config, &mut wal)?;
                Replay::default()
            }
            Some((first, rest)) => {
                let start = Restart {
                    first,
                    rest,
                    now_unix_ns,
                    path: &path,
                };
                start.read(&mut wal, &mut report, &mut taken)?
            }
        };
        wal.sync()?;
        let acks = match &config.durable.ack_listen {
            Some(ep) => Some(Publisher::bind(config, ep)?),
            None => None,
        };
        let durable = Durable {
            membership: replay.decisions(),
            unlogged: Vec::new(),
            unsynced: false,
            refusals_logged: decisions::Refusals::of(&report),
            checkpoints: checkpoint::Schedule::new(&config.durable, wal.bytes()),
            wal,
            logs: log_paths(config),
            incarnation: now_unix_ns,
            taken,
            durable: BTreeMap::new(),
            acks,
            last_publish: None,
            report,
            log: RateLimit::default(),
        };
        Ok((durable, replay))
    }

    /// With `--state-dir`: [`Durable::open`]; without, nothing.
    pub fn open_if(
        config: &Config,
        now_unix_ns: u64,
    ) -> Result<(Option<Durable>, Replay), DurableError> {
        match &config.durable.state_dir {
            Some(dir) => {
                let (d, replay) = Durable::open(config, dir, now_unix_ns)?;
                Ok((Some(d), replay))
            }
            None => Ok((None, Replay::default())),
        }
    }

    /// Restores a checkpoint's membership decisions and snapshot into `machine`, then hands
    /// it the replayed messages (durable already) that are next in their sequence and the
    /// decisions, in the order they came. The membership clocks start again now.
    pub fn replay<E>(
        &mut self,
        replay: Replay,
        machine: &mut crate::state::Aggregator,
        mut take: impl FnMut(&mut crate::state::Aggregator, UpMessage) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        for e in &replay.membership {
            machine.restore_membership(e, now);
        }
        if let Some(s) = replay.snapshot {
            machine.restore(s);
        }
        for item in replay.items {
            match item {
                Replayed::Message(d) => {
                    if self.judge(&d) == Verdict::Take {
                        take(machine, d.message)?;
                    }
                }
                Replayed::Membership(e) => machine.restore_membership(&e, now),
            }
        }
        self.durable = self.taken.clone();
        Ok(())
    }

    /// Every processor has ended: what they sent last is synced and acknowledged before the
    /// flush (so they may end), and the report's section handed to `machine`.
    pub fn before_finish(&mut self, machine: &mut crate::state::Aggregator) {
        self.service(Instant::now(), true);
        self.publish();
        machine.set_durability(self.report());
    }

    /// A received message: judged, and a data message taken is logged first (`raw`: its
    /// bytes as received). A message the log refuses is dropped, not acknowledged.
    pub fn received(&mut self, d: &Delivered, raw: &[u8]) -> Verdict {
        let before = self.taken.clone();
        if self.judge(d) == Verdict::Drop {
            return Verdict::Drop;
        }
        if matches!(d.message, UpMessage::Heartbeat(_)) {
            return Verdict::Take;
        }
        match self.wal.append(&[&[MESSAGE], raw]) {
            Ok(()) => {
                self.report.logged += 1;
                Verdict::Take
            }
            Err(e) => {
                self.taken = before;
                self.report.refused += 1;
                if let Some(l) = self.log.hit("wal", Instant::now()) {
                    error!(error = %e, suppressed = l.suppressed, refused = self.report.refused, "message refused: the write-ahead log cannot keep it (not acknowledged; its processor keeps it and sends it again)");
                }
                Verdict::Drop
            }
        }
    }

    /// Syncs the log when a group is due, then publishes what is durable (and every
    /// [`PUBLISH_EVERY`] anyway). `force`: sync whatever waits.
    pub fn service(&mut self, now: Instant, force: bool) {
        if !self.decisions_durable() {
            self.log_decisions();
        }
        self.log_refusals(now, force);
        if force || self.wal.due(now) {
            match self.sync() {
                Ok(()) => {}
                Err(e) => {
                    if let Some(l) = self.log.hit("sync", Instant::now()) {
                        error!(error = %e, suppressed = l.suppressed, "write-ahead log: sync failed; nothing more is acknowledged until one succeeds");
                    }
                }
            }
        }
        if self
            .last_publish
            .is_none_or(|t| now.duration_since(t) >= PUBLISH_EVERY)
        {
            self.publish();
            self.last_publish = Some(now);
        }
    }

    /// How long the main loop may wait for a message before [`Durable::service`] is due.
    pub fn wait(&self, now: Instant) -> Duration {
        let publish = self.last_publish.map_or(Duration::ZERO, |t| {
            PUBLISH_EVERY.saturating_sub(now.duration_since(t))
        });
        self.wal
            .due_in(now)
            .map_or(publish, |d| d.min(publish))
            .max(Duration::from_millis(1))
    }

    /// The run ended with everything written: the log is emptied (the next start is a new
    /// run), after the last acknowledgements went out.
    pub fn finished(&mut self) {
        self.service(Instant::now(), true);
        self.publish();
        if let Err(e) = self.wal.clear().and_then(|()| self.wal.forget_previous()) {
            error!("{e}; the next start would replay this run: remove the state directory's log");
        }
    }

    /// Syncs what was appended; what is synced is durable (acknowledged at the next publish).
    fn sync(&mut self) -> Result<(), WalError> {
        if self.wal.sync()? {
            self.report.syncs += 1;
            self.durable = self.taken.clone();
            self.last_publish = None;
            self.unsynced = false;
        }
        Ok(())
    }

    pub fn report(&self) -> DurabilityReport {
        let mut r = self.report.clone();
        r.syncs = r.syncs.max(self.wal.syncs);
        r.reserve_frames = self.wal.reserve_frames;
        r
    }

    /// Takes a message if it is the next of its processor incarnation's sequence (or the
    /// first its processor still holds, past numbers it gave up); a heartbeat if the data
    /// before it has been taken. Unsequenced messages are always taken.
    fn judge(&mut self, d: &Delivered) -> Verdict {
        let Some(Seq { seq, base }) = d.seq else {
            return Verdict::Take;
        };
        let (processor, incarnation) = crate::inbox::sender(&d.message);
        let key = (processor.to_owned(), incarnation);
        let taken = self.taken.get(&key).copied().unwrap_or(0);
        if matches!(d.message, UpMessage::Heartbeat(_)) {
            if seq > taken {
                self.report.heartbeats_ahead += 1;
                return Verdict::Drop;
            }
            return Verdict::Take;
        }
        if seq <= taken {
            self.report.duplicates += 1;
            return Verdict::Drop;
        }
        if seq == taken + 1 || (seq == base && base > taken + 1) {
            if seq > taken + 1 {
                self.report.given_up += seq - taken - 1;
                warn!(%processor, incarnation, from = taken + 1, to = seq - 1, "messages the processor gave up before this aggregator had them (see its log)");
            }
            self.taken.insert(key, seq);
            return Verdict::Take;
        }
        self.report.out_of_order += 1;
        Verdict::Drop
    }

    fn publish(&mut self) {
        let Some(p) = self.acks.as_mut() else {
            return;
        };
        let m = AckMessage {
            aggregator: self.incarnation,
            acks: self
                .durable
                .iter()
                .map(|((processor, incarnation), seq)| Ack {
                    processor: processor.clone(),
                    incarnation: *incarnation,
                    seq: *seq,
                })
                .collect(),
        };
        m.encode(&mut p.buf);
        if let Err(e) = p.socket.send(&p.buf[..], zmq::DONTWAIT) {
            warn!(error = %e, "acknowledgements not published");
        }
    }
}

impl Publisher {
    fn bind(config: &Config, endpoint: &str) -> Result<Publisher, DurableError> {
        let err = |what| {
            move |source| DurableError::Socket {
                what,
                endpoint: endpoint.to_owned(),
                source,
            }
        };
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::PUB).map_err(err("create a socket for"))?;
        socket.set_linger(2000).map_err(err("configure"))?;
        let auth = tapflow_runtime::curve::secure_server(&ctx, &socket, &config.security, endpoint)
            .map_err(err("set up CURVE for"))?;
        socket.bind(endpoint).map_err(err("bind"))?;
        Ok(Publisher {
            socket,
            _auth: auth,
            _ctx: ctx,
            buf: Vec::new(),
        })
    }
}

/// A restart's log: its first frame (a start or a checkpoint) and the frames after it.
struct Restart<'a> {
    first: &'a [u8],
    rest: &'a [Vec<u8>],
    now_unix_ns: u64,
    path: &'a Path,
}

impl Restart<'_> {
    /// Resumes the logs where the log says, notes the restart (an `R` frame) and returns what
    /// to replay; the dedup positions go to `taken`, the run's figures to `report`.
    fn read(
        self,
        wal: &mut Wal,
        report: &mut DurabilityReport,
        taken: &mut BTreeMap<Key, u64>,
    ) -> Result<Replay, DurableError> {
        let (logs, snapshot, membership) = match checkpoint::read(self.first, report, taken) {
            Some(c) => c,
            None => (
                start_of(self.first)
                    .ok_or_else(|| DurableError::NoStart(self.path.display().to_string()))?,
                None,
                Vec::new(),
            ),
        };
        for (log, offset) in &logs {
            crate::logfile::resume(log, *offset);
        }
        let items = resume(self.rest, report);
        report.restarts.push(self.now_unix_ns);
        wal.append_control(&[&[RESTART], &self.now_unix_ns.to_be_bytes()])?;
        let replay = Replay {
            snapshot,
            membership,
            items,
        };
        info!(
            messages = report.replayed,
            decisions = replay.decisions().len(),
            restarts = report.restarts.len(),
            checkpoint = replay.snapshot.is_some(),
            "restarting from the write-ahead log"
        );
        Ok(replay)
    }
}

impl Replay {
    /// Every membership event to restore, in order (the checkpoint's, then those after it).
    fn decisions(&self) -> Vec<Event> {
        let logged = self.items.iter().filter_map(|i| match i {
            Replayed::Membership(e) => Some(e.clone()),
            Replayed::Message(_) => None,
        });
        self.membership.iter().cloned().chain(logged).collect()
    }
}

/// The logs a restart resumes.
fn log_paths(config: &Config) -> Vec<PathBuf> {
    [&config.conn_log, &config.alerts_log]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// Each log and its length now.
fn log_lengths(logs: &[PathBuf]) -> Vec<(PathBuf, u64)> {
    logs.iter()
        .map(|p| (p.clone(), std::fs::metadata(p).map_or(0, |m| m.len())))
        .collect()
}

/// Where the logs begin, from a run's first frame (`S`).
fn start_of(first: &[u8]) -> Option<Vec<(PathBuf, u64)>> {
    let start: Start = first
        .strip_prefix(&[START])
        .and_then(|j| serde_json::from_slice(j).ok())?;
    Some(start.logs)
}

/// A fresh run: its first frame says where its logs begin.
fn begin(config: &Config, wal: &mut Wal) -> Result<(), WalError> {
    let start = Start {
        logs: log_lengths(&log_paths(config)),
    };
    let json = serde_json::to_vec(&start).unwrap_or_default();
    wal.append_control(&[&[START], &json]).map(|_| ())
}

/// The frames after the start: the restarts and refusal counts noted in `report`, the
/// messages and membership decisions returned in order.
fn resume(frames: &[Vec<u8>], report: &mut DurabilityReport) -> Vec<Replayed> {
    let mut replay = Vec::new();
    let mut messages = 0;
    for f in frames {
        match f.split_first() {
            Some((&RESTART, t)) => report.restarts.push(number(t)),
            Some((&MESSAGE, m)) => match Delivered::decode(m) {
                Ok(d) => {
                    messages += 1;
                    replay.push(Replayed::Message(d));
                }
                Err(e) => warn!(error = %e, "write-ahead log: an undecodable message skipped"),
            },
            Some((&DECISION, j)) => match serde_json::from_slice(j) {
                Ok(e) => replay.push(Replayed::Membership(e)),
                Err(e) => {
                    error!(error = %e, "write-ahead log: an unreadable membership decision skipped")
                }
            },
            Some((&FIGURES, j)) => match serde_json::from_slice::<decisions::Refusals>(j) {
                Ok(r) => r.put(report),
                Err(e) => warn!(error = %e, "write-ahead log: unreadable refusal counts skipped"),
            },
            _ => warn!("write-ahead log: a frame of an unknown kind skipped"),
        }
    }
    report.replayed = messages;
    replay
}

fn number(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0u64, |n, &x| (n << 8) | u64::from(x))
}
