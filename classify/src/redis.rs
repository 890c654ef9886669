//! Redis (Zeek's `redis`) on TCP 6379: a client command (a RESP array
//! `*2\r\n$3\r\nGET\r\n...` or an inline command line) answered in RESP (one of `+ - _ ,`
//! and a line, or one of ``: $ * # ( ! = % ` ~ >`` and a number, Zeek's server signature).
//! Zeek's signature would also enable the analyzer on other ports, but a POP3 greeting
//! (`+OK`) matches it and Zeek's logs show no `redis` there: off the port it is not claimed.

use crate::util::{found, on_port};
use crate::{Evidence, Found, TCP};

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    (on_port(ev, &[6379]) && command(o) && server_reply(r)).then_some(())?;
    found("redis")
}

/// `*<n>\r\n$<len>\r\n` with small decimal counts, or an inline command (a word of letters
/// and a line end).
fn command(b: &[u8]) -> bool {
    if let Some(rest) = b.strip_prefix(b"*") {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        return (1..=4).contains(&n) && rest[n..].starts_with(b"\r\n$");
    }
    let word = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    (1..=16).contains(&word)
        && matches!(b.get(word), Some(b' ' | b'\r'))
        && b.windows(2).any(|w| w == b"\r\n")
}

/// Zeek's `resp-serialized-server` signature.
fn server_reply(r: &[u8]) -> bool {
    let line = match r.windows(2).position(|w| w == b"\r\n") {
        Some(n) => &r[..n],
        None => return false,
    };
    match line.split_first() {
        Some((b'-' | b'+' | b'_' | b',', _)) => true,
        Some((
            b':' | b'$' | b'*' | b'#' | b'(' | b'!' | b'=' | b'%' | b'`' | b'~' | b'>',
            rest,
        )) => {
            let rest = rest
                .strip_prefix(b"+")
                .or_else(|| rest.strip_prefix(b"-"))
                .unwrap_or(rest);
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            let tail = &rest[digits..];
            digits > 0
                && (tail.is_empty() || tail[0] == b'.' && tail[1..].iter().all(u8::is_ascii_digit))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn command_and_reply() {
        let get = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        assert_eq!(
            run(detect, TCP, 6379, get, b"$-1\r\n", false),
            Some("redis".into())
        );
        assert_eq!(run(detect, TCP, 6379, get, &[], false), None);
        assert_eq!(
            run(
                detect,
                TCP,
                80,
                b"GET / HTTP/1.1\r\n",
                b"HTTP/1.1 200 OK\r\n",
                false
            ),
            None
        );
        assert_eq!(
            run(
                detect,
                TCP,
                110,
                b"USER bob\r\n",
                b"+OK POP3 ready\r\n",
                false
            ),
            None
        );
        assert_eq!(
            run(detect, TCP, 6379, b"PING\r\n", b"+PONG\r\n", false),
            Some("redis".into())
        );
        assert_eq!(run(detect, TCP, 6379, get, b"$x\r\n", false), None);
    }
}
