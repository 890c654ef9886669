//! How connections end and what the table does around them: timeouts, reuse, sweeps, interim
//! records, the cap, uids, tunnels, local networks, memory.

use super::*;

#[test]
fn gaps_longer_than_the_timeout_split_sessions() {
    check(
        &[
            udp_on((33333, 5000), 0, true, 10),
            udp_on((33333, 5000), 61_000, true, 10),
        ],
        &[
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
        ],
    );
    // A SYN unanswered for tcp_attempt_delay (5 s): its retransmission is a new attempt.
    check(
        &[
            tcp(0, true, "S", 100, 0, 0),
            tcp(3000, true, "S", 100, 0, 0),
            tcp(6000, true, "S", 100, 0, 0),
        ],
        &[
            "S0 S pkts 2/0 bytes 0/0 missed 0 orig 40000",
            "S0 S pkts 1/0 bytes -/- missed 0 orig 40000",
        ],
    );
}

/// Zeek's DNS analyzer ends a UDP DNS connection at the first of its checks (every 10 s from
/// the first packet) that finds it idle for 9 s or more (`dns_session_timeout`).
#[test]
fn dns_session_timeout_splits_udp_dns() {
    let dns = |ms, from_client, len| udp_on((33333, 53), ms, from_client, len);
    // Query, answer, and a query 10 s after the first: the check at 10 s found 9.9 s idle.
    check(
        &[dns(0, true, 30), dns(100, false, 90), dns(10_000, true, 30)],
        &[
            "SF Dd pkts 1/1 bytes 30/90 missed 0 orig 33333",
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
        ],
    );
    // A packet at 2 s: the check at 10 s finds 8 s idle and re-arms; the one at 20 s would
    // find 18 s, so a packet at 15 s (13 s idle) is the same connection, and one at 30 s,
    // 15 s after it (the check at 30 s), is a new one.
    check(
        &[
            dns(0, true, 30),
            dns(2000, true, 30),
            dns(15_000, true, 30),
            dns(30_000, true, 30),
        ],
        &[
            "S0 D pkts 3/0 bytes 90/0 missed 0 orig 33333",
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
        ],
    );
    // Flipped by port (the first packet is the answer), the responder port is still 53.
    check(
        &[dns(0, false, 90), dns(12_000, false, 90)],
        &[
            "SHR ^d pkts 0/1 bytes -/- missed 0 orig 33333",
            "SHR ^d pkts 0/1 bytes -/- missed 0 orig 33333",
        ],
    );
    // The other DNS ports (mDNS 5353 here) too; not other UDP ports, nor DNS over TCP.
    check(
        &[
            udp_on((33333, 5353), 0, true, 30),
            udp_on((33333, 5353), 10_000, true, 30),
        ],
        &[
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
            "S0 D pkts 1/0 bytes -/- missed 0 orig 33333",
        ],
    );
    check(
        &[
            udp_on((33333, 5000), 0, true, 30),
            udp_on((33333, 5000), 30_000, true, 30),
        ],
        &["S0 D pkts 2/0 bytes 60/0 missed 0 orig 33333"],
    );
    check(
        &[
            tcp_on((40000, 53), 0, true, "PA", 100, 300, 30),
            tcp_on((40000, 53), 30_000, true, "PA", 130, 300, 30),
        ],
        &["OTH D pkts 2/0 bytes 60/0 missed 0 orig 40000"],
    );
    // Off (0): only UDP's 60 s inactivity timeout.
    check_cfg(
        SessionConfig {
            dns_session_timeout_ns: 0,
            ..SessionConfig::default()
        },
        &[dns(0, true, 30), dns(30_000, true, 30)],
        &["S0 D pkts 2/0 bytes 60/0 missed 0 orig 33333"],
    );
}

