//! Syslog (Zeek's `syslog`, UDP 514). Zeek's Spicy parser takes an optional priority `<N>`
//! and then the rest of the datagram, and accepts the input once that unit is done: any
//! datagram on the port confirms. (`Syslog_TCP`, RFC 6587 framing, has no default port.)

use crate::util::{any_datagram, found, on_port};
use crate::{Evidence, Found, UDP};

const PORTS: [u16; 1] = [514];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP || !on_port(ev, &PORTS) {
        return None;
    }
    any_datagram(ev, |_, _| true).then_some(())?;
    found("syslog")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn any_datagram_on_the_port() {
        let m = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed";
        assert_eq!(run(detect, UDP, 514, m, &[], false), Some("syslog".into()));
        assert_eq!(run(detect, UDP, 515, m, &[], false), None);
        assert_eq!(
            run(detect, UDP, 514, b"no priority", &[], false),
            Some("syslog".into())
        );
        assert_eq!(run(detect, UDP, 514, &[], &[], false), None, "no datagram");
        assert_eq!(run(detect, crate::TCP, 514, m, &[], false), None);
    }
}
