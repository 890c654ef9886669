//! Acknowledged delivery from processors to the aggregator (no IO).
//!
//! A processor that keeps what the aggregator has not yet acknowledged wraps each data message
//! (connection records, announcements, the end-of-stream account) in a [`kind::SEQUENCED`]
//! frame: the frame header, the sequence number (8 bytes, big-endian, from 1 for each
//! processor incarnation), the base (8 bytes: the lowest sequence number the processor still
//! holds, everything before it acknowledged or given up and counted) and the message's own
//! frame. A heartbeat is wrapped too, carrying the
//! sequence number of the last data message handed to the socket before it, so the aggregator
//! can tell a heartbeat whose watermark runs ahead of data it has not received. The aggregator
//! answers with [`AckMessage`]s: per processor incarnation, the highest sequence number that
//! is durable on its side (its write-ahead log), with its own incarnation, so a processor sees
//! a restarted aggregator and sends again what it still holds.

use serde::{Deserialize, Serialize};

use crate::upstream::{kind, UpMessage};
use crate::wire::{decode_body, encode_frame, split_frame, DecodeError, FORMAT_VERSION, MAGIC};

/// A decoded processor message and its delivery sequence number (`None`: sent unsequenced, by
/// a processor that keeps nothing for resending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub message: UpMessage,
    pub seq: Option<Seq>,
}

/// A sequenced message's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    pub seq: u64,
    /// The lowest sequence number its processor still holds.
    pub base: u64,
}

impl Delivered {
    /// Decodes a processor message, sequenced or not; never panics, whatever the bytes. A
    /// sequenced frame inside a sequenced frame is refused (`unknown_kind`).
    pub fn decode(bytes: &[u8]) -> Result<Delivered, DecodeError> {
        let (k, body) = split_frame(bytes)?;
        if k != kind::SEQUENCED {
            return Ok(Delivered {
                message: UpMessage::decode(bytes)?,
                seq: None,
            });
        }
        let (numbers, inner) = body
            .split_first_chunk::<16>()
            .ok_or(DecodeError::Truncated(bytes.len()))?;
        let (seq, base) = numbers.split_at(8);
        let number = |b: &[u8]| b.iter().fold(0u64, |n, &x| (n << 8) | u64::from(x));
        if split_frame(inner)?.0 == kind::SEQUENCED {
            return Err(DecodeError::UnknownKind(kind::SEQUENCED));
        }
        Ok(Delivered {
            message: UpMessage::decode(inner)?,
            seq: Some(Seq {
                seq: number(seq),
                base: number(base),
            }),
        })
    }
}

/// Wraps the encoded message `frame` with its numbers into `out` (cleared first).
pub fn encode_sequenced(seq: Seq, frame: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind::SEQUENCED);
    out.extend_from_slice(&seq.seq.to_be_bytes());
    out.extend_from_slice(&seq.base.to_be_bytes());
    out.extend_from_slice(frame);
}

/// What one processor incarnation has had acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub processor: String,
    pub incarnation: u64,
    /// Every data message up to this sequence number is durable at the aggregator.
    pub seq: u64,
}

/// The aggregator's acknowledgements, published after each group commit of its write-ahead
/// log and periodically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    /// The aggregator incarnation (a new one after each restart).
    pub aggregator: u64,
    pub acks: Vec<Ack>,
}

impl AckMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(kind::ACK, self, out);
    }

    /// Decodes an acknowledgement; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<AckMessage, DecodeError> {
        match split_frame(bytes)? {
            (kind::ACK, body) => decode_body(body),
            (other, _) => Err(DecodeError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ProcessorHeartbeat;

    fn heartbeat() -> UpMessage {
        UpMessage::Heartbeat(ProcessorHeartbeat {
            processor: "p0".into(),
            incarnation: 7,
            watermark_ns: 99,
            ..Default::default()
        })
    }

    #[test]
    fn sequenced_and_plain_messages_decode() {
        let mut frame = Vec::new();
        heartbeat().encode(&mut frame);
        let plain = Delivered::decode(&frame).expect("a plain message decodes");
        assert_eq!(plain.seq, None);
        assert_eq!(plain.message, heartbeat());
        let mut wrapped = Vec::new();
        let numbers = Seq { seq: 42, base: 40 };
        encode_sequenced(numbers, &frame, &mut wrapped);
        let d = Delivered::decode(&wrapped).expect("a sequenced message decodes");
        assert_eq!(d.seq, Some(numbers));
        assert_eq!(d.message, heartbeat());
        // Nested, short or cut: errors, never a panic.
        let mut nested = Vec::new();
        encode_sequenced(Seq { seq: 1, base: 1 }, &wrapped, &mut nested);
        assert_eq!(
            Delivered::decode(&nested).map_err(|e| e.reason()),
            Err("unknown_kind")
        );
        for cut in 0..wrapped.len() {
            assert!(Delivered::decode(&wrapped[..cut]).is_err());
        }
    }

    #[test]
    fn acks_round_trip() {
        let a = AckMessage {
            aggregator: 5,
            acks: vec![Ack {
                processor: "p0".into(),
                incarnation: 7,
                seq: 12,
            }],
        };
        let mut buf = Vec::new();
        a.encode(&mut buf);
        assert_eq!(AckMessage::decode(&buf), Ok(a));
        let mut hb = Vec::new();
        heartbeat().encode(&mut hb);
        assert_eq!(
            AckMessage::decode(&hb).map_err(|e| e.reason()),
            Err("unknown_kind")
        );
    }
}
