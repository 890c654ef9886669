//! Syslog (Zeek's `syslog`, UDP 514): a datagram starting with a priority `<N>`.

use crate::util::{any_datagram, found, on_port};
use crate::{Evidence, Found, UDP};

const PORTS: [u16; 1] = [514];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP || !on_port(ev, &PORTS) {
        return None;
    }
    any_datagram(ev, |d, _| priority(d)).then_some(())?;
    found("syslog")
}

fn priority(d: &[u8]) -> bool {
    let Some(rest) = d.strip_prefix(b"<") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=3).contains(&digits) && rest.get(digits) == Some(&b'>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn priorities() {
        let m = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed";
        assert_eq!(run(detect, UDP, 514, m, &[], false), Some("syslog".into()));
        assert_eq!(run(detect, UDP, 515, m, &[], false), None);
        assert_eq!(run(detect, UDP, 514, b"<>x", &[], false), None);
        assert_eq!(run(detect, UDP, 514, b"<1234>x", &[], false), None);
    }
}
