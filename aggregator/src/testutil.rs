//! Records for the aggregator's unit tests.

use tapflow_proto::conn::{community_id, uid, ConnRecord, ConnState};
use tapflow_proto::summary::tcp;
use tapflow_proto::{Addr, FiveTuple};

/// A scanner's rejected SYNs to many ports, minutes of them, among answered connections.
pub(crate) fn scan_and_sessions(n: u64) -> Vec<ConnRecord> {
    let t0 = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|i| {
            let scan = i % 3 == 0;
            let t = FiveTuple {
                proto: 6,
                src: Addr::from_v4(if scan {
                    [203, 0, 113, 9]
                } else {
                    [10, 0, (i >> 8) as u8, i as u8]
                }),
                dst: Addr::from_v4([198, 51, 100, (i % 7) as u8]),
                sport: 40_000 + (i % 20_000) as u16,
                dport: if scan { 1 + (i % 1000) as u16 } else { 443 },
            };
            let key = t.key(0).0;
            let ts = t0 + i * 10_000_000;
            let (state, history, flags) = if scan {
                (ConnState::REJ, "Sr", (tcp::SYN, tcp::RST | tcp::ACK))
            } else {
                (ConnState::SF, "ShADadFf", (0x1b, 0x1b))
            };
            ConnRecord {
                ts_ns: ts,
                uid: uid(&key, ts),
                orig_h: t.src,
                orig_p: t.sport,
                resp_h: t.dst,
                resp_p: t.dport,
                proto: 6,
                duration_ns: Some(1_000_000),
                orig_bytes: Some(0),
                resp_bytes: Some(0),
                conn_state: state,
                local_orig: None,
                local_resp: None,
                missed_bytes: 0,
                history: history.into(),
                orig_pkts: 1,
                orig_ip_bytes: 60,
                resp_pkts: 1,
                resp_ip_bytes: 40,
                tunnel_parents: vec![],
                community_id: community_id(6, t.src, t.sport, t.dst, t.dport),
                interim: false,
                evicted: false,
                key,
                orig_tcp_flags: flags.0,
                resp_tcp_flags: flags.1,
                split: 0,
                timing: None,
                service: None,
                server_name: None,
                service_incomplete: false,
            }
        })
        .collect()
}
