//! The PUSH socket to the aggregator, with acknowledged delivery when `--aggregator-acks` is
//! given: every data message (records, announcements, the end-of-stream account) gets a
//! sequence number and is kept until the aggregator acknowledges it as durable; a restarted
//! aggregator (a new incarnation in its acknowledgements), or none for `--resend-after`, gets
//! everything not acknowledged again, in order (it discards duplicates by sequence number).
//! What is kept in memory is bounded by `--unacked-max-bytes`: past it the oldest goes to the
//! disk spool (`--spool-dir`, [`spool`]) or, without one, is given up, logged as an ERROR and
//! counted. The spool holds the oldest messages and memory the newest, so what is held stays
//! one run of sequence numbers, resent in order; each message is stamped with the lowest
//! number still held when it is handed to the socket (not when it was made), so the first one
//! after a given-up run tells the aggregator where the run starts.

mod spool;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tapflow_proto::delivery::{encode_sequenced, AckMessage, Seq};
use tapflow_proto::upstream::{ProcessorHeartbeat, Unacked, UpMessage};
use tapflow_proto::wire::MAGIC;
use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

use crate::config::AckConfig;
use crate::engine::Upstream;
use spool::{Spool, SpoolStats};

/// The heartbeat sent while draining ([`Delivery::drain`]), every `every`.
pub(crate) struct Beat {
    pub hb: ProcessorHeartbeat,
    pub every: Duration,
}

/// The socket to the aggregator, and what it has not acknowledged.
pub(crate) struct Delivery {
    push: zmq::Socket,
    acks: Option<Acks>,
}

/// Counts of acknowledged delivery, logged at the end.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeliveryStats {
    pub messages: u64,
    pub acknowledged: u64,
    pub resent: u64,
    pub given_up: u64,
    pub given_up_bytes: u64,
    /// The disk spool's counts (all zero without `--spool-dir`).
    pub spool: SpoolStats,
}

struct Acks {
    sub: zmq::Socket,
    name: String,
    incarnation: u64,
    /// Sequenced frames not yet acknowledged and not spooled, oldest first, with their numbers.
    held: VecDeque<(u64, Vec<u8>)>,
    /// The older frames not yet acknowledged, on disk (with `--spool-dir`).
    spool: Option<Spool>,
    held_bytes: usize,
    max_bytes: usize,
    next_seq: u64,
    /// The first sequence number not yet handed to the socket.
    next_send: u64,
    acked: u64,
    aggregator: Option<u64>,
    last_progress: Instant,
    resend_after: Duration,
    stats: DeliveryStats,
    log: RateLimit<&'static str>,
    wrap: Vec<u8>,
}

impl Delivery {
    pub(crate) fn plain(push: zmq::Socket) -> Delivery {
        Delivery { push, acks: None }
    }

    /// Acknowledged delivery: `sub` (connected to the aggregator's acknowledgements) tells
    /// what may be forgotten.
    pub(crate) fn acknowledged(
        push: zmq::Socket,
        sub: zmq::Socket,
        name: &str,
        incarnation: u64,
        config: &AckConfig,
    ) -> Delivery {
        let acks = Acks {
            sub,
            name: name.to_owned(),
            incarnation,
            held: VecDeque::new(),
            spool: config
                .spool
                .as_ref()
                .map(|s| Spool::open(&s.dir, s.max_bytes)),
            held_bytes: 0,
            max_bytes: config.max_bytes,
            next_seq: 1,
            next_send: 1,
            acked: 0,
            aggregator: None,
            last_progress: Instant::now(),
            resend_after: config.resend_after,
            stats: DeliveryStats::default(),
            log: RateLimit::default(),
            wrap: Vec::new(),
        };
        Delivery {
            push,
            acks: Some(acks),
        }
    }

    /// Sends a heartbeat (never kept): sequenced with the last data message handed over.
    /// False: the socket did not take it.
    pub(crate) fn send_heartbeat(&mut self, frame: &[u8]) -> bool {
        let Some(a) = self.acks.as_mut() else {
            if let Err(e) = self.push.send(frame, zmq::DONTWAIT) {
                warn!(error = %e, "heartbeat to aggregator not sent");
                return false;
            }
            return true;
        };
        let seq = Seq {
            seq: a.next_send - 1,
            base: a.base(),
        };
        encode_sequenced(seq, frame, &mut a.wrap);
        // Nothing is queued for an aggregator not connected: said at most once a minute.
        if let Err(e) = self.push.send(&a.wrap[..], zmq::DONTWAIT) {
            if let Some(l) = a.log.hit("heartbeat", Instant::now()) {
                warn!(error = %e, suppressed = l.suppressed, "heartbeat to aggregator not sent (not connected?)");
            }
            return false;
        }
        true
    }

    /// Reads the acknowledgements waiting, sends again what a restarted or silent aggregator
    /// lacks, and hands over what is waiting.
    pub(crate) fn service(&mut self) {
        if let Some(a) = self.acks.as_mut() {
            a.read_acks();
            a.resend_if_stalled();
            a.pump(&self.push);
        }
    }

