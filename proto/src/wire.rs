//! The wire format between collectors and processors.
//!
//! Every ZeroMQ message is one frame: `b"TF"`, a format version byte, a kind byte, then a
//! MessagePack body (structs as arrays, `rmp-serde`'s compact form). The header bytes let a
//! receiver reject another version or a stray sender before parsing anything.
//!
//! | kind | body |
//! |------|------|
//! | 1 `Batch` | `[LinkHeader, count (uint32), bin32 of count packed summaries]` ([`crate::packed`]) |
//! | 2 `Heartbeat` | `[LinkHeader, CollectorCounters]` |
//! | 3 `Eos` | `[LinkHeader, EosStatus, CollectorCounters]` |
//!
//! Kinds 16 and up are the processor-to-aggregator messages of [`crate::upstream`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::account::CollectorCounters;
use crate::summary::PacketSummary;

/// The two bytes every tapflow message starts with.
pub const MAGIC: [u8; 2] = *b"TF";
/// The format version this build writes and reads.
/// 5: summaries may carry payload evidence, connection records `service`, `server_name` and
/// `service_incomplete`, and processors send announced connections (`Expects`).
/// 3: a processor account's counters are a struct, [`crate::upstream::ProcessorCounters`] (2: a
/// map from name to count). 2: a batch's summaries are packed records in one `bin` (1: a
/// MessagePack array of arrays).
pub const FORMAT_VERSION: u8 = 5;
/// Messages larger than this are refused before decoding (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Length of the frame header before the MessagePack body.
pub const FRAME_HEADER_LEN: usize = 4;
/// Deepest MessagePack nesting a body may have. tapflow's own messages need 6 (processor account
/// -> links -> link -> counters -> drops); deeper input is refused before it can recurse, since
/// skipping an unknown field recurses once per level (rmp-serde's default limit of 1024 levels
/// overflows a 2 MiB thread stack in an unoptimised build).
pub const MAX_NESTING: usize = 16;

pub mod kind {
    pub const BATCH: u8 = 1;
    pub const HEARTBEAT: u8 = 2;
    pub const EOS: u8 = 3;
}

/// Why a message could not be decoded. Each variant is a counter at the receiver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than the 4-byte frame header")]
    Truncated(usize),
    #[error("message does not start with the tapflow magic bytes")]
    BadMagic,
    #[error("message has format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("message kind {0} is not one this receiver knows")]
    UnknownKind(u8),
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    Oversized(usize),
    #[error("message body is not valid: {0}")]
    Malformed(String),
    #[error("message body has {0} trailing bytes")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// A short stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated(_) => "truncated",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Oversized(_) => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
        }
    }
}

/// Carried by every collector message: who sent it, for which processor set and shard, how many
/// summaries came before it on this link, and how far the sender's packet time has advanced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHeader {
    /// The collector's name (unique per tap; defaults to host/source/pid).
    pub sender: String,
    /// Changes every time the collector starts, so restarted sequence numbers are not gaps.
    pub incarnation: u64,
    /// Version of the processor set the sender shards for.
    pub epoch: u32,
    /// Number of processors the sender shards over (N).
    pub shard_count: u16,
    /// The shard index this link carries (the processor's position in `--processor` order).
    pub shard: u16,
    /// Summaries sent on this link before this message: the receiver's expected next value.
    pub seq: u64,
    /// No later summary from this sender will carry a timestamp below this (ns), except late ones.
    pub watermark_ns: u64,
}

/// How a collector's stream ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EosStatus {
    /// End of the capture file, everything passed on.
    Complete,
    /// Stopped by SIGINT/SIGTERM after flushing.
    Interrupted,
    /// The capture file is damaged; every packet before the damage was passed on.
    Damaged(String),
    /// The capture could not be opened; nothing was read.
    OpenFailed(String),
    /// Capture failed while running (live interface gone, ...).
    Failed(String),
}

impl EosStatus {
    pub fn is_complete(&self) -> bool {
        matches!(self, EosStatus::Complete)
    }
}

/// A decoded collector message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Batch {
        header: LinkHeader,
        summaries: Vec<PacketSummary>,
    },
    Heartbeat {
        header: LinkHeader,
        counters: CollectorCounters,
    },
    Eos {
        header: LinkHeader,
        status: EosStatus,
        counters: CollectorCounters,
    },
}

