//! IP parsing: lengths, snaplen cuts, options, extension header chains, fragments.

use super::*;
use crate::decode::testutil::{ipv4_header, ipv6, v4, A6, B6};

/// What a parse should find: protocol, IP length, upper-layer length by the header,
/// captured upper-layer bytes, truncated, fragment.
type Expect = (u8, u32, u32, usize, bool, Option<Frag>);

fn check(bytes: &[u8], missing: u32, expected: Result<Expect, DropReason>) {
    check_verify(bytes, missing, true, expected);
}

fn check_verify(bytes: &[u8], missing: u32, verify: bool, expected: Result<Expect, DropReason>) {
    let got = parse(bytes, missing, verify).map(|p| {
        (
            p.proto,
            p.net.ip_len,
            p.payload_len,
            p.payload.len(),
            p.net.truncated,
            p.frag,
        )
    });
    assert_eq!(
        got, expected,
        "{bytes:02x?} missing {missing} verify {verify}"
    );
}

fn with(header: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    [header, payload.to_vec()].concat()
}

#[test]
fn ipv4_lengths_options_and_checksum() {
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let plain = with(ipv4_header(17, a, b, 12, 1, 0, false, &[]), &[7; 12]);
    check(&plain, 0, Ok((17, 32, 12, 12, false, None)));
    // Ethernet padding beyond the total length is not payload.
    check(
        &[plain.clone(), vec![0; 14]].concat(),
        0,
        Ok((17, 32, 12, 12, false, None)),
    );
    // Options (record route, 8 bytes) belong to the header.
    let opts = with(
        ipv4_header(6, a, b, 4, 1, 0, false, &[7, 7, 4, 0, 0, 0, 0, 0]),
        &[1; 4],
    );
    check(&opts, 0, Ok((6, 32, 4, 4, false, None)));
    // Cut by snaplen: summarised as truncated. Cut without a snaplen: malformed.
    check(&plain[..25], 7, Ok((17, 32, 12, 5, true, None)));
    check(&plain[..25], 6, Err(DropReason::Truncated));
    check(&plain[..25], 0, Err(DropReason::Truncated));
    check(&plain[..19], 13, Err(DropReason::Truncated));
    check(&[], 0, Err(DropReason::Truncated));
    // TSO: total length 0. Verifying checksums (Zeek without -C): dropped, even with a right
    // header checksum. Not verifying: the payload is the rest of the capture (padding
    // included, as Zeek takes it), and the IP length is the header's 0.
    let mut tso = plain.clone();
    tso[2..4].copy_from_slice(&[0, 0]);
    fix_checksum(&mut tso);
    check(&tso, 0, Err(DropReason::MalformedIp));
    check_verify(&tso, 0, false, Ok((17, 0, 12, 12, false, None)));
    check_verify(
        &[tso.clone(), vec![0; 6]].concat(),
        0,
        false,
        Ok((17, 0, 18, 18, false, None)),
    );
    // A snaplen cut does not make it truncated: the capture is all there is.
    check_verify(&tso[..25], 7, false, Ok((17, 0, 5, 5, false, None)));
    check_verify(&tso[..19], 13, false, Err(DropReason::Truncated));
    let mut bad = plain.clone();
    bad[10] ^= 0xff;
    check(&bad, 0, Err(DropReason::BadIpChecksum));
    assert!(
        parse(&bad, 0, false).is_ok(),
        "checksum ignored when not verifying"
    );
    let mut short_total = plain.clone();
    short_total[2..4].copy_from_slice(&[0, 16]);
    fix_checksum(&mut short_total);
    check(&short_total, 0, Err(DropReason::MalformedIp));
    check(
        &[&[0x44u8, 0, 0, 20][..], &[0; 16]].concat(),
        0,
        Err(DropReason::MalformedIp),
    );
    check(&[0x55; 40], 0, Err(DropReason::MalformedIp));
}

/// A real segmentation-offload frame: Zeek's trace `ldap/missing_krbtgt_ldap_request.pcapng`,
/// frame 8, an Ethernet frame of 1899 bytes whose IPv4 total length (and header checksum) is
/// 0, carrying 1845 bytes of LDAP after a 20-byte TCP header. Zeek (`-C`) counts 0 for it in
/// `orig_ip_bytes` (its conn.log: 14 packets, 1733 bytes, 1885 less than the captured sizes).
#[test]
fn ipv4_total_length_zero_real_frame() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/zeek-corpus/traces");
    let path = dir.join("ldap__missing_krbtgt_ldap_request.pcapng");
    if !path.is_file() {
        println!("skipping: {} is absent", path.display());
        return;
    }
    let mut cap = pcap::Capture::from_file(&path).expect("opening the LDAP trace");
    let mut frame = Vec::new();
    for _ in 0..8 {
        frame = cap
            .next_packet()
            .expect("reading frames 1 to 8")
            .data
            .to_vec();
    }
    assert_eq!(frame.len(), 1899, "frame 8 is the offloaded segment");
    let ip = frame.get(14..).expect("an Ethernet header");
    assert_eq!(&ip[..4], &[0x45, 0, 0, 0], "IPv4, total length 0");
    check_verify(ip, 0, false, Ok((6, 0, 1865, 1865, false, None)));
    check_verify(ip, 0, true, Err(DropReason::MalformedIp));
    let p = parse(ip, 0, false).expect("parsing the frame without verifying");
    assert_eq!(
        p.payload.get(20..22),
        Some(&[0x30, 0x84][..]),
        "the LDAP message follows the TCP header"
    );
}

