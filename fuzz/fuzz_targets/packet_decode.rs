//! Captured frames into the collector's packet decoder, over every link type tapflow decodes.
//! The decoder may not panic, whatever the bytes (DESIGN invariant 7), and its accounting must
//! reconcile after every packet and at the end (invariant 5; `collector/src/decode.rs` docs).
//!
//! Input layout (so a corpus entry is a short capture, fragments and all):
//! ```text
//! byte 0   link type: LINKS[b % LINKS.len()]
//! byte 1   bit 0: verify checksums, bit 1: VLAN id in the key, bit 2: do NOT decode tunnels,
//!          bits 3..7: fragment timeout in seconds (0..31)
//! then records until the input ends:
//!   u16 LE   captured length (cut to what is left)
//!   u8       bytes the capture lost to snaplen (wire_len = captured + this)
//!   u8       time since the previous record, in units of 100 ms
//!   bytes    the frame
//! ```
//! `fuzz/seed_packets.py` turns pcap/pcapng files into this layout. Payload evidence is on
//! with a small budget and table (`collector/src/evidence.rs`): its pieces stay within the
//! budget (a port-21 direction's announcement lines aside) and the packet's payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType, Outcome};
use tapflow_collector::evidence::EvidenceConfig;
use tapflow_proto::summary::flag;
use tapflow_proto::PacketSummary;

const LINKS: [LinkType; LinkType::ALL.len()] = LinkType::ALL;

fuzz_target!(|data: &[u8]| {
    let [link, cfg, rest @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = rest;
    let link = LINKS[usize::from(*link) % LINKS.len()];
    let cfg = DecodeConfig {
        verify_checksums: cfg & 1 != 0,
        vlan_in_key: cfg & 2 != 0,
        decode_tunnels: cfg & 4 == 0,
        // Small tables, so eviction and "table full" are reachable.
        frag_max_datagrams: 8,
        frag_max_bytes: 64 << 10,
        frag_timeout_ns: u64::from(cfg >> 3) * 1_000_000_000,
        // Payload evidence on, small: budgets, early stops and a full table are reachable.
        evidence: EvidenceConfig {
            bytes: 64,
            flows: 4,
        },
    };
    let mut decoder = Decoder::new(cfg);
    let mut out: Vec<PacketSummary> = Vec::new();
    let mut ts_ns = 1_700_000_000_000_000_000u64;
    while let [lo, hi, lost, dt, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        ts_ns += u64::from(*dt) * 100_000_000;
        let wire_len = len as u32 + u32::from(*lost);
        let before = out.len();
        let outcome = decoder.decode(link, ts_ns, frame, wire_len, &mut out);
        let pushed = &out[before..];
        match outcome {
            Outcome::Summarised => assert!(!pushed.is_empty(), "{link:?}: summarised, no summary"),
            Outcome::Held | Outcome::Dropped(_) => {
                assert!(
                    pushed.is_empty(),
                    "{link:?}: {outcome:?} with summaries {pushed:?}"
                )
            }
        }
        for s in pushed {
            check_summary(s);
        }
        check_accounting(&decoder, out.len());
    }
    decoder.finish();
    assert_eq!(
        decoder.counters().fragments_held,
        0,
        "fragments held after finish"
    );
    assert_eq!(decoder.datagrams_held(), 0, "datagrams held after finish");
    check_accounting(&decoder, out.len());
});

fn check_summary(s: &PacketSummary) {
    let k = &s.key;
    assert!(
        (k.lo, k.lo_port) <= (k.hi, k.hi_port),
        "key not canonical: {s:?}"
    );
    assert_eq!(
        s.flags & flag::TUNNEL_INNER != 0,
        s.tunnel_parent.is_some(),
        "tunnel_parent without TUNNEL_INNER or the reverse: {s:?}"
    );
    if let Some(p) = &s.payload {
        // A UDP datagram that starts within the budget ships whole (QUIC Initials); a port-21
        // direction past its budget still ships lines that may announce a data connection.
        let ftp = k.proto == 6 && (k.lo_port == 21 || k.hi_port == 21);
        let cap = if k.proto == 17 {
            tapflow_classify::UDP_WHOLE as usize
        } else if ftp && tapflow_classify::ftp_late_line(&p.bytes) == Some(0..p.bytes.len()) {
            tapflow_classify::FTP_LINE_MAX
        } else {
            64
        };
        assert!(p.bytes.len() <= cap, "evidence past the budget: {s:?}");
        assert!(
            p.bytes.len() as u32 <= s.payload_len,
            "more evidence than payload: {s:?}"
        );
        assert!(
            s.flags & flag::TUNNEL_OUTER == 0,
            "evidence on a tunnel's outer packet: {s:?}"
        );
    }
    // A UDP tunnel's outer packet: flagged `TUNNEL_OUTER` when its inner packet was
    // summarised, or only named (an ARP frame inside, which Zeek's ARP analyzer takes).
    assert!(
        s.tunnel_kind == 0 || s.key.proto == 17,
        "a tunnel kind on a packet that is no UDP tunnel's outer one: {s:?}"
    );
    assert!(
        s.tunnel_kind == 0 || s.payload.is_none(),
        "evidence on a tunnel's outer packet: {s:?}"
    );
}

/// `packets == summarised + merged + held + packet drops`, and every summary counted.
fn check_accounting(decoder: &Decoder, summaries: usize) {
    let c = decoder.counters();
    assert_eq!(
        c.packets,
        c.packets_summarised + c.fragments_merged + c.fragments_held + c.drops.packet_drops(),
        "accounting does not reconcile: {c:?}"
    );
    assert_eq!(c.summaries, summaries as u64, "summaries miscounted: {c:?}");
}
