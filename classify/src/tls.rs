//! `ssl`: Zeek's SSL analyzer confirms on a parsed ClientHello or ServerHello with a version it
//! knows (SSLv2, SSLv3, TLS 1.0 to 1.3 and the 1.3 drafts). The server name is the ClientHello's
//! SNI. [`hello`] is also used after a STARTTLS exchange (mail, FTP, XMPP) and on the CRYPTO
//! frames of a QUIC Initial packet ([`client_hello_body`]).

use crate::scan::Reader;
use crate::{Evidence, Found, TCP};

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// At most this many bytes of handshake messages are gathered from the records.
const MAX_HANDSHAKE: usize = 16 * 1024;

/// A parsed hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// ClientHello (`true`) or ServerHello.
    pub(crate) client: bool,
    pub(crate) sni: Option<String>,
}

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let client = hello(ev.orig.stream(), ev.orig.truncated).filter(|h| h.client);
    let server = || hello(ev.resp.stream(), ev.resp.truncated).filter(|h| !h.client);
    if client.is_none() && server().is_none() {
        return None;
    }
    Some(Found {
        services: vec!["ssl"],
        server_name: client.and_then(|h| h.sni),
        expects: Vec::new(),
    })
}

/// STARTTLS: the hello a side sends once its plaintext part ends at `offset` (a ClientHello
/// from the originator, a ServerHello from the responder).
pub(crate) fn hello_after(side: &crate::Side, offset: usize, client: bool) -> Option<Hello> {
    let rest = side.stream().get(offset..)?;
    hello(rest, side.truncated).filter(|h| h.client == client)
}

/// A STARTTLS upgrade confirmed by a hello on either side after its plaintext part: the services
/// `[plain, "ssl"]` and the SNI; `None` when neither side's hello parses.
pub(crate) fn upgraded(
    ev: &Evidence,
    plain: &'static str,
    orig_end: Option<usize>,
    resp_end: Option<usize>,
) -> Option<Found> {
    let client = orig_end.and_then(|o| hello_after(&ev.orig, o, true));
    if client.is_none()
        && resp_end
            .and_then(|o| hello_after(&ev.resp, o, false))
            .is_none()
    {
        return None;
    }
    Some(Found {
        services: vec![plain, "ssl"],
        server_name: client.and_then(|h| h.sni),
        expects: Vec::new(),
    })
}

/// Zeek's `version_ok`: the versions its SSL analyzer accepts in a hello.
pub(crate) fn version_ok(v: u16) -> bool {
    matches!(v, 0x0002 | 0x0300..=0x0304 | 0xfeff | 0xfefd | 0xfefc) || v >> 8 == 0x7f
}

/// A ClientHello or ServerHello at the start of a TLS (or SSLv2) stream. `truncated`: the
/// stream was cut by the budget, so a hello that runs past its end is taken on what is there.
pub(crate) fn hello(stream: &[u8], truncated: bool) -> Option<Hello> {
    match stream {
        [HANDSHAKE, 3, minor, ..] if *minor <= 4 => {}
        [b0, _, CLIENT_HELLO, 0 | 3, _, ..] if b0 & 0x80 != 0 => return sslv2_hello(stream),
        _ => return None,
    }
    let msgs = handshake_bytes(stream);
    let mut r = Reader::new(&msgs);
    let kind = r.u8()?;
    let len = r.u24()?;
    let body = match r.take(len) {
        Some(b) => b,
        None if truncated => r.rest(),
        None => return None,
    };
    match kind {
        CLIENT_HELLO => client_hello_body(body).map(|sni| Hello { client: true, sni }),
        SERVER_HELLO => {
            let v = Reader::new(body).u16()?;
            version_ok(v).then_some(Hello {
                client: false,
                sni: None,
            })
        }
        _ => None,
    }
}

/// An SSLv2-framed ClientHello (two-byte header with the high bit set, message type 1).
fn sslv2_hello(stream: &[u8]) -> Option<Hello> {
    let v = u16::from_be_bytes([*stream.get(3)?, *stream.get(4)?]);
    version_ok(v).then_some(Hello {
        client: true,
        sni: None,
    })
}

/// The payloads of the leading handshake records, concatenated (a hello may span records).
fn handshake_bytes(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = Reader::new(stream);
    while out.len() < MAX_HANDSHAKE {
        let (Some(kind), Some(_version)) = (r.u8(), r.u16()) else {
            break;
        };
        if kind != HANDSHAKE {
            break;
        }
        let Some(len) = r.u16() else { break };
        let len = usize::from(len).min(r.remaining());
        let Some(frag) = r.take(len) else { break };
        out.extend_from_slice(frag);
    }
    out.truncate(MAX_HANDSHAKE);
    out
}

