//! SIP (Zeek's `sip`, UDP: the TCP analyzer is off by default). Attached to UDP 5060 and by
//! DPD signature (a status line, or a request line ending in `SIP/x.y`); Zeek's parser confirms
//! on a reply line (`proc_sip_reply`), so an unanswered request is not confirmed.

use crate::util::{any_datagram, found, on_port};
use crate::{Evidence, Found, UDP};

const PORTS: [u16; 1] = [5060];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP {
        return None;
    }
    let port = on_port(ev, &PORTS);
    let started = port || any_datagram(ev, |d, _| first_line_ok(d).is_some());
    let replied = any_datagram(ev, |d, _| first_line_ok(d) == Some(Line::Reply));
    (started && replied).then_some(())?;
    found("sip")
}

fn version(v: &[u8]) -> bool {
    matches!(v, [b'S', b'I', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

#[derive(Debug, PartialEq, Eq)]
enum Line {
    Request,
    Reply,
}

/// A request line (`INVITE sip:bob@example.com SIP/2.0`) or status line (`SIP/2.0 200 OK`),
/// ended by CRLF.
fn first_line_ok(d: &[u8]) -> Option<Line> {
    let line = d.split(|&c| c == b'\r' || c == b'\n').next().unwrap_or(&[]);
    if d.get(line.len()) != Some(&b'\r') {
        return None;
    }
    let mut parts = line.splitn(3, |&c| c == b' ');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    if version(a) {
        return (b.len() == 3 && b.iter().all(u8::is_ascii_digit)).then_some(Line::Reply);
    }
    let method = !a.is_empty() && a.len() <= 16 && a.iter().all(u8::is_ascii_uppercase);
    (method && !b.is_empty() && version(c)).then_some(Line::Request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn replies_confirm() {
        let invite = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n";
        let ok = b"SIP/2.0 200 OK\r\n\r\n";
        assert_eq!(
            run(detect, UDP, 5060, invite, ok, false),
            Some("sip".into())
        );
        assert_eq!(
            run(detect, UDP, 7000, invite, ok, false),
            Some("sip".into())
        );
        assert_eq!(
            run(detect, UDP, 5060, invite, &[], false),
            None,
            "unanswered"
        );
        assert_eq!(
            run(detect, UDP, 5060, b"GET / HTTP/1.1\r\n", ok, false),
            Some("sip".into())
        );
        assert_eq!(
            run(detect, UDP, 7000, b"junk", b"HTTP/1.1 200 OK\r\n", false),
            None
        );
        assert_eq!(run(detect, crate::TCP, 5060, invite, ok, false), None);
    }
}
