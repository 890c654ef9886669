//! Redis (Zeek's `redis`, TCP 6379): confirmed on a client command in RESP (an array of bulk
//! strings, `*2\r\n$3\r\nGET\r\n...`) answered by a RESP reply (`+`, `-`, `:`, `$`, `*`, and
//! RESP3's `_ , # ! = ( % ~ > |`).

use crate::util::{found, on_port};
use crate::{Evidence, Found, TCP};

const PORTS: [u16; 1] = [6379];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP || !on_port(ev, &PORTS) {
        return None;
    }
    let reply = matches!(
        ev.resp.stream().first(),
        Some(
            b'+' | b'-'
                | b':'
                | b'$'
                | b'*'
                | b'_'
                | b','
                | b'#'
                | b'!'
                | b'='
                | b'('
                | b'%'
                | b'~'
                | b'>'
                | b'|'
        )
    );
    (command(ev.orig.stream()) && reply).then_some(())?;
    found("redis")
}

/// `*<n>\r\n$<len>\r\n` with small decimal counts.
fn command(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"*") else {
        return false;
    };
    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=4).contains(&n) && rest[n..].starts_with(b"\r\n$")
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
            run(detect, TCP, 6379, b"GET / HTTP/1.1\r\n", b"-ERR\r\n", false),
            None
        );
        assert_eq!(run(detect, TCP, 6380, get, b"+OK\r\n", false), None);
    }
}
