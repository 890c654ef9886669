//! Processor-to-aggregator messages (frame kinds 16 and up, same framing as [`crate::wire`]).
//!
//! | kind | body |
//! |------|------|
//! | 16 `Heartbeat` | `ProcessorHeartbeat` |
//! | 17 `Eos` | `ProcessorAccount` |
//! | 18 `Conns` | `ConnBatch` |
//! | 19 `Expects` | `ExpectBatch` |
//!
//! A processor's counters travel as [`ProcessorCounters`], one named field per counter.
//!
//! A heartbeat's structs are encoded as maps ([`encode_frame_named`]): a field added to it
//! later (with `#[serde(default)]`, so a newer reader takes a heartbeat without it) is skipped
//! by an older reader, which would refuse the longer array the other messages' encoding makes.
//! Every reader takes both encodings.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use crate::account::CollectorCounters;
use crate::conn::{valid_service, valid_uid, ConnRecord, MAX_TS_NS};
use crate::key::{Addr, FlowKey};
use crate::wire::{
    decode_body, encode_frame, encode_frame_named, frame_header, split_frame, DecodeError,
    EosStatus,
};

mod conns_codec;

pub mod kind {
    pub const HEARTBEAT: u8 = 16;
    pub const EOS: u8 = 17;
    pub const CONNS: u8 = 18;
    pub const EXPECTS: u8 = 19;
    /// A processor message with its delivery sequence number (`crate::delivery`).
    pub const SEQUENCED: u8 = 20;
    /// The aggregator's acknowledgements (`crate::delivery::AckMessage`).
    pub const ACK: u8 = 21;
}

/// The (epoch, N, index) a collector claims for a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardClaim {
    pub epoch: u32,
    pub shard_count: u16,
    pub shard: u16,
}

/// What a processor knows of one collector link (one sender incarnation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAccount {
    pub sender: String,
    pub incarnation: u64,
    /// The claim this link's first message made.
    pub claim: Option<ShardClaim>,
    /// Summaries received (including misrouted ones, which are then dropped).
    pub summaries_received: u64,
    /// Summaries missing according to sequence numbers.
    pub gaps: u64,
    /// Summaries dropped because the link's claim conflicts with this processor's shard.
    pub misrouted: u64,
    /// Summaries from this link the processor's merge released below an earlier release's
    /// time (their share of its `merge_late` counter).
    pub late: u64,
    /// The sequence number of the end-of-stream message: summaries the sender sent on this link.
    pub eos_seq: Option<u64>,
    pub eos_status: Option<EosStatus>,
    /// The sender's counters from its last heartbeat or end-of-stream.
    pub counters: Option<CollectorCounters>,
    pub watermark_ns: u64,
    /// The sequence number of the first message this processor incarnation received on the
    /// link: above 0 when it joined the link mid-stream (it was restarted, or the summaries
    /// before went elsewhere). Not a gap: `first_seq + summaries_received + gaps` is the next
    /// sequence number expected.
    #[serde(default)]
    pub first_seq: u64,
    /// The most this link's watermark was behind the processor's most advanced live input's
    /// (ms): the sender's clock skew against the other collectors, plus its reporting lag.
    #[serde(default)]
    pub skew_max_ms: u64,
}

/// A processor's progress on one collector link, in every heartbeat: what a processor
/// incarnation that dies without end-of-stream is known to have received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkProgress {
    pub sender: String,
    pub incarnation: u64,
    pub shard: u16,
    pub first_seq: u64,
    pub summaries_received: u64,
    pub gaps: u64,
}

/// A processor's account of its inputs, sent at end of stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorAccount {
    pub processor: String,
    pub incarnation: u64,
    /// The shard this processor serves, as established by the first claim it received.
    pub claim: Option<ShardClaim>,
    pub links: Vec<LinkAccount>,
    /// Messages that could not be decoded, by [`DecodeError::reason`].
    pub malformed: BTreeMap<String, u64>,
    /// Messages whose claim conflicted with `claim`.
    pub misrouted_messages: u64,
    /// Summaries whose key does not hash to the shard their batch claims.
    pub summaries_wrong_shard: u64,
    /// Session, merge and link counters.
    #[serde(default)]
    pub counters: ProcessorCounters,
}

