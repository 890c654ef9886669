//! One conn.log line as Zeek writes JSON (sans-IO): every string from the wire escaped.

use std::fmt::Write as _;

use tapflow_proto::conn::{ConnRecord, Timing};
use tapflow_proto::key::ip_proto;

use crate::json::push_escaped;

/// One conn.log line as Zeek writes JSON: field names and units as Zeek's, unset fields left
/// out; `ts` and `duration` in seconds with 6 decimals. Strings are escaped (a record that
/// reaches here has been validated; escaping is the second line of defence, and costs
/// nothing on valid records).
pub fn conn_json(r: &ConnRecord, parents: &[String], out: &mut String) {
    // Hand-written (itoa for integers): `write!` spent more cycles in the formatting machinery
    // than on the record itself, at 200k records at the end of a capture.
    let mut n = itoa::Buffer::new();
    push_endpoints(r, &mut n, out);
    push_state(r, &mut n, out);
    push_counts(r, parents, &mut n, out);
    if let Some(t) = &r.timing {
        push_timing(t, &mut n, out);
    }
    out.push_str("}\n");
}

/// `ts` to `service` (Zeek's order: `service` follows `proto`).
#[inline]
fn push_endpoints(r: &ConnRecord, n: &mut itoa::Buffer, out: &mut String) {
    let proto = match r.proto {
        ip_proto::TCP => "tcp",
        ip_proto::UDP => "udp",
        ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
        _ => "unknown_transport",
    };
    out.push_str("{\"ts\":");
    secs(r.ts_ns, out);
    out.push_str(",\"uid\":\"");
    push_escaped(&r.uid, out);
    out.push_str("\",\"id.orig_h\":\"");
    push_addr(&r.orig_h, out);
    out.push_str("\",\"id.orig_p\":");
    out.push_str(n.format(r.orig_p));
    out.push_str(",\"id.resp_h\":\"");
    push_addr(&r.resp_h, out);
    out.push_str("\",\"id.resp_p\":");
    out.push_str(n.format(r.resp_p));
    out.push_str(",\"proto\":\"");
    out.push_str(proto);
    out.push('"');
    if let Some(service) = &r.service {
        out.push_str(",\"service\":\"");
        push_escaped(service, out);
        out.push('"');
    }
}

/// `duration` to `history`.
#[inline]
fn push_state(r: &ConnRecord, n: &mut itoa::Buffer, out: &mut String) {
    if let Some(d) = r.duration_ns {
        out.push_str(",\"duration\":");
        secs(d, out);
    }
    if let Some(b) = r.orig_bytes {
        out.push_str(",\"orig_bytes\":");
        out.push_str(n.format(b));
    }
    if let Some(b) = r.resp_bytes {
        out.push_str(",\"resp_bytes\":");
        out.push_str(n.format(b));
    }
    out.push_str(",\"conn_state\":\"");
    out.push_str(r.conn_state.as_str());
    out.push('"');
    if let Some(l) = r.local_orig {
        out.push_str(if l {
            ",\"local_orig\":true"
        } else {
            ",\"local_orig\":false"
        });
    }
    if let Some(l) = r.local_resp {
        out.push_str(if l {
            ",\"local_resp\":true"
        } else {
            ",\"local_resp\":false"
        });
    }
    out.push_str(",\"missed_bytes\":");
    out.push_str(n.format(r.missed_bytes));
    if !r.history.is_empty() {
        out.push_str(",\"history\":\"");
        push_escaped(&r.history, out);
        out.push('"');
    }
}

