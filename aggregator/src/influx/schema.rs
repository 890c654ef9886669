//! The InfluxDB schema: which measurements tapflow writes, their tags and fields (sans-IO).
//!
//! Tags are low-cardinality only (each distinct tag set is a series kept in InfluxDB's index);
//! addresses, ports and uids are fields, never tags.
//!
//! | measurement      | tags                               | fields |
//! |------------------|------------------------------------|--------|
//! | `tapflow_conn`   | `proto`, `conn_state`, `ip_version` | `uid`, `orig_h`, `orig_p`, `resp_h`, `resp_p`, `ip_proto`, `duration` (s, float), `orig_bytes`, `resp_bytes`, `missed_bytes`, `history`, `orig_pkts`, `orig_ip_bytes`, `resp_pkts`, `resp_ip_bytes`, `community_id`, `tunnel_parents`, `local_orig`, `local_resp`, `vlan`, `evicted`, `service`, `server_name`, `service_incomplete` |
//! | `tapflow_health` | `component`, `name`                | one integer field per counter |
//! | `tapflow_service` | `proto`, `service`                | `sessions`, `packets`, `bytes` (IP), `window_s` |
//! | `tapflow_latency` | `ip_version`                      | `resp_h`, `resp_p`, `window_s`, `sessions`, `tcp_rtt_n`, `tcp_rtt_dropped`, `tcp_rtt_p50`, `tcp_rtt_p95`, `tcp_rtt_p99`, `tcp_rtt_max`, `data_rtt_n`, `data_rtt_dropped`, `data_rtt_p50`, `data_rtt_p95`, `data_rtt_p99`, `data_rtt_max` (s, float), `servers_over_cap` |
//!
//! `tapflow_latency` is one point per TCP server and detection window ([`crate::latency`]):
//! stamped at the window's start plus the server's rank in (address, port) order, in ns (so the
//! points of one window never replace each other). Percentile fields are left out when the
//! window had no sample of that kind; `servers_over_cap` only when the servers cap was hit.
//! `tapflow_service` is traffic by application per 60 s window of session end
//! ([`crate::points::ServiceTraffic`]); its `service` tag is a bounded set (Zeek's names, `other`,
//! `none`), while the session's `service` field is the record's list as the conn log writes it.
//! Session points are stamped at the first packet's time plus the uid's offset
//! ([`super::unique::uid_offset_ns`]).

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;

use super::line::{Field, Point};
use super::unique::uid_offset_ns;
use crate::latency::{Percentiles, Server, Summary};

pub const CONN_MEASUREMENT: &str = "tapflow_conn";
pub const HEALTH_MEASUREMENT: &str = "tapflow_health";
pub const LATENCY_MEASUREMENT: &str = "tapflow_latency";