/// The counts of a processor's CURVE authenticator (its PULL socket's ZAP handler).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCounters {
    /// Handshakes of listed collectors (`auth_accepted`).
    pub accepted: u64,
    /// Every rejected handshake, unknown key or failed before the key check (`auth_rejected`).
    pub rejected: u64,
    /// Of those, the handshakes that failed before the key check (`auth_rejected_handshake`).
    pub rejected_handshake: u64,
}

/// A processor's counters: totals since it started, except the gauge `flows_open`. Each is
/// `tapflow_processor_<name>_total` in Prometheus, a field of the processor's health point and
/// a key of `counters` in the accounting report, all named by [`ProcessorCounters::named`].
///
/// Fields are declared in the alphabetical order of their names, the order `named` yields them
/// in, but for the last two (see there). On the wire the struct travels as the other structs
/// do (an array); JSON and `Debug` show the named pairs (`None` fields left out), as a map from
/// name to count would.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorCounters {
    /// The CURVE authenticator's counts (`None` on a plain link).
    pub auth: Option<AuthCounters>,
    /// Summaries whose checksum was bad (kept out of the sessions).
    pub bad_checksum: u64,
    /// Collector incarnations declared dead after a silence.
    pub collectors_declared_dead: u64,
    /// Collector incarnations replaced by a newer one of the same name (restarted).
    pub collectors_superseded: u64,
    /// Bytes of the connection-record messages handed to ZeroMQ.
    pub conn_bytes_sent: u64,
    /// Summaries of an epoch the processor set did not have yet (`None`: no processor set).
    pub epoch_unknown: Option<u64>,
    /// Flows that continue a session another processor held before a set switch.
    pub flows_continued: u64,
    pub flows_created: u64,
    /// Flows evicted at the table's cap.
    pub flows_evicted: u64,
    /// Flows closed because a set switch moved them to another processor.
    pub flows_moved_out: u64,
    /// Flows open in the table (a gauge).
    pub flows_open: u64,
    /// Flows that may continue a session an earlier incarnation of this processor held.
    pub flows_split: u64,
    pub history_truncated: u64,
    pub interim_records: u64,
    /// IP-tunnel outer flows past the cap of those remembered for naming tunnel parents.
    pub ip_tunnels_over_cap: u64,
    /// Summaries the merge released early because its buffer was full.
    pub merge_forced: u64,
    /// Summaries the merge released behind an earlier release's time.
    pub merge_late: u64,
    /// Connection records produced (final ones).
    pub records: u64,
    /// Connection records handed to the socket and sent.
    pub records_sent: u64,
    /// Connection records the socket refused (lost).
    pub records_unsent: u64,
    pub summaries_processed: u64,
    pub traffic_keys_over_cap: u64,
    pub traffic_late: u64,
    pub truncated_uncounted: u64,
    pub tunnel_outer_skipped: u64,
    // Declared last, out of name order: on the wire (an array) an account from a processor
    // built before them still decodes, with them `None`.
    /// Messages refused because their CURVE key may not speak for the collector name they
    /// carry (`curve_clients` `names`); `None` in an account when there were none.
    #[serde(default)]
    pub names_refused: Option<u64>,
    /// Messages refused because they would open a collector link past `max_senders`; `None`
    /// in an account when there were none.
    #[serde(default)]
    pub senders_refused: Option<u64>,
    /// Data connections announced by control connections and sent (`UpMessage::Expects`);
    /// `None` from a processor without payload evidence.
    #[serde(default)]
    pub expects_sent: Option<u64>,
    /// Announced data connections whose message the socket refused (lost).
    #[serde(default)]
    pub expects_unsent: Option<u64>,
}

