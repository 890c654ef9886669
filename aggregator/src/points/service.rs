//! Traffic by application (sans-IO): `tapflow_service` points, one per 60 s window of packet
//! time, service and IP protocol, summed over the sessions that ended (last packet) in the
//! window, from the final records in release order. The service is only known once a session
//! is classified (and `ftp-data` only here, in the aggregator), so these windows are made from
//! the records, not from the processors' per-packet traffic partials (`tapflow_traffic`).
//!
//! The `service` tag is a bounded set: the first service of the record's comma-joined list
//! (the first Zeek confirmed) when it is one of [`KNOWN`], `other` when it is not, `none` when
//! the session has none. Released records come in last-packet order, so a window is complete
//! once a record past its end is released; a record released early (the sorter's cap) into a
//! window already written is counted as `service_late`, not written.

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;

use crate::influx::{Field, Point};

pub const SERVICE_MEASUREMENT: &str = "tapflow_service";
const WINDOW_NS: u64 = 60_000_000_000;

/// Zeek's service names (its analyzers' names as `conn.log` writes them): the values the
/// `service` tag takes besides `other` and `none`.
pub const KNOWN: [&str; 61] = [
    "ayiya",
    "bittorrent",
    "dce_rpc",
    "dhcp",
    "dnp3",
    "dns",
    "dtls",
    "finger",
    "ftp",
    "ftp-data",
    "geneve",
    "gnutella",
    "gssapi",
    "gtpv1",
    "http",
    "ident",
    "imap",
    "irc",
    "irc-dcc-data",
    "krb",
    "krb_tcp",
    "ldap",
    "ldap_tcp",
    "ldap_udp",
    "login",
    "modbus",
    "mount",
    "mqtt",
    "mysql",
    "ncp",
    "netbios",
    "nfs",
    "ntlm",
    "ntp",
    "pop3",
    "portmapper",
    "postgresql",
    "quic",
    "radius",
    "rdp",
    "rdpeudp",
    "redis",
    "rfb",
    "rlogin",
    "rsh",
    "sip",
    "smb",
    "smtp",
    "snmp",
    "socks",
    "ssh",
    "ssl",
    "syslog",
    "telnet",
    "teredo",
    "tftp",
    "vxlan",
    "websocket",
    "xmpp",
    "nbns",
    "spnego",
];

/// The `service` tag of a record's service list.
pub fn service_tag(service: Option<&str>) -> &'static str {
    let Some(first) = service.and_then(|s| s.split(',').next()) else {
        return "none";
    };
    if first.is_empty() {
        return "none";
    }
    KNOWN
        .iter()
        .copied()
        .find(|k| *k == first)
        .unwrap_or("other")
}

/// (window start, service tag, proto tag) -> sessions, packets, IP bytes.
type Sums = BTreeMap<(u64, &'static str, &'static str), [u64; 3]>;

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ServiceTraffic {
    #[serde(with = "named_sums")]
    sums: Sums,
    /// Windows below this were written.
    done_to: u64,
    /// Records released into a window already written (counted, not written).
    pub late: u64,
}

impl ServiceTraffic {
    /// The next final record in release order; points of the windows it completes into `out`.
    pub fn on_record(&mut self, r: &ConnRecord, out: &mut Vec<Point>) {
        let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
        let window = last / WINDOW_NS * WINDOW_NS;
        self.emit_before(window, out);
        if window < self.done_to {
            self.late += 1;
            return;
        }
        let proto = match r.proto {
            ip_proto::TCP => "tcp",
            ip_proto::UDP => "udp",
            ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
            _ => "other",
        };
        let e = self
            .sums
            .entry((window, service_tag(r.service.as_deref()), proto))
            .or_default();
        e[0] += 1;
        e[1] += r.orig_pkts.saturating_add(r.resp_pkts);
        e[2] += r.orig_ip_bytes.saturating_add(r.resp_ip_bytes);
    }

    /// End of the records: every window's points into `out`.
    pub fn finish(&mut self, out: &mut Vec<Point>) {
        self.emit_before(u64::MAX, out);
    }

