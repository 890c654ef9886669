//! Merge, flow table, processor-set switches and the records waiting to be sent: sans-IO
//! apart from `send_conns`, which hands a batch to the PUSH socket `run` owns.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::upstream::{
    ConnBatch, ExpectBatch, ProcessorCounters, TrafficPartial, UpMessage,
};
use tapflow_proto::{FlowKey, PacketSummary};
use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::epochs::{continues, Epochs};
use crate::merge::Merger;
use crate::session::{ConnRecord, FlowTable, SessionConfig};

/// Connection records are sent in messages of at most this many.
pub(crate) const RECORDS_PER_MESSAGE: usize = 2048;
/// Records' room a buffer of records keeps between messages (a larger one is let go).
const KEPT_RECORDS: usize = 4 * RECORDS_PER_MESSAGE;
/// Summaries' room the released buffer keeps between steps.
const RELEASED_KEPT: usize = 1 << 16;
/// IP-tunnel outer flows remembered for naming tunnel parents (count past it is reported).
const IP_TUNNELS_CAP: usize = 65_536;

/// Where the engine's messages to the aggregator go: the PUSH socket, or the processor's
/// acknowledged delivery over it (`run/delivery.rs`).
pub(crate) trait Upstream {
    /// Hands one encoded data message over (`flags`: ZeroMQ's); an error: it is lost.
    fn send_data(&mut self, frame: &[u8], flags: i32) -> Result<(), zmq::Error>;
}

impl Upstream for zmq::Socket {
    fn send_data(&mut self, frame: &[u8], flags: i32) -> Result<(), zmq::Error> {
        self.send(frame, flags)
    }
}

/// Merge, flow table and the records waiting to be sent (sans-IO apart from `send_conns`).
pub(crate) struct Engine {
    name: String,
    incarnation: u64,
    merger: Merger,
    pub(crate) table: FlowTable,
    released: Vec<PacketSummary>,
    pub(crate) records: Vec<ConnRecord>,
    /// Emptied buffers of sent messages' records (at most 2), filled again: a message's
    /// records are not moved into a newly allocated buffer each time.
    spare_records: Vec<Vec<ConnRecord>>,
    tunnel_outers: Vec<(FlowKey, u64)>,
    ip_tunnels: HashMap<FlowKey, u64>,
    ip_tunnels_over_cap: u64,
    settle_ns: u64,
    swept_to: u64,
    records_sent: u64,
    records_unsent: u64,
    /// Announced data connections sent, and lost to a refusing socket.
    expects_sent: u64,
    expects_unsent: u64,
    /// Bytes of the connection-record messages handed to ZeroMQ.
    conn_bytes_sent: u64,
    finished: bool,
    dead_after: std::time::Duration,
    last_heard: HashMap<(String, u64), Instant>,
    dead: std::collections::HashSet<(String, u64)>,
    ended: std::collections::HashSet<(String, u64)>,
    dead_declared: u64,
    /// Collector incarnations replaced by a newer one of the same name (restarted).
    superseded: std::collections::HashSet<(String, u64)>,
    /// Inputs this incarnation joined mid-stream (first sequence number above 0: an earlier
    /// incarnation of this processor served their start), by merge input, with the
    /// watermark they had then.
    joined_mid_stream: HashMap<u32, u64>,
    /// Merge inputs this incarnation has had a message from: only an input's first message
    /// tells whether it was joined mid-stream.
    inputs_seen: std::collections::HashSet<u32>,
    /// Flows that may continue a session an earlier incarnation held (see `process_released`).
    flows_split: u64,
    waived: bool,
    traffic: crate::traffic::Traffic,
    /// Processor-set switches (`None`: a fixed shard).
    pub(crate) epochs: Option<Epochs>,
    /// `epochs`' next switch time, `u64::MAX` when none (checked per summary).
    pub(crate) next_switch_ns: u64,
    /// The ERROR about records not sent can repeat per message while the aggregator is slow
    /// or gone: rate-limited (`records_unsent` counts them all).
    unsent_log: RateLimit<&'static str>,
}

