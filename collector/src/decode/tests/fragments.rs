//! Reassembly through the decoder: IPv4 and IPv6 fragments in order, reversed, duplicated,
//! timed out, evicted, incomplete, oversized, and what the accounting says of each.

use super::*;

const SEC: u64 = 1_000_000_000;
/// 80-byte IPv4 datagram (TCP, 40 bytes of data) in fragments of 16, 16, 16 and 12 bytes.
const TCP_REASM: &str = "6 10.0.0.1:5 > 10.0.0.2:6 ip=80 pl=40 tcp=0x18 reasm";

fn tcp_frags() -> Vec<Frame> {
    fragments4(&tcp4(A, B, 5, 6, 2, &[9; 40]), 16, 3)
        .into_iter()
        .map(ether)
        .collect()
}

fn order(frags: &[Frame], idx: &[usize]) -> Vec<Frame> {
    idx.iter().map(|&i| frags[i].clone()).collect()
}

#[test]
fn ipv4_in_order_reversed_duplicated() {
    let f = tcp_frags();
    let c = check(
        cfg(),
        &f,
        &[
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Summarised, &[TCP_REASM]),
        ],
    );
    assert_eq!(
        (
            c.packets,
            c.packets_summarised,
            c.fragments_merged,
            c.summaries
        ),
        (4, 1, 3, 1)
    );
    check(
        cfg(),
        &order(&f, &[3, 2, 1, 0]),
        &[
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Summarised, &[TCP_REASM]),
        ],
    );
    let c = check(
        cfg(),
        &order(&f, &[1, 0, 1, 3, 2, 2]),
        &[
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Summarised, &[TCP_REASM]),
            (Held, &[]),
        ],
    );
    // The duplicate after completion starts a datagram that never completes.
    assert_eq!(
        (
            c.fragments_merged,
            c.drops.get(DropReason::FragmentIncomplete)
        ),
        (4, 1)
    );
}

#[test]
fn timeouts_evictions_and_incomplete() {
    let f = tcp_frags();
    let late = [
        f[0].clone().at(0),
        f[1].clone().at(SEC),
        f[2].clone().at(31 * SEC),
        f[3].clone().at(31 * SEC),
    ];
    let c = check(
        cfg(),
        &late,
        &[(Held, &[]), (Held, &[]), (Held, &[]), (Held, &[])],
    );
    assert_eq!(
        (
            c.drops.get(DropReason::FragmentTimeout),
            c.drops.get(DropReason::FragmentIncomplete)
        ),
        (2, 2)
    );
    // A cap of one datagram: another datagram's fragment evicts the first.
    let other = fragments4(&tcp4(A, B, 5, 6, 2, &[9; 40]), 16, 4)
        .into_iter()
        .map(ether)
        .collect::<Vec<_>>();
    let one = DecodeConfig {
        frag_max_datagrams: 1,
        ..cfg()
    };
    let frames = [
        f[0].clone(),
        f[1].clone(),
        other[0].clone(),
        f[2].clone(),
        f[3].clone(),
    ];
    let c = check(
        one,
        &frames,
        &[
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
        ],
    );
    assert_eq!(c.drops.get(DropReason::FragmentTableFull), 3);
    assert_eq!(c.drops.get(DropReason::FragmentIncomplete), 2);
    let small = DecodeConfig {
        frag_max_bytes: 40,
        ..cfg()
    };
    let c = check(
        small,
        &order(&f, &[0, 3]),
        &[(Held, &[]), (Dropped(DropReason::FragmentTableFull), &[])],
    );
    assert_eq!(c.drops.get(DropReason::FragmentTableFull), 2);
}

#[test]
fn oversized_and_inconsistent() {
    let data = [0u8; 16];
    let far = [
        ipv4_header(17, A, B, 16, 9, 65_528, true, &[]),
        data.to_vec(),
    ]
    .concat();
    check(
        cfg(),
        &[ether(far)],
        &[(Dropped(DropReason::FragmentInvalid), &[])],
    );
    let f = tcp_frags();
    let mut odd = f[1].clone();
    // A middle fragment of 15 bytes: the total length says one byte less.
    odd.bytes[14 + 3] -= 1;
    odd.bytes.pop();
    let fix = super::super::checksum::Sum::default()
        .add(&[&odd.bytes[14..24], &[0, 0], &odd.bytes[26..34]].concat())
        .checksum();
    odd.bytes[24..26].copy_from_slice(&fix.to_be_bytes());
    odd.wire -= 1;
    let c = check(
        cfg(),
        &[f[0].clone(), odd, f[3].clone()],
        &[
            (Held, &[]),
            (Dropped(DropReason::FragmentInvalid), &[]),
            (Held, &[]),
        ],
    );
    assert_eq!(c.drops.get(DropReason::FragmentInvalid), 2);
}