impl Message {
    pub fn header(&self) -> &LinkHeader {
        match self {
            Message::Batch { header, .. }
            | Message::Heartbeat { header, .. }
            | Message::Eos { header, .. } => header,
        }
    }

    /// Decodes one collector message; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (kind, body) = split_frame(bytes)?;
        match kind {
            kind::BATCH => {
                let (header, summaries) = decode_batch_body(body)?;
                Ok(Message::Batch { header, summaries })
            }
            kind::HEARTBEAT => {
                let (header, counters) = decode_body(body)?;
                Ok(Message::Heartbeat { header, counters })
            }
            kind::EOS => {
                let (header, status, counters) = decode_body(body)?;
                Ok(Message::Eos {
                    header,
                    status,
                    counters,
                })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// MessagePack markers of a batch body: a 3-element array, a uint32, a bin32.
const FIXARRAY_3: u8 = 0x93;
const UINT32: u8 = 0xce;
const BIN32: u8 = 0xc6;

/// Encodes a batch into `out` (cleared first), borrowing the summaries: the header as
/// MessagePack, then the summaries packed ([`crate::packed`]) into one bin32.
pub fn encode_batch(header: &LinkHeader, summaries: &[PacketSummary], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind::BATCH);
    out.push(FIXARRAY_3);
    if let Err(e) = rmp_serde::encode::write(out, header) {
        unreachable!("MessagePack encoding into memory failed: {e}");
    }
    let count = u32::try_from(summaries.len()).unwrap_or(u32::MAX);
    out.push(UINT32);
    out.extend_from_slice(&count.to_be_bytes());
    out.push(BIN32);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    crate::packed::encode(&summaries[..count as usize], out);
    let len = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The body [`encode_batch`] writes, read strictly: anything else is malformed.
fn decode_batch_body(body: &[u8]) -> Result<(LinkHeader, Vec<PacketSummary>), DecodeError> {
    let malformed = |what: &str| DecodeError::Malformed(format!("batch: {what}"));
    let Some((&FIXARRAY_3, mut rest)) = body.split_first() else {
        return Err(malformed("not a 3-element array"));
    };
    let header = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_NESTING);
        LinkHeader::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?
    };
    let be32 = |b: &[u8]| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize)
    };
    let (count, rest) = match rest.split_first() {
        Some((&UINT32, r)) => (
            be32(r).ok_or_else(|| malformed("truncated count"))?,
            &r[4..],
        ),
        _ => return Err(malformed("no uint32 summary count")),
    };
    let (len, rest) = match rest.split_first() {
        Some((&BIN32, r)) => (
            be32(r).ok_or_else(|| malformed("truncated bin length"))?,
            &r[4..],
        ),
        _ => return Err(malformed("no bin32 of summaries")),
    };
    if rest.len() < len {
        return Err(malformed("bin shorter than its length"));
    }
    if rest.len() > len {
        return Err(DecodeError::TrailingBytes(rest.len() - len));
    }
    let summaries = crate::packed::decode(rest, count).map_err(|e| malformed(&e))?;
    Ok((header, summaries))
}

pub fn encode_heartbeat(header: &LinkHeader, counters: &CollectorCounters, out: &mut Vec<u8>) {
    encode_frame(kind::HEARTBEAT, &(header, counters), out);
}

pub fn encode_eos(
    header: &LinkHeader,
    status: &EosStatus,
    counters: &CollectorCounters,
    out: &mut Vec<u8>,
) {
    encode_frame(kind::EOS, &(header, status, counters), out);
}

/// Writes the frame header and `body` as MessagePack into `out` (cleared first).
pub fn encode_frame<T: Serialize + ?Sized>(kind: u8, body: &T, out: &mut Vec<u8>) {
    frame_header(kind, out);
    // Serialising plain data into a Vec cannot fail: no IO, no maps with non-string keys.
    if let Err(e) = rmp_serde::encode::write(out, body) {
        unreachable!("MessagePack encoding into memory failed: {e}");
    }
}