/// One final session as a point. `parents` are the tunnel parents' uids, resolved as for the
/// conn log; they are written comma-joined.
///
/// Optional values (`duration`, `orig_bytes`, `resp_bytes`, `local_*`, `history` when empty,
/// `tunnel_parents` when none) are left out where the conn log leaves them out, so
/// `count(uid)` counts sessions.
pub fn conn_point(r: &ConnRecord, parents: &[String]) -> Point {
    let proto = match r.proto {
        ip_proto::TCP => "tcp",
        ip_proto::UDP => "udp",
        ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
        _ => "unknown_transport",
    };
    let ip_version = if r.orig_h.is_v4() { "4" } else { "6" };
    let ts = r.ts_ns.saturating_add(uid_offset_ns(&r.uid));
    // Tags in key order: InfluxDB sorts them anyway, and asks clients to send them sorted.
    let mut p = Point::new(CONN_MEASUREMENT, ts)
        .tag("conn_state", r.conn_state.as_str())
        .tag("ip_version", ip_version)
        .tag("proto", proto);
    p.fields.reserve(25);
    p = p
        .field("uid", Field::Str(r.uid.to_string()))
        .field("orig_h", Field::Str(r.orig_h.to_string()))
        .field("orig_p", Field::UInt(r.orig_p.into()))
        .field("resp_h", Field::Str(r.resp_h.to_string()))
        .field("resp_p", Field::UInt(r.resp_p.into()))
        .field("ip_proto", Field::UInt(r.proto.into()));
    if let Some(d) = r.duration_ns {
        p = p.field("duration", Field::Float(d as f64 / 1e9));
    }
    if let Some(b) = r.orig_bytes {
        p = p.field("orig_bytes", Field::UInt(b));
    }
    if let Some(b) = r.resp_bytes {
        p = p.field("resp_bytes", Field::UInt(b));
    }
    p = p.field("missed_bytes", Field::UInt(r.missed_bytes));
    if !r.history.is_empty() {
        p = p.field("history", Field::Str(r.history.to_string()));
    }
    p = p
        .field("orig_pkts", Field::UInt(r.orig_pkts))
        .field("orig_ip_bytes", Field::UInt(r.orig_ip_bytes))
        .field("resp_pkts", Field::UInt(r.resp_pkts))
        .field("resp_ip_bytes", Field::UInt(r.resp_ip_bytes))
        .field("community_id", Field::Str(r.community_id.to_string()));
    if !parents.is_empty() {
        p = p.field("tunnel_parents", Field::Str(parents.join(",")));
    }
    if let Some(l) = r.local_orig {
        p = p.field("local_orig", Field::Bool(l));
    }
    if let Some(l) = r.local_resp {
        p = p.field("local_resp", Field::Bool(l));
    }
    if r.key.vlan != 0 {
        p = p.field("vlan", Field::UInt(r.key.vlan.into()));
    }
    if r.evicted {
        p = p.field("evicted", Field::Bool(true));
    }
    if let Some(s) = &r.service {
        p = p.field("service", Field::Str(s.clone()));
    }
    if let Some(s) = &r.server_name {
        p = p.field("server_name", Field::Str(s.clone()));
    }
    if r.service_incomplete {
        p = p.field("service_incomplete", Field::Bool(true));
    }
    p
}

/// A component's counters at `ts_ns` (event time where it has one, e.g. the watermark): tags
/// `component` (collector, processor, aggregator, influx) and `name` (its instance), one
/// integer field per counter. Counters are totals since start, so InfluxQL's
/// `non_negative_derivative` gives rates.
pub fn health_point(
    component: &str,
    name: &str,
    counters: &BTreeMap<String, u64>,
    ts_ns: u64,
) -> Point {
    let mut p = Point::new(HEALTH_MEASUREMENT, ts_ns)
        .tag("component", component)
        .tag("name", name);
    p.fields = counters
        .iter()
        .map(|(k, v)| (k.clone().into(), Field::UInt(*v)))
        .collect();
    p
}

/// One server's latency in one window (see the module's table), at `ts_ns`.
pub fn latency_point(
    ts_ns: u64,
    window_s: u64,
    server: &Server,
    s: &Summary,
    over_cap: u64,
) -> Point {
    let ip_version = if server.addr.is_v4() { "4" } else { "6" };
    let mut p = Point::new(LATENCY_MEASUREMENT, ts_ns)
        .tag("ip_version", ip_version)
        .field("resp_h", Field::Str(server.addr.to_string()))
        .field("resp_p", Field::UInt(server.port.into()))
        .field("window_s", Field::UInt(window_s))
        .field("sessions", Field::UInt(s.sessions));
    for (name, pct) in [("tcp_rtt", &s.tcp_rtt), ("data_rtt", &s.data_rtt)] {
        p = percentile_fields(p, name, pct);
    }
    if over_cap > 0 {
        p = p.field("servers_over_cap", Field::UInt(over_cap));
    }
    p
}

