//! GSSAPI (Zeek's `gssapi`): never on a port of its own; SMB's security blobs, HTTP's
//! `Negotiate` and LDAP's SASL `GSS-SPNEGO` binds hand it a token. Zeek's GSSAPI analyzer
//! parses an SPNEGO `negTokenInit` (`0x60`, the SPNEGO OID, `[0] SEQUENCE` of `[0]`..`[3]`) or
//! `negTokenResp` (`0xa1 SEQUENCE` of `[0]`..`[3]`), hands the mechanism token to NTLM (it starts
//! with `NTLMSSP`) or Kerberos (a `0x60` wrapper, an OID, a two-octet token id, then the
//! Kerberos message), and confirms once the whole token parsed: the child confirms first, so a
//! Kerberos AP-REQ gives `krb,gssapi` and an NTLMSSP token `ntlm,gssapi`.

use crate::ber::{self, BerError};
use crate::{krb, ntlm};

/// What Zeek confirms for one token handed to GSSAPI, in confirmation order (empty: nothing).
/// `cut`: the evidence ended inside the token, so a sound beginning counts.
pub(crate) fn confirms(token: &[u8], cut: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    let parsed = match token_args(token) {
        Ok(args) => walk(args, &mut out, cut),
        Err(BerError::Short) => cut,
        Err(BerError::Bad) => false,
    };
    if parsed {
        out.push("gssapi");
    } else {
        out.clear();
    }
    out
}

/// The SEQUENCE content of a negTokenInit or negTokenResp.
fn token_args(token: &[u8]) -> Result<&[u8], BerError> {
    let (outer, _) = ber::read(token)?;
    let body = match outer.id {
        0x60 => {
            let (oid, rest) = ber::expect(outer.content, 0x06)?;
            if oid.content != ber::oid::SPNEGO {
                return Err(BerError::Bad);
            }
            let (init, _) = ber::expect(rest, 0xa0)?;
            init.content
        }
        0xa1 => outer.content,
        _ => return Err(BerError::Bad),
    };
    let (seq, _) = ber::expect(body, 0x30)?;
    Ok(seq.content)
}

/// Walks the `[0]`..`[3]` arguments, confirming the mechanism token's protocol into `out`;
/// `false` when an argument is malformed (the whole token then fails to parse).
fn walk(mut args: &[u8], out: &mut Vec<&'static str>, cut: bool) -> bool {
    for _ in 0..8 {
        if args.is_empty() {
            return true;
        }
        let (arg, rest) = match ber::read(args) {
            Ok(x) => x,
            Err(e) => return e == BerError::Short && cut,
        };
        match arg.id {
            0xa0 | 0xa1 | 0xa3 => {}
            // mechToken (init) or responseToken (resp): an OCTET STRING.
            0xa2 => match ber::expect(arg.content, 0x04) {
                Ok((tok, _)) => mech_token(tok.content, cut && (arg.short || tok.short), out),
                Err(e) => return e == BerError::Short && cut,
            },
            _ => return false,
        }
        if arg.short {
            return cut;
        }
        args = rest;
    }
    true
}

fn mech_token(tok: &[u8], cut: bool, out: &mut Vec<&'static str>) {
    if ntlm::looks_like(tok) {
        if ntlm::message_ok(tok, cut) {
            out.push("ntlm");
        }
    } else if tok.first() == Some(&0x60) && kerberos_ok(tok, cut) {
        out.push("krb");
    }
}

