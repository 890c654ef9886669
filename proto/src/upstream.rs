//! Processor-to-aggregator messages (frame kinds 16 and up, same framing as [`crate::wire`]).
//!
//! | kind | body |
//! |------|------|
//! | 16 `Heartbeat` | `ProcessorHeartbeat` |
//! | 17 `Eos` | `ProcessorAccount` |
//! | 18 `Conns` | `ConnBatch` |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::CollectorCounters;
use crate::conn::ConnRecord;
use crate::key::FlowKey;
use crate::wire::{decode_body, encode_frame, split_frame, DecodeError, EosStatus};

pub mod kind {
    pub const HEARTBEAT: u8 = 16;
    pub const EOS: u8 = 17;
    pub const CONNS: u8 = 18;
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
    /// Session and merge counters by name (`tapflow_processor_<noun>` without the prefix).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
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
    Eos(ProcessorAccount),
    Conns(ConnBatch),
}

impl UpMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UpMessage::Heartbeat(h) => encode_frame(kind::HEARTBEAT, h, out),
            UpMessage::Eos(a) => encode_frame(kind::EOS, a, out),
            UpMessage::Conns(c) => encode_frame(kind::CONNS, c, out),
        }
    }

    /// Decodes one processor message; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<UpMessage, DecodeError> {
        let (k, body) = split_frame(bytes)?;
        match k {
            kind::HEARTBEAT => Ok(UpMessage::Heartbeat(decode_body(body)?)),
            kind::EOS => Ok(UpMessage::Eos(decode_body(body)?)),
            kind::CONNS => Ok(UpMessage::Conns(decode_body(body)?)),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        UpMessage::Eos(a.clone()).encode(&mut buf);
        assert_eq!(UpMessage::decode(&buf), Ok(UpMessage::Eos(a)));
        assert_eq!(
            UpMessage::decode(b"TF\x02\x01\x90").map_err(|e| e.reason()),
            Err("unknown_kind")
        );
    }
}