    /// What the aggregator has not acknowledged, and what was given up, for the heartbeat
    /// (`None`: delivery not acknowledged).
    pub(crate) fn unacked(&self) -> Option<Unacked> {
        let a = self.acks.as_ref()?;
        let spool = a.spool.as_ref();
        let stats = spool.map_or(SpoolStats::default(), |s| s.stats);
        Some(Unacked {
            memory_messages: a.held.len() as u64,
            memory_bytes: a.held_bytes as u64,
            spool_messages: spool.map_or(0, |s| s.end().saturating_sub(s.first())),
            spool_bytes: spool.map_or(0, Spool::disk_bytes),
            given_up_messages: a.stats.given_up + stats.spool_given_up + stats.spool_damaged,
            given_up_bytes: a.stats.given_up_bytes + stats.spool_given_up_bytes,
        })
    }

    /// Nothing is waiting for an acknowledgement.
    pub(crate) fn settled(&self) -> bool {
        self.acks.as_ref().is_none_or(Acks::settled)
    }

    /// At the end: serves acknowledgements until everything is acknowledged or `wait` has
    /// passed (then what is left is logged as an ERROR); returns the counts. With `beat`, a
    /// heartbeat saying what is still held goes out every period while it waits (sequenced
    /// as any: after what was handed over, so it is taken once that is).
    pub(crate) fn drain(
        &mut self,
        wait: Duration,
        mut beat: Option<Beat>,
    ) -> Option<DeliveryStats> {
        let deadline = Instant::now() + wait;
        let mut last_beat = Instant::now();
        let mut buf = Vec::new();
        while !self.settled() && Instant::now() < deadline {
            if let Some(a) = self.acks.as_ref() {
                let _ = a.sub.poll(zmq::POLLIN, 100);
            }
            self.service();
            if let Some(b) = beat.as_mut().filter(|b| last_beat.elapsed() >= b.every) {
                b.hb.unacked = self.unacked().map(Box::new);
                UpMessage::Heartbeat(b.hb.clone()).encode(&mut buf);
                // Not taken (no aggregator connected): the next one says it all again.
                let _ = self.send_heartbeat(&buf);
                last_beat = Instant::now();
            }
        }
        let a = self.acks.as_mut()?;
        if let Some(s) = &a.spool {
            a.stats.spool = s.stats;
        }
        if a.settled() {
            info!(stats = ?a.stats, "every message acknowledged by the aggregator");
        } else {
            let spooled = a.spool.as_ref().map_or(0, |s| s.end() - s.first());
            error!(unacknowledged = a.held.len() as u64 + spooled, bytes = a.held_bytes, spooled, wait_s = wait.as_secs(), stats = ?a.stats,
                "messages the aggregator never acknowledged (it may not have them): giving up at exit");
        }
        Some(a.stats)
    }
}

impl Upstream for Delivery {
    fn send_data(&mut self, frame: &[u8], flags: i32) -> Result<(), zmq::Error> {
        let Some(a) = self.acks.as_mut() else {
            return self.push.send(frame, flags);
        };
        let seq = Seq {
            seq: a.next_seq,
            base: a.base(),
        };
        let mut wrapped = Vec::with_capacity(frame.len() + 20);
        encode_sequenced(seq, frame, &mut wrapped);
        if a.held.is_empty() {
            a.last_progress = Instant::now();
        }
        a.held_bytes += wrapped.len();
        a.held.push_back((a.next_seq, wrapped));
        a.next_seq += 1;
        a.stats.messages += 1;
        a.spill_past_cap();
        a.pump(&self.push);
        Ok(())
    }
}

impl Acks {
    /// The lowest sequence number still held (the next one when none is).
    fn base(&self) -> u64 {
        match &self.spool {
            Some(s) if !s.is_empty() => s.first(),
            _ => self.held.front().map_or(self.next_seq, |(s, _)| *s),
        }
    }

