//! What a connection record from the wire may contain (sans-IO).
//!
//! A record reaches the aggregator in a message anyone who can send to it may have written (a
//! local user with `--plain`, a holder of a processor key) or a bit flip may have damaged. Its
//! strings go into JSON lines and InfluxDB fields, so each is held to what the processor
//! makes of it, and its times and counts to what a capture can give:
//!
//! | field            | valid                                                                 |
//! |------------------|-----------------------------------------------------------------------|
//! | `uid`            | `C` + 1 to 17 base62 digits ([`super::uid`]: 96 bits in base62)       |
//! | `history`        | at most [`MAX_HISTORY`] letters of [`HISTORY_LETTERS`]                |
//! | `community_id`   | `1:` + 27 base64 characters + `=` ([`super::community_id`]: SHA-1)    |
//! | `tunnel_parents` | sorted and distinct, as the processor sends them                      |
//! | `ts_ns`, `duration_ns` | first and last packet before 2200-01-01 ([`MAX_TS_NS`])         |
//! | counts           | each at most 2^53 ([`MAX_COUNT`]); IP bytes at most `u32::MAX` a packet |
//! | `split`          | only the [`super::split`] bits                                        |
//! | `service`        | at most [`MAX_SERVICE`] bytes: comma-joined names of `a-z0-9_-`       |
//! | `server_name`    | 1 to [`MAX_SERVER_NAME`] bytes, no control character                  |
//! | `timing` times   | each, and each set's sum (gaps and one direction's round trips do not  |
//! |                  | overlap), at most [`MAX_TS_NS`]; min <= max <= sum <= n*max,           |
//! |                  | n*min <= sum,                                                         |
//! |                  | sum*min <= sum_sq <= sum*max (reason `time`)                           |
//! | `timing` counts  | inter-arrival gaps fewer than the direction's packets; round trips at  |
//! |                  | most the acknowledging direction's packets (reason `count`)            |
//!
//! 2^53 is the largest integer a JSON reader keeping numbers as doubles reads exactly; it is
//! 9 PB, far past any connection's bytes or packets. A packet's IP length is a `u32` in a
//! summary, so IP bytes above `pkts * u32::MAX` cannot come from packets. Nothing bounds a
//! payload byte count by its packets: TCP's comes from sequence numbers, and Zeek's can be far
//! larger than what was captured.

use thiserror::Error;

use super::{split, ConnRecord, DurStats, Timing};

/// 2200-01-01T00:00:00Z in ns since the Unix epoch: no packet time may be later.
pub const MAX_TS_NS: u64 = 7_258_118_400 * 1_000_000_000;
/// The largest count a record may carry (2^53).
pub const MAX_COUNT: u64 = 1 << 53;
/// History letters a record may carry (the processor keeps 256 at most).
pub const MAX_HISTORY: usize = 256;
/// Zeek's history letters (originator upper case, responder lower case), `^` (direction
/// flipped) and tapflow's `X` (too many tunnel changes).
pub const HISTORY_LETTERS: &[u8] = b"^SHADFRCGTWIQXshadfrcgtwiqx";
/// Bytes a `service` value may have (Zeek's longest combinations are a few names).
pub const MAX_SERVICE: usize = 128;
/// Bytes a `server_name` may have (a DNS name is at most 253).
pub const MAX_SERVER_NAME: usize = 255;
/// Base62 digits of a uid: 96 bits need at most 17.
const MAX_UID_DIGITS: usize = 17;
/// Base64 of a SHA-1 digest: 27 characters and one `=`.
const COMMUNITY_ID_DIGITS: usize = 27;

/// What is wrong with a record: the first field found invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Error)]
pub enum InvalidRecord {
    #[error("uid is not `C` + 1 to 17 base62 digits")]
    Uid,
    #[error("history holds a character that is not a history letter, or more than 256")]
    History,
    #[error("community_id is not `1:` + 28 characters of padded base64")]
    CommunityId,
    #[error("tunnel parents are not sorted and distinct")]
    TunnelParents,
    #[error("first or last packet time after 2200-01-01")]
    Time,
    #[error("a count above 2^53, or more IP bytes than its packets can carry")]
    Count,
    #[error("split holds bits other than `continued` and `closed`")]
    Split,
    #[error("service is not comma-joined names of a-z, 0-9, `_` and `-` (at most 128 bytes)")]
    Service,
    #[error("server_name is empty, longer than 255 bytes or holds a control character")]
    ServerName,
}

