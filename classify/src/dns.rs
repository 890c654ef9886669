//! `dns`: Zeek's DNS analyzer runs on its ports (53 over UDP and TCP; 137, 5353 and 5355 over
//! UDP) and confirms on one message whose header, questions and answers parse (TCP: behind the
//! two-byte length prefix). More questions than `dns_max_queries` (25 unless configured, 0 =
//! no limit) is a violation: such a message confirms nothing, as in Zeek's `DNS_Interpreter`.

use crate::scan::{found, Reader};
use crate::{Evidence, Found, Side, TCP, UDP};

/// At most this many datagrams per direction are tried.
const MAX_DATAGRAMS: usize = 16;

#[derive(Debug, PartialEq, Eq)]
enum Parse {
    Ok,
    /// Ran out of bytes after a valid start.
    Short,
    Bad,
}

/// `max_queries`: Zeek's `dns_max_queries` (0 = no limit).
pub fn detect(ev: &Evidence, max_queries: u16) -> Option<Found> {
    let port = ev.resp_port;
    let m = max_queries;
    let ok = match ev.proto {
        UDP if matches!(port, 53 | 137 | 5353 | 5355) => udp(&ev.orig, m) || udp(&ev.resp, m),
        TCP if port == 53 => tcp(&ev.orig, m) || tcp(&ev.resp, m),
        _ => false,
    };
    ok.then(|| found(&["dns"]))
}

fn udp(side: &Side, max: u16) -> bool {
    let n = side.segments.len();
    side.segments
        .iter()
        .take(MAX_DATAGRAMS)
        .enumerate()
        .any(|(i, d)| {
            let cut = side.truncated && i + 1 == n;
            accepted(message(d, max), cut)
        })
}

fn tcp(side: &Side, max: u16) -> bool {
    let mut r = Reader::new(side.stream());
    let Some(len) = r.u16() else { return false };
    match r.take(usize::from(len)) {
        Some(msg) => message(msg, max) == Parse::Ok,
        None => side.truncated && message(r.rest(), max) != Parse::Bad,
    }
}

fn accepted(p: Parse, cut: bool) -> bool {
    p == Parse::Ok || (cut && p == Parse::Short)
}

fn message(msg: &[u8], max: u16) -> Parse {
    let mut r = Reader::new(msg);
    let (Some(_id), Some(_flags), Some(qd), Some(an), Some(_ns), Some(_ar)) =
        (r.u16(), r.u16(), r.u16(), r.u16(), r.u16(), r.u16())
    else {
        return Parse::Bad;
    };
    if max > 0 && qd > max {
        return Parse::Bad;
    }
    for _ in 0..qd {
        if let Err(p) = name(&mut r, msg.len()).and_then(|()| fixed(&mut r, 4)) {
            return p;
        }
    }
    for _ in 0..an {
        let rr = name(&mut r, msg.len())
            .and_then(|()| fixed(&mut r, 8))
            .and_then(|()| r.vec16().map(|_| ()).ok_or(Parse::Short));
        if let Err(p) = rr {
            return p;
        }
    }
    Parse::Ok
}

fn fixed(r: &mut Reader, n: usize) -> Result<(), Parse> {
    r.take(n).map(|_| ()).ok_or(Parse::Short)
}

/// A domain name: labels up to the root or a compression pointer into the message.
fn name(r: &mut Reader, msg_len: usize) -> Result<(), Parse> {
    let mut total = 0usize;
    loop {
        let len = r.u8().ok_or(Parse::Short)?;
        match len >> 6 {
            0 if len == 0 => return Ok(()),
            0 => {
                total += usize::from(len) + 1;
                if total > 255 {
                    return Err(Parse::Bad);
                }
                fixed(r, usize::from(len))?;
            }
            3 => {
                let low = r.u8().ok_or(Parse::Short)?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                return if target < msg_len {
                    Ok(())
                } else {
                    Err(Parse::Bad)
                };
            }
            _ => return Err(Parse::Bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `www.example.com` A, and its answer with one A record (compressed name).
    fn query() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        m
    }

    fn answer() -> Vec<u8> {
        let mut m = query();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1;
        m.extend_from_slice(&[
            0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34,
        ]);
        m
    }

    fn ev<'a>(proto: u8, port: u16, orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Evidence<'a> {
        Evidence {
            proto,
            orig_port: 33333,
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
        }
    }

    #[test]
    fn one_parsed_message_on_a_dns_port_is_dns() {
        let (q, a) = (query(), answer());
        assert!(detect(&ev(UDP, 53, &[&q], &[&a]), 25).is_some());
        assert!(detect(&ev(UDP, 5353, &[], &[&a]), 25).is_some());
        assert_eq!(
            detect(&ev(UDP, 1234, &[&q], &[&a]), 25),
            None,
            "not a DNS port"
        );
    }

    #[test]
    fn tcp_messages_carry_a_length_prefix() {
        let q = query();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        assert!(detect(&ev(TCP, 53, &[&framed], &[]), 25).is_some());
        assert_eq!(detect(&ev(TCP, 53, &[&q], &[]), 25), None, "no prefix");
    }

    #[test]
    fn garbage_and_cut_messages_are_not_dns() {
        let q = query();
        assert_eq!(detect(&ev(UDP, 53, &[&q[..20]], &[]), 25), None);
        let mut many = q.clone();
        many[5] = 26;
        assert_eq!(detect(&ev(UDP, 53, &[&many], &[]), 25), None);
        let bad_ptr = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0, 1, 0, 1];
        assert_eq!(detect(&ev(UDP, 53, &[&bad_ptr], &[]), 25), None);
        let mut cut = ev(UDP, 53, &[], &[]);
        let seg: [&[u8]; 1] = [&q[..20]];
        cut.orig = Side {
            segments: &seg,
            truncated: true,
            len: None,
        };
        assert!(detect(&cut, 25).is_some(), "cut by the budget");
    }

    /// A query with `n` questions, each a name of its own.
    fn questions(n: u8) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, n, 0, 0, 0, 0, 0, 0];
        for i in 0..n {
            m.extend_from_slice(&[1, b'a' + i % 26, 0, 0, 1, 0, 1]);
        }
        m
    }

    #[test]
    fn more_questions_than_the_limit_is_a_violation_and_zero_is_no_limit() {
        let four = questions(4);
        let side: [&[u8]; 1] = [&four];
        let e = ev(UDP, 53, &side, &[]);
        assert_eq!(detect(&e, 3), None, "4 questions over a limit of 3");
        assert!(detect(&e, 4).is_some(), "4 questions within a limit of 4");
        assert!(detect(&e, 0).is_some(), "0 = no limit");
        let many = questions(30);
        let side: [&[u8]; 1] = [&many];
        let e = ev(UDP, 53, &side, &[]);
        assert_eq!(detect(&e, 25), None, "Zeek's default refuses 30");
        assert!(detect(&e, 30).is_some());
        assert!(detect(&e, 0).is_some());
    }
}
