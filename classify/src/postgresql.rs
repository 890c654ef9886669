//! PostgreSQL (Zeek's `postgresql`), by its DPD signatures: a startup message for protocol 3.x
//! carrying `user` answered by a backend message (a printable type, a length under 64 KiB), or
//! an SSLRequest answered by `S` or `N`. After `S` the connection is TLS: `postgresql,ssl` once
//! a hello follows.

use crate::{tls_hint, Evidence, Found, TCP};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    let services = if o.starts_with(&SSL_REQUEST) {
        match r.split_first() {
            Some((b'N', _)) => vec!["postgresql"],
            Some((b'S', after)) => {
                let hello = tls_hint::hello(&o[8..], ev.orig.truncated)
                    || tls_hint::hello(after, ev.resp.truncated);
                if hello {
                    vec!["postgresql", "ssl"]
                } else {
                    vec!["postgresql"]
                }
            }
            _ => return None,
        }
    } else if startup(o) && matches!(r, [t, 0, 0, _, _, ..] if t.is_ascii_alphanumeric()) {
        vec!["postgresql"]
    } else {
        return None;
    };
    Some(Found {
        services,
        ..Found::default()
    })
}

/// A StartupMessage for protocol 3.x whose parameters start with `user` (within 256 octets).
fn startup(o: &[u8]) -> bool {
    let [_, _, _, _, 0, 3, 0, ..] = *o else {
        return false;
    };
    let params = &o[8.min(o.len())..o.len().min(8 + 256 + 5)];
    params.windows(5).any(|w| w == b"user\0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_hint::tests::client_hello;
    use crate::util::tests::run;

    #[test]
    fn startup_and_ssl_request() {
        let mut s = vec![0, 0, 0, 0, 0, 3, 0, 0];
        s.extend(b"user\0postgres\0\0");
        s[3] = s.len() as u8;
        let auth_ok = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
        assert_eq!(
            run(detect, TCP, 5432, &s, &auth_ok, false),
            Some("postgresql".into())
        );
        assert_eq!(run(detect, TCP, 5432, &s, &[], false), None);
        let mut tls = SSL_REQUEST.to_vec();
        assert_eq!(
            run(detect, TCP, 5432, &tls, b"S", false),
            Some("postgresql".into())
        );
        tls.extend(client_hello());
        assert_eq!(
            run(detect, TCP, 5432, &tls, b"S", false),
            Some("postgresql,ssl".into())
        );
        assert_eq!(
            run(detect, TCP, 5432, &tls, b"N", false),
            Some("postgresql".into())
        );
        assert_eq!(run(detect, TCP, 5432, &tls, b"X", false), None);
        let no_user = b"\x00\x00\x00\x10\x00\x03\x00\x00database\x00";
        assert_eq!(run(detect, TCP, 5432, no_user, &auth_ok, false), None);
    }
}