impl InvalidRecord {
    /// Every reason, in a fixed order.
    pub const ALL: [InvalidRecord; 9] = [
        InvalidRecord::Uid,
        InvalidRecord::History,
        InvalidRecord::CommunityId,
        InvalidRecord::TunnelParents,
        InvalidRecord::Time,
        InvalidRecord::Count,
        InvalidRecord::Split,
        InvalidRecord::Service,
        InvalidRecord::ServerName,
    ];

    /// The reason's name in reports and metrics: the field it is about.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidRecord::Uid => "uid",
            InvalidRecord::History => "history",
            InvalidRecord::CommunityId => "community_id",
            InvalidRecord::TunnelParents => "tunnel_parents",
            InvalidRecord::Time => "time",
            InvalidRecord::Count => "count",
            InvalidRecord::Split => "split",
            InvalidRecord::Service => "service",
            InvalidRecord::ServerName => "server_name",
        }
    }
}

impl ConnRecord {
    /// Checks what the record may contain (see the module's table); the first invalid field
    /// is the error.
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if !valid_uid(&self.uid) {
            return Err(InvalidRecord::Uid);
        }
        if self.history.len() > MAX_HISTORY || !all_in(self.history.as_bytes(), HISTORY) {
            return Err(InvalidRecord::History);
        }
        if !valid_community_id(&self.community_id) {
            return Err(InvalidRecord::CommunityId);
        }
        if !self.tunnel_parents.windows(2).all(|w| w[0] < w[1]) {
            return Err(InvalidRecord::TunnelParents);
        }
        let last = self.ts_ns.checked_add(self.duration_ns.unwrap_or(0));
        if self.ts_ns > MAX_TS_NS || last.is_none_or(|t| t > MAX_TS_NS) {
            return Err(InvalidRecord::Time);
        }
        if let Some(t) = &self.timing {
            if !timing_times_valid(t) {
                return Err(InvalidRecord::Time);
            }
        }
        if !self.counts_valid() || !self.timing_counts_valid() {
            return Err(InvalidRecord::Count);
        }
        if self.split & !(split::CONTINUED | split::CLOSED) != 0 {
            return Err(InvalidRecord::Split);
        }
        if self.service.as_deref().is_some_and(|s| !valid_service(s)) {
            return Err(InvalidRecord::Service);
        }
        if self
            .server_name
            .as_deref()
            .is_some_and(|s| !valid_server_name(s))
        {
            return Err(InvalidRecord::ServerName);
        }
        Ok(())
    }

    fn counts_valid(&self) -> bool {
        let ip_bytes_fit =
            |pkts: u64, bytes: u64| bytes <= pkts.saturating_mul(u64::from(u32::MAX));
        [
            self.orig_pkts,
            self.resp_pkts,
            self.orig_ip_bytes,
            self.resp_ip_bytes,
            self.orig_bytes.unwrap_or(0),
            self.resp_bytes.unwrap_or(0),
            self.missed_bytes,
        ]
        .iter()
        .all(|&n| n <= MAX_COUNT)
            && ip_bytes_fit(self.orig_pkts, self.orig_ip_bytes)
            && ip_bytes_fit(self.resp_pkts, self.resp_ip_bytes)
    }
}

impl ConnRecord {
    fn timing_counts_valid(&self) -> bool {
        let Some(t) = &self.timing else {
            return true;
        };
        t.orig_iat.n <= self.orig_pkts.saturating_sub(1)
            && t.resp_iat.n <= self.resp_pkts.saturating_sub(1)
            && t.orig_ack_rtt.n <= self.resp_pkts
            && t.resp_ack_rtt.n <= self.orig_pkts
    }
}

