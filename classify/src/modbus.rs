//! Modbus/TCP (Zeek's `modbus`, TCP 502): confirmed on a message whose MBAP header parses:
//! protocol identifier 0 and a length of 2 to 254 octets (unit and function code included).

use crate::util::{found, on_port};
use crate::{Evidence, Found, TCP};

const PORTS: [u16; 1] = [502];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP || !on_port(ev, &PORTS) {
        return None;
    }
    let ok = |s: crate::Side| header_ok(s.stream());
    (ok(ev.orig) || ok(ev.resp)).then_some(())?;
    found("modbus")
}

fn header_ok(b: &[u8]) -> bool {
    let [_, _, 0, 0, l0, l1, _unit, function, ..] = *b else {
        return false;
    };
    let len = u16::from_be_bytes([l0, l1]);
    (2..=254).contains(&len) && function != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn read_holding_registers() {
        let req = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10];
        assert_eq!(
            run(detect, TCP, 502, &req, &[], false),
            Some("modbus".into())
        );
        let mut bad = req;
        bad[2] = 1;
        assert_eq!(run(detect, TCP, 502, &bad, &[], false), None);
        assert_eq!(run(detect, TCP, 503, &req, &[], false), None);
    }
}
