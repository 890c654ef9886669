//! LDAP: Zeek's `ldap_tcp` and `ldap_udp` (CLDAP), with what its SASL binds and StartTLS hand on.
//!
//! Zeek attaches the analyzers to ports 389 and 3268 (TCP) and 389 (UDP), and elsewhere when
//! its DPD signatures match: a client message header (`0x30`, a length, a message ID, then a
//! request's operation tag) answered by a reply starting with `0x30`. The analyzer confirms
//! at the end of its first parsed message. While it parses a SASL bind it hands the
//! credentials on: raw NTLMSSP to NTLM, a `GSS-SPNEGO` token to GSSAPI (which hands Kerberos
//! on), and those confirm while the bind is being parsed. So a connection whose first message
//! is such a bind reads `krb,gssapi,ldap_tcp` or `ntlm,ldap_tcp`, and one that searched
//! first reads `ldap_tcp,krb,gssapi`. A successful StartTLS extended operation switches the
//! connection to Zeek's SSL analyzer: `ldap_tcp,ssl` once a hello follows.

use crate::ber::{self, BerError};
use crate::util::first;
use crate::{gssapi, ntlm, tls_hint, Evidence, Found, Side, TCP, UDP};

const TCP_PORTS: [u16; 2] = [389, 3268];
const UDP_PORT: u16 = 389;
/// The most messages read per direction.
const MAX_MESSAGES: usize = 16;
const STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    let services = match ev.proto {
        TCP => tcp(ev)?,
        UDP => udp(ev)?,
        _ => return None,
    };
    Some(Found {
        services,
        ..Found::default()
    })
}

fn tcp(ev: &Evidence) -> Option<Vec<&'static str>> {
    let (orig, resp) = (ev.orig.stream(), ev.resp.stream());
    let on_port = TCP_PORTS.contains(&ev.resp_port) || TCP_PORTS.contains(&ev.orig_port);
    let signature = client_signature(orig, TCP_OPS) && resp.first() == Some(&0x30);
    if !(on_port || signature) {
        return None;
    }
    let o = scan(orig, ev.orig.truncated);
    let r = scan(resp, ev.resp.truncated);
    if o.is_empty() && !orig.is_empty() {
        // The originator's first bytes do not parse: Zeek's analyzer reports a violation.
        return None;
    }
    let mut services = confirmations(&o, &r, "ldap_tcp")?;
    if starttls(orig, &o, resp, &r, ev) {
        services.push("ssl");
    }
    Some(services)
}

fn udp(ev: &Evidence) -> Option<Vec<&'static str>> {
    let on_port = ev.resp_port == UDP_PORT || ev.orig_port == UDP_PORT;
    let signature =
        client_signature(first(&ev.orig), UDP_OPS) && first(&ev.resp).first() == Some(&0x30);
    if !(on_port || signature) {
        return None;
    }
    // Only a side's last datagram can have been cut by the budget.
    let parsed = |s: &Side| {
        let n = s.segments.len();
        let cut = s.truncated;
        s.segments
            .iter()
            .enumerate()
            .flat_map(move |(i, d)| scan(d, cut && i + 1 == n))
            .collect::<Vec<_>>()
    };
    confirmations(&parsed(&ev.orig), &parsed(&ev.resp), "ldap_udp")
}

/// Request operation tags the DPD signatures accept (TCP: delete, bind, search, modify, add,
/// modifyDN, compare, extended; CLDAP: bind, search, extended).
const TCP_OPS: &[u8] = &[0x4a, 0x60, 0x63, 0x66, 0x68, 0x6c, 0x6e, 0x77];
const UDP_OPS: &[u8] = &[0x60, 0x63, 0x77];

fn client_signature(b: &[u8], ops: &[u8]) -> bool {
    let Some((&0x30, rest)) = b.split_first() else {
        return false;
    };
    let skip = match rest.first() {
        Some(0x05..=0x7f) => 1,
        Some(&l @ 0x81..=0x84) => 1 + usize::from(l & 0x7f),
        _ => return false,
    };
    let Some([0x02, n @ 1..=4, ..]) = rest.get(skip..) else {
        return false;
    };
    rest.get(skip + 2 + usize::from(*n))
        .is_some_and(|op| ops.contains(op))
}

/// One parsed message, as far as the confirmations care.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    /// A bind request and what its credentials confirmed.
    Bind(Vec<&'static str>),
    /// An extended request for StartTLS.
    StartTls,
    /// A successful extended response.
    ExtendedOk,
    Other,
}

#[derive(Debug)]
struct Msg {
    op: Op,
    /// Offset just past the message in its stream or datagram.
    end: usize,
}