/// The DNS timeout decides by packet time only: sweeping at any watermark, and splitting the
/// flows between tables as shards would, gives the same records as one table never swept.
#[test]
fn dns_session_timeout_is_shard_invariant() {
    let mut input = Vec::new();
    for (i, gap) in [
        (0u16, 3000u64),
        (1, 9000),
        (2, 9400),
        (3, 10_000),
        (4, 25_000),
    ] {
        let port = 33000 + i;
        input.extend([
            udp_on((port, 53), 0, true, 30),
            udp_on((port, 53), 500, false, 90),
            udp_on((port, 53), 500 + gap, true, 30),
            udp_on((port, 53), 700 + gap, false, 90),
        ]);
    }
    input.sort_by_key(|s| s.ts_ns);
    let run = |shards: usize, sweep: bool| {
        let mut tables: Vec<FlowTable> = (0..shards)
            .map(|_| FlowTable::new(SessionConfig::default()))
            .collect();
        let mut out = Vec::new();
        for s in &input {
            let shard = usize::from(s.key.lo_port.max(s.key.hi_port)) % shards;
            tables[shard].on_summary(s, &mut out);
            if sweep {
                for t in &mut tables {
                    t.sweep(s.ts_ns.saturating_sub(SECOND), &mut out);
                }
            }
        }
        for t in &mut tables {
            t.flush(&mut out);
        }
        let mut lines: Vec<String> = out
            .iter()
            .map(|r| format!("{} {} {}", r.ts_ns, line(r), r.uid))
            .collect();
        lines.sort();
        lines
    };
    let one = run(1, false);
    // Gaps of 3 s, 9 s and 9.4 s after the answer at 0.5 s stay one connection (the next
    // query comes before the check at 10 s); 10 s and 25 s split it in two.
    assert_eq!(one.len(), 7, "{one:#?}");
    assert_eq!(run(1, true), one);
    assert_eq!(run(3, true), one);
    assert_eq!(run(2, false), one);
}

#[test]
fn a_new_syn_after_close_is_a_new_connection() {
    let mut v = normal_conversation(0);
    v.extend(normal_conversation(1000).into_iter().map(|mut s| {
        s.seq = s.seq.wrapping_add(7000);
        if s.tcp_flags & tf::ACK != 0 && s.ack > 1 {
            s.ack = s.ack.wrapping_add(7000);
        }
        s
    }));
    let line = "SF ShADadFf pkts 5/4 bytes 10/20 missed 0 orig 40000";
    check(&v, &[line, line]);
}