/// Every time of `t` at most [`MAX_TS_NS`], and each set's statistics consistent.
fn timing_times_valid(t: &Timing) -> bool {
    let stats_ok = |s: &DurStats| {
        let (n, sum, min, max) = (
            u128::from(s.n),
            u128::from(s.sum),
            u128::from(s.min),
            u128::from(s.max),
        );
        s.n == 0
            || (s.min <= s.max
                && s.max <= s.sum
                && s.sum <= MAX_TS_NS
                && n * min <= sum
                && sum <= n * max
                && sum.saturating_mul(min) <= s.sum_sq
                && s.sum_sq <= sum.saturating_mul(max))
    };
    [t.tcp_synack_ns, t.tcp_ackdat_ns]
        .iter()
        .all(|v| v.is_none_or(|v| v <= MAX_TS_NS))
        && [&t.orig_iat, &t.resp_iat, &t.orig_ack_rtt, &t.resp_ack_rtt]
            .into_iter()
            .all(stats_ok)
}

/// One or more names of `a-z0-9_-`, comma-joined, at most [`MAX_SERVICE`] bytes: Zeek's
/// `service` (and an announced connection's service, one name).
pub fn valid_service(s: &str) -> bool {
    s.len() <= MAX_SERVICE
        && s.split(',').all(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// 1 to [`MAX_SERVER_NAME`] bytes without a control character.
fn valid_server_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SERVER_NAME && !s.chars().any(char::is_control)
}

/// A server name as sent (TLS SNI, HTTP Host) made valid: control characters written as
/// Zeek writes them (`\xNN`; beyond Latin-1, U+FFFD), cut at [`MAX_SERVER_NAME`] bytes on a
/// character boundary; `None` when nothing is left.
pub fn clean_server_name(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_SERVER_NAME));
    for c in raw.chars() {
        let piece = if !c.is_control() {
            c.to_string()
        } else if let Ok(b) = u8::try_from(u32::from(c)) {
            format!("\\x{b:02x}")
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        };
        if out.len() + piece.len() > MAX_SERVER_NAME {
            break;
        }
        out.push_str(&piece);
    }
    (!out.is_empty()).then_some(out)
}

/// `C` + 1 to 17 base62 digits.
pub fn valid_uid(uid: &str) -> bool {
    uid.strip_prefix('C').is_some_and(|digits| {
        (1..=MAX_UID_DIGITS).contains(&digits.len()) && all_in(digits.as_bytes(), BASE62)
    })
}

/// `1:` + 27 base64 characters + `=`.
fn valid_community_id(id: &str) -> bool {
    id.strip_prefix("1:")
        .and_then(|rest| rest.strip_suffix('='))
        .is_some_and(|digits| {
            digits.len() == COMMUNITY_ID_DIGITS && all_in(digits.as_bytes(), BASE64)
        })
}

/// Byte classes of the checks above: base62 digits (uid), base64 digits (community ID),
/// history letters. One table lookup a byte, where the checks compared each byte with every
/// letter (history) or several ranges (ids).
const BASE62: u8 = 1;
const BASE64: u8 = 2;
const HISTORY: u8 = 4;
static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] |= BASE62 | BASE64;
        }
        if c == b'+' || c == b'/' {
            t[b] |= BASE64;
        }
        b += 1;
    }
    let mut i = 0;
    while i < HISTORY_LETTERS.len() {
        t[HISTORY_LETTERS[i] as usize] |= HISTORY;
        i += 1;
    }
    t
}