/// Zeek takes a mechanism token starting with `0x60` as Kerberos: the wrapper, the mechanism
/// OID, a two-octet token id, then the Kerberos message, which must parse. When the evidence
/// ends anywhere inside, Zeek would have seen the rest: the sound beginning counts.
fn kerberos_ok(tok: &[u8], cut: bool) -> bool {
    let wrap = match ber::read(tok) {
        Ok((wrap, _)) => wrap,
        Err(e) => return e == BerError::Short && cut,
    };
    let rest = match ber::expect(wrap.content, 0x06) {
        Ok((_oid, rest)) => rest,
        Err(e) => return e == BerError::Short && cut,
    };
    match rest.get(2..) {
        Some(msg) if !msg.is_empty() => krb::message_ok(msg, cut),
        _ => cut,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn tlv(id: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![id];
        let n = content.len();
        if n < 0x80 {
            v.push(n as u8);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend(content);
        v
    }

    /// A Kerberos AP-REQ (pvno 5, msg-type 14) with a tiny ticket and authenticator.
    pub(crate) fn ap_req() -> Vec<u8> {
        let mut seq = tlv(0xa0, &tlv(0x02, &[5]));
        seq.extend(tlv(0xa1, &tlv(0x02, &[14])));
        seq.extend(tlv(0xa2, &tlv(0x03, &[0, 0x20, 0, 0, 0])));
        seq.extend(tlv(
            0xa3,
            &tlv(0x61, &tlv(0x30, &tlv(0xa0, &tlv(0x02, &[5])))),
        ));
        seq.extend(tlv(0xa4, &tlv(0x30, &tlv(0xa0, &tlv(0x02, &[0x12])))));
        tlv(0x6e, &tlv(0x30, &seq))
    }

    /// An SPNEGO negTokenInit carrying `mech_token`.
    pub(crate) fn neg_token_init(mech_token: &[u8]) -> Vec<u8> {
        let mut oid = tlv(0x06, ber::oid::MS_KRB5);
        oid.extend(tlv(0x06, ber::oid::KRB5));
        let mut args = tlv(0xa0, &tlv(0x30, &oid));
        args.extend(tlv(0xa2, &tlv(0x04, mech_token)));
        let mut inner = tlv(0x06, ber::oid::SPNEGO);
        inner.extend(tlv(0xa0, &tlv(0x30, &args)));
        tlv(0x60, &inner)
    }

    /// An SPNEGO negTokenInit listing mechanisms only (an SMB negotiate response's blob).
    pub(crate) fn mechs_only() -> Vec<u8> {
        let mut inner = tlv(0x06, ber::oid::SPNEGO);
        let mechs = tlv(0xa0, &tlv(0x30, &tlv(0x06, ber::oid::KRB5)));
        inner.extend(tlv(0xa0, &tlv(0x30, &mechs)));
        tlv(0x60, &inner)
    }

    /// The Kerberos GSS token around an AP-REQ.
    pub(crate) fn krb5_token() -> Vec<u8> {
        let mut t = tlv(0x06, ber::oid::KRB5);
        t.extend([0x01, 0x00]);
        t.extend(ap_req());
        tlv(0x60, &t)
    }

    #[test]
    fn spnego_with_kerberos_confirms_krb_then_gssapi() {
        let tok = neg_token_init(&krb5_token());
        assert_eq!(confirms(&tok, false), vec!["krb", "gssapi"]);
        assert_eq!(confirms(&tok[..tok.len() - 4], false), Vec::<&str>::new());
        assert_eq!(confirms(&tok[..tok.len() - 4], true), vec!["krb", "gssapi"]);
        // Cut inside the Kerberos wrapper's OID: Zeek goes by the first octet.
        let at = tok
            .windows(2)
            .rposition(|w| w == [0x06, 0x09])
            .expect("an OID")
            + 4;
        assert_eq!(confirms(&tok[..at], true), vec!["krb", "gssapi"]);
    }

    #[test]
    fn spnego_with_ntlmssp_and_bare_or_broken_tokens() {
        let ntlm = ntlm::tests::negotiate();
        assert_eq!(
            confirms(&neg_token_init(&ntlm), false),
            vec!["ntlm", "gssapi"]
        );
        let resp = tlv(0xa1, &tlv(0x30, &tlv(0xa2, &tlv(0x04, &ntlm))));
        assert_eq!(confirms(&resp, false), vec!["ntlm", "gssapi"]);
        let only_mechs = tlv(0xa1, &tlv(0x30, &tlv(0xa0, &tlv(0x0a, &[0]))));
        assert_eq!(confirms(&only_mechs, false), vec!["gssapi"]);
        assert_eq!(confirms(&mechs_only(), false), vec!["gssapi"]);
        // A bare NTLMSSP or Kerberos token is not SPNEGO: Zeek's GSSAPI parser rejects it.
        assert_eq!(confirms(&ntlm, false), Vec::<&str>::new());
        assert_eq!(confirms(&krb5_token(), false), Vec::<&str>::new());
        let odd_arg = tlv(0xa1, &tlv(0x30, &tlv(0xa7, &[])));
        assert_eq!(confirms(&odd_arg, false), Vec::<&str>::new());
    }
}