impl Engine {
    pub(crate) fn new(config: &Config, incarnation: u64) -> Engine {
        let session = SessionConfig {
            max_flows: config.max_flows,
            payload_bytes: config.payload_bytes,
            classify: config.classify.clone(),
            dns_session_timeout_ns: u64::try_from(config.dns_session_timeout.as_nanos())
                .unwrap_or(u64::MAX),
            ..SessionConfig::default()
        };
        let settle_ns = settle_ns(&session);
        Engine {
            name: config.name.clone(),
            incarnation,
            merger: Merger::new(config.collectors, config.merge_cap),
            table: FlowTable::new(session),
            released: Vec::with_capacity(4096),
            records: Vec::with_capacity(RECORDS_PER_MESSAGE),
            spare_records: Vec::new(),
            tunnel_outers: Vec::new(),
            ip_tunnels: HashMap::new(),
            ip_tunnels_over_cap: 0,
            settle_ns,
            swept_to: 0,
            records_sent: 0,
            conn_bytes_sent: 0,
            records_unsent: 0,
            expects_sent: 0,
            expects_unsent: 0,
            finished: false,
            dead_after: config.dead_after,
            last_heard: HashMap::new(),
            dead: Default::default(),
            ended: Default::default(),
            dead_declared: 0,
            superseded: Default::default(),
            joined_mid_stream: HashMap::new(),
            inputs_seen: std::collections::HashSet::new(),
            flows_split: 0,
            waived: false,
            traffic: crate::traffic::Traffic::new(),
            next_switch_ns: u64::MAX,
            unsent_log: RateLimit::default(),
            epochs: config
                .processor_set
                .as_ref()
                .map(|(_, set, id)| Epochs::new(set.clone(), *id)),
        }
        .with_switch_time()
    }

    /// Notes that an input spoke (wall clock: liveness is about the wire, not packet time).
    /// A new incarnation of a collector supersedes its earlier ones: they died without
    /// end-of-stream (a clean restart ends them first), so they stop holding the watermark and
    /// are no longer reported silent.
    fn heard(&mut self, h: &tapflow_proto::LinkHeader) {
        let key = (h.sender.clone(), h.incarnation);
        if self.dead.remove(&key) {
            warn!(sender = %h.sender, "collector declared dead is back: it holds the watermark again");
            self.merger.revive(&h.sender, h.incarnation);
            self.traffic.close_gaps(&h.sender, h.watermark_ns);
        }
        if self.last_heard.insert(key, Instant::now()).is_none() {
            let older: Vec<(String, u64)> = self
                .last_heard
                .keys()
                .filter(|(s, i)| *s == h.sender && *i != h.incarnation)
                .filter(|k| !self.ended.contains(*k) && !self.superseded.contains(*k))
                .cloned()
                .collect();
            if !older.is_empty() {
                // What the old incarnation read but never sent is missing up to here.
                let from = self.gap_start().min(h.watermark_ns);
                self.traffic.open_gap(&h.sender, from);
                self.traffic.close_gaps(&h.sender, h.watermark_ns);
            }
            for old in older {
                warn!(sender = %h.sender, old = old.1, new = h.incarnation, "collector restarted: its previous incarnation ended without end-of-stream; what it had not sent is lost with it");
                self.merger.declare_dead(&old.0, old.1);
                self.dead.remove(&old);
                self.superseded.insert(old);
            }
        }
    }

    /// Records that this incarnation joined an input mid-stream (called after the merge
    /// knows the input).
    fn note_join(&mut self, h: &tapflow_proto::LinkHeader) {
        let Some(id) = self.merger.input_id(&h.sender, h.incarnation) else {
            return;
        };
        // Only the input's first message says where this incarnation joined its stream.
        if !self.inputs_seen.insert(id) || h.seq == 0 {
            return;
        }
        info!(sender = %h.sender, seq = h.seq, "joined the collector's link mid-stream (this processor was restarted): flows it first sees now may be split sessions");
        self.joined_mid_stream.insert(id, h.watermark_ns);
    }

