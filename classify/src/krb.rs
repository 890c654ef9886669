//! Kerberos: Zeek's `krb` (UDP) and `krb_tcp` (TCP, each message behind a four-octet length).
//!
//! Zeek attaches the analyzers to port 88 (its UDP DPD signature, `\xa1\x03\x02\x05` after a
//! TGS-REQ header, cannot match a real `pvno`, so port 88 it is) and confirms once a message
//! parses: an AS/TGS request or reply, AP-REQ/AP-REP, KRB-SAFE/PRIV/CRED or KRB-ERROR, each an
//! `[APPLICATION n] SEQUENCE` whose first element is `pvno` 5 (`[1]` in KDC requests, `[0]`
//! elsewhere). The GSSAPI module uses
//! [`message_ok`] for the AP-REQ it finds inside SPNEGO tokens.

use crate::ber::{self, BerError};
use crate::{Evidence, Found, TCP, UDP};

const PORT: u16 = 88;

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    let on_port = ev.resp_port == PORT || ev.orig_port == PORT;
    let service = match ev.proto {
        UDP => {
            let any = [ev.orig, ev.resp]
                .into_iter()
                .any(|side| on_port && side.segments.iter().any(|d| message_ok(d, side.truncated)));
            any.then_some("krb")?
        }
        TCP if on_port => {
            let ok = |s: crate::Side| framed_ok(s.stream(), s.truncated);
            (ok(ev.orig) || ok(ev.resp)).then_some("krb_tcp")?
        }
        _ => return None,
    };
    Some(Found {
        services: vec![service],
        ..Found::default()
    })
}

/// A `krb_tcp` stream: a four-octet record length, then one message.
fn framed_ok(s: &[u8], truncated: bool) -> bool {
    let Some(len) = s.get(..4) else { return false };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(8..=0x00ff_ffff).contains(&len) {
        return false;
    }
    let body = &s[4..];
    let cut = body.len() < len;
    message_ok(&body[..len.min(body.len())], cut && truncated)
}

/// One Kerberos message parses (its header, `pvno` 5 and the elements' framing). When `cut`
/// (the evidence ran out), a message whose beginning is sound counts: Zeek would see the rest.
pub(crate) fn message_ok(m: &[u8], cut: bool) -> bool {
    match check(m) {
        Ok(()) => true,
        Err(BerError::Short) => cut,
        Err(BerError::Bad) => false,
    }
}

fn check(m: &[u8]) -> Result<(), BerError> {
    let (app, _) = ber::read(m)?;
    // [APPLICATION n], constructed: AS-REQ 10 .. KRB-ERROR 30.
    if !matches!(app.id, 0x6a..=0x6f | 0x74..=0x76 | 0x7e) {
        return Err(BerError::Bad);
    }
    let (seq, _) = ber::expect(app.content, 0x30)?;
    // Every element of the SEQUENCE is a context tag [n], in increasing order.
    let mut rest = seq.content;
    let mut last: Option<u8> = None;
    let mut seen = 0;
    while !rest.is_empty() && seen < 16 {
        // Inside a whole SEQUENCE, running out is malformed, not cut.
        let whole = |e| if seq.short { e } else { BerError::Bad };
        let (el, r) = ber::read(rest).map_err(whole)?;
        if el.id & 0xe0 != 0xa0 || last.is_some_and(|l| el.id <= l) {
            return Err(BerError::Bad);
        }
        if seen == 0 {
            // pvno [0] INTEGER 5
            let (pvno, _) = ber::expect(el.content, 0x02).map_err(whole)?;
            if !matches!(el.id, 0xa0 | 0xa1) || ber::int_value(&pvno) != Some(5) {
                return Err(BerError::Bad);
            }
        }
        last = Some(el.id);
        seen += 1;
        if el.short {
            return Err(BerError::Short);
        }
        rest = r;
    }
    if seen < 2 {
        return Err(if seq.short {
            BerError::Short
        } else {
            BerError::Bad
        });
    }
    if seq.short || app.short {
        return Err(BerError::Short);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Side;

    /// A KRB-ERROR (pvno 5, msg-type 30, error-code 60), as a KDC sends it.
    pub(crate) fn krb_error() -> Vec<u8> {
        let mut seq = vec![0xa0, 0x03, 0x02, 0x01, 0x05, 0xa1, 0x03, 0x02, 0x01, 0x1e];
        seq.extend([0xa6, 0x03, 0x02, 0x01, 0x3c]);
        seq.extend([0xa9, 0x09, 0x1b, 0x07]);
        seq.extend(b"HEC.NET");
        let mut m = vec![0x7e, (seq.len() + 2) as u8, 0x30, seq.len() as u8];
        m.extend(seq);
        m
    }

    /// An AS-REQ start (pvno 5, msg-type 10, an empty padata) with body.
    pub(crate) fn as_req() -> Vec<u8> {
        let mut seq = vec![0xa1, 0x03, 0x02, 0x01, 0x05, 0xa2, 0x03, 0x02, 0x01, 0x0a];
        seq.extend([0xa4, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x03, 0x01, 0x00]);
        let mut m = vec![0x6a, (seq.len() + 2) as u8, 0x30, seq.len() as u8];
        m.extend(seq);
        m
    }

    fn check_ev(proto: u8, port: u16, orig: &[&[u8]], resp: &[&[u8]]) -> Option<Vec<&'static str>> {
        let ev = Evidence {
            proto,
            orig_port: 43792,
            resp_port: port,
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
        };
        detect(&ev).map(|f| f.services)
    }

    #[test]
    fn kdc_messages_confirm_krb_on_port_88() {
        let err = krb_error();
        assert_eq!(check_ev(UDP, 88, &[], &[&err]), Some(vec!["krb"]));
        assert_eq!(
            check_ev(UDP, 5353, &[], &[&err]),
            None,
            "off port, no signature"
        );
        let mut framed = (err.len() as u32).to_be_bytes().to_vec();
        framed.extend(&err);
        assert_eq!(check_ev(TCP, 88, &[], &[&framed]), Some(vec!["krb_tcp"]));
        assert_eq!(check_ev(TCP, 88, &[b"GET / HTTP/1.1\r\n\r\n"], &[]), None);
    }

    #[test]
    fn requests_replies_and_cut_messages() {
        assert!(message_ok(&as_req(), false), "KDC-REQ: pvno is [1]");
        assert!(message_ok(&krb_error(), false));
        let err = krb_error();
        assert!(!message_ok(&err[..12], false));
        assert!(
            message_ok(&err[..12], true),
            "a sound beginning of a cut message counts"
        );
        assert!(!message_ok(&[0x7e, 0x03, 0x30, 0x01, 0xff], true));
    }
}