/// The messages at the front of `b`, up to the first that does not parse (one cut by the
/// budget counts when `truncated`).
fn scan(b: &[u8], truncated: bool) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < MAX_MESSAGES && at < b.len() {
        let Some(op) = message(&b[at..], truncated) else {
            break;
        };
        let Ok((whole, rest)) = ber::read(&b[at..]) else {
            break;
        };
        let cut = whole.short;
        at = b.len() - rest.len();
        out.push(Msg { op, end: at });
        if cut {
            break;
        }
    }
    out
}

/// Zeek's order: children of a bind confirm while it is parsed, the analyzer after its first
/// message (the originator's, or the responder's when the originator sent none).
fn confirmations(o: &[Msg], r: &[Msg], name: &'static str) -> Option<Vec<&'static str>> {
    let mut out: Vec<&'static str> = Vec::new();
    let push = |s: &'static str, out: &mut Vec<&'static str>| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if o.is_empty() {
        return (!r.is_empty()).then(|| vec![name]);
    }
    for m in o {
        if let Op::Bind(children) = &m.op {
            for c in children {
                push(c, &mut out);
            }
        }
        push(name, &mut out);
    }
    Some(out)
}

/// A StartTLS request answered with success, then a TLS hello on either side.
fn starttls(orig: &[u8], o: &[Msg], resp: &[u8], r: &[Msg], ev: &Evidence) -> bool {
    let Some(req) = o.iter().find(|m| m.op == Op::StartTls) else {
        return false;
    };
    let Some(ok) = r.iter().find(|m| m.op == Op::ExtendedOk) else {
        return false;
    };
    let after = |b: &[u8], end: usize| b.get(end..).unwrap_or(&[]).to_vec();
    tls_hint::hello(&after(orig, req.end), ev.orig.truncated)
        || tls_hint::hello(&after(resp, ok.end), ev.resp.truncated)
}

/// Parses one LDAPMessage's header and the operations that matter; `None` if it is not one.
fn message(b: &[u8], truncated: bool) -> Option<Op> {
    let (seq, _) = ber::expect(b, 0x30).ok()?;
    let cut = seq.short && truncated;
    if seq.short && !truncated {
        return None;
    }
    let (id, rest) = ber::expect(seq.content, 0x02).ok()?;
    if id.short || id.content.is_empty() || id.content.len() > 4 {
        return None;
    }
    let (op, _) = match ber::read(rest) {
        Ok(x) => x,
        Err(BerError::Short) if cut => return Some(Op::Other),
        Err(_) => return None,
    };
    // [APPLICATION n] with a parser in Zeek's analyzer.
    let n = op.id & 0x1f;
    if op.id & 0xc0 != 0x40 || !matches!(n, 0..=16 | 19 | 23..=25) {
        return None;
    }
    Some(match n {
        0 => Op::Bind(bind(op.content, cut)?),
        23 => extended_request(op.content),
        24 => extended_response(op.content),
        _ => Op::Other,
    })
}

/// A bind request: version, name, then simple `[0]` or SASL `[3]` credentials; what the SASL
/// credentials confirm.
fn bind(b: &[u8], cut: bool) -> Option<Vec<&'static str>> {
    let tolerate = |e: BerError| (e == BerError::Short && cut).then(Vec::new);
    let rest = match ber::expect(b, 0x02).and_then(|(_, r)| ber::expect(r, 0x04)) {
        Ok((_, r)) => r,
        Err(e) => return tolerate(e),
    };
    let auth = match ber::read(rest) {
        Ok((a, _)) => a,
        Err(e) => return tolerate(e),
    };
    match auth.id {
        0x80 => Some(Vec::new()),
        0xa3 => Some(sasl(auth.content, cut)),
        _ => None,
    }
}

/// SASL credentials: the mechanism, then the token handed to NTLM or GSSAPI.
fn sasl(b: &[u8], cut: bool) -> Vec<&'static str> {
    let Ok((mech, rest)) = ber::expect(b, 0x04) else {
        return Vec::new();
    };
    let Ok((creds, _)) = ber::expect(rest, 0x04) else {
        return Vec::new();
    };
    let cut = cut && creds.short;
    if !mech.content.starts_with(b"GSS") {
        return Vec::new();
    }
    if ntlm::looks_like(creds.content) {
        return if ntlm::message_ok(creds.content, cut) {
            vec!["ntlm"]
        } else {
            Vec::new()
        };
    }
    gssapi::confirms(creds.content, cut)
}

fn extended_request(b: &[u8]) -> Op {
    match ber::expect(b, 0x80) {
        Ok((name, _)) if name.content == STARTTLS_OID => Op::StartTls,
        _ => Op::Other,
    }
}

fn extended_response(b: &[u8]) -> Op {
    match ber::expect(b, 0x0a) {
        Ok((code, _)) if code.content == [0] => Op::ExtendedOk,
        _ => Op::Other,
    }
}

#[cfg(test)]
#[path = "ldap_tests.rs"]
mod tests;
