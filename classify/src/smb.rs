//! SMB (Zeek's `smb`, versions 1 to 3 over NetBIOS session framing on TCP 139 and 445).
//!
//! Zeek's SMB analyzer confirms once three chunks of payload (TCP deliveries, about one per
//! message and segment) parsed without error, and hands every security blob (negotiate
//! responses, session setups) to GSSAPI, whose children (NTLM, Kerberos) confirm first. A
//! plain SMB2 start (negotiate, its response with SPNEGO, an NTLM session setup) reads
//! `gssapi,ntlm,smb`; a Windows client that opens with an SMB1 negotiate reads
//! `gssapi,smb,ntlm`, as Zeek's logs show both. The evidence has no timing across directions,
//! so requests and responses are taken to alternate, and a message to take one chunk per
//! 1460 octets. The named pipes' DCE/RPC (`dce_rpc` after the session setup) lies past any
//! small budget and is not followed.

use crate::{gssapi, Evidence, Found, TCP};

const MAX_MESSAGES: usize = 8;

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (
        messages(ev.orig.stream(), ev.orig.truncated),
        messages(ev.resp.stream(), ev.resp.truncated),
    );
    // Ports 139 and 445, or anywhere by Zeek's DPD signature (an SMB header after the
    // NetBIOS framing): the messages parsing stands for either.
    if o.is_empty() && r.is_empty() {
        return None;
    }
    let mut out: Vec<&'static str> = Vec::new();
    let add = |list: &[&'static str], out: &mut Vec<&'static str>| {
        for s in list {
            if !out.contains(s) {
                out.push(s);
            }
        }
    };
    let mut chunks = 0;
    let mut confirmed = false;
    let (mut oi, mut ri) = (o.iter(), r.iter());
    for m in std::iter::from_fn(|| Some((oi.next(), ri.next())))
        .take_while(|p| p.0.is_some() || p.1.is_some())
        .flat_map(|(a, b)| a.into_iter().chain(b))
    {
        let before = chunks;
        chunks += m.chunks;
        if !confirmed && before < CONFIRM_CHUNKS && chunks > CONFIRM_CHUNKS {
            // Confirmed inside this message, before its blob was parsed.
            out.push("smb");
            confirmed = true;
        }
        add(&m.children, &mut out);
        if !confirmed && chunks >= CONFIRM_CHUNKS {
            out.push("smb");
            confirmed = true;
        }
    }
    // The budget hid the rest: more chunks came.
    if !confirmed && (ev.orig.truncated || ev.resp.truncated) {
        out.push("smb");
    }
    if out.is_empty() {
        return None;
    }
    Some(Found {
        services: out,
        ..Found::default()
    })
}

struct Msg {
    /// What the message's security blob confirmed through GSSAPI.
    children: Vec<&'static str>,
    /// TCP deliveries it took, estimated from its length.
    chunks: usize,
}

/// Zeek's SMB analyzer confirms after this many chunks without a parse error.
const CONFIRM_CHUNKS: usize = 3;
/// A common MSS, to estimate the chunks of a message.
const MSS: usize = 1460;

/// The SMB messages at the front of a stream: NetBIOS session messages (`0x00`, 24-bit
/// length) holding an SMB1 (`\xffSMB`), SMB2/3 (`\xfeSMB`) or encrypted (`\xfdSMB`) message;
/// session requests, responses and keep-alives are skipped.
fn messages(mut b: &[u8], truncated: bool) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..MAX_MESSAGES * 2 {
        let [kind, l0, l1, l2, ..] = *b else { break };
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let whole = b.len() >= 4 + len;
        if !whole && !truncated {
            break;
        }
        let body = &b[4..(4 + len).min(b.len())];
        match kind {
            0x00 => {
                let Some(mut m) = message(body, !whole) else {
                    break;
                };
                m.chunks = (4 + len).div_ceil(MSS).max(1);
                out.push(m);
            }
            0x81 | 0x82 | 0x83 | 0x85 => {}
            _ => break,
        }
        if !whole || out.len() >= MAX_MESSAGES {
            break;
        }
        b = &b[4 + len..];
    }
    out
}

fn message(m: &[u8], cut: bool) -> Option<Msg> {
    let blob = match m.get(..4)? {
        b"\xfeSMB" => smb2_blob(m),
        b"\xffSMB" => smb1_blob(m),
        b"\xfdSMB" => None,
        _ => return None,
    };
    let children = blob.map_or_else(Vec::new, |(b, whole)| gssapi::confirms(b, cut && !whole));
    Some(Msg {
        children,
        chunks: 1,
    })
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 2)
        .map(|x| usize::from(u16::from_le_bytes([x[0], x[1]])))
}

/// The blob at `off` of `len` octets in `m`, and whether the evidence holds all of it.
fn slice(m: &[u8], off: usize, len: usize) -> Option<(&[u8], bool)> {
    let part = m.get(off..)?;
    Some((&part[..len.min(part.len())], part.len() >= len)).filter(|(b, _)| !b.is_empty())
}

/// SMB2: the security buffer of NEGOTIATE (response) and SESSION_SETUP (both ways).
fn smb2_blob(m: &[u8]) -> Option<(&[u8], bool)> {
    let command = le16(m, 12)?;
    let response = m.get(16)? & 1 != 0;
    let body = 64;
    let (off_at, len_at) = match (command, response) {
        (0, true) => (body + 56, body + 58),
        (1, false) => (body + 12, body + 14),
        (1, true) => (body + 4, body + 6),
        _ => return None,
    };
    slice(m, le16(m, off_at)?, le16(m, len_at)?)
}

