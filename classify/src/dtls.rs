//! `dtls`: TLS over UDP (WebRTC, VPNs, CoAP). Zeek's DPD signature starts its DTLS analyzer on
//! a first-epoch handshake record holding a ClientHello, which confirms it once parsed; the
//! SNI is the server name as for TLS.

use crate::scan::{found, Reader};
use crate::tls::{sni, version_ok};
use crate::{Evidence, Found, UDP};

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const MAX_DATAGRAMS: usize = 4;

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP {
        return None;
    }
    let n = ev.orig.segments.len();
    ev.orig
        .segments
        .iter()
        .take(MAX_DATAGRAMS)
        .enumerate()
        .find_map(|(i, d)| {
            let cut = ev.orig.truncated && i + 1 == n;
            let name = client_hello(d, cut)?;
            let mut f = found(&["dtls"]);
            f.server_name = name;
            Some(f)
        })
}

/// A datagram opening with a DTLS 1.0/1.2 ClientHello record (epoch 0, sequence 0): its SNI.
fn client_hello(d: &[u8], cut: bool) -> Option<Option<String>> {
    let mut r = Reader::new(d);
    let (kind, version) = (r.u8()?, r.u16()?);
    if kind != HANDSHAKE || !matches!(version, 0xfeff | 0xfefd) || r.take(8)? != [0; 8] {
        return None;
    }
    let record = r.vec16().or_else(|| cut.then(|| r.rest()))?;
    let mut h = Reader::new(record);
    if h.u8()? != CLIENT_HELLO {
        return None;
    }
    let (_len, _seq, offset, frag_len) = (h.u24()?, h.u16()?, h.u24()?, h.u24()?);
    if offset != 0 {
        return None;
    }
    let body = h.take(frag_len).or_else(|| cut.then(|| h.rest()))?;
    let mut b = Reader::new(body);
    version_ok(b.u16()?).then(|| sni(b, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;

    /// A DTLS 1.2 ClientHello naming `name`, in one record.
    fn hello(name: &str) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0]); // no session id, no cookie
        body.extend_from_slice(&[0, 2, 0xc0, 0x2b, 1, 0]);
        let n = name.len() as u8;
        let ext = [&[0, 0, 0, n + 5, 0, n + 3, 0, 0, n][..], name.as_bytes()].concat();
        body.extend_from_slice(&[0, ext.len() as u8]);
        body.extend(ext);
        let len = (body.len() as u32).to_be_bytes();
        let mut hs = vec![CLIENT_HELLO, len[1], len[2], len[3], 0, 0, 0, 0, 0];
        hs.extend_from_slice(&len[1..]);
        hs.extend(body);
        let mut rec = vec![HANDSHAKE, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn run(d: &[u8], truncated: bool) -> Option<Found> {
        let seg: [&[u8]; 1] = [d];
        detect(&Evidence {
            proto: UDP,
            orig_port: 50000,
            resp_port: 4433,
            orig: Side {
                segments: &seg,
                truncated,
                len: None,
            },
            resp: Side::default(),
        })
    }

    #[test]
    fn a_client_hello_datagram_is_dtls_with_its_sni() {
        let found = run(&hello("turn.example"), false).expect("DTLS ClientHello");
        assert_eq!(found.services, vec!["dtls"]);
        assert_eq!(found.server_name.as_deref(), Some("turn.example"));
    }

    #[test]
    fn cut_or_foreign_datagrams() {
        let h = hello("x.example");
        assert_eq!(run(&h[..40], false), None);
        assert_eq!(
            run(&h[..40], true).expect("cut by the budget").server_name,
            None
        );
        let mut tls = h.clone();
        tls[1..3].copy_from_slice(&[3, 3]);
        assert_eq!(run(&tls, false), None);
    }
}
