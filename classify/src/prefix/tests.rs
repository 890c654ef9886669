use super::*;
use crate::{classify, Evidence, Side};

/// Openings every detector family starts with (either role): none may be given up.
const OPENINGS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
    b"\r\nPOST /x HTTP/1.0\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"220 ftp.example.com ready\r\n",
    b"USER anonymous\r\n",
    b"+OK POP3\r\n",
    b"* OK IMAP4rev1\r\n",
    b"NICK me\r\nUSER me 0 * :me\r\n",
    b"\xef\xbb\xbf<?xml version='1.0'?><stream:stream>",
    b"RFB 003.008\n",
    b"*1\r\n$4\r\nPING\r\n",
    b"INVITE sip:bob@example.com SIP/2.0\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00",
    b"\x00\x00\x00\x85\xffSMBr\x00\x00\x00",
    b"\x00\x00\x00\x85\xfeSMB@\x00\x00\x00",
    b"\x81\x00\x00\x44\x20\x43\x4b\x46",
    b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03",
    b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00",
    b"\x05\x00\x0b\x03\x10\x00\x00\x00\x48\x00",
    b"\x10\x10\x00\x04MQTT\x04\x02",
    b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00",
    b"\x05\x01\x00\x00\x00\x00\x00",
    b"\x00\x5a\x00\x00\x00\x00\x00\x00",
    b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
    b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00",
    b"N\x16\x03\x01\x00\x05\x01",
    b"R\x00\x00\x00\x08\x00\x00\x00\x00",
];

/// Deterministic bytes (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn every_opening_may_match_on_any_port() {
    for o in OPENINGS {
        for proto in [TCP, UDP] {
            if proto == UDP && !(text(o) || tls(o) || o[0] == 0x30) {
                continue; // the binary TCP protocols' openings
            }
            assert!(may_match(proto, [40000, 443], o), "{proto} {o:?}");
        }
    }
    let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
    quic.extend(noise(1, 1200));
    assert!(may_match(UDP, [50000, 443], &quic));
    let mut dhcp = noise(2, 300);
    dhcp[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    assert!(may_match(UDP, [50000, 40000], &dhcp));
    assert!(may_match(UDP, [50000, 40000], &[0xff; 8]));
}

#[test]
fn listed_ports_short_prefixes_and_other_protocols() {
    let junk = noise(3, 64);
    assert!(may_match(TCP, [3306, 50000], &junk));
    assert!(may_match(UDP, [50000, 123], &junk));
    assert!(may_match(TCP, [50000, 443], &junk[..DECIDE_BYTES - 1]));
    assert!(!may_match(1, [0, 0], b"GET / HTTP/1.1\r\n"));
}

/// Random payloads off the listed ports: TCP keeps about 6% (four printable bytes by
/// chance, 2.3%, and one-byte openings such as SOCKS 5 or PostgreSQL's `N`); UDP about 27%,
/// mostly RDPEUDP's SYN/ACK test (two flag bits of a header whose other fields are free).
#[test]
fn random_payloads_are_mostly_given_up() {
    for (proto, most) in [(TCP, 20_000 * 8 / 100), (UDP, 20_000 * 3 / 10)] {
        let kept = (0..20_000)
            .filter(|&i| may_match(proto, [50000, 443], &noise(i + 10, 64)))
            .count();
        assert!(kept < most, "proto {proto}: {kept} of 20000 kept");
    }
}

/// A side's bytes: an opening, noise, an opening with noise after it, or a mangled opening.
fn side(seed: u64) -> Vec<u8> {
    let pick = OPENINGS[(seed as usize / 4) % OPENINGS.len()];
    let n = noise(seed, 1 + (seed as usize * 7) % 300);
    match seed % 4 {
        0 => pick.to_vec(),
        1 => n,
        2 => [pick, &n[..]].concat(),
        _ => {
            let mut v = pick.to_vec();
            v[(seed as usize / 3) % pick.len()] ^= n[0] | 1;
            v
        }
    }
}

/// The property the collector relies on: a side the check gives up changes no verdict when
/// it is left out (shipped empty, not cut), whatever the other side holds.
#[test]
fn a_hopeless_side_changes_no_verdict() {
    const PORTS: &[u16] = &[
        80, 443, 21, 25, 22, 5432, 1883, 1080, 5900, 110, 143, 6667, 40000,
    ];
    let mut given_up = 0;
    for i in 0..60_000u64 {
        let (a, b) = (side(i), side(i.wrapping_mul(31) + 7));
        let proto = if i % 5 == 0 { UDP } else { TCP };
        let ports = [
            PORTS[(i as usize / 2) % PORTS.len()],
            PORTS[(i as usize / 7) % PORTS.len()],
        ];
        for truncated in [false, true] {
            let (sa, sb): (&[&[u8]], &[&[u8]]) = (&[&a], &[&b]);
            let ev = |oa: bool, ob: bool| Evidence {
                proto,
                orig_port: ports[0],
                resp_port: ports[1],
                orig: Side {
                    segments: if oa { sa } else { &[] },
                    truncated: truncated && oa,
                    len: None,
                },
                resp: Side {
                    segments: if ob { sb } else { &[] },
                    truncated: truncated && ob,
                    len: None,
                },
            };
            let full = classify(&ev(true, true));
            let (ka, kb) = (may_match(proto, ports, &a), may_match(proto, ports, &b));
            given_up += usize::from(!ka) + usize::from(!kb);
            assert_eq!(classify(&ev(ka, kb)), full, "{i} {truncated} {a:?} {b:?}");
        }
    }
    assert!(given_up > 10_000, "the property was exercised ({given_up})");
}
