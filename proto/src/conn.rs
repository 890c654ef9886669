//! Connection records as Zeek's conn.log has them, and their identifiers: the deterministic
//! `uid` (the same on every processor) and the Community ID v1 flow hash. Shared by the
//! processor, which makes records, and the aggregator, which writes them and resolves tunnel
//! parents to uids.

pub use cid::CommunityId;
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::key::{icmp4_counterpart, icmp6_counterpart, ip_proto};
use crate::{Addr, FlowKey};

mod cid;
mod timing;
mod validate;

pub use timing::{DurStats, Timing};

pub use validate::{
    clean_server_name, valid_service, valid_uid, InvalidRecord, HISTORY_LETTERS, MAX_COUNT,
    MAX_HISTORY, MAX_SERVER_NAME, MAX_SERVICE, MAX_TS_NS,
};

/// Zeek's `conn_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnState {
    /// Connection attempt seen, no reply.
    S0,
    /// Connection established, not terminated.
    S1,
    /// Normal establishment and termination.
    SF,
    /// Connection attempt rejected.
    REJ,
    /// Established, originator closed, no reply from the responder.
    S2,
    /// Established, responder closed, no reply from the originator.
    S3,
    /// Established, originator aborted (RST).
    RSTO,
    /// Responder sent a RST.
    RSTR,
    /// Originator sent a SYN then a RST; no SYN-ACK seen.
    RSTOS0,
    /// Responder sent a SYN-ACK then a RST; no SYN seen.
    RSTRH,
    /// Originator sent a SYN then a FIN; no SYN-ACK seen.
    SH,
    /// Responder sent a SYN-ACK then a FIN; no SYN seen.
    SHR,
    /// Midstream traffic, no SYN seen (and everything else).
    OTH,
}

impl ConnState {
    /// Every state, in declaration order.
    pub const ALL: [ConnState; 13] = [
        ConnState::S0,
        ConnState::S1,
        ConnState::SF,
        ConnState::REJ,
        ConnState::S2,
        ConnState::S3,
        ConnState::RSTO,
        ConnState::RSTR,
        ConnState::RSTOS0,
        ConnState::RSTRH,
        ConnState::SH,
        ConnState::SHR,
        ConnState::OTH,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
        }
    }
}

/// One connection as Zeek's conn.log has it (plus `interim` and `evicted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// First packet's time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// `C` + base62 of the first 96 bits of SHA-1(`FlowKey::to_bytes()` ‖ first packet's
    /// `ts_ns` as 8 little-endian bytes): the same on every processor and in every interim
    /// record of the connection.
    pub uid: CompactString,
    pub orig_h: Addr,
    pub orig_p: u16,
    pub resp_h: Addr,
    pub resp_p: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Last minus first packet time; `None` where Zeek prints `-` (a zero duration).
    pub duration_ns: Option<u64>,
    /// Payload bytes (TCP: from sequence numbers); `None` when `duration_ns` is.
    pub orig_bytes: Option<u64>,
    pub resp_bytes: Option<u64>,
    pub conn_state: ConnState,
    /// `None` when no local networks are configured.
    pub local_orig: Option<bool>,
    pub local_resp: Option<bool>,
    /// Bytes in content gaps (TCP data acknowledged but never seen).
    pub missed_bytes: u64,
    /// Zeek's history letters, in the order the events happened.
    pub history: CompactString,
    pub orig_pkts: u64,
    /// Sum of the IP total lengths of the originator's packets.
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    /// Outer flows this connection was tunnelled in, sorted, deduplicated.
    pub tunnel_parents: Vec<FlowKey>,
    /// Community ID v1, seed 0: `1:` + base64(SHA-1).
    pub community_id: CommunityId,
    /// An interim update of a long connection rather than its final record.
    pub interim: bool,
    /// Ended early because the table was full.
    pub evicted: bool,
    /// The canonical key (carries the VLAN id when VLANs are part of the key).
    pub key: FlowKey,
    /// TCP flags the originator sent, OR-ed over its packets (tapflow extra, for detection).
    #[serde(default)]
    pub orig_tcp_flags: u8,
    /// TCP flags the responder sent, OR-ed.
    #[serde(default)]
    pub resp_tcp_flags: u8,
    /// A connection split by a processor-set switch ([`split`] bits; 0: not split).
    #[serde(default)]
    pub split: u8,
    /// Latency and jitter ([`Timing`]); `None` when nothing in it is defined.
    #[serde(default)]
    pub timing: Option<Box<Timing>>,
    /// Zeek's `service`: the applications confirmed, comma-joined in the order confirmed
    /// (`ftp,ssl`); `None` where Zeek prints `-`.
    #[serde(default)]
    pub service: Option<String>,
    /// TLS SNI, HTTP Host or QUIC SNI (tapflow extra), as sent, made safe by
    /// [`clean_server_name`].
    #[serde(default)]
    pub server_name: Option<String>,
    /// The payload evidence was cut (the collector's flow table was full, or a budget ran out
    /// before the protocol's identifying part was complete): `service` may be missing.
    #[serde(default)]
    pub service_incomplete: bool,
}

