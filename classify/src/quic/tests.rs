use super::*;
use crate::Side;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

#[test]
fn initial_keys_match_the_rfc_examples() {
    let dcid = hex("8394c8f03e515708");
    let (key, iv, hp) = material(V1, &dcid).expect("v1 keys");
    assert_eq!(key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    let (key, iv, hp) = material(V2, &dcid).expect("v2 keys");
    assert_eq!(key.to_vec(), hex("8b1a0bc121284290a29e0971b5cd045d"));
    assert_eq!(iv.to_vec(), hex("91f73e2351d8fa91660e909f"));
    assert_eq!(hp.to_vec(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
}

/// A client Initial packet of `version` carrying `frames`, protected as a client would.
fn initial(version: u32, dcid: &[u8], pn: u8, frames: &[u8]) -> Vec<u8> {
    let (key, iv, hp_key) = material(version, dcid).expect("keys");
    let kind = if version == V2 { 1 } else { 0 };
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(1100), 0); // PADDING
    let length = 1 + payload.len() + 16; // packet number, payload, tag
    let mut pkt = vec![0xc0 | (kind << 4)]; // 1-byte packet number
    pkt.extend_from_slice(&version.to_be_bytes());
    pkt.push(dcid.len() as u8);
    pkt.extend_from_slice(dcid);
    pkt.extend_from_slice(&[0, 0]); // no source connection id, no token
    pkt.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    let pn_offset = pkt.len();
    pkt.push(pn);
    let mut nonce = iv;
    nonce[11] ^= pn;
    let key = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).expect("key"));
    let nonce = Nonce::assume_unique_for_key(nonce);
    key.seal_in_place_append_tag(nonce, Aad::from(&pkt), &mut payload)
        .expect("seal");
    pkt.extend(payload);
    let hp = hp::HeaderProtectionKey::new(&hp::AES_128, &hp_key).expect("hp key");
    let mask = hp
        .new_mask(&pkt[pn_offset + 4..pn_offset + 20])
        .expect("mask");
    pkt[0] ^= mask[0] & 0x0f;
    pkt[pn_offset] ^= mask[1];
    pkt
}

fn crypto_frame(offset: u16, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    f.extend_from_slice(&(0x4000 | offset).to_be_bytes());
    f.extend_from_slice(&(0x4000 | data.len() as u16).to_be_bytes());
    f.extend_from_slice(data);
    f
}

fn run(datagrams: &[&[u8]]) -> Option<Found> {
    detect(&Evidence {
        proto: UDP,
        orig_port: 50000,
        resp_port: 443,
        orig: Side {
            segments: datagrams,
            truncated: false,
            len: None,
        },
        resp: Side::default(),
    })
}

#[test]
fn a_client_initial_is_quic_then_ssl_with_its_sni() {
    let hello = crate::tls::tests::client_hello_msg("www.example.com");
    for version in [V1, V2] {
        let mut frames = vec![0x01]; // PING
        frames.extend(crypto_frame(0, &hello));
        let d = initial(version, &[7; 8], 0, &frames);
        let found = run(&[&d]).expect("decrypted Initial");
        assert_eq!(found.services, vec!["quic", "ssl"]);
        assert_eq!(found.server_name.as_deref(), Some("www.example.com"));
    }
}

#[test]
fn a_client_hello_spread_over_datagrams_out_of_order_is_reassembled() {
    let hello = crate::tls::tests::client_hello_msg("split.example");
    let (a, b) = hello.split_at(40);
    let second = initial(V1, &[9; 20], 1, &crypto_frame(40, b));
    let first = initial(V1, &[9; 20], 0, &crypto_frame(0, a));
    assert_eq!(run(&[&second]), None, "no start yet");
    let found = run(&[&second, &first]).expect("reassembled");
    assert_eq!(found.server_name.as_deref(), Some("split.example"));
}

#[test]
fn tampered_or_foreign_packets_are_not_quic() {
    let hello = crate::tls::tests::client_hello_msg("x.example");
    let mut d = initial(V1, &[1; 8], 0, &crypto_frame(0, &hello));
    let last = d.len() - 1;
    d[last] ^= 1; // the AEAD tag no longer verifies
    assert_eq!(run(&[&d]), None);
    let mut other = initial(V1, &[1; 8], 0, &crypto_frame(0, &hello));
    other[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes()); // draft-29
    assert_eq!(run(&[&other]), None);
    assert_eq!(run(&[b"\xc0\x00\x00\x00\x01\x08"]), None);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Flipped bytes and cuts of a valid Initial (header, lengths, tag) never panic, and a
    /// packet whose protected part was changed never decrypts into a confirmation.
    #[test]
    fn damaged_initials_never_panic(at in 0usize..1200, bit in 0u8..8, cut in 0usize..1300) {
        let hello = crate::tls::tests::client_hello_msg("p.example");
        let mut d = initial(V1, &[3; 8], 0, &crypto_frame(0, &hello));
        let at = at % d.len();
        d[at] ^= 1 << bit;
        let _ = run(&[&d]);
        let _ = run(&[&d[..cut.min(d.len())]]);
        proptest::prop_assert_eq!(run(&[&d]), None);
    }
}
