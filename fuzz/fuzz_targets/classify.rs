//! Arbitrary payload evidence into the classifier (`tapflow_classify::classify`, issue 17): the
//! evidence comes off the wire, so no bytes may make it panic or stall, and what it says must
//! be what a connection record may carry (service names, a server name that cleans to a valid
//! one). And the collector's give-up check (`tapflow_classify::may_match`): a side it gives
//! up (TCP: by the stream's first bytes; UDP: by the first datagram, checked here with one
//! datagram a side) changes no verdict when left out.
//!
//! Input layout:
//! ```text
//! byte 0     bit 0: UDP (else TCP), bit 1: orig truncated, bit 2: resp truncated,
//!            bit 3: the sides' whole lengths are known (`Side::len`)
//! bytes 1-4  originator port, responder port (u16 LE each)
//! byte 5     UDP: datagrams per side (1..=8), from the low nibble; the high nibble: how many
//!            bytes past its evidence each side's whole length goes (with bit 3)
//! bytes 6-7  u16 LE: how many of the remaining bytes are the originator's (the rest the
//!            responder's); UDP sides are cut into that many datagrams of equal length
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow_classify::{classify, classify_with, may_match, Evidence, Settings, Side, SERVICES};
use tapflow_proto::conn::{clean_server_name, valid_service};

fuzz_target!(|data: &[u8]| {
    let [bits, op0, op1, rp0, rp1, dg, s0, s1, rest @ ..] = data else {
        return;
    };
    let udp = bits & 1 != 0;
    let split = usize::from(u16::from_le_bytes([*s0, *s1])).min(rest.len());
    let (orig, resp) = rest.split_at(split);
    let n = usize::from(dg & 0x0f).clamp(1, 8);
    let (o, r) = (segments(orig, udp, n), segments(resp, udp, n));
    let len = |b: &[u8]| (bits & 8 != 0).then(|| (b.len() + usize::from(dg >> 4)) as u64);
    let ev = Evidence {
        proto: if udp { 17 } else { 6 },
        orig_port: u16::from_le_bytes([*op0, *op1]),
        resp_port: u16::from_le_bytes([*rp0, *rp1]),
        orig: Side {
            segments: &o,
            truncated: bits & 2 != 0,
            len: len(orig),
        },
        resp: Side {
            segments: &r,
            truncated: bits & 4 != 0,
            len: len(resp),
        },
    };
    let v = classify(&ev);
    if let Some(service) = v.service() {
        assert!(valid_service(&service), "service {service:?}");
    }
    let mut seen = v.services.clone();
    seen.dedup();
    assert_eq!(seen.len(), v.services.len(), "a service twice: {v:?}");
    if let Some(name) = &v.server_name {
        let _ = clean_server_name(name);
    }
    for e in &v.expects {
        assert!(valid_service(e.service) && !e.service.contains(','), "{e:?}");
    }
    // Services disabled (picked by the bytes of the ports) are never listed, and the others
    // are listed as without the setting, in the same order.
    let disabled: Vec<&'static str> = SERVICES
        .iter()
        .enumerate()
        .filter(|(i, _)| (u32::from_le_bytes([*op0, *op1, *rp0, *rp1]) >> (i % 32)) & 1 != 0)
        .map(|(_, s)| *s)
        .collect();
    let settings = Settings {
        disabled,
        ..Settings::default()
    };
    let off = classify_with(&ev, &settings);
    let mut kept = v.services.clone();
    kept.retain(|s| settings.enabled(s));
    assert_eq!(off.services, kept, "disabled {:?}", settings.disabled);
    if !udp || n == 1 {
        let ports = [ev.orig_port, ev.resp_port];
        let keep = |s: &Side| s.segments.first().is_none_or(|f| may_match(ev.proto, ports, f));
        let mut cut = ev;
        for (side, full) in [(&mut cut.orig, &ev.orig), (&mut cut.resp, &ev.resp)] {
            if !keep(full) {
                *side = Side::default();
            }
        }
        assert_eq!(classify(&cut), v, "a given-up side changed the verdict");
    }
});

/// A side's segments: the TCP stream (none when empty), or `n` UDP datagrams.
fn segments(b: &[u8], udp: bool, n: usize) -> Vec<&[u8]> {
    if !udp {
        return if b.is_empty() { Vec::new() } else { vec![b] };
    }
    let each = b.len().div_ceil(n).max(1);
    b.chunks(each).collect()
}