/// [`ConnRecord::split`] bits: a connection whose flow moved to another processor at a
/// processor-set switch is closed by the old owner and continued by the new one, each record
/// marked, so the two halves are neither silently split nor double counted.
pub mod split {
    /// Continues a connection another processor closed at a switch (it began before this
    /// record's first packet).
    pub const CONTINUED: u8 = 1;
    /// Closed at a switch: the connection goes on at another processor.
    pub const CLOSED: u8 = 2;

    /// The conn log's `tapflow_split` value.
    pub fn name(bits: u8) -> Option<&'static str> {
        match bits & (CONTINUED | CLOSED) {
            0 => None,
            CONTINUED => Some("continued"),
            CLOSED => Some("closed"),
            _ => Some("continued,closed"),
        }
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `C` + base62 of the first 96 bits (big-endian) of SHA-1(key bytes ‖ `ts_ns` little-endian).
pub fn uid(key: &FlowKey, first_ts_ns: u64) -> CompactString {
    let mut h = Sha1::new();
    h.update(key.to_bytes());
    h.update(first_ts_ns.to_le_bytes());
    let d = h.finalize();
    let v = d[..12]
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    let mut digits = [0u8; 18];
    digits[0] = b'C';
    let n = 1 + base62(v, &mut digits[1..]);
    // Base62 digits and `C` are ASCII.
    CompactString::from_utf8(&digits[..n]).unwrap_or_default()
}

/// 62^10, the largest power of 62 below 2^63.
const BASE62_10: u64 = 839_299_365_868_340_224;

/// Writes `v` (below 2^96) in base 62 at the start of `out` (room for 17 digits), most
/// significant digit first, no leading zeros ("0" for 0); returns the number of digits. One 128-bit division (its remainder by a multiplication, not a second call) splits
/// it into two 64-bit halves whose digits come from divisions by a constant the compiler turns
/// into multiplications (a 128-bit division per digit, 34 per uid, cost more than the rest of
/// the uid).
fn base62(v: u128, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 17];
    let mut n = 0;
    let p = u128::from(BASE62_10);
    let q = v / p;
    let (hi, mut lo) = (q as u64, (v - q * p) as u64);
    if hi > 0 {
        for _ in 0..10 {
            digits[n] = BASE62[(lo % 62) as usize];
            lo /= 62;
            n += 1;
        }
        lo = hi;
    }
    loop {
        digits[n] = BASE62[(lo % 62) as usize];
        n += 1;
        lo /= 62;
        if lo == 0 {
            break;
        }
    }
    for (o, &d) in out.iter_mut().zip(digits[..n].iter().rev()) {
        *o = d;
    }
    n
}