#[test]
fn sweep_uses_the_watermark() {
    let mut t = FlowTable::new(SessionConfig {
        max_flows: 8,
        ..SessionConfig::default()
    });
    let mut out = Vec::new();
    t.on_summary(&udp_on((33333, 5000), 0, true, 10), &mut out);
    t.sweep(T0 + 59 * SECOND, &mut out);
    assert!(out.is_empty());
    t.sweep(T0 + 61 * SECOND, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(t.stats().ended_by_sweep, 1);
    assert_eq!(t.stats().open_flows, 0);
}

#[test]
fn interim_updates_share_the_uid() {
    let cfg = SessionConfig {
        max_flows: 8,
        active_timeout_ns: 10 * SECOND,
        ..SessionConfig::default()
    };
    let input: Vec<_> = (0..4)
        .map(|i| udp_on((33333, 5000), i * 6000, true, 10))
        .collect();
    let r = check_cfg(
        cfg,
        &input,
        &[
            "S0 D pkts 2/0 bytes 20/0 missed 0 orig 33333 interim",
            "S0 D pkts 4/0 bytes 40/0 missed 0 orig 33333",
        ],
    );
    assert_eq!(r[0].uid, r[1].uid);
}

#[test]
fn the_cap_evicts_the_earliest_deadline() {
    let cfg = SessionConfig {
        max_flows: 2,
        ..SessionConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    t.on_summary(&tcp(0, true, "S", 100, 0, 0), &mut out); // deadline 5 s (attempt)
    t.on_summary(&udp_on((33333, 5000), 1, true, 10), &mut out); // deadline 61 s
    t.on_summary(&udp_on((33334, 5000), 2, true, 10), &mut out);
    assert_eq!(
        out.iter().map(line).collect::<Vec<_>>(),
        ["S0 S pkts 1/0 bytes -/- missed 0 orig 40000 evicted"]
    );
    assert_eq!(t.stats().evicted, 1);
    assert_eq!(t.stats().open_flows, 2);
}

#[test]
fn uid_is_deterministic() {
    let run = || {
        let mut t = FlowTable::new(SessionConfig {
            max_flows: 8,
            ..SessionConfig::default()
        });
        let mut out = Vec::new();
        for s in normal_conversation(0) {
            t.on_summary(&s, &mut out);
        }
        t.flush(&mut out);
        out
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a[0].community_id.len(), 30);
}

#[test]
fn tunnel_parents_and_too_many_changes() {
    let outer = |port: u16| FlowKey {
        proto: ip_proto::UDP,
        lo: addr("192.168.56.11"),
        hi: addr("192.168.56.12"),
        lo_port: port,
        hi_port: 4789,
        vlan: 0,
    };
    let input: Vec<_> = (0..8u64)
        .map(|i| {
            let mut s = icmp(i * 10, i % 2 == 0, if i % 2 == 0 { 8 } else { 0 }, 56);
            s.flags |= flag::TUNNEL_INNER;
            s.tunnel_parent = Some(outer(if i % 2 == 0 { 38071 } else { 48134 }));
            s
        })
        .collect();
    let r = check(&input, &["OTH X pkts 4/4 bytes 224/224 missed 0 orig 8"]);
    assert_eq!(r[0].tunnel_parents, vec![outer(38071), outer(48134)]);
    // GRE outer summaries are tunnels, not connections.
    let mut gre = summary(
        0,
        FiveTuple {
            proto: ip_proto::GRE,
            src: addr("1.1.1.1"),
            dst: addr("2.2.2.2"),
            sport: 0,
            dport: 0,
        },
        100,
        80,
    );
    gre.flags |= flag::TUNNEL_OUTER;
    check(&[gre], &[]);
}

#[test]
fn gaining_and_losing_a_tunnel_are_changes() {
    // Zeek's core.tunnels.count-default-tunnel-changes: a connection alternating between
    // direct packets and the same GRE tunnel. The first packet sets the encapsulation; each
    // gain or loss after it is a change; the sixth change exceeds the default limit of 5.
    let gre = FlowKey {
        proto: ip_proto::GRE,
        lo: addr("192.0.2.1"),
        hi: addr("198.51.100.1"),
        lo_port: 0,
        hi_port: 0,
        vlan: 0,
    };
    let run = |n: u64| {
        let input: Vec<_> = (0..n)
            .map(|i| {
                let mut s = udp_on((40000, 9999), i, true, 1);
                if i % 2 == 1 {
                    s.flags |= flag::TUNNEL_INNER;
                    s.tunnel_parent = Some(gre);
                }
                s
            })
            .collect();
        let mut t = FlowTable::new(SessionConfig::default());
        let mut out = Vec::new();
        for s in &input {
            t.on_summary(s, &mut out);
        }
        t.flush(&mut out);
        out.remove(0)
    };
    // Packets 2..=6 are changes 1..=5: within the limit.
    let r = run(6);
    assert_eq!(
        (r.history.as_str(), r.tunnel_parents.clone()),
        ("D", vec![gre])
    );
    // Packet 7 is change 6.
    let r = run(7);
    assert_eq!(
        (r.history.as_str(), r.tunnel_parents.clone()),
        ("DX", vec![gre])
    );
}

#[test]
fn local_networks() {
    let cfg = SessionConfig {
        max_flows: 8,
        local_nets: vec![(addr("10.0.0.0"), 31)],
        ..SessionConfig::default()
    };
    let r = check_cfg(
        cfg,
        &[udp_on((1, 2), 0, true, 1)],
        &["S0 D pkts 1/0 bytes -/- missed 0 orig 1"],
    );
    assert_eq!(
        (r[0].local_orig, r[0].local_resp),
        (Some(true), Some(false))
    );
}

#[test]
fn flow_entry_fits_the_budget() {
    let t = FlowTable::new(SessionConfig::default());
    eprintln!(
        "flow entry {} bytes, {} bytes per flow at full table",
        FlowTable::flow_entry_bytes(),
        t.bytes_per_flow()
    );
    assert!(t.bytes_per_flow() <= 264);
}

#[test]
fn the_table_takes_263_bytes_per_flow_at_the_cap() {
    // Slab 232 B, heap 1.25 entries of 8 B, index 2^22 (2^21) buckets of 5 B: 232 + 10 + 21.
    // A flow's timing box (`FlowTable::timing_box_bytes`) comes on top from its second packet.
    for (cap, bytes) in [(1_000_000, 262_971_664), (500_000, 131_485_904)] {
        let t = FlowTable::new(SessionConfig {
            max_flows: cap,
            ..SessionConfig::default()
        });
        assert_eq!(FlowTable::flow_entry_bytes(), 232);
        assert_eq!(t.memory_bytes(), bytes, "at {cap} flows");
        assert_eq!(t.bytes_per_flow(), 263, "at {cap} flows");
    }
}

#[test]
fn the_index_never_outgrows_its_share_of_the_footprint() {
    let cap = 3000;
    let mut t = FlowTable::new(SessionConfig {
        max_flows: cap,
        ..SessionConfig::default()
    });
    let slab_and_heap = cap * FlowTable::flow_entry_bytes() + (cap + cap / 4 + 16) * 8;
    let index_at_most = t.memory_bytes() - slab_and_heap;
    let mut out = Vec::new();
    let mut largest = 0;
    // Every flow new: each one past the cap evicts one, leaving a tombstone in the index.
    for i in 0..60_000u32 {
        let port = 1024 + i as u16;
        t.on_summary(&udp_on((port, 9), u64::from(i / 10), true, 1), &mut out);
        largest = largest.max(t.index_bytes());
        out.clear();
    }
    assert_eq!(t.stats().evicted, 60_000 - cap as u64);
    eprintln!("index: {largest} bytes at most, {index_at_most} allowed");
    assert!(largest <= index_at_most, "{largest} > {index_at_most}");
    // The bound is tight: the index did grow to it.
    assert_eq!(largest, index_at_most);
}

#[test]
fn a_flush_in_steps_emits_what_one_flush_does() {
    let run = |steps: Option<usize>| {
        let mut t = FlowTable::new(SessionConfig::default());
        let mut out = Vec::new();
        for i in 0..500u32 {
            // Ten flows per millisecond: the key breaks the ties.
            let port = 1024 + ((i * 7919) % 30_000) as u16;
            t.on_summary(&udp_on((port, 53), u64::from(i / 10), true, 1), &mut out);
        }
        assert!(out.is_empty());
        match steps {
            None => t.flush(&mut out),
            Some(n) => {
                t.begin_flush();
                while t.flush_pending() > 0 {
                    let before = out.len();
                    t.flush_next(n, &mut out);
                    assert!(out.len() - before <= n);
                }
            }
        }
        assert_eq!(t.stats().open_flows, 0);
        (out, t.stats())
    };
    let (all, stats) = run(None);
    assert_eq!(all.len(), 500);
    for n in [1, 7, 64, 500, 1000] {
        assert_eq!(run(Some(n)), (all.clone(), stats), "steps of {n}");
    }
}

#[test]
fn memory_stays_flat_under_churn() {
    let mut t = FlowTable::new(SessionConfig {
        max_flows: 64,
        ..SessionConfig::default()
    });
    let before = t.bytes_per_flow();
    let mut out = Vec::new();
    for i in 0..20_000u64 {
        // Short TCP connections that close (shortening their deadline) and UDP flows that
        // only ever leave by eviction.
        let port = 1024 + (i % 30_000) as u16;
        for mut s in normal_conversation(i * 10) {
            let t0 = s.tuple();
            let t1 = FiveTuple {
                sport: if t0.sport == 80 { 80 } else { port },
                dport: if t0.dport == 80 { 80 } else { port },
                ..t0
            };
            s.set_tuple(&t1, 0);
            t.on_summary(&s, &mut out);
        }
        t.on_summary(&udp_on((port, 9), i * 10, true, 1), &mut out);
        out.clear();
    }
    assert_eq!(t.bytes_per_flow(), before);
    assert!(t.stats().open_flows <= 64);
    assert!(t.stats().evicted > 0);
}

/// The table skips a flow's deadline when the packet is a second or more before its heap
/// entry; over packets with gaps around every timeout, on TCP, UDP (DNS too) and ICMP flows,
/// swept now and then, the shortcut agrees with the deadline for every open flow at every step.
#[test]
fn deadline_shortcut_agrees_with_the_deadline() {
    let mut table = FlowTable::new(SessionConfig::default());
    let mut out = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut ms = 0;
    let steps = [
        1, 700, 999, 1_000, 1_001, 4_999, 5_000, 10_000, 59_999, 61_000, 301_000,
    ];
    for i in 0..4000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ms += steps[(x % steps.len() as u64) as usize];
        let port = 40_000 + (x >> 8) as u16 % 6;
        let client = x & 1 << 20 != 0;
        let s = match (x >> 24) % 8 {
            0 => tcp_on((port, 80), ms, client, "S", i, 0, 0),
            1 => tcp_on((port, 80), ms, client, "SA", i, 1, 0),
            2 => tcp_on((port, 80), ms, client, "A", i, i, 100),
            3 => tcp_on((port, 80), ms, client, "FA", i, i, 0),
            4 => tcp_on((port, 80), ms, client, "R", i, 0, 0),
            5 => udp_on((port, 53), ms, client, 40),
            6 => udp_on((port, 5000), ms, client, 40),
            _ => icmp(ms, client, 8, 64),
        };
        let t = s.ts_ns;
        assert!(table.shortcut_agrees(t), "before packet {i}");
        table.on_summary(&s, &mut out);
        assert!(table.shortcut_agrees(t + SECOND), "after packet {i}");
        if x >> 40 & 7 == 0 {
            table.sweep(t, &mut out);
            assert!(table.shortcut_agrees(t), "after the sweep at packet {i}");
        }
    }
    assert!(out.len() > 100, "{} records", out.len());
}
