//! PostgreSQL (Zeek's `postgresql`): attached to TCP 5432 and by DPD signature (a startup
//! message for protocol 3.0, or an SSLRequest); confirmed when the server answers: a backend
//! message (`R` authentication, `E` error) after the startup message, or `S` after an
//! SSLRequest, after which the connection is TLS: `postgresql,ssl` once a hello follows.

use crate::{tls_hint, Evidence, Found, TCP};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    let services = if o.starts_with(&SSL_REQUEST) {
        let [b'S', ref after @ ..] = *r else {
            return None;
        };
        let hello = tls_hint::hello(&o[8..], ev.orig.truncated)
            || tls_hint::hello(after, ev.resp.truncated);
        if hello {
            vec!["postgresql", "ssl"]
        } else {
            vec!["postgresql"]
        }
    } else if startup(o) && matches!(r.first(), Some(b'R' | b'E')) && r.len() >= 5 {
        vec!["postgresql"]
    } else {
        return None;
    };
    Some(Found {
        services,
        ..Found::default()
    })
}

/// A StartupMessage: a length of at least 8, protocol 3.0.
fn startup(o: &[u8]) -> bool {
    let [l0, l1, l2, l3, 0, 3, 0, 0, ..] = *o else {
        return false;
    };
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    (8..=10_000).contains(&len)
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
        assert_eq!(run(detect, TCP, 5432, &tls, b"N", false), None);
    }
}
