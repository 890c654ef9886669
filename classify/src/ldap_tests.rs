use super::*;
use crate::gssapi::tests::{krb5_token, neg_token_init};
use crate::ntlm::tests::negotiate;
use crate::tls_hint::tests::client_hello;

fn tlv(id: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![id];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        v.extend([0x84, 0, 0, (n >> 8) as u8, n as u8]);
    }
    v.extend(content);
    v
}

fn msg(id: u8, op: Vec<u8>) -> Vec<u8> {
    let mut body = tlv(0x02, &[id]);
    body.extend(op);
    tlv(0x30, &body)
}

fn simple_bind(id: u8) -> Vec<u8> {
    let mut op = tlv(0x02, &[3]);
    op.extend(tlv(0x04, b"cn=admin,dc=example,dc=com"));
    op.extend(tlv(0x80, b"secret"));
    msg(id, tlv(0x60, &op))
}

fn sasl_bind(id: u8, mech: &[u8], creds: &[u8]) -> Vec<u8> {
    let mut op = tlv(0x02, &[3]);
    op.extend(tlv(0x04, b""));
    let mut sasl = tlv(0x04, mech);
    sasl.extend(tlv(0x04, creds));
    op.extend(tlv(0xa3, &sasl));
    msg(id, tlv(0x60, &op))
}

fn search(id: u8) -> Vec<u8> {
    let mut op = tlv(0x04, b"");
    op.extend(tlv(0x0a, &[0]));
    op.extend(tlv(0x0a, &[0]));
    op.extend(tlv(0x02, &[0]));
    op.extend(tlv(0x02, &[0]));
    op.extend(tlv(0x01, &[0]));
    op.extend(tlv(0x87, b"objectclass"));
    op.extend(tlv(0x30, &[]));
    msg(id, tlv(0x63, &op))
}

fn result(id: u8, op: u8) -> Vec<u8> {
    let mut r = tlv(0x0a, &[0]);
    r.extend(tlv(0x04, b""));
    r.extend(tlv(0x04, b""));
    msg(id, tlv(op, &r))
}

fn check(proto: u8, port: u16, orig: &[u8], resp: &[u8], cut: bool) -> Option<String> {
    let o: &[&[u8]] = &[orig];
    let r: &[&[u8]] = &[resp];
    let ev = Evidence {
        proto,
        orig_port: 50041,
        resp_port: port,
        orig: Side {
            segments: o,
            truncated: cut,
            len: None,
        },
        resp: Side {
            segments: r,
            truncated: cut,
            len: None,
        },
    };
    detect(&ev).map(|f| f.services.join(","))
}

#[test]
fn simple_bind_and_search_on_the_ports() {
    let want = Some("ldap_tcp".to_string());
    assert_eq!(
        check(TCP, 389, &simple_bind(1), &result(1, 0x61), false),
        want
    );
    assert_eq!(
        check(TCP, 3268, &search(1), &[], false),
        want,
        "Zeek needs no reply on 389"
    );
    assert_eq!(
        check(TCP, 389, b"\x16\x03\x01\x00\x05hello", &[], false),
        None
    );
    let mut cut = search(2);
    cut.truncate(9);
    assert_eq!(
        check(TCP, 389, &cut, &[], false),
        None,
        "an incomplete message confirms nothing"
    );
    assert_eq!(
        check(TCP, 389, &cut, &[], true),
        want,
        "unless the budget cut it"
    );
}

#[test]
fn dpd_signature_and_reply_off_the_ports() {
    let want = Some("ldap_tcp".to_string());
    assert_eq!(
        check(TCP, 3890, &simple_bind(1), &result(1, 0x61), false),
        want
    );
    assert_eq!(
        check(TCP, 3890, &simple_bind(1), &[], false),
        None,
        "no reply"
    );
    assert_eq!(
        check(TCP, 3890, &result(1, 0x61), &result(1, 0x61), false),
        None
    );
    let mut cldap = search(1);
    assert_eq!(check(UDP, 389, &cldap, &[], false), Some("ldap_udp".into()));
    assert_eq!(
        check(UDP, 9999, &cldap, &result(1, 0x65), false),
        Some("ldap_udp".into())
    );
    cldap[0] = 0x31;
    assert_eq!(check(UDP, 9999, &cldap, &result(1, 0x65), false), None);
}

#[test]
fn sasl_binds_confirm_their_children_in_zeeks_order() {
    let spnego = neg_token_init(&krb5_token());
    let bind = sasl_bind(3, b"GSS-SPNEGO", &spnego);
    let krb_first = Some("krb,gssapi,ldap_tcp".to_string());
    assert_eq!(check(TCP, 389, &bind, &result(3, 0x61), false), krb_first);
    let mut searched = search(1);
    searched.extend(&bind);
    let ldap_first = Some("ldap_tcp,krb,gssapi".to_string());
    assert_eq!(check(TCP, 389, &searched, &[], false), ldap_first);
    // The budget cut the bind inside the Kerberos ticket: its start still confirms.
    let cut = &searched[..searched.len() - 10];
    assert_eq!(check(TCP, 389, cut, &[], true), ldap_first);
    let raw_ntlm = sasl_bind(2, b"GSS-SPNEGO", &negotiate());
    let want = Some("ntlm,ldap_tcp".to_string());
    assert_eq!(check(TCP, 389, &raw_ntlm, &result(2, 0x61), false), want);
    let plain = sasl_bind(2, b"SRP", &[0, 0, 0, 15]);
    assert_eq!(check(TCP, 389, &plain, &[], false), Some("ldap_tcp".into()));
}

#[test]
fn starttls_then_a_hello_adds_ssl() {
    let mut req_op = tlv(0x80, STARTTLS_OID);
    req_op.truncate(req_op.len());
    let mut orig = msg(1, tlv(0x77, &req_op));
    let resp = result(1, 0x78);
    assert_eq!(
        check(TCP, 389, &orig, &resp, false),
        Some("ldap_tcp".into())
    );
    orig.extend(client_hello());
    assert_eq!(
        check(TCP, 389, &orig, &resp, false),
        Some("ldap_tcp,ssl".into())
    );
    let mut refused = resp.clone();
    let at = refused
        .iter()
        .position(|&b| b == 0x0a)
        .expect("result code");
    refused[at + 2] = 2;
    assert_eq!(
        check(TCP, 389, &orig, &refused, false),
        Some("ldap_tcp".into())
    );
}

#[test]
fn hostile_bytes_do_not_confirm() {
    for n in 0..64u8 {
        let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
        let _ = check(TCP, 389, &junk, &junk, true);
        let _ = check(UDP, 389, &junk, &junk, false);
    }
    let huge = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01, 0x60];
    assert_eq!(check(TCP, 389, &huge, &[], false), None);
}