#[test]
fn ipv4_fragments() {
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let first = with(ipv4_header(17, a, b, 16, 77, 0, true, &[]), &[1; 16]);
    let frag = |offset, more| {
        Some(Frag {
            id: 77,
            offset,
            more,
            hdr_len: 20,
        })
    };
    check(&first, 0, Ok((17, 36, 16, 16, false, frag(0, true))));
    let last = with(ipv4_header(17, a, b, 5, 77, 16, false, &[]), &[1; 5]);
    check(&last, 0, Ok((17, 25, 5, 5, false, frag(16, false))));
}

fn fix_checksum(p: &mut [u8]) {
    p[10..12].copy_from_slice(&[0, 0]);
    let c = Sum::default().add(&p[..20]).checksum().to_be_bytes();
    p[10..12].copy_from_slice(&c);
}

#[test]
fn ipv6_extension_headers() {
    let udp = [0u8; 8];
    check(&ipv6(17, A6, B6, &udp), 0, Ok((17, 48, 8, 8, false, None)));
    // Hop-by-hop (8), routing (24), destination options (16), AH (16), then UDP.
    let chain = [
        vec![43, 0, 1, 4, 0, 0, 0, 0],
        vec![60, 2, 0, 0, 0, 0, 0, 0],
        vec![0; 16],
        vec![51, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![17, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        udp.to_vec(),
    ]
    .concat();
    let p = ipv6(0, A6, B6, &chain);
    check(&p, 0, Ok((17, 112, 8, 8, false, None)));
    // Cut inside the chain: by snaplen it is still undecodable (no transport found).
    check(&p[..60], 52, Err(DropReason::Truncated));
    // A chain longer than the payload length says is malformed.
    let mut lying = p.clone();
    lying[4..6].copy_from_slice(&30u16.to_be_bytes());
    check(&lying, 0, Err(DropReason::MalformedIp));
    // AH with a zero length field.
    check(
        &ipv6(51, A6, B6, &[17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        0,
        Err(DropReason::MalformedIp),
    );
    // No next header, ESP: other protocols.
    check(&ipv6(59, A6, B6, &[]), 0, Ok((59, 40, 0, 0, false, None)));
    // Payload length 0 and Ethernet padding after the header: 40 bytes, as Zeek counts it.
    let empty = [ipv6(99, A6, B6, &[]), vec![0; 6]].concat();
    check(&empty, 0, Ok((99, 40, 0, 0, false, None)));
    // A jumbogram (payload length 0 behind hop-by-hop): the rest of the capture.
    let mut jumbo = ipv6(
        0,
        A6,
        B6,
        &[vec![17, 0, 0xc2, 4, 0, 0, 0, 16], udp.to_vec()].concat(),
    );
    jumbo[4..6].copy_from_slice(&[0, 0]);
    check(&jumbo, 0, Ok((17, 56, 8, 8, false, None)));
    check(
        &ipv6(50, A6, B6, &[9; 12]),
        0,
        Ok((50, 52, 12, 12, false, None)),
    );
}

#[test]
fn ipv6_fragments() {
    // Destination options (unfragmentable here), then a fragment header at offset 16.
    let data = [
        vec![44, 0, 0, 0, 0, 0, 0, 0],
        vec![6, 0, 0, 17, 0, 0, 0, 9],
        vec![3; 24],
    ]
    .concat();
    let frag = Some(Frag {
        id: 9,
        offset: 16,
        more: true,
        hdr_len: 48,
    });
    check(
        &ipv6(60, A6, B6, &data),
        0,
        Ok((6, 80, 24, 24, false, frag)),
    );
    // An atomic fragment (offset 0, no more) is just an extension header.
    let atomic = [vec![17, 0, 0, 0, 0, 0, 0, 5], vec![0; 8]].concat();
    check(
        &ipv6(44, A6, B6, &atomic),
        0,
        Ok((17, 56, 8, 8, false, None)),
    );
}

#[test]
fn garbage_and_prefixes_never_panic() {
    let p = ipv6(
        0,
        A6,
        B6,
        &[
            60, 0, 0, 0, 0, 0, 0, 0, 44, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 1, 0, 0, 0, 1,
        ],
    );
    let q = with(
        ipv4_header(
            6,
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            0,
            1,
            0,
            false,
            &[1, 1, 1, 1],
        ),
        &[],
    );
    for bytes in [&p[..], &q[..]] {
        for n in 0..=bytes.len() {
            for missing in [0, 1, 1000] {
                let _ = parse(&bytes[..n], missing, true);
            }
        }
    }
    for seed in 0..2000u32 {
        let junk: Vec<u8> = (0..(seed % 97))
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7)) as u8)
            .collect();
        let mut junk = junk;
        if let Some(b) = junk.first_mut() {
            *b = if seed % 2 == 0 { 0x45 } else { 0x60 };
        }
        let _ = parse(&junk, seed, seed % 3 == 0);
    }
}