/// As [`encode_frame`], the body's structs as MessagePack maps (field names beside the values)
/// rather than arrays: a reader built before a field was added skips the field it does not
/// know, where an array one element longer than it expects is refused. For messages that gain
/// optional fields and are small and rare (a heartbeat): twice the bytes, read by any reader.
pub fn encode_frame_named<T: Serialize + ?Sized>(kind: u8, body: &T, out: &mut Vec<u8>) {
    frame_header(kind, out);
    // As above: plain data into a Vec.
    if let Err(e) = rmp_serde::encode::write_named(out, body) {
        unreachable!("MessagePack encoding into memory failed: {e}");
    }
}

/// Clears `out` and writes a frame header of `kind` into it (the body follows).
pub fn frame_header(kind: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
}

/// Checks the frame header and returns the kind byte and the body.
pub fn split_frame(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[2] != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(bytes[2]));
    }
    Ok((bytes[3], &bytes[FRAME_HEADER_LEN..]))
}

/// Decodes a MessagePack body that must be consumed entirely.
///
/// Read from the slice itself, so each string is copied once, into its `String` (a reader
/// copies it into a scratch buffer first). That deserializer does not say where it stopped:
/// the body is whole when reading a next marker finds the end; otherwise [`value_len`] (a walk
/// over the markers, decoding nothing) counts the bytes past the value.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_NESTING);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match serde::Deserializer::deserialize_option(&mut de, MarkerLeft) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => match value_len(body) {
            Some(len) if len < body.len() => Err(DecodeError::TrailingBytes(body.len() - len)),
            _ => Err(DecodeError::Malformed("the body's end is not found".into())),
        },
    }
}

/// Reads one marker and nothing past it: a deserializer's `deserialize_option` fails only if
/// no marker is left.
struct MarkerLeft;

impl<'de> serde::de::Visitor<'de> for MarkerLeft {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any marker")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Ok(())
    }
}

