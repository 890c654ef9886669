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
