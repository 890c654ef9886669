//! The wire codec, held from outside the crate (DESIGN invariants 5 and 7):
//! - any batch, heartbeat, end-of-stream and processor message round-trips;
//! - decoding never panics, whatever the bytes: random bytes, random bodies behind a valid
//!   frame header, and random mutations and truncations of valid messages;
//! - a strict prefix of a valid message is always an error, and so is a valid message with
//!   bytes after it;
//! - a measured report of bytes per summary
//!   (`cargo test -p tapflow-proto --test wire bytes_per_summary -- --nocapture`).
//!
//! `FUZZ_SEED_DIR=dir cargo test -p tapflow-proto --test wire fuzz_seeds` writes the valid
//! messages below into `dir` as a seed corpus for `fuzz/` (see `fuzz/seed.sh`).

mod common;
use common::SplitMix64;
use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use tapflow_proto::account::EvidenceCounters;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::{flag, tcp, Payload};
use tapflow_proto::upstream::{
    AuthCounters, LinkAccount, ProcessorAccount, ProcessorCounters, ProcessorHeartbeat, ShardClaim,
    UpMessage,
};
use tapflow_proto::wire::{self, encode_batch, encode_eos, encode_heartbeat, kind};
use tapflow_proto::{
    Addr, CaptureStats, CollectorCounters, EosStatus, FiveTuple, FlowKey, LinkHeader, Message,
    PacketSummary,
};

// ---------------------------------------------------------------------------------------------
// Strategies

fn arb_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(Addr::from_v4),
        any::<[u8; 16]>().prop_map(Addr::from_v6),
    ]
}

/// Any key, canonical or not: the codec must carry whatever it is given.
fn arb_key() -> impl Strategy<Value = FlowKey> {
    (
        any::<u8>(),
        arb_addr(),
        arb_addr(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(proto, lo, hi, lo_port, hi_port, vlan)| FlowKey {
            proto,
            lo,
            hi,
            lo_port,
            hi_port,
            vlan,
        })
}

fn arb_summary() -> impl Strategy<Value = PacketSummary> {
    (
        (
            any::<u64>(),
            arb_key(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u16>()),
        (any::<u8>(), any::<u8>(), proptest::option::of(arb_key())),
        (
            any::<u8>(),
            proptest::option::of((any::<u32>(), vec(any::<u8>(), 0..64))),
        ),
    )
        .prop_map(
            |(
                (ts_ns, key, flags, ip_len, payload_len),
                (tcp_flags, seq, ack, window),
                (icmp_type, icmp_code, tunnel_parent),
                (tunnel_kind, payload),
            )| PacketSummary {
                ts_ns,
                key,
                flags,
                ip_len,
                payload_len,
                tcp_flags,
                seq,
                ack,
                window,
                icmp_type,
                icmp_code,
                tunnel_parent,
                tunnel_kind,
                payload: payload.map(|(offset, bytes)| Box::new(Payload { offset, bytes })),
            },
        )
}

fn arb_header() -> impl Strategy<Value = LinkHeader> {
    (
        any::<String>(),
        any::<u64>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(sender, incarnation, epoch, shard_count, shard, seq, watermark_ns)| LinkHeader {
                sender,
                incarnation,
                epoch,
                shard_count,
                shard,
                seq,
                watermark_ns,
            },
        )
}

fn arb_counters() -> impl Strategy<Value = CollectorCounters> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        vec(any::<u64>(), 0..8),
        btree_map(any::<String>(), any::<u64>(), 0..6),
        any::<(u64, u64, u64)>(),
    )
        .prop_map(
            |(
                (packets_read, packets_summarised, fragments_merged, summaries),
                summaries_sent,
                drops,
                (received, kernel_dropped, if_dropped),
            )| CollectorCounters {
                packets_read,
                packets_summarised,
                fragments_merged,
                summaries,
                summaries_sent,
                drops,
                capture: CaptureStats {
                    received,
                    kernel_dropped,
                    if_dropped,
                },
                evidence: EvidenceCounters {
                    flows: received / 3,
                    bytes_shipped: kernel_dropped,
                    table_full: if_dropped,
                    ..EvidenceCounters::default()
                },
            },
        )
}