    fn settled(&self) -> bool {
        self.held.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty)
    }

    /// Hands the held messages not yet handed over to the socket (the spooled ones read back
    /// from disk first), until it has no room.
    fn pump(&mut self, push: &zmq::Socket) {
        let lowest = self.base();
        self.next_send = self.next_send.max(lowest);
        while self.next_send < self.next_seq {
            let want = self.next_send;
            let (seq, frame) = match self.spool.as_mut() {
                Some(s) if want < s.end() => {
                    let Some(seq) = s.read(want) else {
                        self.next_send = s.end();
                        continue;
                    };
                    let base = stamp(seq, lowest, s.damaged());
                    let Some(frame) = s.frame_mut() else {
                        return;
                    };
                    set_base(frame, base);
                    (seq, &frame[..])
                }
                spool => {
                    let damaged = spool.and_then(|s| s.damaged());
                    let Some(first) = self.held.front().map(|(s, _)| *s) else {
                        return;
                    };
                    let i = (want.max(first) - first) as usize;
                    let Some((seq, frame)) = self.held.get_mut(i) else {
                        return;
                    };
                    set_base(frame, stamp(*seq, lowest, damaged));
                    (*seq, &frame[..])
                }
            };
            match push.send(frame, zmq::DONTWAIT) {
                Ok(()) => self.next_send = seq + 1,
                Err(zmq::Error::EAGAIN) => {
                    self.next_send = seq;
                    return;
                }
                Err(e) => {
                    if let Some(l) = self.log.hit("send", Instant::now()) {
                        warn!(error = %e, suppressed = l.suppressed, "message to the aggregator not handed over (kept, sent again)");
                    }
                    return;
                }
            }
        }
    }

    fn read_acks(&mut self) {
        while let Ok(bytes) = self.sub.recv_bytes(zmq::DONTWAIT) {
            match AckMessage::decode(&bytes) {
                Ok(m) => self.on_ack(&m),
                Err(e) => {
                    if let Some(l) = self.log.hit("ack", Instant::now()) {
                        warn!(error = %e, suppressed = l.suppressed, "undecodable acknowledgement dropped");
                    }
                }
            }
        }
    }

    fn on_ack(&mut self, m: &AckMessage) {
        let mine = m
            .acks
            .iter()
            .find(|a| a.processor == self.name && a.incarnation == self.incarnation)
            .map(|a| a.seq);
        if let Some(seq) = mine.filter(|&s| s > self.acked) {
            self.acked = seq;
            self.last_progress = Instant::now();
            if let Some(s) = self.spool.as_mut() {
                self.stats.acknowledged += s.acknowledge(seq);
            }
            while self.held.front().is_some_and(|(s, _)| *s <= seq) {
                if let Some((_, f)) = self.held.pop_front() {
                    self.held_bytes -= f.len();
                    self.stats.acknowledged += 1;
                }
            }
        }
        if self.aggregator != Some(m.aggregator) {
            if self.aggregator.is_some() {
                info!(
                    aggregator = m.aggregator,
                    unacknowledged = self.next_seq - self.base(),
                    spooled_bytes = self.spool.as_ref().map_or(0, Spool::disk_bytes),
                    "aggregator restarted: sending again what it has not acknowledged"
                );
                self.go_back();
            }
            self.aggregator = Some(m.aggregator);
        }
    }

    /// Sends again, from the oldest message held.
    fn go_back(&mut self) {
        let first = self.base();
        self.stats.resent += self.next_send.saturating_sub(first);
        self.next_send = first;
        self.last_progress = Instant::now();
    }

    fn resend_if_stalled(&mut self) {
        if !self.settled()
            && self.next_send > self.base()
            && self.last_progress.elapsed() >= self.resend_after
        {
            warn!(
                unacknowledged = self.next_seq - self.base(),
                "no acknowledgement for a while: sending again what is not acknowledged"
            );
            self.go_back();
        }
    }

    /// Past `max_bytes` in memory, the oldest held message goes to the spool or, without
    /// one, is given up: an ERROR, counted.
    fn spill_past_cap(&mut self) {
        while self.held_bytes > self.max_bytes && self.held.len() > 1 {
            let Some((seq, f)) = self.held.pop_front() else {
                return;
            };
            self.held_bytes -= f.len();
            if let Some(s) = self.spool.as_mut() {
                if let Some(l) = self.log.hit("spooling", Instant::now()) {
                    info!(seq, spooled_frames = s.stats.spooled_frames, suppressed = l.suppressed,
                        "unacknowledged messages past --unacked-max-bytes: spooling the oldest to disk");
                }
                s.push(seq, &f);
                continue;
            }
            self.stats.given_up += 1;
            self.stats.given_up_bytes += f.len() as u64;
            if let Some(l) = self.log.hit("given_up", Instant::now()) {
                error!(seq, bytes = f.len(), given_up = self.stats.given_up, suppressed = l.suppressed,
                    "unacknowledged messages past --unacked-max-bytes: the oldest is given up (lost if the aggregator lacks it)");
            }
        }
    }
}

/// The lowest-held number message `seq` is sent with: after frames found damaged in the
/// spool, the first one past them, which the aggregator then takes as the start of what is
/// held (counting the damaged ones given up).
fn stamp(seq: u64, lowest: u64, damaged: Option<u64>) -> u64 {
    match damaged {
        Some(d) if seq > d && d >= lowest => d + 1,
        _ => lowest,
    }
}

/// Where a sequenced frame holds its base ([`encode_sequenced`]'s layout: magic, version,
/// kind, sequence number, base).
const BASE_AT: usize = MAGIC.len() + 2 + 8;

/// Rewrites a sequenced frame's base in place.
fn set_base(frame: &mut [u8], base: u64) {
    if let Some(b) = frame.get_mut(BASE_AT..BASE_AT + 8) {
        b.copy_from_slice(&base.to_be_bytes());
    }
}

#[cfg(test)]
#[path = "delivery/tests.rs"]
mod tests;