impl ProcessorCounters {
    /// The name of the one gauge among the counters.
    pub const GAUGE: &'static str = "flows_open";

    /// Every counter as (name, value), in name order; `None` fields are left out.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let auth = self
            .auth
            .map(|a| [a.accepted, a.rejected, a.rejected_handshake]);
        let auth = |i: usize| auth.map(|a| a[i]);
        [
            ("auth_accepted", auth(0)),
            ("auth_rejected", auth(1)),
            ("auth_rejected_handshake", auth(2)),
            ("bad_checksum", Some(self.bad_checksum)),
            (
                "collectors_declared_dead",
                Some(self.collectors_declared_dead),
            ),
            ("collectors_superseded", Some(self.collectors_superseded)),
            ("conn_bytes_sent", Some(self.conn_bytes_sent)),
            ("epoch_unknown", self.epoch_unknown),
            ("expects_sent", self.expects_sent),
            ("expects_unsent", self.expects_unsent),
            ("flows_continued", Some(self.flows_continued)),
            ("flows_created", Some(self.flows_created)),
            ("flows_evicted", Some(self.flows_evicted)),
            ("flows_moved_out", Some(self.flows_moved_out)),
            (Self::GAUGE, Some(self.flows_open)),
            ("flows_split", Some(self.flows_split)),
            ("history_truncated", Some(self.history_truncated)),
            ("interim_records", Some(self.interim_records)),
            ("ip_tunnels_over_cap", Some(self.ip_tunnels_over_cap)),
            ("merge_forced", Some(self.merge_forced)),
            ("merge_late", Some(self.merge_late)),
            ("names_refused", self.names_refused),
            ("records", Some(self.records)),
            ("records_sent", Some(self.records_sent)),
            ("records_unsent", Some(self.records_unsent)),
            ("senders_refused", self.senders_refused),
            ("summaries_processed", Some(self.summaries_processed)),
            ("traffic_keys_over_cap", Some(self.traffic_keys_over_cap)),
            ("traffic_late", Some(self.traffic_late)),
            ("truncated_uncounted", Some(self.truncated_uncounted)),
            ("tunnel_outer_skipped", Some(self.tunnel_outer_skipped)),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
    }

    /// The totals: [`ProcessorCounters::named`] without the gauge.
    pub fn totals(&self) -> impl Iterator<Item = (&'static str, u64)> {
        self.named().filter(|&(name, _)| name != Self::GAUGE)
    }

    /// Serialises the named pairs as a map (`#[serde(serialize_with = ...)]`): the JSON of the
    /// accounting report.
    pub fn serialize_named<S: Serializer>(c: &ProcessorCounters, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(c.named())
    }
}

impl fmt::Debug for ProcessorCounters {
    /// As the named pairs, a map from name to count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.named()).finish()
    }
}

/// Connection records from a processor, with the watermark they are complete up to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnBatch {
    pub processor: String,
    pub incarnation: u64,
    /// Every connection whose last packet is older than `watermark_ns - settle_ns` has been
    /// sent, in this or an earlier message.
    pub watermark_ns: u64,
    /// How long after its last packet a connection may still be open (the longest
    /// inactivity timeout plus sweep granularity).
    pub settle_ns: u64,
    pub records: Vec<ConnRecord>,
    /// Tunnel outer connections that started: (outer key, first packet time), so inner
    /// connections' `tunnel_parents` can be named by uid.
    pub tunnel_outers: Vec<(FlowKey, u64)>,
    /// Per-window traffic of windows this processor has finished (its watermark is past them).
    #[serde(default)]
    pub traffic: Vec<TrafficPartial>,
    /// Connection records this processor incarnation handed to its socket before this
    /// message (sent or not): a sequence number, so a receiver that starts mid-stream (a
    /// restarted aggregator) or misses messages counts exactly how many records it lacks.
    #[serde(default)]
    pub records_seq: u64,
}