    /// Inputs silent for `dead_after` leave the watermark (and are logged); collectors that
    /// never appeared are no longer waited for after that long.
    pub(crate) fn check_liveness(&mut self, started: Instant) {
        let mut declared = Vec::new();
        for ((sender, incarnation), at) in &self.last_heard {
            let key = (sender.clone(), *incarnation);
            if at.elapsed() >= self.dead_after
                && !self.dead.contains(&key)
                && !self.ended.contains(&key)
                && !self.superseded.contains(&key)
            {
                warn!(%sender, incarnation, silent_ms = at.elapsed().as_millis() as u64, "collector silent: declared dead, its windows go on without it (marked incomplete)");
                declared.push(key);
            }
        }
        for key in declared {
            // Its data stops about where the merge had got to, the slowest input's watermark.
            let from = self.gap_start();
            self.traffic.open_gap(&key.0, from);
            self.merger.declare_dead(&key.0, key.1);
            self.dead_declared += 1;
            self.dead.insert(key);
        }
        if !self.waived
            && started.elapsed() >= self.dead_after
            && self.merger.watermark_ns().is_none()
        {
            warn!(
                heard = self.last_heard.len(),
                "not every expected collector has appeared: going on without the missing ones"
            );
            self.merger.waive_expected();
            self.waived = true;
        }
    }

