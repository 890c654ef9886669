//! `xmpp`: an XML stream opened by both sides (`<stream:stream ...>` in the `jabber:client` or
//! `jabber:server` namespace) confirms it. After `<starttls/>` and the server's `<proceed/>`,
//! the TLS hello that follows confirms `ssl`: `xmpp,ssl`.

use crate::scan::{contains_ci, find};
use crate::{Evidence, Found, TCP};

/// The XML prefix searched for the stream header and the STARTTLS exchange, at most.
const MAX_XML: usize = 8 * 1024;

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (client, server) = (ev.orig.stream(), ev.resp.stream());
    if !opens_stream(client) || !opens_stream(server) {
        return None;
    }
    let proceed = find(head(server), b"<proceed");
    let starttls = find(head(client), b"<starttls");
    if let (Some(p), Some(s)) = (proceed, starttls) {
        let orig_end = tls_after(client, s);
        let resp_end = tls_after(server, p);
        if let Some(found) = crate::tls::upgraded(ev, "xmpp", orig_end, resp_end) {
            return Some(found);
        }
    }
    Some(crate::scan::found(&["xmpp"]))
}

fn head(s: &[u8]) -> &[u8] {
    &s[..s.len().min(MAX_XML)]
}

fn opens_stream(s: &[u8]) -> bool {
    let h = head(s);
    find(h, b"<stream:stream").is_some()
        && (contains_ci(h, b"jabber:client") || contains_ci(h, b"jabber:server"))
}

/// Where the TLS record begins after the element at `from` (the first `>` closing it).
fn tls_after(s: &[u8], from: usize) -> Option<usize> {
    let close = from + s.get(from..)?.iter().position(|&b| b == b'>')? + 1;
    let skip = s
        .get(close..)?
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    Some(close + skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{client_hello_msg, records};
    use crate::Side;

    const OPEN_C: &[u8] = b"<?xml version='1.0'?><stream:stream to='example.im' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    const OPEN_S: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' from='example.im' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";

    fn run(client: &[u8], server: &[u8]) -> Option<Found> {
        let (o, r): ([&[u8]; 1], [&[u8]; 1]) = ([client], [server]);
        detect(&Evidence {
            proto: TCP,
            orig_port: 40000,
            resp_port: 5222,
            orig: Side {
                segments: &o,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: &r,
                truncated: false,
                len: None,
            },
        })
    }

    #[test]
    fn starttls_then_a_hello_is_xmpp_then_ssl() {
        let mut c = OPEN_C.to_vec();
        c.extend_from_slice(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        c.extend(records(&client_hello_msg("example.im"), 4000));
        let mut s = OPEN_S.to_vec();
        s.extend_from_slice(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let found = run(&c, &s).expect("xmpp with TLS");
        assert_eq!(found.services, vec!["xmpp", "ssl"]);
        assert_eq!(found.server_name.as_deref(), Some("example.im"));
        assert_eq!(
            run(OPEN_C, OPEN_S).expect("plain xmpp").services,
            vec!["xmpp"]
        );
    }

    #[test]
    fn one_sided_or_other_xml_is_not_xmpp() {
        assert_eq!(run(OPEN_C, b""), None);
        assert_eq!(run(b"<stream:stream xmlns='other'>", OPEN_S), None);
    }
}