    /// Points of the windows that start before `window`.
    fn emit_before(&mut self, window: u64, out: &mut Vec<Point>) {
        while let Some(entry) = self.sums.first_entry() {
            if entry.key().0 >= window {
                break;
            }
            let ((start, service, proto), [sessions, packets, bytes]) = entry.remove_entry();
            self.done_to = self.done_to.max(start.saturating_add(WINDOW_NS));
            out.push(
                Point::new(SERVICE_MEASUREMENT, start)
                    .tag("proto", proto)
                    .tag("service", service)
                    .field("sessions", Field::UInt(sessions))
                    .field("packets", Field::UInt(packets))
                    .field("bytes", Field::UInt(bytes))
                    .field("window_s", Field::UInt(WINDOW_NS / 1_000_000_000)),
            );
        }
    }
}

/// The sums with their tags as strings (a snapshot's); read back, each tag is one this module
/// gives (an unknown one refuses the snapshot).
mod named_sums {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Sums, KNOWN};

    type Named = Vec<(u64, String, String, [u64; 3])>;

    pub fn serialize<S: Serializer>(sums: &Sums, s: S) -> Result<S::Ok, S::Error> {
        let named: Named = sums
            .iter()
            .map(|(&(w, service, proto), v)| (w, service.to_owned(), proto.to_owned(), *v))
            .collect();
        named.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sums, D::Error> {
        let known = |name: &str, among: &[&'static str]| {
            among
                .iter()
                .copied()
                .find(|k| *k == name)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown tag {name:?}")))
        };
        let services: Vec<&'static str> = KNOWN.iter().copied().chain(["none", "other"]).collect();
        Named::deserialize(d)?
            .into_iter()
            .map(|(w, service, proto, v)| {
                let service = known(&service, &services)?;
                let proto = known(&proto, &["tcp", "udp", "icmp", "other"])?;
                Ok(((w, service, proto), v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(p: &Point) -> String {
        let mut b = Vec::new();
        let _ = p.encode(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn the_service_tag_is_a_bounded_set() {
        assert_eq!(service_tag(None), "none");
        assert_eq!(service_tag(Some("")), "none");
        assert_eq!(service_tag(Some("ftp,ssl")), "ftp");
        assert_eq!(service_tag(Some("ftp-data")), "ftp-data");
        assert_eq!(service_tag(Some("-ftp")), "other");
        assert_eq!(service_tag(Some("made up \u{1b}[31m")), "other");
        let mut sorted = KNOWN.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KNOWN.len(), "no name twice");
    }

    #[test]
    fn sessions_are_summed_per_window_of_their_end_and_service() {
        let mut recs = crate::testutil::scan_and_sessions(3);
        let base = recs[0].ts_ns / WINDOW_NS * WINDOW_NS;
        for (i, r) in recs.iter_mut().enumerate() {
            r.ts_ns = base + i as u64;
            r.duration_ns = Some(1);
            r.service = (i % 2 == 0).then(|| "ssl".to_owned());
        }
        let mut late = recs[0].clone();
        late.service = Some("http,websocket".into());
        let mut next = recs[0].clone();
        next.ts_ns = base + WINDOW_NS;
        let mut t = ServiceTraffic::default();
        let mut out = Vec::new();
        for r in &recs {
            t.on_record(r, &mut out);
        }
        assert!(out.is_empty(), "the window is still open");
        t.on_record(&next, &mut out);
        let lines: Vec<String> = out.iter().map(line).collect();
        let ssl = recs.iter().filter(|r| r.service.is_some()).count();
        assert!(
            lines.iter().any(|l| l.starts_with("tapflow_service,proto=")
                && l.contains(",service=ssl ")
                && l.contains(&format!("sessions={ssl}i"))),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("service=none")),
            "{lines:?}"
        );
        t.on_record(&late, &mut out);
        assert_eq!(t.late, 1, "its window was written");
        let before = out.len();
        t.finish(&mut out);
        assert!(
            out[before..].iter().all(|p| p.ts_ns == base + WINDOW_NS),
            "only the next window is left"
        );
    }
}