    /// Names of the collectors declared dead and not back.
    pub(crate) fn silent_collectors(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dead.iter().map(|(s, _)| s.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// A batch's summaries, moved into the merge (`summaries` is left empty).
    pub(crate) fn accept(
        &mut self,
        h: &tapflow_proto::LinkHeader,
        summaries: &mut Vec<PacketSummary>,
    ) {
        self.heard(h);
        self.merger.push(
            &h.sender,
            h.incarnation,
            h.watermark_ns,
            summaries,
            &mut self.released,
        );
        self.note_join(h);
    }

    pub(crate) fn progress(&mut self, h: &tapflow_proto::LinkHeader, ended: bool) {
        self.heard(h);
        if ended {
            self.ended.insert((h.sender.clone(), h.incarnation));
        }
        self.merger
            .advance(&h.sender, h.incarnation, h.watermark_ns);
        if ended {
            self.merger.end(&h.sender, h.incarnation);
        }
        self.note_join(h);
    }

    fn with_switch_time(mut self) -> Engine {
        self.next_switch_ns = self
            .epochs
            .as_ref()
            .map_or(u64::MAX, Epochs::next_switch_ns);
        self
    }

    /// Applies the processor-set switches at or before packet time `t`.
    fn switch_epochs(&mut self, t: u64) {
        if let Some(e) = self.epochs.as_mut() {
            e.apply(t, &mut self.table, &mut self.records);
            self.next_switch_ns = e.next_switch_ns();
        }
    }

    /// Releases what the watermark allows into the table and sweeps.
    pub(crate) fn step(&mut self) {
        self.merger.release(&mut self.released);
        self.process_released();
        if let Some(wm) = self.merger.watermark_ns() {
            if wm != u64::MAX && wm >= self.next_switch_ns {
                self.switch_epochs(wm);
            }
            if wm != u64::MAX && wm > self.swept_to {
                self.table.sweep(wm, &mut self.records);
                self.swept_to = wm;
            }
        }
    }

    fn process_released(&mut self) {
        let origins = self.merger.take_origins();
        for (s, &origin) in self.released.drain(..).zip(origins.iter()) {
            if s.ts_ns >= self.next_switch_ns {
                if let Some(e) = self.epochs.as_mut() {
                    e.apply(s.ts_ns, &mut self.table, &mut self.records);
                    self.next_switch_ns = e.next_switch_ns();
                }
            }
            let created = self.table.stats().flows_created;
            let tap = self.merger.input_tap(origin);
            self.table.on_summary_from(&s, tap, &mut self.records);
            if self.table.stats().flows_created > created {
                if let Some(e) = self.epochs.as_mut() {
                    e.on_created(&s, &mut self.table);
                }
                if self
                    .joined_mid_stream
                    .get(&origin)
                    .is_some_and(|&joined| continues(self.table.config(), &s, joined))
                {
                    self.flows_split += 1;
                }
            }
            if s.flags & flag::TUNNEL_INNER == 0 {
                let started = self.table.stats().flows_created > created;
                self.traffic
                    .count(s.ts_ns, origin, s.key.proto, s.ip_len, started);
            }
            if s.flags & flag::TUNNEL_OUTER == 0 {
                continue;
            }
            if matches!(s.key.proto, ip_proto::GRE | 4 | 41) {
                // Zeek keeps IP tunnels out of conn.log; their uid still names the parent.
                if !self.ip_tunnels.contains_key(&s.key) {
                    if self.ip_tunnels.len() < IP_TUNNELS_CAP {
                        self.ip_tunnels.insert(s.key, s.ts_ns);
                        self.tunnel_outers.push((s.key, s.ts_ns));
                    } else {
                        self.ip_tunnels_over_cap += 1;
                    }
                }
            } else if self.table.first_ts(&s.key) == Some(s.ts_ns) {
                self.tunnel_outers.push((s.key, s.ts_ns));
            }
        }
        self.merger.give_back_origins(origins);
        // A burst released at once (a skewed collector's backlog, up to `--merge-cap`) gives
        // its memory back.
        self.released.shrink_to(RELEASED_KEPT);
    }

    /// Where a gap that starts now starts in packet time: the merge's watermark.
    fn gap_start(&self) -> u64 {
        self.merger
            .watermark_ns()
            .filter(|&w| w != u64::MAX)
            .unwrap_or(0)
    }

    /// Traffic windows the watermark has passed (all of them once finished), as partials.
    fn finished_traffic(&mut self) -> Vec<TrafficPartial> {
        let upto = if self.finished {
            u64::MAX
        } else {
            self.merger
                .watermark_ns()
                .filter(|&w| w != u64::MAX)
                .unwrap_or(0)
        };
        let merger = &self.merger;
        self.traffic
            .finished(upto, |i| merger.input_name(i).to_owned())
    }

    /// The summary at exit of the log lines rate-limited.
    pub(crate) fn log_suppressed(&mut self) {
        self.unsent_log
            .log_suppressed("connection records not sent to the aggregator");
    }

    /// End of stream: everything buffered goes through the table, and every session ends.
    /// The table's records are made as [`Engine::send_conns`] sends them, a message's worth
    /// at a time, not all at once.
    pub(crate) fn finish(&mut self) {
        self.merger.drain(&mut self.released);
        self.process_released();
        // A processor that left the set ends when the collectors, reaching the switch, retire
        // its links (their watermarks stop just short of it): its flows moved, and end split.
        if let Some(e) = self.epochs.as_mut().filter(|e| e.leaving()) {
            e.apply(u64::MAX, &mut self.table, &mut self.records);
        }
        self.table.begin_flush();
        self.finished = true;
    }

    /// The watermark records are complete up to: the merge's, or "everything" once finished.
    fn watermark_ns(&self) -> u64 {
        if self.finished {
            return u64::MAX;
        }
        // Sweeps use whole seconds: a connection may leave up to a second after its deadline.
        self.merger
            .watermark_ns()
            .filter(|&w| w != u64::MAX)
            .map(|w| w.min(self.swept_to))
            .unwrap_or(0)
    }

    /// Sends the records waiting, in messages of at most [`RECORDS_PER_MESSAGE`], each as soon
    /// as it is encoded. (A sweep or the end of stream can end a whole table's worth at once: in
    /// one message that could pass the wire's size limit, and the aggregator waited for all of
    /// it, then decoded all of it, before ordering any.) Only the last message carries the
    /// watermark and the traffic partials; the ones before it carry watermark 0, which the
    /// aggregator's running maximum ignores: the new watermark early would let it release
    /// records that sort after some still on their way. In the end-of-stream flush they carry
    /// what is true of them instead ([`Engine::flush_mark`]). Tunnel outer announcements go
    /// with the first, before any record that names them.
    ///
    /// After [`Engine::finish`], the table's final records follow the ones waiting, made a
    /// message at a time (the same messages as if they had all been made first).
    pub(crate) fn send_conns(&mut self, push: &mut dyn Upstream, buf: &mut Vec<u8>, flags: i32) {
        self.send_expects(push, buf, flags);
        let mut waiting = std::mem::take(&mut self.records);
        if waiting.len() + self.table.flush_pending() <= RECORDS_PER_MESSAGE {
            // One message (the usual step): the records go in the vector they were made in,
            // not moved one by one into another; a spare one takes its place.
            self.records = self.spare_records();
            self.table.flush_next(RECORDS_PER_MESSAGE, &mut waiting);
            let watermark_ns = self.watermark_ns();
            let traffic = self.finished_traffic();
            let mark = (watermark_ns, self.settle_ns);
            self.send_batch(push, buf, flags, waiting, mark, traffic);
            return;
        }
        let mut rest = waiting.drain(..);
        while rest.len() + self.table.flush_pending() > RECORDS_PER_MESSAGE {
            let mut chunk = self.spare_records();
            chunk.extend(rest.by_ref().take(RECORDS_PER_MESSAGE));
            let more = RECORDS_PER_MESSAGE - chunk.len();
            self.table.flush_next(more, &mut chunk);
            let (mark, traffic) = self.flush_mark(rest.len());
            self.send_batch(push, buf, flags, chunk, mark, traffic);
        }
        let mut last = self.spare_records();
        last.extend(rest);
        // The buffer records are made into is kept (not grown again from nothing every
        // step), unless a sweep or a flush made it far larger than a message.
        if waiting.capacity() <= KEPT_RECORDS {
            self.records = waiting;
        }
        self.table.flush_next(RECORDS_PER_MESSAGE, &mut last);
        let watermark_ns = self.watermark_ns();
        let traffic = self.finished_traffic();
        let mark = (watermark_ns, self.settle_ns);
        self.send_batch(push, buf, flags, last, mark, traffic);
    }

    /// The (watermark, settle) and traffic partials of a message of the end-of-stream flush
    /// before its last, when `waiting` records made before the flush are still to go. The
    /// aggregator releases what ends before watermark less settle. Once none are waiting,
    /// every record still to come is the table's, which it emits by last packet time, so none
    /// ends before [`FlowTable::next_flush_end`]: the message says so, and the aggregator
    /// orders and writes records as the flush goes on. Its watermark says "every packet" (all
    /// but `u64::MAX`, which means ended), which the aggregator's traffic windows read too, so
    /// the first such message carries every traffic partial left (all are final once
    /// finished). Otherwise watermark 0, which the aggregator's running maximum ignores.
    ///
    /// [`FlowTable::next_flush_end`]: crate::session::FlowTable::next_flush_end
    fn flush_mark(&mut self, waiting: usize) -> ((u64, u64), Vec<TrafficPartial>) {
        let end = self
            .table
            .next_flush_end()
            .filter(|_| self.finished && waiting == 0);
        match end {
            Some(end) => {
                let all = u64::MAX - 1;
                ((all, all - end), self.finished_traffic())
            }
            None => ((0, self.settle_ns), Vec::new()),
        }
    }

    /// An empty buffer of a message's records, one a sent message left if there is one.
    fn spare_records(&mut self) -> Vec<ConnRecord> {
        self.spare_records
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RECORDS_PER_MESSAGE))
    }