/// SMB1 with extended security: the blob after the server GUID of a NEGOTIATE response, and
/// the one of a SESSION_SETUP_ANDX request (12 parameter words).
fn smb1_blob(m: &[u8]) -> Option<(&[u8], bool)> {
    let (command, words) = (*m.get(4)?, *m.get(32)?);
    let response = m.get(9)? & 0x80 != 0;
    match (command, words, response) {
        (0x72, 17, true) => {
            let caps = m.get(33 + 19..33 + 23)?;
            let extended = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]) & 0x8000_0000;
            let count = le16(m, 33 + 34)?;
            let start = 33 + 34 + 2 + 16;
            (extended != 0 && count > 16).then(|| slice(m, start, count - 16))?
        }
        (0x73, 12, false) => slice(m, 33 + 24 + 2, le16(m, 33 + 14)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gssapi::tests::{mechs_only, neg_token_init};
    use crate::ntlm::tests::negotiate;
    use crate::Side;

    fn netbios(smb: Vec<u8>) -> Vec<u8> {
        let n = smb.len();
        let mut v = vec![0, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        v.extend(smb);
        v
    }

    fn smb2(
        command: u16,
        response: bool,
        body: Vec<u8>,
        blob: &[u8],
        off_at: usize,
        len_at: usize,
    ) -> Vec<u8> {
        let mut m = b"\xfeSMB".to_vec();
        m.extend(64u16.to_le_bytes());
        m.resize(12, 0);
        m.extend(command.to_le_bytes());
        m.resize(16, 0);
        m.push(u8::from(response));
        m.resize(64, 0);
        m.extend(body);
        let off = m.len();
        m[64 + off_at..64 + off_at + 2].copy_from_slice(&(off as u16).to_le_bytes());
        m[64 + len_at..64 + len_at + 2].copy_from_slice(&(blob.len() as u16).to_le_bytes());
        m.extend(blob);
        netbios(m)
    }

    fn check(port: u16, orig: &[u8], resp: &[u8], cut: bool) -> Option<String> {
        let (o, r): (&[&[u8]], &[&[u8]]) = (&[orig], &[resp]);
        let ev = Evidence {
            proto: TCP,
            orig_port: 49282,
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
    fn smb2_negotiate_and_ntlm_session_setup() {
        let neg_req = smb2(0, false, vec![0x24, 0, 1, 0, 1, 0, 0, 0], &[], 0, 2);
        let neg_resp = smb2(0, true, vec![0; 64], &mechs_only(), 56, 58);
        // Two chunks: GSSAPI parsed the response's blob, SMB is not confirmed yet.
        assert_eq!(
            check(445, &neg_req, &neg_resp, false),
            Some("gssapi".into())
        );
        assert_eq!(
            check(445, &neg_req, &neg_resp, true),
            Some("gssapi,smb".into())
        );
        let mut orig = neg_req.clone();
        orig.extend(smb2(
            1,
            false,
            vec![0; 24],
            &neg_token_init(&negotiate()),
            12,
            14,
        ));
        assert_eq!(
            check(445, &orig, &neg_resp, false),
            Some("gssapi,ntlm,smb".into())
        );
        let plain_resp = smb2(0, true, vec![0; 64], &[], 56, 58);
        assert_eq!(
            check(445, &orig, &plain_resp, false),
            Some("ntlm,gssapi,smb".into())
        );
        assert_eq!(check(445, &orig, &[], false), Some("ntlm,gssapi".into()));
        assert_eq!(
            check(445, &orig, &neg_resp[..40], false),
            Some("ntlm,gssapi".into())
        );
        assert_eq!(
            check(8080, b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", false),
            None
        );
    }

    #[test]
    fn windows_opening_with_smb1_negotiate() {
        let smb1_neg = netbios(smb1(0x72, false, 0));
        let neg_req = smb2(0, false, vec![0x24, 0, 1, 0, 1, 0, 0, 0], &[], 0, 2);
        let neg_resp = smb2(0, true, vec![0; 64], &mechs_only(), 56, 58);
        let setup = smb2(1, false, vec![0; 24], &neg_token_init(&negotiate()), 12, 14);
        let orig = [smb1_neg, neg_req.clone(), setup].concat();
        let resp = [neg_resp.clone(), neg_resp.clone()].concat();
        let want = Some("gssapi,smb,ntlm".to_string());
        assert_eq!(check(445, &orig, &resp, false), want);
        // A session setup of three segments confirms SMB before its blob is parsed.
        let token = neg_token_init(&[negotiate(), vec![0; 3000]].concat());
        let big = smb2(1, false, vec![0; 24], &token, 12, 14);
        assert_eq!(check(445, &[neg_req, big].concat(), &neg_resp, false), want);
    }

    fn smb1(command: u8, response: bool, words: u8) -> Vec<u8> {
        let mut m = b"\xffSMB".to_vec();
        m.push(command);
        m.resize(9, 0);
        m.push(if response { 0x80 } else { 0 });
        m.resize(32, 0);
        m.push(words);
        m.resize(33 + 2 * usize::from(words), 0);
        m.extend([0, 0]);
        m
    }

    #[test]
    fn smb1_negotiate() {
        let resp = netbios(smb1(0x72, true, 17));
        let req = netbios(smb1(0x72, false, 0));
        let three = [req.clone(), req.clone()].concat();
        assert_eq!(check(445, &three, &resp, false), Some("smb".into()));
        assert_eq!(check(445, &req, &resp, false), None);
        assert_eq!(check(445, &[], b"\x00\x00\x00\x04\xffSMX", false), None);
    }
}