fn percentile_fields(mut p: Point, name: &str, pct: &Option<Percentiles>) -> Point {
    let secs = |ns: u64| Field::Float(ns as f64 / 1e9);
    let Some(v) = pct else {
        return p.field(format!("{name}_n"), Field::UInt(0));
    };
    for (suffix, value) in [
        ("n", Field::UInt(v.n)),
        ("dropped", Field::UInt(v.dropped)),
        ("p50", secs(v.p50)),
        ("p95", secs(v.p95)),
        ("p99", secs(v.p99)),
        ("max", secs(v.max)),
    ] {
        p = p.field(format!("{name}_{suffix}"), value);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::conn::{uid, ConnState};
    use tapflow_proto::{Addr, FiveTuple};

    fn rec() -> ConnRecord {
        let t = FiveTuple {
            proto: 6,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            sport: 40000,
            dport: 80,
        };
        let key = t.key(0).0;
        let ts = 1_323_974_133_493_287_000;
        ConnRecord {
            ts_ns: ts,
            uid: uid(&key, ts),
            orig_h: t.src,
            orig_p: 40000,
            resp_h: t.dst,
            resp_p: 80,
            proto: 6,
            duration_ns: Some(1_500_000),
            orig_bytes: Some(1),
            resp_bytes: None,
            conn_state: ConnState::SF,
            local_orig: Some(true),
            local_resp: None,
            missed_bytes: 0,
            history: "ShADadFf".into(),
            orig_pkts: 5,
            orig_ip_bytes: 300,
            resp_pkts: 4,
            resp_ip_bytes: 250,
            tunnel_parents: vec![],
            community_id: "1:abc=".into(),
            interim: false,
            evicted: false,
            key,
            orig_tcp_flags: 0x1b,
            resp_tcp_flags: 0x1b,
            split: 0,
            timing: None,
            service: None,
            server_name: None,
            service_incomplete: false,
        }
    }

    fn check(p: &Point, want: &str) {
        let mut out = Vec::new();
        assert!(p.encode(&mut out).is_ok());
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn conn_line() {
        let r = rec();
        let ts = r.ts_ns + uid_offset_ns(&r.uid);
        let want = format!(
            "tapflow_conn,conn_state=SF,ip_version=4,proto=tcp uid=\"{}\",orig_h=\"10.0.0.1\",\
             orig_p=40000i,resp_h=\"10.0.0.2\",resp_p=80i,ip_proto=6i,duration=0.0015,\
             orig_bytes=1i,missed_bytes=0i,history=\"ShADadFf\",orig_pkts=5i,orig_ip_bytes=300i,\
             resp_pkts=4i,resp_ip_bytes=250i,community_id=\"1:abc=\",tunnel_parents=\"Ca,Cb\",\
             local_orig=true {ts}\n",
            r.uid
        );
        check(&conn_point(&r, &["Ca".into(), "Cb".into()]), &want);
        assert!(ts - r.ts_ns < 1000);
    }

    #[test]
    fn service_and_server_name_are_fields() {
        let mut r = rec();
        r.service = Some("http,websocket".into());
        r.server_name = Some("a \"b\".example".into());
        r.service_incomplete = true;
        let mut out = Vec::new();
        assert!(conn_point(&r, &[]).encode(&mut out).is_ok());
        let line = String::from_utf8_lossy(&out);
        assert!(
            line.contains(
                ",service=\"http,websocket\",server_name=\"a \\\"b\\\".example\",\
                 service_incomplete=true "
            ),
            "{line}"
        );
        assert!(!line.starts_with("tapflow_conn,conn_state=SF,ip_version=4,proto=tcp,"));
    }

    #[test]
    fn no_address_port_or_uid_is_a_tag() {
        let p = conn_point(&rec(), &[]);
        let tags: Vec<&str> = p.tags.iter().map(|(k, _)| *k).collect();
        assert_eq!(tags, ["conn_state", "ip_version", "proto"]);
    }

    #[test]
    fn health_line() {
        let counters: BTreeMap<String, u64> = [("dropped_late", 3), ("received", 10)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        check(
            &health_point("processor", "p 0", &counters, 5),
            "tapflow_health,component=processor,name=p\\ 0 dropped_late=3i,received=10i 5\n",
        );
    }
}