/// Every byte of `s` in `class` (one bit); no exit before the end, so no branch a byte.
fn all_in(s: &[u8], class: u8) -> bool {
    s.iter().fold(class, |acc, &b| acc & CLASS[usize::from(b)]) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{community_id, uid, ConnState};
    use crate::{Addr, FiveTuple};

    #[test]
    fn byte_classes_are_the_predicates() {
        for b in 0..=255u8 {
            let s = [b];
            assert_eq!(all_in(&s, BASE62), b.is_ascii_alphanumeric(), "{b}");
            assert_eq!(
                all_in(&s, BASE64),
                b.is_ascii_alphanumeric() || b == b'+' || b == b'/',
                "{b}"
            );
            assert_eq!(all_in(&s, HISTORY), HISTORY_LETTERS.contains(&b), "{b}");
            assert_eq!(all_in(&[b'a', b, b'Z'], BASE62), b.is_ascii_alphanumeric());
        }
        assert!(all_in(b"", HISTORY), "an empty string is all in");
    }

    fn valid() -> ConnRecord {
        let t = FiveTuple {
            proto: 6,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            sport: 40_000,
            dport: 80,
        };
        let key = t.key(0).0;
        let ts = 1_700_000_000_000_000_000;
        ConnRecord {
            ts_ns: ts,
            uid: uid(&key, ts),
            orig_h: t.src,
            orig_p: t.sport,
            resp_h: t.dst,
            resp_p: t.dport,
            proto: 6,
            duration_ns: Some(1_000_000),
            orig_bytes: Some(10),
            resp_bytes: Some(20),
            conn_state: ConnState::SF,
            local_orig: None,
            local_resp: None,
            missed_bytes: 0,
            history: "^ShADadFfCcGgTtWwIiQqRrXx".into(),
            orig_pkts: 5,
            orig_ip_bytes: 300,
            resp_pkts: 4,
            resp_ip_bytes: 250,
            tunnel_parents: vec![],
            community_id: community_id(6, t.src, t.sport, t.dst, t.dport),
            interim: false,
            evicted: false,
            key,
            orig_tcp_flags: 0,
            resp_tcp_flags: 0,
            split: split::CONTINUED | split::CLOSED,
            timing: None,
            service: Some("ftp,ssl".into()),
            server_name: Some("www.example.com:8080".into()),
            service_incomplete: true,
        }
    }

    /// `change` applied to a valid record gives `want`.
    fn check(change: impl FnOnce(&mut ConnRecord), want: Result<(), InvalidRecord>) {
        let mut r = valid();
        change(&mut r);
        assert_eq!(r.validate(), want, "{r:?}");
    }

    #[test]
    fn records_as_the_processor_makes_them_are_valid() {
        check(|_| {}, Ok(()));
        check(|r| r.history.clear(), Ok(()));
        check(|r| r.uid = "C0".into(), Ok(()));
        check(|r| r.uid = format!("C{}", "z".repeat(17)).into(), Ok(()));
        check(|r| r.ts_ns = 0, Ok(()));
        check(|r| (r.ts_ns, r.duration_ns) = (MAX_TS_NS, None), Ok(()));
        check(|r| r.ts_ns = MAX_TS_NS - 1_000_000, Ok(()));
        check(|r| r.history = "S".repeat(MAX_HISTORY).into(), Ok(()));
        check(
            |r| (r.orig_pkts, r.orig_ip_bytes) = (1, u64::from(u32::MAX)),
            Ok(()),
        );
        check(|r| r.orig_bytes = Some(MAX_COUNT), Ok(()));
        check(|r| r.tunnel_parents = vec![r.key], Ok(()));
        check(|r| r.service = Some("ldap_tcp,ftp-data".into()), Ok(()));
        check(|r| r.service = Some("a".repeat(MAX_SERVICE)), Ok(()));
        check(
            |r| r.server_name = Some("é".repeat(MAX_SERVER_NAME / 2)),
            Ok(()),
        );
        check(|r| (r.service, r.server_name) = (None, None), Ok(()));
    }

    #[test]
    fn forged_or_damaged_fields_are_named() {
        let forged = "Cfake\",\"id.orig_h\":\"6.6.6.6\"}\n{\"ts\":1,\"uid\":\"INJECTED\"";
        check(|r| r.uid = forged.into(), Err(InvalidRecord::Uid));
        check(|r| r.uid = "C\u{18}abc".into(), Err(InvalidRecord::Uid));
        check(|r| r.uid = "C".into(), Err(InvalidRecord::Uid));
        check(|r| r.uid = "Dabc".into(), Err(InvalidRecord::Uid));
        check(
            |r| r.uid = format!("C{}", "z".repeat(18)).into(),
            Err(InvalidRecord::Uid),
        );
        check(
            |r| r.history = "Sh\u{1b}[31m".into(),
            Err(InvalidRecord::History),
        );
        check(|r| r.history = "S\"".into(), Err(InvalidRecord::History));
        check(
            |r| r.history = "S".repeat(MAX_HISTORY + 1).into(),
            Err(InvalidRecord::History),
        );
        check(
            |r| r.community_id = "1:x".into(),
            Err(InvalidRecord::CommunityId),
        );
        check(
            |r| r.community_id = Default::default(),
            Err(InvalidRecord::CommunityId),
        );
        check(
            |r| r.community_id = "1:wCb3OG7yAFWelaUydu0D+125CL\"=".into(),
            Err(InvalidRecord::CommunityId),
        );
        check(
            |r| r.tunnel_parents = vec![r.key, r.key],
            Err(InvalidRecord::TunnelParents),
        );
        check(|r| r.ts_ns = MAX_TS_NS + 1, Err(InvalidRecord::Time));
        check(|r| r.duration_ns = Some(u64::MAX), Err(InvalidRecord::Time));
        check(|r| r.resp_pkts = MAX_COUNT + 1, Err(InvalidRecord::Count));
        check(|r| r.missed_bytes = u64::MAX, Err(InvalidRecord::Count));
        check(|r| r.orig_ip_bytes = 1 << 52, Err(InvalidRecord::Count));
        check(|r| r.split = 4, Err(InvalidRecord::Split));
        for bad in ["", "http,", ",ssl", "HTTP", "ssl\n", "dns\",\"x", "h t"] {
            check(
                |r| r.service = Some(bad.into()),
                Err(InvalidRecord::Service),
            );
        }
        check(
            |r| r.service = Some("a".repeat(MAX_SERVICE + 1)),
            Err(InvalidRecord::Service),
        );
        for bad in [String::new(), "a\u{1b}[31m".into(), "x".repeat(256)] {
            check(
                |r| r.server_name = Some(bad),
                Err(InvalidRecord::ServerName),
            );
        }
    }

    #[test]
    fn server_names_are_cleaned_to_valid_ones() {
        assert_eq!(clean_server_name(""), None);
        assert_eq!(clean_server_name("a.example"), Some("a.example".into()));
        assert_eq!(
            clean_server_name("a\0b\u{7f}\u{85}"),
            Some("a\\x00b\\x7f\\x85".into())
        );
        let long = clean_server_name(&"é".repeat(300)).expect("a long name is cut, not refused");
        assert_eq!(long.len(), MAX_SERVER_NAME - 1);
        let cut = clean_server_name(&format!("{}\u{1}", "x".repeat(252)));
        assert_eq!(cut.map(|s| s.len()), Some(252));
        for raw in ["\u{1b}[2J", "ok", "\u{9b}1m", &"\n".repeat(100)] {
            let c = clean_server_name(raw).expect("something is left");
            assert!(valid_server_name(&c), "{c:?}");
        }
    }

    fn stats(v: &[u64]) -> DurStats {
        let mut s = DurStats::default();
        v.iter().for_each(|&x| s.add(x));
        s
    }

    #[test]
    fn timing_is_held_to_its_packets_and_times() {
        let t = || {
            Box::new(Timing {
                tcp_synack_ns: Some(1_000),
                tcp_ackdat_ns: Some(MAX_TS_NS),
                orig_iat: stats(&[1, 2, 3, 4]),
                resp_iat: stats(&[5, 7, 9]),
                orig_ack_rtt: stats(&[10; 4]),
                resp_ack_rtt: stats(&[MAX_TS_NS / 5; 5]),
                rtt_cross_tap: true,
            })
        };
        check(|r| r.timing = Some(t()), Ok(()));
        let with = |f: fn(&mut Timing)| {
            move |r: &mut ConnRecord| {
                let mut t = t();
                f(&mut t);
                r.timing = Some(t);
            }
        };
        check(
            with(|t| t.tcp_synack_ns = Some(MAX_TS_NS + 1)),
            Err(InvalidRecord::Time),
        );
        check(
            with(|t| t.orig_iat.max = MAX_TS_NS + 1),
            Err(InvalidRecord::Time),
        );
        check(with(|t| t.orig_iat.min = 5), Err(InvalidRecord::Time));
        check(with(|t| t.resp_iat.sum = 100), Err(InvalidRecord::Time));
        check(with(|t| t.resp_iat.sum_sq = 1), Err(InvalidRecord::Time));
        // 5 originator packets: at most 4 gaps; 4 responder packets: at most 4 round trips.
        check(
            with(|t| t.orig_iat = stats(&[1; 5])),
            Err(InvalidRecord::Count),
        );
        check(
            with(|t| t.orig_ack_rtt = stats(&[1; 5])),
            Err(InvalidRecord::Count),
        );
        check(
            with(|t| t.resp_ack_rtt = stats(&[1; 6])),
            Err(InvalidRecord::Count),
        );
    }

    #[test]
    fn reasons_have_distinct_names() {
        let names: std::collections::BTreeSet<_> =
            InvalidRecord::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), InvalidRecord::ALL.len());
    }
}