#[test]
fn reassembled_checksums_and_truncation() {
    let udp = udp4(
        A,
        B,
        1000,
        53,
        &[
            0, 1, 0x81, 0x80, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ],
    );
    let f: Vec<Frame> = fragments4(&udp, 16, 7).into_iter().map(ether).collect();
    let line = "17 10.0.0.1:1000 > 10.0.0.2:53 ip=48 pl=20 reasm dns";
    check(cfg(), &f, &[(Held, &[]), (Summarised, &[line])]);
    let mut bad = f.clone();
    *bad[1].bytes.last_mut().unwrap_or(&mut 0) ^= 1;
    let bad_line = "17 10.0.0.1:1000 > 10.0.0.2:53 ip=48 pl=20 bad reasm dns";
    check(cfg(), &bad, &[(Held, &[]), (Summarised, &[bad_line])]);
    // A fragment cut by snaplen: the datagram completes, marked truncated, checksums skipped.
    let cut = [f[0].clone(), f[1].clone().snap(14 + 20 + 4)];
    let trunc_line = "17 10.0.0.1:1000 > 10.0.0.2:53 ip=48 pl=20 reasm dns trunc";
    check(cfg(), &cut, &[(Held, &[]), (Summarised, &[trunc_line])]);
    // A datagram that is complete but undecodable: the completing fragment is the drop.
    let short_tcp = ip4_raw(A, B, 6, &[0; 16]);
    let f: Vec<Frame> = fragments4(&short_tcp, 8, 8)
        .into_iter()
        .map(ether)
        .collect();
    let c = check(
        cfg(),
        &f,
        &[(Held, &[]), (Dropped(DropReason::MalformedTransport), &[])],
    );
    assert_eq!(c.fragments_merged, 1);
}

#[test]
fn ipv6_fragments() {
    let udp = udp6(A6, B6, 4000, 53, &[7; 30]);
    let f: Vec<Frame> = fragments6(&udp, 16, 0xabcd)
        .into_iter()
        .map(ether)
        .collect();
    let line = "17 2001:db8::1:4000 > 2001:db8::2:53 ip=78 pl=30 reasm";
    check(
        cfg(),
        &f,
        &[(Held, &[]), (Held, &[]), (Summarised, &[line])],
    );
    check(
        cfg(),
        &order(&f, &[2, 0, 1]),
        &[(Held, &[]), (Held, &[]), (Summarised, &[line])],
    );
    // Destination options after the fragment header belong to the reassembled datagram.
    let inner = [vec![17, 0, 1, 4, 0, 0, 0, 0], udp[40..].to_vec()].concat();
    let with_opts = ipv6(60, A6, B6, &inner);
    let f: Vec<Frame> = fragments6(&with_opts, 16, 1)
        .into_iter()
        .map(ether)
        .collect();
    check(
        cfg(),
        &f,
        &[
            (Held, &[]),
            (Held, &[]),
            (
                Summarised,
                &["17 2001:db8::1:4000 > 2001:db8::2:53 ip=86 pl=30 reasm"],
            ),
        ],
    );
    // IPv4 and IPv6 datagrams with the same identification do not mix.
    let v4: Vec<Frame> = fragments4(&udp4(A, B, 4000, 53, &[7; 30]), 16, 0xabcd)
        .into_iter()
        .map(ether)
        .collect();
    let f6: Vec<Frame> = fragments6(&udp, 16, 0xabcd)
        .into_iter()
        .map(ether)
        .collect();
    let mixed = [
        v4[0].clone(),
        f6[0].clone(),
        v4[1].clone(),
        f6[1].clone(),
        v4[2].clone(),
        f6[2].clone(),
    ];
    let c = check(
        cfg(),
        &mixed,
        &[
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (Held, &[]),
            (
                Summarised,
                &["17 10.0.0.1:4000 > 10.0.0.2:53 ip=58 pl=30 reasm"],
            ),
            (Summarised, &[line]),
        ],
    );
    assert_eq!(c.fragments_merged, 4);
}

/// A long mixed run with small caps and time jumps: the accounting holds at every step.
#[test]
fn mixed_sequences_keep_the_invariant() {
    let cfg = DecodeConfig {
        frag_max_datagrams: 3,
        frag_max_bytes: 200,
        frag_timeout_ns: 5 * SEC,
        ..cfg()
    };
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for id in 0..12u16 {
        let payload = vec![id as u8; 8 + usize::from(id) * 12];
        pool.extend(fragments4(&udp4(A, B, 1000 + id, 53, &payload), 16, id));
        pool.extend(fragments6(
            &udp6(A6, B6, 1000 + id, 53, &payload),
            24,
            u32::from(id),
        ));
        pool.push(tcp4(A, B, id, 80, 1, &[]));
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut ts = 0u64;
    for _ in 0..5000 {
        x ^= x << 7;
        x ^= x >> 9;
        let ip = &pool[(x % pool.len() as u64) as usize];
        ts += (x >> 40) % (SEC / 2);
        if x % 97 == 5 {
            ts += 10 * SEC;
        }
        d.decode(LinkType::Raw, ts, ip, ip.len() as u32, &mut out);
        assert_invariant(d.counters());
        assert!(d.datagrams_held() <= 3);
    }
    d.finish();
    let c = d.counters();
    assert_invariant(c);
    assert_eq!(c.fragments_held, 0);
    assert!(
        c.fragments_merged > 0
            && c.drops.get(DropReason::FragmentTimeout) > 0
            && c.drops.get(DropReason::FragmentTableFull) > 0,
        "{c:?}"
    );
}