fn arb_status() -> impl Strategy<Value = EosStatus> {
    prop_oneof![
        Just(EosStatus::Complete),
        Just(EosStatus::Interrupted),
        any::<String>().prop_map(EosStatus::Damaged),
        any::<String>().prop_map(EosStatus::OpenFailed),
        any::<String>().prop_map(EosStatus::Failed),
    ]
}

fn arb_claim() -> impl Strategy<Value = ShardClaim> {
    any::<(u32, u16, u16)>().prop_map(|(epoch, shard_count, shard)| ShardClaim {
        epoch,
        shard_count,
        shard,
    })
}

fn arb_link_account() -> impl Strategy<Value = LinkAccount> {
    (
        (
            any::<String>(),
            any::<u64>(),
            proptest::option::of(arb_claim()),
        ),
        any::<(u64, u64, u64, u64)>(),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(arb_status()),
            proptest::option::of(arb_counters()),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (sender, incarnation, claim),
                (summaries_received, gaps, misrouted, late),
                (eos_seq, eos_status, counters, watermark_ns),
            )| LinkAccount {
                sender,
                incarnation,
                claim,
                summaries_received,
                gaps,
                misrouted,
                late,
                eos_seq,
                eos_status,
                counters,
                watermark_ns,
                first_seq: 0,
                skew_max_ms: 0,
            },
        )
}

fn arb_up_message() -> impl Strategy<Value = UpMessage> {
    prop_oneof![
        (any::<String>(), any::<u64>(), any::<u64>()).prop_map(
            |(processor, incarnation, watermark_ns)| UpMessage::Heartbeat(ProcessorHeartbeat {
                silent_collectors: vec![],
                collectors: vec![],
                processor,
                incarnation,
                watermark_ns,
                ..ProcessorHeartbeat::default()
            })
        ),
        (
            (
                any::<String>(),
                any::<u64>(),
                proptest::option::of(arb_claim())
            ),
            vec(arb_link_account(), 0..4),
            btree_map(any::<String>(), any::<u64>(), 0..4),
            any::<(u64, u64)>(),
            arb_processor_counters(),
        )
            .prop_map(
                |(
                    (processor, incarnation, claim),
                    links,
                    malformed,
                    (misrouted_messages, summaries_wrong_shard),
                    counters,
                )| UpMessage::Eos(Box::new(ProcessorAccount {
                    processor,
                    incarnation,
                    claim,
                    links,
                    malformed,
                    misrouted_messages,
                    summaries_wrong_shard,
                    counters,
                }))
            ),
    ]
}

/// Processor counters with the optional ones present or not.
fn arb_processor_counters() -> impl Strategy<Value = ProcessorCounters> {
    (
        proptest::option::of(any::<(u64, u64, u64)>()),
        proptest::option::of(any::<u64>()),
        any::<(u64, u64, u64, u64)>(),
    )
        .prop_map(
            |(auth, epoch_unknown, (records, records_sent, flows_open, merge_late))| {
                ProcessorCounters {
                    auth: auth.map(|(accepted, rejected, rejected_handshake)| AuthCounters {
                        accepted,
                        rejected,
                        rejected_handshake,
                    }),
                    epoch_unknown,
                    records,
                    records_sent,
                    flows_open,
                    merge_late,
                    ..ProcessorCounters::default()
                }
            },
        )
}

/// Any collector message; batches of up to `max_summaries`.
fn arb_message(max_summaries: usize) -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_header(), vec(arb_summary(), 0..=max_summaries))
            .prop_map(|(header, summaries)| Message::Batch { header, summaries }),
        (arb_header(), arb_counters())
            .prop_map(|(header, counters)| Message::Heartbeat { header, counters }),
        (arb_header(), arb_status(), arb_counters()).prop_map(|(header, status, counters)| {
            Message::Eos {
                header,
                status,
                counters,
            }
        }),
    ]
}

/// Any valid encoded message, collector or processor (small batches: damage to one summary is
/// like damage to another).
fn arb_encoded() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => arb_message(8).prop_map(|m| encode(&m)),
        1 => arb_up_message().prop_map(|m| encode_up(&m)),
    ]
}