/// The length in bytes of the MessagePack value `bytes` starts with; `None` if it runs past
/// the end or holds the never-used marker 0xc1. Iterative (a count of values still to skip),
/// so any nesting costs no stack, and linear in `bytes`: every value takes at least one byte.
fn value_len(bytes: &[u8]) -> Option<usize> {
    let be = |at: usize, n: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        Some(b.iter().fold(0usize, |v, &x| v << 8 | usize::from(x)))
    };
    let (mut at, mut pending) = (0usize, 1u64);
    while pending > 0 {
        pending -= 1;
        let m = *bytes.get(at)?;
        at += 1;
        // (bytes after the marker, values inside)
        let (skip, inner) = match m {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (usize::from(m & 0x1f), 0),
            0xc1 => return None,
            // bin8/16/32, str8/16/32: a length, then the bytes.
            0xc4 | 0xd9 => (1 + be(at, 1)?, 0),
            0xc5 | 0xda => (2 + be(at, 2)?, 0),
            0xc6 | 0xdb => (4 + be(at, 4)?, 0),
            // ext8/16/32: a length, a type byte, the bytes.
            0xc7 => (2 + be(at, 1)?, 0),
            0xc8 => (3 + be(at, 2)?, 0),
            0xc9 => (5 + be(at, 4)?, 0),
            0xca | 0xd2 => (4, 0),
            0xcb | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce => (4, 0),
            0xcf => (8, 0),
            // fixext 1/2/4/8/16: a type byte, the bytes.
            0xd4..=0xd8 => (1 + (1 << (m - 0xd4)), 0),
            0xdc => (2, be(at, 2)? as u64),
            0xdd => (4, be(at, 4)? as u64),
            0xde => (2, 2 * be(at, 2)? as u64),
            0xdf => (4, 2 * be(at, 4)? as u64),
        };
        at = at.checked_add(skip).filter(|&end| end <= bytes.len())?;
        pending = pending.checked_add(inner)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Addr, FiveTuple};
    use crate::summary::flag;

    fn header() -> LinkHeader {
        LinkHeader {
            sender: "tap-a".into(),
            incarnation: 7,
            epoch: 1,
            shard_count: 3,
            shard: 2,
            seq: 1000,
            watermark_ns: 1_700_000_000_000_000_000,
        }
    }

    fn summary(i: u32) -> PacketSummary {
        let t = FiveTuple {
            proto: 6,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([192, 168, 7, 200]),
            sport: 40000 + (i as u16 % 1000),
            dport: 443,
        };
        let mut s = PacketSummary {
            ts_ns: 1_700_000_000_123_456_789 + u64::from(i) * 1000,
            ip_len: 1500,
            payload_len: 1448,
            tcp_flags: 0x18,
            seq: 0x8000_0000 + i,
            ack: 0x4000_0000,
            window: 501,
            ..PacketSummary::default()
        };
        s.set_tuple(&t, 0);
        s
    }

    fn check_decode_err(bytes: &[u8], expected: &str) {
        match Message::decode(bytes) {
            Err(e) => assert_eq!(e.reason(), expected, "{e}"),
            Ok(m) => panic!("decoded {m:?}, expected {expected}"),
        }
    }

    #[test]
    fn batch_round_trips() {
        let summaries: Vec<_> = (0..100).map(summary).collect();
        let mut buf = Vec::new();
        encode_batch(&header(), &summaries, &mut buf);
        let m = Message::decode(&buf).expect("decodes");
        assert_eq!(
            m,
            Message::Batch {
                header: header(),
                summaries
            }
        );
    }

    #[test]
    fn tunnel_parent_and_v6_round_trip() {
        let mut s = summary(1);
        s.flags |= flag::TUNNEL_INNER;
        s.tunnel_parent = Some(
            FiveTuple {
                proto: 17,
                src: Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
                dst: Addr::from_v4([1, 2, 3, 4]),
                sport: 4789,
                dport: 5555,
            }
            .key(0)
            .0,
        );
        let mut buf = Vec::new();
        encode_batch(&header(), &[s.clone()], &mut buf);
        assert_eq!(
            Message::decode(&buf),
            Ok(Message::Batch {
                header: header(),
                summaries: vec![s]
            })
        );
    }

    #[test]
    fn eos_and_heartbeat_round_trip() {
        let mut counters = CollectorCounters {
            packets_read: 5,
            summaries_sent: vec![1, 2, 3],
            ..Default::default()
        };
        counters.drops.insert("non_ip".into(), 2);
        let mut buf = Vec::new();
        for status in [
            EosStatus::Complete,
            EosStatus::Interrupted,
            EosStatus::Damaged("cut".into()),
            EosStatus::OpenFailed("no".into()),
        ] {
            encode_eos(&header(), &status, &counters, &mut buf);
            assert_eq!(
                Message::decode(&buf),
                Ok(Message::Eos {
                    header: header(),
                    status,
                    counters: counters.clone()
                })
            );
        }
        encode_heartbeat(&header(), &counters, &mut buf);
        assert_eq!(
            Message::decode(&buf),
            Ok(Message::Heartbeat {
                header: header(),
                counters
            })
        );
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let mut buf = Vec::new();
        encode_batch(&header(), &[summary(0), summary(1)], &mut buf);
        check_decode_err(&[], "truncated");
        check_decode_err(b"TF", "truncated");
        check_decode_err(b"XX\x01\x01\x90", "bad_magic");
        // Version 1 (summaries as MessagePack arrays) is refused, not misread.
        check_decode_err(b"TF\x01\x01\x90", "unknown_version");
        // Version 2 (a processor account's counters as a map) too.
        check_decode_err(b"TF\x02\x01\x90", "unknown_version");
        // Version 3 (conn records without timing) too.
        check_decode_err(b"TF\x03\x01\x90", "unknown_version");
        // Version 4 (no payload evidence, no service) too.
        check_decode_err(b"TF\x04\x01\x90", "unknown_version");
        check_decode_err(b"TF\x06\x01\x90", "unknown_version");
        check_decode_err(b"TF\x05\x09\x90", "unknown_kind");
        check_decode_err(&buf[..buf.len() - 3], "malformed");
        let mut long = buf.clone();
        long.push(0xc0);
        check_decode_err(&long, "trailing_bytes");
        check_decode_err(&vec![0u8; MAX_MESSAGE_BYTES + 1], "oversized");
        // A huge claimed array length with nothing behind it must not allocate or panic.
        check_decode_err(b"TF\x05\x01\x92\xdd\xff\xff\xff\xff", "malformed");
    }

    /// The reader-based decoding `decode_body` replaced: its trailing-bytes check is the
    /// reference for `value_len`.
    fn decode_body_by_reader<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
        let mut rest = body;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_NESTING);
        let value = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(value)
    }

    /// Every cut, every byte overwritten with markers of each family, bytes appended: the
    /// same value or the same error reason as reading through a reader.
    #[test]
    fn decode_body_agrees_with_a_reader_on_damaged_bodies() {
        type Eos = (LinkHeader, EosStatus, CollectorCounters);
        let mut counters = CollectorCounters {
            packets_read: 5,
            summaries_sent: vec![1, 2, 300_000],
            ..Default::default()
        };
        counters.drops.insert("non_ip".into(), 2);
        let mut buf = Vec::new();
        encode_eos(
            &header(),
            &EosStatus::Damaged("cut".into()),
            &counters,
            &mut buf,
        );
        let body = buf[FRAME_HEADER_LEN..].to_vec();
        let mut cases = vec![body.clone()];
        for i in 0..=body.len() {
            cases.push(body[..i].to_vec());
            for b in [
                0x00, 0x01, 0x7f, 0x80, 0x93, 0xa3, 0xc0, 0xc1, 0xc4, 0xcc, 0xcf,
            ] {
                let mut c = body.clone();
                if i < c.len() {
                    c[i] = b;
                    cases.push(c);
                }
            }
            for b in [0x00, 0x81, 0x91, 0xc0, 0xd4, 0xd9, 0xdc, 0xdd, 0xde, 0xff] {
                let mut c = body.clone();
                c.insert(i, b);
                cases.push(c);
            }
        }
        for c in &cases {
            let (new, old) = (decode_body::<Eos>(c), decode_body_by_reader::<Eos>(c));
            match (&new, &old) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason(), "{c:02x?}"),
                _ => panic!("{new:?} against {old:?} for {c:02x?}"),
            }
        }
    }

    #[test]
    fn value_len_walks_every_marker() {
        let check = |bytes: &[u8], want: Option<usize>| {
            assert_eq!(value_len(bytes), want, "{bytes:02x?}");
        };
        check(&[0x05, 0xff], Some(1));
        check(&[0xe0], Some(1));
        check(&[0xc0, 0xc2, 0xc3], Some(1));
        check(&[0xc1], None);
        check(&[0xa3, b'a', b'b', b'c', 0], Some(4));
        check(&[0xa3, b'a'], None);
        check(&[0xd9, 2, b'a', b'b'], Some(4));
        check(&[0xda, 0, 1, b'a'], Some(4));
        check(&[0xdb, 0, 0, 0, 1, b'a'], Some(6));
        check(&[0xc4, 1, 9], Some(3));
        check(&[0xc5, 0, 1, 9], Some(4));
        check(&[0xc6, 0, 0, 0, 0], Some(5));
        check(&[0xc6, 0xff, 0xff, 0xff, 0xff], None);
        check(&[0xc7, 1, 3, 9], Some(4));
        check(&[0xc8, 0, 1, 3, 9], Some(5));
        check(&[0xc9, 0, 0, 0, 1, 3, 9], Some(7));
        check(&[0xd4, 3, 9], Some(3));
        check(
            &[0xd8, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Some(18),
        );
        check(&[0xca, 0, 0, 0, 0], Some(5));
        check(&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0], Some(9));
        check(&[0xcc, 1, 0xcd, 1, 2], Some(2));
        check(&[0xd1, 1, 2], Some(3));
        check(&[0xce, 1, 2, 3, 4], Some(5));
        check(&[0xd3, 1, 2, 3, 4, 5, 6, 7, 8], Some(9));
        check(&[0x92, 0x01, 0x91, 0xc0, 0x07], Some(4));
        check(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x90], Some(7));
        check(&[0xdc, 0, 2, 1, 2], Some(5));
        check(&[0xdd, 0, 0, 0, 1, 1], Some(6));
        check(&[0xde, 0, 1, 1, 2], Some(5));
        check(&[0xdf, 0, 0, 0, 1, 1, 2], Some(7));
        check(&[0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2], None);
        check(&[], None);
        // Nesting deeper than any stack: no recursion.
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 1 << 20).chain([0xc0]).collect();
        check(&deep, Some(deep.len()));
    }

    #[test]
    fn summaries_are_compact() {
        let summaries: Vec<_> = (0..1000).map(summary).collect();
        let mut buf = Vec::new();
        encode_batch(&header(), &summaries, &mut buf);
        let per = buf.len() as f64 / summaries.len() as f64;
        // An IPv4 TCP summary: ~9 ts + ~20 key + ~22 counters/flags/seq/ack + 1 parent.
        assert!(per < 64.0, "{per} bytes per summary");
    }
}