/// A data connection a control connection announced (FTP `PORT`, `PASV`, `EPRT`, `EPSV`; IRC
/// DCC), sent by the processor as soon as it parsed the announcement, so the aggregator can
/// label the data connection (`ftp-data`) whichever processor holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The announcing (control) connection's uid.
    pub uid: String,
    /// Time of the packet that completed the announcement (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The control connection's originator and responder.
    pub orig_h: Addr,
    pub resp_h: Addr,
    /// The address the data connection goes to; `None`: the announcing side's own address.
    pub addr: Option<Addr>,
    pub port: u16,
    /// The responder announced it (`PASV`/`EPSV` replies); else the originator (`PORT`/`EPRT`).
    pub by_resp: bool,
    /// The service the data connection gets (`ftp-data`).
    pub service: String,
}

impl Expected {
    /// The host the data connection goes to: `addr`, or the announcing side's address.
    pub fn host(&self) -> Addr {
        self.addr.unwrap_or(if self.by_resp {
            self.resp_h
        } else {
            self.orig_h
        })
    }

    /// What the processor makes: a uid, a packet time before 2200, one service name.
    pub fn is_valid(&self) -> bool {
        valid_uid(&self.uid)
            && self.ts_ns <= MAX_TS_NS
            && !self.service.contains(',')
            && valid_service(&self.service)
    }
}

/// Announced data connections from a processor ([`Expected`]), sent as soon as they are parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectBatch {
    pub processor: String,
    pub incarnation: u64,
    pub expects: Vec<Expected>,
}

/// One processor's share of one window's traffic from one collector and protocol: mergeable
/// (the aggregator sums the processors' shares).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficPartial {
    pub window_start_ns: u64,
    pub window_s: u32,
    pub collector: String,
    /// IP protocol number.
    pub proto: u8,
    /// Packets (a tunnelled packet once), their IP bytes, and flows whose first packet it was.
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// False when a collector was declared dead (or restarted) during the window: its share
    /// of the window's traffic is missing.
    #[serde(default = "complete_by_default")]
    pub complete: bool,
}

fn complete_by_default() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorHeartbeat {
    pub processor: String,
    pub incarnation: u64,
    /// Minimum watermark over the live collectors.
    pub watermark_ns: u64,
    /// Collectors this processor has declared dead (silent too long), by name.
    #[serde(default)]
    pub silent_collectors: Vec<String>,
    /// The latest counters each collector reported, for drop-rate watching.
    #[serde(default)]
    pub collectors: Vec<CollectorHealth>,
    /// What this incarnation has received on each collector link so far.
    #[serde(default)]
    pub links: Vec<LinkProgress>,
    /// Flows open in the table (the gauge): the sessions lost if this incarnation dies now.
    #[serde(default)]
    pub flows_open: u64,
    /// This processor's id in the processor set (`None`: a fixed shard).
    #[serde(default)]
    pub member: Option<u16>,
    /// What the aggregator has not acknowledged yet (`None`: delivery not acknowledged).
    /// Boxed: it would make every decoded message larger.
    #[serde(default)]
    pub unacked: Option<Box<Unacked>>,
}

/// What a processor with acknowledged delivery holds that the aggregator has not acknowledged
/// (in memory and in its disk spool), and what it gave up since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unacked {
    pub memory_messages: u64,
    pub memory_bytes: u64,
    pub spool_messages: u64,
    pub spool_bytes: u64,
    /// Messages given up (past `--unacked-max-bytes` without a spool, past the spool's bound,
    /// or found damaged in it) and their bytes (a damaged one's are not known: not counted).
    pub given_up_messages: u64,
    pub given_up_bytes: u64,
}

impl Unacked {
    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.memory_messages + self.spool_messages == 0
    }
}

/// A collector's cumulative read and drop counts, as of its last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorHealth {
    pub sender: String,
    pub packets_read: u64,
    /// What the collector lost to its own limits (full queues, a full reassembly table) plus
    /// kernel and interface drops; not frames it skipped as non-IP or malformed.
    pub drops: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpMessage {
    Heartbeat(ProcessorHeartbeat),
    /// Boxed: an account comes once per processor incarnation, and is several times the size
    /// of the other messages' values.
    Eos(Box<ProcessorAccount>),
    Conns(ConnBatch),
    Expects(ExpectBatch),
}