/// One damage done to a valid message.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Overwrite with a MessagePack marker that announces a length or a container, followed by
    /// a big length: where a parser is most likely to trust what it reads.
    Marker(usize, u8, [u8; 4]),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    const MARKERS: [u8; 20] = [
        0x90, 0x9f, 0x80, 0x8f, 0xc0, 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
        0xcf, 0xd3, 0xd4, 0xc7, 0xa5,
    ];
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        any::<(usize, u8)>().prop_map(|(i, v)| Mutation::SetByte(i, v)),
        any::<(usize, u8)>().prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::sample::select(&MARKERS[..]),
            any::<[u8; 4]>()
        )
            .prop_map(|(i, m, len)| Mutation::Marker(i, m, len)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    let len = bytes.len();
    match *m {
        Mutation::FlipBit(i, b) if len > 0 => bytes[at(i, len)] ^= 1 << b,
        Mutation::SetByte(i, v) if len > 0 => bytes[at(i, len)] = v,
        Mutation::Insert(i, v) => bytes.insert(at(i, len + 1), v),
        Mutation::Remove(i) if len > 0 => {
            bytes.remove(at(i, len));
        }
        Mutation::Truncate(i) => bytes.truncate(at(i, len + 1)),
        Mutation::Marker(i, marker, big) if len > 0 => {
            let i = at(i, len);
            bytes.splice(i..(i + 1).min(len), std::iter::once(marker).chain(big));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match m {
        Message::Batch { header, summaries } => encode_batch(header, summaries, &mut out),
        Message::Heartbeat { header, counters } => encode_heartbeat(header, counters, &mut out),
        Message::Eos {
            header,
            status,
            counters,
        } => encode_eos(header, status, counters, &mut out),
    }
    out
}

fn encode_up(m: &UpMessage) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// Decodes `bytes` both ways; whatever decodes must re-encode to something that decodes equal
/// (decoding is a function of the value, not of how the sender happened to spell it).
fn check_decode_any(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::decode(bytes) {
        prop_assert_eq!(Message::decode(&encode(&m)), Ok(m));
    }
    if let Ok(m) = UpMessage::decode(bytes) {
        prop_assert_eq!(UpMessage::decode(&encode_up(&m)), Ok(m));
    }
    Ok(())
}

/// Decodes with whichever decoder the frame's kind byte belongs to.
fn decode_reason(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.get(3).is_some_and(|&k| k >= 16) {
        UpMessage::decode(bytes).map(|_| ()).map_err(|e| e.reason())
    } else {
        Message::decode(bytes).map(|_| ()).map_err(|e| e.reason())
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batches_round_trip(header in arb_header(), summaries in vec(arb_summary(), 0..200)) {
        let mut buf = Vec::new();
        encode_batch(&header, &summaries, &mut buf);
        prop_assert_eq!(Message::decode(&buf), Ok(Message::Batch { header, summaries }));
    }

    #[test]
    fn every_collector_message_round_trips(m in arb_message(64)) {
        let bytes = encode(&m);
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
        // A collector message is not a processor message.
        prop_assert_eq!(UpMessage::decode(&bytes).map_err(|e| e.reason()), Err("unknown_kind"));
    }

    #[test]
    fn every_processor_message_round_trips(m in arb_up_message()) {
        let bytes = encode_up(&m);
        prop_assert_eq!(UpMessage::decode(&bytes), Ok(m));
        prop_assert_eq!(Message::decode(&bytes).map_err(|e| e.reason()), Err("unknown_kind"));
    }

    /// The encoder reuses the caller's buffer: what was in it before does not leak into the frame.
    #[test]
    fn encoding_clears_the_buffer(junk in vec(any::<u8>(), 0..64), m in arb_message(8)) {
        let mut buf = junk;
        if let Message::Batch { header, summaries } = &m {
            encode_batch(header, summaries, &mut buf);
            prop_assert_eq!(&buf, &encode(&m));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_decode_any(&bytes)?;
    }

    /// Random bodies behind a valid frame header, so the MessagePack parser sees them.
    #[test]
    fn random_bodies_never_panic(
        k in prop_oneof![
            Just(kind::BATCH),
            Just(kind::HEARTBEAT),
            Just(kind::EOS),
            Just(16u8),
            Just(17u8),
            any::<u8>(),
        ],
        body in vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![wire::MAGIC[0], wire::MAGIC[1], wire::FORMAT_VERSION, k];
        bytes.extend_from_slice(&body);
        check_decode_any(&bytes)?;
    }

    #[test]
    fn mutated_messages_never_panic(
        bytes in arb_encoded(),
        mutations in vec(arb_mutation(), 1..6),
    ) {
        let mut bytes = bytes;
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_decode_any(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// MessagePack is prefix-free: a cut message is an error (truncated or malformed), never a
    /// shorter valid message.
    #[test]
    fn strict_prefixes_are_errors(bytes in arb_encoded(), cut in any::<usize>()) {
        let cut = cut % bytes.len();
        let reason = decode_reason(&bytes[..cut]);
        prop_assert!(
            matches!(reason, Err("truncated" | "malformed")),
            "{} of {} bytes gave {:?}", cut, bytes.len(), reason
        );
    }

    #[test]
    fn trailing_bytes_are_errors(bytes in arb_encoded(), extra in vec(any::<u8>(), 1..16)) {
        prop_assert_eq!(decode_reason(&bytes), Ok(()));
        let mut long = bytes;
        long.extend_from_slice(&extra);
        prop_assert_eq!(decode_reason(&long), Err("trailing_bytes"));
    }
}

// ---------------------------------------------------------------------------------------------
// Examples

#[test]
fn header_errors_come_before_the_body() {
    let good = encode(&Message::Heartbeat {
        header: typical_header(),
        counters: CollectorCounters::default(),
    });
    for (bytes, reason) in [
        (&b""[..], "truncated"),
        (&b"TF\x01"[..], "truncated"),
        (&b"FT\x01\x02"[..], "bad_magic"),
        (&b"TF\x00\x02"[..], "unknown_version"),
        (&b"TF\xff\x02"[..], "unknown_version"),
        (&b"TF\x01\x01"[..], "unknown_version"),
        (&b"TF\x02\x01"[..], "unknown_version"),
        (&b"TF\x03\x01"[..], "unknown_version"),
        (&b"TF\x04\x01"[..], "unknown_version"),
        (&b"TF\x05\x00"[..], "unknown_kind"),
        (&b"TF\x05\x04"[..], "unknown_kind"),
        (&b"TF\x05\x01"[..], "malformed"),
    ] {
        assert_eq!(decode_reason(bytes), Err(reason), "{bytes:?}");
    }
    let mut wrong_version = good.clone();
    wrong_version[2] = 1;
    assert_eq!(decode_reason(&wrong_version), Err("unknown_version"));
    assert_eq!(decode_reason(&good), Ok(()));
}

/// Big claimed lengths with nothing behind them are refused without allocating them.
#[test]
fn huge_claimed_lengths_are_malformed() {
    for body in [
        &b"\x92\xdd\xff\xff\xff\xff"[..],     // header: array of 4G elements
        &b"\x92\x97\xdb\xff\xff\xff\xff"[..], // sender: string of 4 GB
        &b"\x92\xdf\xff\xff\xff\xff"[..],     // header as a map of 4G entries
        &b"\x92\x97\xc6\xff\xff\xff\xff"[..], // sender: bin of 4 GB
        &b"\x92\x97\xc9\xff\xff\xff\xff\x01"[..], // sender: ext of 4 GB
        &b"\x92\x97\xa1x\x01\x01\x01\x01\x01\x01\xdd\xff\xff\xff\xff"[..], // counters: 4G
        // A batch claiming 4G summaries, then a bin of 4 GB, with nothing behind either.
        &b"\x93\x97\xa1x\x01\x01\x01\x01\x01\x01\xce\xff\xff\xff\xff\xc6\0\0\0\0"[..],
        &b"\x93\x97\xa1x\x01\x01\x01\x01\x01\x01\xce\0\0\0\x01\xc6\xff\xff\xff\xff"[..],
    ] {
        for k in [kind::BATCH, kind::HEARTBEAT, kind::EOS] {
            let mut bytes = vec![b'T', b'F', wire::FORMAT_VERSION, k];
            bytes.extend_from_slice(body);
            assert_eq!(decode_reason(&bytes), Err("malformed"), "{bytes:x?}");
        }
    }
}

/// Found while writing these tests: rmp-serde allows 1024 levels of nesting, and a value under
/// a field the struct does not know (MessagePack structs may come as maps) is skipped by
/// recursion. Unoptimised builds use 2 to 4 KiB of stack per level, so 1 KB of input overflows
/// a thread's default 2 MiB stack and aborts the process (a processor or aggregator built by
/// `cargo build`, as the integration tests run them). No tapflow message nests deeper than 6
/// levels; deeper input must be refused early.
#[test]
fn deep_nesting_is_refused() {
    for k in [kind::BATCH, kind::HEARTBEAT, 16, 17] {
        // The map form itself is accepted (so the refusals below are about depth).
        assert_eq!(decode_reason(&with_unknown_field(k, 0)), Ok(()), "kind {k}");
        for depth in [64, 1000] {
            let bytes = with_unknown_field(k, depth);
            // A big stack here, so that today's behaviour is a clean failure, not an abort.
            let reason = on_thread(64 << 20, move || decode_reason(&bytes));
            assert_eq!(
                reason,
                Err("malformed"),
                "kind {k}: a message nested {depth} levels deep was accepted"
            );
        }
        // And refusing it takes little stack, as on a small worker thread.
        let bytes = with_unknown_field(k, 100_000);
        let reason = on_thread(256 << 10, move || decode_reason(&bytes));
        assert_eq!(reason, Err("malformed"), "kind {k}");
    }
}

/// A valid frame of kind `k` whose first struct comes as a map, with an extra field `zz`
/// holding arrays nested `depth` deep (just `nil` for depth 0).
fn with_unknown_field(k: u8, depth: usize) -> Vec<u8> {
    fn str(out: &mut Vec<u8>, s: &str) {
        out.push(0xa0 | s.len() as u8); // fixstr
        out.extend_from_slice(s.as_bytes());
    }
    let fields: &[&str] = match k {
        kind::BATCH | kind::HEARTBEAT => &[
            "incarnation",
            "epoch",
            "shard_count",
            "shard",
            "seq",
            "watermark_ns",
        ],
        16 => &["incarnation", "watermark_ns"],
        _ => &["incarnation", "misrouted_messages", "summaries_wrong_shard"],
    };
    let name = if k < 16 { "sender" } else { "processor" };
    let mut map = vec![0x80 | (fields.len() + 2) as u8]; // fixmap
    str(&mut map, name);
    str(&mut map, "x");
    for f in fields {
        str(&mut map, f);
        map.push(0x01);
    }
    str(&mut map, "zz");
    map.extend(std::iter::repeat_n(0x91, depth)); // [[[...
    map.push(0xc0); // nil
    let mut bytes = vec![b'T', b'F', wire::FORMAT_VERSION, k];
    match k {
        kind::BATCH => {
            bytes.push(0x93); // [header, count, packed summaries]
            bytes.extend_from_slice(&map);
            bytes.extend_from_slice(&[0xce, 0, 0, 0, 0, 0xc6, 0, 0, 0, 0]); // none
        }
        kind::HEARTBEAT => {
            bytes.push(0x92); // [header, counters]
            bytes.extend_from_slice(&map);
            // CollectorCounters: 4 integers, summaries_sent [], drops {}, capture [0, 0, 0]
            bytes.extend_from_slice(&[0x97, 0, 0, 0, 0, 0x90, 0x80, 0x93, 0, 0, 0]);
        }
        16 => bytes.extend_from_slice(&map),
        _ => {
            // ProcessorAccount's other fields: claim nil, links [], malformed {}.
            map[0] += 3;
            for (f, v) in [("claim", 0xc0), ("links", 0x90), ("malformed", 0x80)] {
                str(&mut map, f);
                map.push(v);
            }
            bytes.extend_from_slice(&map);
        }
    }
    bytes
}

fn on_thread<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::Builder::new().stack_size(stack).spawn(f) {
        Ok(t) => match t.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        },
        Err(e) => panic!("cannot spawn a thread: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Size report

fn typical_header() -> LinkHeader {
    LinkHeader {
        sender: "tap-a/eth0/4242".into(),
        incarnation: 0x1234_5678_9abc_def0,
        epoch: 1,
        shard_count: 4,
        shard: 2,
        seq: 1_234_567,
        watermark_ns: 1_700_000_000_000_000_000,
    }
}

#[derive(Clone, Copy, Debug)]
enum Traffic {
    Ipv4Tcp,
    Ipv6Tcp,
    Udp,
    TunnelInner,
}

/// `n` summaries of one kind of traffic, as a busy tap would batch them: timestamps a few
/// microseconds apart, a few hundred flows, full-size and ACK-only segments.
fn typical_summaries(traffic: Traffic, n: usize) -> Vec<PacketSummary> {
    let mut rng = SplitMix64(traffic as u64 + 1);
    let mut ts = 1_700_000_000_123_456_789u64;
    (0..n)
        .map(|_| {
            let r = rng.next();
            ts += r % 20_000;
            let flow = (r >> 16) as u16 % 300;
            let client_v4 = Addr::from_v4([10, 1, (flow >> 8) as u8, flow as u8]);
            let server_v4 = Addr::from_v4([93, 184, 216, 34]);
            let mut c6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c6[8..].copy_from_slice(&(r | 1).to_be_bytes());
            let s6 = [
                0x26, 0x06, 0x28, 0, 0x02, 0x20, 0, 1, 0x2, 0x48, 0x18, 0x93, 0x25, 0xc8, 0x19,
                0x46,
            ];
            let big = r & 1 == 0;
            let reverse = r & 2 == 0;
            let tuple = |proto, src, dst, sport, dport| {
                let t = FiveTuple {
                    proto,
                    src,
                    dst,
                    sport,
                    dport,
                };
                if reverse {
                    FiveTuple {
                        src: dst,
                        dst: src,
                        sport: dport,
                        dport: sport,
                        ..t
                    }
                } else {
                    t
                }
            };
            let (seq, ack) = ((rng.next() >> 32) as u32, (rng.next() >> 32) as u32);
            let tcp_fields = |s: &mut PacketSummary, ip_header: u32| {
                s.payload_len = if big { 1448 } else { 0 };
                s.ip_len = ip_header + 32 + s.payload_len;
                s.tcp_flags = if big { tcp::ACK | tcp::PSH } else { tcp::ACK };
                s.seq = seq;
                s.ack = ack;
                s.window = 501 + (r >> 40) as u16 % 64_000;
            };
            let mut s = PacketSummary {
                ts_ns: ts,
                ..PacketSummary::default()
            };
            let sport = 32768 + flow;
            match traffic {
                Traffic::Ipv4Tcp => {
                    s.set_tuple(&tuple(ip_proto::TCP, client_v4, server_v4, sport, 443), 0);
                    tcp_fields(&mut s, 20);
                }
                Traffic::Ipv6Tcp => {
                    s.set_tuple(
                        &tuple(
                            ip_proto::TCP,
                            Addr::from_v6(c6),
                            Addr::from_v6(s6),
                            sport,
                            443,
                        ),
                        0,
                    );
                    tcp_fields(&mut s, 40);
                }
                Traffic::Udp => {
                    s.set_tuple(
                        &tuple(
                            ip_proto::UDP,
                            client_v4,
                            Addr::from_v4([9, 9, 9, 9]),
                            sport,
                            53,
                        ),
                        0,
                    );
                    s.payload_len = if reverse { 120 } else { 40 };
                    s.ip_len = 28 + s.payload_len;
                    if reverse {
                        s.flags |= flag::DNS_RESPONSE;
                    }
                }
                Traffic::TunnelInner => {
                    s.set_tuple(&tuple(ip_proto::TCP, client_v4, server_v4, sport, 443), 0);
                    tcp_fields(&mut s, 20);
                    s.flags |= flag::TUNNEL_INNER;
                    let outer = FiveTuple {
                        proto: ip_proto::UDP,
                        src: Addr::from_v4([172, 16, 0, 1]),
                        dst: Addr::from_v4([172, 16, 0, 2]),
                        sport: 49152 + flow % 16,
                        dport: 4789,
                    };
                    s.tunnel_parent = Some(outer.key(0).0);
                }
            }
            s
        })
        .collect()
}

#[test]
fn bytes_per_summary() {
    const N: usize = 1000;
    let mut buf = Vec::new();
    encode_batch(&typical_header(), &[], &mut buf);
    let empty = buf.len();
    println!("empty batch (frame + header): {empty} bytes");
    for traffic in [
        Traffic::Ipv4Tcp,
        Traffic::Ipv6Tcp,
        Traffic::Udp,
        Traffic::TunnelInner,
    ] {
        let summaries = typical_summaries(traffic, N);
        encode_batch(&typical_header(), &summaries, &mut buf);
        assert_eq!(
            Message::decode(&buf),
            Ok(Message::Batch {
                header: typical_header(),
                summaries: summaries.clone()
            })
        );
        let per = (buf.len() - empty) as f64 / N as f64;
        let max_one = summaries
            .iter()
            .map(|s| {
                encode_batch(&typical_header(), std::slice::from_ref(s), &mut buf);
                buf.len() - empty
            })
            .max()
            .unwrap_or(0);
        println!(
            "{traffic:?}: {per:.1} bytes per summary in a batch of {N} (largest single: {max_one})"
        );
        // Generous: a summary is ~40 bytes of fields; an encoding twice that has gone wrong.
        assert!(per < 100.0, "{traffic:?}: {per:.1} bytes per summary");
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds

/// Small valid messages of every kind: the fuzz corpus starts from these.
fn seed_messages() -> Vec<(String, Vec<u8>)> {
    let header = typical_header();
    let mut counters = CollectorCounters {
        packets_read: 1000,
        packets_summarised: 990,
        fragments_merged: 4,
        summaries: 1002,
        summaries_sent: vec![500, 502],
        drops: BTreeMap::new(),
        capture: CaptureStats {
            received: 1000,
            kernel_dropped: 3,
            if_dropped: 0,
        },
        evidence: EvidenceCounters {
            flows: 20,
            pieces_shipped: 40,
            bytes_shipped: 9000,
            budget: 7,
            ..EvidenceCounters::default()
        },
    };
    counters.drops.insert("non_ip".into(), 6);
    let mut seeds = Vec::new();
    for traffic in [
        Traffic::Ipv4Tcp,
        Traffic::Ipv6Tcp,
        Traffic::Udp,
        Traffic::TunnelInner,
    ] {
        let m = Message::Batch {
            header: header.clone(),
            summaries: typical_summaries(traffic, 3),
        };
        seeds.push((format!("batch_{traffic:?}").to_lowercase(), encode(&m)));
    }
    let m = Message::Batch {
        header: header.clone(),
        summaries: Vec::new(),
    };
    seeds.push(("batch_empty".into(), encode(&m)));
    let m = Message::Heartbeat {
        header: header.clone(),
        counters: counters.clone(),
    };
    seeds.push(("heartbeat".into(), encode(&m)));
    for (name, status) in [
        ("complete", EosStatus::Complete),
        ("interrupted", EosStatus::Interrupted),
        (
            "damaged",
            EosStatus::Damaged("truncated record at offset 4242".into()),
        ),
        ("open_failed", EosStatus::OpenFailed("no such file".into())),
        ("failed", EosStatus::Failed("interface went down".into())),
    ] {
        let m = Message::Eos {
            header: header.clone(),
            status,
            counters: counters.clone(),
        };
        seeds.push((format!("eos_{name}"), encode(&m)));
    }
    let up = UpMessage::Heartbeat(ProcessorHeartbeat {
        silent_collectors: vec!["tap-b".into()],
        collectors: vec![],
        processor: "p0".into(),
        incarnation: 9,
        watermark_ns: 1_700_000_000_000_000_000,
        ..ProcessorHeartbeat::default()
    });
    seeds.push(("up_heartbeat".into(), encode_up(&up)));
    let claim = ShardClaim {
        epoch: 1,
        shard_count: 2,
        shard: 0,
    };
    let up = UpMessage::Eos(Box::new(ProcessorAccount {
        processor: "p0".into(),
        incarnation: 9,
        claim: Some(claim),
        links: vec![LinkAccount {
            sender: header.sender.clone(),
            incarnation: header.incarnation,
            claim: Some(claim),
            summaries_received: 500,
            gaps: 1,
            eos_seq: Some(501),
            eos_status: Some(EosStatus::Complete),
            counters: Some(counters),
            watermark_ns: 1_700_000_000_000_000_000,
            ..LinkAccount::default()
        }],
        malformed: [("bad_magic".to_owned(), 2)].into_iter().collect(),
        misrouted_messages: 0,
        summaries_wrong_shard: 0,
        counters: ProcessorCounters {
            records: 7,
            ..ProcessorCounters::default()
        },
    }));
    seeds.push(("up_eos".into(), encode_up(&up)));
    seeds
}

#[test]
fn fuzz_seeds() {
    let seeds = seed_messages();
    for (name, bytes) in &seeds {
        assert_eq!(decode_reason(bytes), Ok(()), "seed {name}");
    }
    let Some(dir) = std::env::var_os("FUZZ_SEED_DIR") else {
        println!("FUZZ_SEED_DIR not set: seeds checked, not written");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create FUZZ_SEED_DIR");
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}
