//! Synthetic final connection records for the aggregator's benches: a realistic mix of states
//! (SF, S0, REJ, UDP), a distinct source per record towards 200 servers, and 500 records
//! starting in each microsecond, like a spoofed flood.

use tapflow_proto::conn::{uid, ConnRecord, ConnState};
use tapflow_proto::{Addr, FiveTuple};

/// `n` records in first-packet-time order.
pub fn conn_records(n: u64) -> Vec<ConnRecord> {
    let t0 = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|i| {
            let t = FiveTuple {
                proto: if i % 10 == 0 { 17 } else { 6 },
                src: Addr::from_v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                dst: Addr::from_v4([192, 0, 2, (i % 200) as u8]),
                sport: 1024 + (i % 60_000) as u16,
                dport: [80, 443, 53, 22][(i % 4) as usize],
            };
            let key = t.key(0).0;
            // 500 sessions per microsecond, like a spoofed flood.
            let ts = t0 + (i / 500) * 1000;
            let (state, history) = [
                (ConnState::SF, "ShADadFf"),
                (ConnState::S0, "S"),
                (ConnState::REJ, "Sr"),
                (ConnState::SF, "Dd"),
            ][(i % 4) as usize];
            ConnRecord {
                ts_ns: ts,
                uid: uid(&key, ts),
                orig_h: t.src,
                orig_p: t.sport,
                resp_h: t.dst,
                resp_p: t.dport,
                proto: t.proto,
                duration_ns: Some(1_500_000 + i % 1000),
                orig_bytes: Some(120 + i % 5000),
                resp_bytes: Some(4000 + i % 9000),
                conn_state: state,
                local_orig: None,
                local_resp: None,
                missed_bytes: 0,
                history: history.into(),
                orig_pkts: 6,
                orig_ip_bytes: 480 + i % 5000,
                resp_pkts: 5,
                resp_ip_bytes: 4300 + i % 9000,
                tunnel_parents: vec![],
                community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
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
        })
        .collect()
}
