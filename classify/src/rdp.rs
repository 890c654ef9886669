//! RDP (Zeek's `rdp`, TCP) and its UDP transport (`rdpeudp`).
//!
//! `rdp`: Zeek attaches it to TCP port 3389 and wherever its DPD signatures match (a client
//! X.224 Connection Request carrying `Cookie: mstshash=`, answered by an X.224 Connection
//! Confirm, `0xd0`). The analyzer confirms only on the MCS layer under standard RDP security
//! (the client's core data in its MCS Connect-Initial, `7f 65`, or the server's Connect-Response,
//! `7f 66`). When the negotiation picks TLS or CredSSP, everything after the Connection Confirm
//! goes to a DPD child instead and only `ssl` is confirmed, once a hello follows.
//!
//! `rdpeudp`: the DPD signature is a 1232-octet SYN datagram (`ff ff ff ff`, then the SYN flag);
//! the analyzer confirms when the handshake completes: the responder's SYN+ACK and the
//! originator's next datagram.

use crate::{tls_hint, Evidence, Found, TCP, UDP};

const PORT: u16 = 3389;
/// RDPUDP_FLAG_SYN and RDPUDP_FLAG_ACK.
const SYN: u16 = 0x0001;
const ACK: u16 = 0x0004;

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    let services = match ev.proto {
        TCP => tcp(ev)?,
        UDP => udp(ev).then(|| vec!["rdpeudp"])?,
        _ => return None,
    };
    Some(Found {
        services,
        ..Found::default()
    })
}

fn tcp(ev: &Evidence) -> Option<Vec<&'static str>> {
    let (orig, resp) = (ev.orig.stream(), ev.resp.stream());
    let req = tpkt(orig, 0xe0, ev.orig.truncated)?;
    let on_port = ev.resp_port == PORT || ev.orig_port == PORT;
    if !on_port && !contains(req.body, b"Cookie: mstshash=") {
        return None;
    }
    let conf = tpkt(resp, 0xd0, ev.resp.truncated)?;
    // RDP_NEG_RSP (type 2): selectedProtocol SSL (1), HYBRID (2) or HYBRID_EX (8) means TLS.
    let tls = match conf.body.get(7..12) {
        Some([0x02, _, 0x08, 0x00, p]) => *p != 0,
        _ => false,
    };
    if tls {
        let hello = tls_hint::hello(req.rest, ev.orig.truncated)
            || tls_hint::hello(conf.rest, ev.resp.truncated);
        return hello.then(|| vec!["ssl"]);
    }
    let connect_initial = mcs(req.rest, 0x65, ev.orig.truncated);
    let connect_response = mcs(conf.rest, 0x66, ev.resp.truncated);
    (connect_initial || connect_response).then(|| vec!["rdp"])
}

/// A TPKT carrying X.224 Data (`02 f0 80`) and an MCS Connect-Initial (`7f 65`) or
/// Connect-Response (`7f 66`).
fn mcs(b: &[u8], kind: u8, truncated: bool) -> bool {
    tpkt(b, 0xf0, truncated).is_some_and(|t| t.body.get(3..5) == Some(&[0x7f, kind][..]))
}

struct Tpkt<'a> {
    /// The TPKT payload (X.224 header onwards).
    body: &'a [u8],
    /// What follows the TPKT.
    rest: &'a [u8],
}