    /// Sends the data connections control connections announced since the last call, as
    /// soon as they are parsed (one message; nothing when there are none). A message the
    /// socket refuses is lost with its announcements, counted in `expects_unsent`.
    pub(crate) fn send_expects(&mut self, push: &mut dyn Upstream, buf: &mut Vec<u8>, flags: i32) {
        if !self.table.has_expects() {
            return;
        }
        let expects = self.table.take_expects();
        let n = expects.len() as u64;
        UpMessage::Expects(ExpectBatch {
            processor: self.name.clone(),
            incarnation: self.incarnation,
            expects,
        })
        .encode(buf);
        match push.send_data(&buf[..], flags) {
            Ok(()) => self.expects_sent += n,
            Err(e) => {
                self.expects_unsent += n;
                warn!(error = %e, expects = n, "announced data connections not sent to the aggregator (lost)");
            }
        }
    }

    fn send_batch(
        &mut self,
        push: &mut dyn Upstream,
        buf: &mut Vec<u8>,
        flags: i32,
        records: Vec<ConnRecord>,
        (watermark_ns, settle_ns): (u64, u64),
        traffic: Vec<TrafficPartial>,
    ) {
        let batch = ConnBatch {
            processor: self.name.clone(),
            incarnation: self.incarnation,
            watermark_ns,
            settle_ns,
            records,
            tunnel_outers: std::mem::take(&mut self.tunnel_outers),
            traffic,
            records_seq: self.records_sent + self.records_unsent,
        };
        let n = batch.records.len() as u64;
        let message = UpMessage::Conns(batch);
        message.encode(buf);
        if let UpMessage::Conns(ConnBatch { mut records, .. }) = message {
            if self.spare_records.len() < 2 && records.capacity() <= KEPT_RECORDS {
                records.clear();
                self.spare_records.push(records);
            }
        }
        match push.send_data(&buf[..], flags) {
            Ok(()) => {
                self.records_sent += n;
                self.conn_bytes_sent += buf.len() as u64;
            }
            Err(e) => {
                self.records_unsent += n;
                if let Some(l) = self.unsent_log.hit("records_unsent", Instant::now()) {
                    error!(error = %e, records = n, suppressed = l.suppressed, messages = l.total, records_unsent = self.records_unsent, "connection records not sent to the aggregator (lost)");
                }
            }
        }
    }