/// Community ID v1 with seed 0 for a connection's directional five-tuple (originator first).
///
/// Endpoints are ordered so the smaller (address, port) comes first, except for one-way ICMP
/// messages (no request/reply counterpart), which keep their direction, as the spec and Zeek do.
/// Ports are hashed for TCP, UDP, SCTP, ICMP and ICMPv6 only.
pub fn community_id(proto: u8, orig: Addr, orig_p: u16, resp: Addr, resp_p: u16) -> CommunityId {
    let has_ports = matches!(
        proto,
        ip_proto::TCP | ip_proto::UDP | 132 | ip_proto::ICMP | ip_proto::ICMPV6
    );
    let one_way = match proto {
        ip_proto::ICMP => icmp4_counterpart(orig_p as u8).is_none(),
        ip_proto::ICMPV6 => icmp6_counterpart(orig_p as u8).is_none(),
        _ => false,
    };
    let (a, ap, b, bp) = if one_way || (orig.as_bytes(), orig_p) <= (resp.as_bytes(), resp_p) {
        (orig, orig_p, resp, resp_p)
    } else {
        (resp, resp_p, orig, orig_p)
    };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(a.as_bytes());
    h.update(b.as_bytes());
    h.update([proto, 0]);
    if has_ports {
        h.update(ap.to_be_bytes());
        h.update(bp.to_be_bytes());
    }
    let mut id = [0u8; 30];
    id[..2].copy_from_slice(b"1:");
    let n = 2 + base64(&h.finalize(), &mut id[2..]);
    // `1:` and base64 digits are ASCII.
    CommunityId::from(std::str::from_utf8(&id[..n]).unwrap_or_default())
}

/// Standard base64 with padding, written at the start of `out` (room for 4 bytes per 3 of
/// `bytes`, rounded up); the number of bytes written.
fn base64(bytes: &[u8], out: &mut [u8]) -> usize {
    let mut at = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out[at] = if i <= chunk.len() {
                BASE64[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            };
            at += 1;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn addr(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap_or(IpAddr::from([0u8; 4])))
    }

    fn check(proto: u8, a: &str, ap: u16, b: &str, bp: u16, want: &str) {
        assert_eq!(
            community_id(proto, addr(a), ap, addr(b), bp),
            want,
            "{proto} {a}:{ap} -> {b}:{bp}"
        );
    }

    /// The spec's and Zeek's `community_id_v1` test vectors (seed 0), both directions.
    #[test]
    fn community_id_vectors() {
        check(
            6,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        );
        check(
            6,
            "5.6.7.8",
            3344,
            "1.2.3.4",
            1122,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        );
        check(
            17,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
        );
        check(
            1,
            "1.2.3.4",
            8,
            "5.6.7.8",
            0,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        );
        check(
            1,
            "5.6.7.8",
            0,
            "1.2.3.4",
            8,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        );
        check(
            58,
            "fe80:1:203:405:607:809:a0b:c0d",
            128,
            "fe80:1011:1213:1415:1617:1819:1a1b:1c1d",
            129,
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
        );
        check(
            46,
            "1.2.3.4",
            0,
            "5.6.7.8",
            0,
            "1:ikv3kmf89luf73WPz1jOs49S768=",
        );
    }

    #[test]
    fn base64_padding() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            let mut out = [0u8; 8];
            let n = base64(input, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).expect("ASCII"), want);
        }
    }

    #[test]
    fn base62_matches_digit_by_digit_division() {
        // The reference: one 128-bit division per digit, as uids were first made.
        fn slow(mut v: u128) -> String {
            let mut d = Vec::new();
            loop {
                d.push(char::from(BASE62[(v % 62) as usize]));
                v /= 62;
                if v == 0 {
                    break;
                }
            }
            d.iter().rev().collect()
        }
        let p = u128::from(BASE62_10);
        let mut cases = vec![0, 1, 61, 62, p - 1, p, p + 1, 62 * p - 1, (1u128 << 96) - 1];
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(1_442_695_040_888_963_407);
            let bits = (x >> 120) as u32 % 97;
            cases.push((x >> 16) & ((1u128 << bits) - 1));
        }
        for v in cases {
            let mut digits = [0u8; 17];
            let n = base62(v, &mut digits);
            assert_eq!(
                std::str::from_utf8(&digits[..n]).expect("base62 digits are ASCII"),
                slow(v),
                "{v}"
            );
        }
    }

    #[test]
    fn uid_is_deterministic_and_distinct() {
        let k = FlowKey {
            proto: 6,
            lo: addr("10.0.0.1"),
            hi: addr("10.0.0.2"),
            lo_port: 1,
            hi_port: 2,
            vlan: 0,
        };
        let a = uid(&k, 1_000);
        assert_eq!(a, uid(&k, 1_000));
        assert_ne!(a, uid(&k, 1_001));
        assert!(a.starts_with('C') && a.len() >= 15 && a.len() <= 18, "{a}");
        assert!(a[1..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
