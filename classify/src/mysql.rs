//! MySQL (Zeek's `mysql`, TCP 1434 and 3306). Zeek confirms on the client's handshake
//! response (`proc_mysql_handshake_response_packet`, protocol 9 or 10) after the server's
//! greeting; a response with `CLIENT_SSL` starts TLS (`mysql,ssl` once a hello follows).

use crate::util::on_port;
use crate::{tls_hint, Evidence, Found, TCP};

const PORTS: [u16; 2] = [1434, 3306];
const CLIENT_SSL: u32 = 0x0800;

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP || !on_port(ev, &PORTS) {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    let version = greeting(r)?;
    let (caps, rest) = response(o, version, ev.orig.truncated)?;
    let mut services = vec!["mysql"];
    if caps & CLIENT_SSL != 0 && tls_hint::hello(rest, ev.orig.truncated) {
        services.push("ssl");
    }
    Some(Found {
        services,
        ..Found::default()
    })
}

/// A packet: three-octet length, sequence number, payload; the payload (cut by the evidence)
/// and what follows.
fn packet(b: &[u8], seq: u8) -> Option<(&[u8], &[u8])> {
    let [l0, l1, l2, s, ..] = *b else { return None };
    let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
    if s != seq || len == 0 {
        return None;
    }
    let body = &b[4..];
    Some(body.split_at(len.min(body.len())))
}

/// The server's greeting: protocol 10 (or 9) and a NUL-terminated printable version; the
/// protocol version.
fn greeting(r: &[u8]) -> Option<u8> {
    let (body, _) = packet(r, 0)?;
    let (&version, rest) = body.split_first()?;
    if !(version == 9 || version == 10) {
        return None;
    }
    let n = rest.iter().position(|&c| c == 0)?;
    (n > 0 && n < 64 && rest[..n].iter().all(u8::is_ascii_graphic)).then_some(version)
}

/// The client's handshake response (sequence 1): its capability flags (protocol 10 sends
/// four octets, 9 two) and what follows it.
fn response(o: &[u8], version: u8, cut: bool) -> Option<(u32, &[u8])> {
    let (body, rest) = packet(o, 1)?;
    let caps = match (version, body) {
        (10, [a, b, c, d, ..]) => u32::from_le_bytes([*a, *b, *c, *d]),
        (9, [a, b, ..]) => u32::from(u16::from_le_bytes([*a, *b])),
        _ if cut => 0,
        _ => return None,
    };
    Some((caps, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_hint::tests::client_hello;
    use crate::util::tests::run;

    fn greeting() -> Vec<u8> {
        let mut body = vec![10];
        body.extend(b"8.0.36\0");
        body.extend([0x2a, 0, 0, 0]);
        body.extend([0x41; 9]);
        let mut m = vec![body.len() as u8, 0, 0, 0];
        m.extend(body);
        m
    }

    fn response(caps: u32) -> Vec<u8> {
        let mut body = caps.to_le_bytes().to_vec();
        body.extend([0, 0, 0, 1, 0x21]);
        body.resize(32, 0);
        let mut m = vec![body.len() as u8, 0, 0, 1];
        m.extend(body);
        m
    }

    #[test]
    fn greeting_then_handshake_response() {
        let (g, login) = (greeting(), response(0x000f_a685));
        assert_eq!(
            run(detect, TCP, 3306, &login, &g, false),
            Some("mysql".into())
        );
        assert_eq!(
            run(detect, TCP, 3306, &[], &g, false),
            None,
            "the client confirms"
        );
        assert_eq!(run(detect, TCP, 3307, &login, &g, false), None);
        assert_eq!(run(detect, TCP, 3306, &g, &login, false), None);
        let mut tls = response(0x000f_ae85);
        assert_eq!(
            run(detect, TCP, 3306, &tls, &g, false),
            Some("mysql".into())
        );
        tls.extend(client_hello());
        assert_eq!(
            run(detect, TCP, 3306, &tls, &g, false),
            Some("mysql,ssl".into())
        );
    }
}