impl UpMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UpMessage::Heartbeat(h) => encode_frame_named(kind::HEARTBEAT, h, out),
            UpMessage::Eos(a) => encode_frame(kind::EOS, a, out),
            UpMessage::Conns(c) => {
                frame_header(kind::CONNS, out);
                conns_codec::write_batch(c, out);
            }
            UpMessage::Expects(e) => encode_frame(kind::EXPECTS, e, out),
        }
    }

    /// Decodes one processor message; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<UpMessage, DecodeError> {
        let (k, body) = split_frame(bytes)?;
        match k {
            kind::HEARTBEAT => Ok(UpMessage::Heartbeat(decode_body(body)?)),
            kind::EOS => Ok(UpMessage::Eos(decode_body(body)?)),
            kind::CONNS => match conns_codec::read_batch(body) {
                Some(batch) => Ok(UpMessage::Conns(batch)),
                None => Ok(UpMessage::Conns(decode_body(body)?)),
            },
            kind::EXPECTS => Ok(UpMessage::Expects(decode_body(body)?)),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heartbeat as the builds before `unacked` read and wrote it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct HeartbeatBefore {
        processor: String,
        incarnation: u64,
        watermark_ns: u64,
        silent_collectors: Vec<String>,
        collectors: Vec<CollectorHealth>,
        links: Vec<LinkProgress>,
        flows_open: u64,
        member: Option<u16>,
    }

    #[test]
    fn heartbeats_are_read_across_the_field_added_both_ways() {
        let hb = ProcessorHeartbeat {
            processor: "p1".into(),
            incarnation: 7,
            watermark_ns: 42,
            links: vec![LinkProgress {
                sender: "c".into(),
                ..Default::default()
            }],
            flows_open: 3,
            member: Some(1),
            unacked: Some(Box::new(Unacked {
                memory_messages: 2,
                memory_bytes: 300,
                spool_messages: 5,
                spool_bytes: 9000,
                given_up_messages: 1,
                given_up_bytes: 77,
            })),
            ..Default::default()
        };
        let mut buf = Vec::new();
        UpMessage::Heartbeat(hb.clone()).encode(&mut buf);
        assert_eq!(
            UpMessage::decode(&buf),
            Ok(UpMessage::Heartbeat(hb.clone()))
        );
        // An older reader takes it, without the field it does not know.
        let (k, body) = split_frame(&buf).expect("a frame");
        assert_eq!(k, kind::HEARTBEAT);
        let old: HeartbeatBefore = decode_body(body).expect("an older reader takes it");
        assert_eq!(
            (
                old.processor.as_str(),
                old.watermark_ns,
                old.member,
                old.links.len()
            ),
            ("p1", 42, Some(1), 1)
        );
        // As an array (the other messages' encoding) it would refuse it: why a map.
        let mut arr = Vec::new();
        encode_frame(kind::HEARTBEAT, &hb, &mut arr);
        let (_, body) = split_frame(&arr).expect("a frame");
        assert!(decode_body::<HeartbeatBefore>(body).is_err());
        // An older writer's heartbeat (an array, no `unacked`): read, with none.
        encode_frame(kind::HEARTBEAT, &old, &mut arr);
        let without = ProcessorHeartbeat {
            unacked: None,
            ..hb
        };
        assert_eq!(UpMessage::decode(&arr), Ok(UpMessage::Heartbeat(without)));
    }

    #[test]
    fn account_round_trips() {
        let a = ProcessorAccount {
            processor: "p0".into(),
            incarnation: 3,
            claim: Some(ShardClaim {
                epoch: 1,
                shard_count: 2,
                shard: 0,
            }),
            links: vec![LinkAccount {
                sender: "c".into(),
                summaries_received: 10,
                eos_seq: Some(10),
                eos_status: Some(EosStatus::Complete),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut buf = Vec::new();
        UpMessage::Eos(Box::new(a.clone())).encode(&mut buf);
        assert_eq!(UpMessage::decode(&buf), Ok(UpMessage::Eos(Box::new(a))));
        assert_eq!(
            UpMessage::decode(b"TF\x05\x01\x90").map_err(|e| e.reason()),
            Err("unknown_kind")
        );
    }

    #[test]
    fn expects_round_trip_and_are_held_to_what_a_processor_makes() {
        let e = Expected {
            uid: "CAbc123".into(),
            ts_ns: 1_700_000_000_000_000_000,
            orig_h: Addr::from_v4([10, 0, 0, 1]),
            resp_h: Addr::from_v4([10, 0, 0, 2]),
            addr: None,
            port: 2121,
            by_resp: true,
            service: "ftp-data".into(),
        };
        assert!(e.is_valid());
        assert_eq!(e.host(), Addr::from_v4([10, 0, 0, 2]));
        let m = UpMessage::Expects(ExpectBatch {
            processor: "p0".into(),
            incarnation: 1,
            expects: vec![e.clone()],
        });
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(buf[3], kind::EXPECTS);
        assert_eq!(UpMessage::decode(&buf), Ok(m));
        let bad = |f: fn(&mut Expected)| {
            let mut b = e.clone();
            f(&mut b);
            b.is_valid()
        };
        assert!(!bad(|b| b.uid = "X1".into()));
        assert!(!bad(|b| b.service = "ftp-data,ssl".into()));
        assert!(!bad(|b| b.service = "ftp\u{1b}".into()));
        assert!(!bad(|b| b.ts_ns = u64::MAX));
    }

    /// A processor of the build before `names_refused`, `senders_refused`, `expects_sent` and
    /// `expects_unsent` sent its counters four elements shorter: they still decode, `None`.
    #[test]
    fn counters_without_the_refusals_decode() {
        let c = ProcessorCounters {
            records: 7,
            names_refused: Some(1),
            senders_refused: Some(2),
            ..ProcessorCounters::default()
        };
        let full = rmp_serde::to_vec(&c).expect("encode the counters");
        // An array 16 header (0xdc, u16 length) and then its elements: drop the last four
        // (one byte each: two small integers, two nils).
        assert_eq!(full[0], 0xdc);
        assert_eq!(full[full.len() - 2..], [0xc0, 0xc0]);
        let n = u16::from_be_bytes([full[1], full[2]]) - 4;
        let mut old = vec![0xdc];
        old.extend_from_slice(&n.to_be_bytes());
        old.extend_from_slice(&full[3..full.len() - 4]);
        let decoded: ProcessorCounters = rmp_serde::from_slice(&old).expect("decode the counters");
        assert_eq!(
            decoded,
            ProcessorCounters {
                records: 7,
                ..ProcessorCounters::default()
            }
        );
    }

    /// The named pairs: in name order (the order of a map by name), each name once, the
    /// optional ones present exactly when set.
    #[test]
    fn counters_are_named_in_order() {
        let mut c = ProcessorCounters {
            records_sent: 5,
            flows_open: 2,
            ..ProcessorCounters::default()
        };
        let names: Vec<&str> = c.named().map(|(k, _)| k).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 23);
        assert!(!names.contains(&"epoch_unknown") && !names.contains(&"auth_accepted"));
        c.epoch_unknown = Some(0);
        c.auth = Some(AuthCounters {
            accepted: 1,
            rejected: 3,
            rejected_handshake: 2,
        });
        assert_eq!(c.named().count(), 27);
        assert_eq!(c.totals().count(), 26);
        let map: BTreeMap<String, u64> = c.named().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(format!("{c:?}"), format!("{map:?}"));
        assert_eq!(map.get("auth_rejected"), Some(&3));
        assert_eq!(map.get("records_sent"), Some(&5));
    }
}
