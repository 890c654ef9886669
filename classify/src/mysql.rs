//! MySQL (Zeek's `mysql`, TCP 1434 and 3306): confirmed on the server's initial handshake, a
//! packet (three-octet length, sequence 0) holding protocol version 10 (or 9) and a
//! NUL-terminated server version.

use crate::util::{found, on_port};
use crate::{Evidence, Found, TCP};

const PORTS: [u16; 2] = [1434, 3306];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP || !on_port(ev, &PORTS) {
        return None;
    }
    handshake(ev.resp.stream(), ev.resp.truncated).then_some(())?;
    found("mysql")
}

fn handshake(b: &[u8], cut: bool) -> bool {
    let [l0, l1, l2, 0, 9 | 10, ref rest @ ..] = *b else {
        return false;
    };
    let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
    if !(10..=0x1_0000).contains(&len) {
        return false;
    }
    let version = &rest[..rest.len().min(len - 1)];
    match version.iter().position(|&c| c == 0) {
        Some(n) => n > 0 && version[..n].iter().all(|c| c.is_ascii_graphic()),
        None => cut && version.len() < 64 && version.iter().all(|c| c.is_ascii_graphic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn server_greeting() {
        let mut body = vec![10];
        body.extend(b"8.0.36\0");
        body.extend([0x2a, 0, 0, 0]);
        body.extend([0x41; 9]);
        let mut m = vec![body.len() as u8, 0, 0, 0];
        m.extend(body);
        assert_eq!(run(detect, TCP, 3306, &[], &m, false), Some("mysql".into()));
        assert_eq!(
            run(detect, TCP, 3306, &m, &[], false),
            None,
            "the server greets"
        );
        assert_eq!(run(detect, TCP, 3307, &[], &m, false), None);
        assert_eq!(run(detect, TCP, 3306, &[], &m[..8], false), None);
        assert_eq!(
            run(detect, TCP, 3306, &[], &m[..8], true),
            Some("mysql".into())
        );
    }
}