    /// Per collector name (over its incarnations): the current and the largest skew seen, ms.
    pub(crate) fn collector_skews(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for i in self.merger.inputs() {
            let e = out.entry(i.sender.to_owned()).or_default();
            e.0 = e.0.max(i.skew_ns / 1_000_000);
            e.1 = e.1.max(i.skew_max_ns / 1_000_000);
        }
        out
    }

    /// Each link's share of the merge's late summaries and its largest skew (a link and a
    /// merge input are both one collector incarnation).
    pub(crate) fn fill_links(&self, links: &mut [tapflow_proto::upstream::LinkAccount]) {
        let by_input: HashMap<(&str, u64), (u64, u64)> = self
            .merger
            .inputs()
            .map(|i| {
                (
                    (i.sender, i.incarnation),
                    (i.late, i.skew_max_ns / 1_000_000),
                )
            })
            .collect();
        for l in links {
            if let Some(&(late, skew)) = by_input.get(&(l.sender.as_str(), l.incarnation)) {
                l.late = late;
                l.skew_max_ms = skew;
            }
        }
    }

    /// The session, merge and link counters (`epoch_unknown`, `auth`, `names_refused` and
    /// `senders_refused` are the caller's).
    pub(crate) fn counters(&self) -> ProcessorCounters {
        let t = self.table.stats();
        let m = self.merger.stats();
        ProcessorCounters {
            auth: None,
            bad_checksum: t.bad_checksum,
            collectors_declared_dead: self.dead_declared,
            collectors_superseded: self.superseded.len() as u64,
            conn_bytes_sent: self.conn_bytes_sent,
            epoch_unknown: None,
            flows_continued: self.epochs.as_ref().map_or(0, |e| e.flows_continued),
            flows_created: t.flows_created,
            flows_evicted: t.evicted,
            flows_moved_out: self.epochs.as_ref().map_or(0, |e| e.flows_moved_out),
            flows_open: t.open_flows,
            flows_split: self.flows_split,
            history_truncated: t.history_truncated,
            interim_records: t.interim_records,
            ip_tunnels_over_cap: self.ip_tunnels_over_cap,
            merge_forced: m.forced,
            merge_late: m.late,
            records: t.records,
            records_sent: self.records_sent,
            records_unsent: self.records_unsent,
            summaries_processed: t.summaries,
            traffic_keys_over_cap: self.traffic.over_cap,
            traffic_late: self.traffic.late,
            truncated_uncounted: t.truncated_uncounted,
            tunnel_outer_skipped: t.tunnel_outer_skipped,
            names_refused: None,
            senders_refused: None,
            expects_sent: Some(self.expects_sent),
            expects_unsent: Some(self.expects_unsent),
        }
    }
}

/// How long after its last packet a connection can still be open: the longest timeout plus
/// two seconds of sweep granularity.
fn settle_ns(c: &SessionConfig) -> u64 {
    [
        c.tcp_inactivity_ns,
        c.tcp_handshake_inactivity_ns,
        c.udp_inactivity_ns,
        c.icmp_inactivity_ns,
        c.other_inactivity_ns,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .saturating_add(
        c.tcp_close_delay_ns
            .max(c.tcp_reset_delay_ns)
            .max(c.tcp_attempt_delay_ns)
            .max(c.tcp_linger_ns),
    )
    .saturating_add(2_000_000_000)
}

#[cfg(test)]
mod tests;