/// A TPKT (version 3) carrying an X.224 TPDU of `code` (the high nibble).
fn tpkt(b: &[u8], code: u8, truncated: bool) -> Option<Tpkt<'_>> {
    let [3, 0, l0, l1, li, cc, ..] = *b else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    if len < 7 || usize::from(li) + 5 > len || cc & 0xf0 != code {
        return None;
    }
    if b.len() < len && !truncated {
        return None;
    }
    let end = len.min(b.len());
    Some(Tpkt {
        body: &b[4..end],
        rest: &b[end..],
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn flags(d: &[u8]) -> Option<u16> {
    d.get(6..8).map(|f| u16::from_be_bytes([f[0], f[1]]))
}

fn udp(ev: &Evidence) -> bool {
    let (o, r) = (ev.orig.segments, ev.resp.segments);
    let Some(syn) = o.first() else { return false };
    let size_ok = syn.len() == 1232 || (syn.len() < 1232 && ev.orig.truncated && o.len() == 1);
    let syn_ok = size_ok && syn.starts_with(&[0xff; 4]) && flags(syn).is_some_and(|f| f & SYN != 0);
    let synack = r
        .first()
        .and_then(|d| flags(d))
        .is_some_and(|f| f & (SYN | ACK) == SYN | ACK);
    // The budget may have been spent on the 1232-octet SYN: the handshake's end is then unseen.
    syn_ok && synack && (o.len() >= 2 || ev.orig.truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_hint::tests::client_hello;
    use crate::Side;

    fn connection_request(cookie: bool) -> Vec<u8> {
        let mut x224 = vec![0, 0xe0, 0, 0, 0, 0, 0];
        if cookie {
            x224.extend(b"Cookie: mstshash=eltons\r\n");
        }
        x224.extend([1, 0, 8, 0, 3, 0, 0, 0]);
        x224[0] = (x224.len() - 1) as u8;
        let mut t = vec![3, 0, 0, (x224.len() + 4) as u8];
        t.extend(x224);
        t
    }

    /// An MCS Connect-Initial's first octets in X.224 Data.
    fn connect_initial() -> Vec<u8> {
        let mut t = vec![3, 0, 0, 0, 2, 0xf0, 0x80, 0x7f, 0x65, 0x82, 0x01, 0x90];
        t.resize(40, 0);
        t[3] = 40;
        t
    }

    fn connection_confirm(protocol: u8) -> Vec<u8> {
        let mut t = vec![3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0];
        t.extend([2, 0x1f, 8, 0, protocol, 0, 0, 0]);
        t
    }

    fn check(port: u16, orig: &[u8], resp: &[u8]) -> Option<String> {
        let (o, r): (&[&[u8]], &[&[u8]]) = (&[orig], &[resp]);
        let ev = Evidence {
            proto: TCP,
            orig_port: 50000,
            resp_port: port,
            orig: Side {
                segments: o,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: r,
                truncated: false,
                len: None,
            },
        };
        detect(&ev).map(|f| f.services.join(","))
    }

    #[test]
    fn connection_request_and_confirm() {
        let (mut req, conf) = (connection_request(true), connection_confirm(0));
        assert_eq!(
            check(3389, &req, &conf),
            None,
            "X.224 alone confirms nothing"
        );
        req.extend(connect_initial());
        assert_eq!(check(3389, &req, &conf), Some("rdp".into()));
        assert_eq!(check(3389, &req, &[]), None, "no Connection Confirm");
        let cookie = check(4000, &req, &conf);
        assert_eq!(cookie, Some("rdp".into()), "the cookie signature");
        let mut no_cookie = connection_request(false);
        no_cookie.extend(connect_initial());
        assert_eq!(check(4000, &no_cookie, &conf), None);
        assert_eq!(check(3389, &no_cookie, &conf), Some("rdp".into()));
        assert_eq!(check(3389, &conf, &req), None);
    }

    #[test]
    fn enhanced_security_hands_tls_on() {
        let (mut req, conf) = (connection_request(true), connection_confirm(2));
        assert_eq!(check(3389, &req, &conf), None);
        req.extend(client_hello());
        assert_eq!(check(3389, &req, &conf), Some("ssl".into()));
        assert_eq!(check(3389, &req, &connection_confirm(0)), None);
    }

    #[test]
    fn rdpeudp_handshake() {
        let mut syn = vec![0xff, 0xff, 0xff, 0xff, 0x00, 0x40, 0x18, 0x01];
        syn.resize(1232, 0);
        let synack: &[u8] = &[0x0b, 0x12, 0x7f, 0x15, 0x00, 0x40, 0x10, 0x05, 0x0f];
        let ack: &[u8] = &[0x0f, 0x94, 0xea, 0x0b, 0x04, 0x00, 0x00, 0x0c];
        let run = |o: &[&[u8]], r: &[&[u8]]| {
            let ev = Evidence {
                proto: UDP,
                orig_port: 61291,
                resp_port: 3389,
                orig: Side {
                    segments: o,
                    truncated: false,
                    len: None,
                },
                resp: Side {
                    segments: r,
                    truncated: false,
                    len: None,
                },
            };
            detect(&ev).map(|f| f.services)
        };
        assert_eq!(run(&[&syn, ack], &[synack]), Some(vec!["rdpeudp"]));
        assert_eq!(run(&[&syn], &[synack]), None, "no final ACK yet");
        assert_eq!(run(&[&syn[..1000], ack], &[synack]), None);
    }
}