/// Packet and byte counts, tunnel parents and tapflow's extras.
#[inline]
fn push_counts(r: &ConnRecord, parents: &[String], n: &mut itoa::Buffer, out: &mut String) {
    for (name, v) in [
        (",\"orig_pkts\":", r.orig_pkts),
        (",\"orig_ip_bytes\":", r.orig_ip_bytes),
        (",\"resp_pkts\":", r.resp_pkts),
        (",\"resp_ip_bytes\":", r.resp_ip_bytes),
    ] {
        out.push_str(name);
        out.push_str(n.format(v));
    }
    if !parents.is_empty() {
        out.push_str(",\"tunnel_parents\":[");
        for (i, p) in parents.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            push_escaped(p, out);
            out.push('"');
        }
        out.push(']');
    }
    out.push_str(",\"ip_proto\":");
    out.push_str(n.format(r.proto));
    out.push_str(",\"community_id\":\"");
    push_escaped(&r.community_id, out);
    out.push('"');
    if r.key.vlan != 0 {
        out.push_str(",\"vlan\":");
        out.push_str(n.format(r.key.vlan));
    }
    if r.evicted {
        out.push_str(",\"evicted\":true");
    }
    if let Some(split) = tapflow_proto::conn::split::name(r.split) {
        out.push_str(",\"tapflow_split\":\"");
        out.push_str(split);
        out.push('"');
    }
    if let Some(name) = &r.server_name {
        out.push_str(",\"server_name\":\"");
        push_escaped(name, out);
        out.push('"');
    }
    if r.service_incomplete {
        out.push_str(",\"service_incomplete\":true");
    }
}

/// Latency and jitter (issue 15), in seconds as `duration`; each left out when undefined.
fn push_timing(t: &Timing, n: &mut itoa::Buffer, out: &mut String) {
    let dur = |name: &str, ns: Option<u64>, out: &mut String| {
        if let Some(ns) = ns {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            secs(ns, out);
        }
    };
    dur("tcp_synack", t.tcp_synack_ns, out);
    dur("tcp_ackdat", t.tcp_ackdat_ns, out);
    dur("tcp_rtt", t.tcp_rtt_ns(), out);
    for (names, s) in [(IAT_NAMES[0], &t.orig_iat), (IAT_NAMES[1], &t.resp_iat)] {
        if let Some(mean) = s.sum.checked_div(s.n) {
            dur(names[0], Some(s.min), out);
            dur(names[1], Some(mean), out);
            dur(names[2], Some(s.max), out);
            // Whole nanoseconds, as every other time here.
            dur(names[3], s.stddev_ns().map(|v| v as u64), out);
        }
    }
    for (names, s) in [
        (RTT_NAMES[0], &t.orig_ack_rtt),
        (RTT_NAMES[1], &t.resp_ack_rtt),
    ] {
        if let Some(mean) = s.sum.checked_div(s.n) {
            dur(names[0], Some(s.min), out);
            dur(names[1], Some(mean), out);
            out.push_str(names[2]);
            out.push_str(n.format(s.n));
        }
    }
    if t.rtt_cross_tap {
        out.push_str(",\"rtt_cross_tap\":true");
    }
}

const IAT_NAMES: [[&str; 4]; 2] = [
    [
        "orig_iat_min",
        "orig_iat_mean",
        "orig_iat_max",
        "orig_iat_stddev",
    ],
    [
        "resp_iat_min",
        "resp_iat_mean",
        "resp_iat_max",
        "resp_iat_stddev",
    ],
];
const RTT_NAMES: [[&str; 3]; 2] = [
    [
        "orig_ack_rtt_min",
        "orig_ack_rtt_mean",
        ",\"orig_ack_rtt_n\":",
    ],
    [
        "resp_ack_rtt_min",
        "resp_ack_rtt_mean",
        ",\"resp_ack_rtt_n\":",
    ],
];

/// An address as text: IPv4 by hand (most records), IPv6 by `Display` (its `::` rules).
fn push_addr(a: &tapflow_proto::Addr, out: &mut String) {
    if a.is_v4() {
        let mut n = itoa::Buffer::new();
        for (i, octet) in a.0[12..].iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(n.format(*octet));
        }
    } else {
        let _ = write!(out, "{a}");
    }
}

/// Nanoseconds as seconds with 6 decimals (Zeek's precision), as a JSON number.
fn secs(ns: u64, out: &mut String) {
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(ns / 1_000_000_000));
    out.push('.');
    let micros = n.format((ns % 1_000_000_000) / 1000);
    for _ in micros.len()..6 {
        out.push('0');
    }
    out.push_str(micros);
}