/// A ClientHello's body: `None` when its version is not one Zeek accepts; else its SNI, if the
/// extensions carry one (and were shipped).
pub(crate) fn client_hello_body(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader::new(body);
    let version = r.u16()?;
    if !version_ok(version) {
        return None;
    }
    Some(sni(r, false))
}

/// The SNI of a ClientHello read up to its version (DTLS adds a cookie after the session id).
pub(crate) fn sni(mut r: Reader, dtls: bool) -> Option<String> {
    r.take(32)?; // random
    r.vec8()?; // session id
    if dtls {
        r.vec8()?; // cookie
    }
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut exts = Reader::new(r.vec16().unwrap_or_else(|| r.rest()));
    while let (Some(kind), Some(data)) = (exts.u16(), exts.vec16()) {
        if kind != 0 {
            continue;
        }
        let mut list = Reader::new(Reader::new(data).vec16()?);
        while let (Some(name_type), Some(name)) = (list.u8(), list.vec16()) {
            if name_type == 0 && !name.is_empty() {
                return Some(String::from_utf8_lossy(name).into_owned());
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Side;

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    /// A ClientHello handshake message (type, length, body) naming `sni`.
    pub(crate) fn client_hello_msg(sni: &str) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x11; 32]);
        body.push(0); // no session id
        body.extend(vec16(&[0x13, 0x01, 0xc0, 0x2f]));
        body.extend_from_slice(&[1, 0]); // null compression
        let mut name = vec![0u8];
        name.extend(vec16(sni.as_bytes()));
        let mut ext = vec![0, 0];
        ext.extend(vec16(&vec16(&name)));
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // supported_versions
        body.extend(vec16(&ext));
        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    /// `msg` in TLS records of at most `frag` bytes each.
    pub(crate) fn records(msg: &[u8], frag: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(frag) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend(vec16(chunk));
        }
        out
    }

    pub(crate) fn server_hello() -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x22; 32]);
        body.extend_from_slice(&[0, 0x13, 0x01, 0]);
        let mut msg = vec![SERVER_HELLO, 0, 0, body.len() as u8];
        msg.extend(body);
        records(&msg, 1000)
    }

    fn tcp<'a>(orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Evidence<'a> {
        Evidence {
            proto: TCP,
            orig_port: 50000,
            resp_port: 443,
            orig: Side {
                segments: orig,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: resp,
                truncated: false,
                len: None,
            },
        }
    }

    #[test]
    fn a_client_hello_confirms_ssl_with_its_sni() {
        let rec = records(&client_hello_msg("www.example.org"), 4000);
        let found = detect(&tcp(&[&rec], &[])).expect("a ClientHello is ssl");
        assert_eq!(found.services, vec!["ssl"]);
        assert_eq!(found.server_name.as_deref(), Some("www.example.org"));
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let rec = records(&client_hello_msg("split.example"), 7);
        let h = hello(&rec, false).expect("reassembled ClientHello");
        assert_eq!(h.sni.as_deref(), Some("split.example"));
    }

    #[test]
    fn a_server_hello_alone_confirms_ssl() {
        let sh = server_hello();
        let found = detect(&tcp(&[b"\x00\x01garbage"], &[&sh])).expect("a ServerHello is ssl");
        assert_eq!((found.services, found.server_name), (vec!["ssl"], None));
    }

    #[test]
    fn a_cut_hello_confirms_only_when_the_budget_cut_it() {
        let rec = records(&client_hello_msg("cut.example"), 4000);
        let cut = &rec[..rec.len() - 20];
        assert_eq!(hello(cut, false), None);
        assert!(hello(cut, true).expect("cut by the budget").client);
        assert_eq!(hello(&rec[..9], true), None, "no version yet");
    }

    #[test]
    fn unknown_versions_and_other_records_are_not_ssl() {
        let mut msg = client_hello_msg("x");
        msg[4] = 0x05; // version 0x0505
        assert_eq!(hello(&records(&msg, 4000), false), None);
        assert_eq!(hello(b"\x17\x03\x03\x00\x01\x00", false), None);
        assert_eq!(hello(b"GET / HTTP/1.1\r\n", true), None);
        let v2 = [0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15];
        assert!(hello(&v2, false).expect("SSLv2 ClientHello").client);
        let v2_tls10 = [0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15];
        assert!(
            hello(&v2_tls10, false)
                .expect("SSLv2-framed TLS 1.0 hello")
                .client
        );
        assert_eq!(hello(&[0x80, 0x2e, 0x01, 0x03, 0x09], false), None);
    }
}
