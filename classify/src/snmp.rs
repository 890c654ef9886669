//! SNMP (Zeek's `snmp`): attached to UDP 161 and 162, confirmed once a message from the
//! responder parses (Zeek's `proc_header` confirms only when not `is_orig`, so a lone trap or an
//! unanswered request is not confirmed): a SEQUENCE holding the version (0 = v1, 1 = v2c,
//! 3 = v3), then for v1/v2c the community string and a PDU (context tags 0 to 8), for v3 the
//! header data SEQUENCE.

use crate::ber::{self, BerError};
use crate::util::{found, on_port};
use crate::{Evidence, Found, UDP};

const PORTS: [u16; 2] = [161, 162];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP || !on_port(ev, &PORTS) {
        return None;
    }
    let n = ev.resp.segments.len();
    let confirmed = ev
        .resp
        .segments
        .iter()
        .enumerate()
        .any(|(i, d)| match message(d) {
            Ok(()) => true,
            Err(e) => e == BerError::Short && ev.resp.truncated && i + 1 == n,
        });
    confirmed.then_some(())?;
    found("snmp")
}

fn message(d: &[u8]) -> Result<(), BerError> {
    let (seq, _) = ber::expect(d, 0x30)?;
    let (v, rest) = ber::expect(seq.content, 0x02)?;
    match ber::int_value(&v) {
        Some(0 | 1) => {
            let (_community, rest) = ber::expect(rest, 0x04)?;
            let (pdu, _) = ber::read(rest)?;
            if !(0xa0..=0xa8).contains(&pdu.id) {
                return Err(BerError::Bad);
            }
        }
        Some(3) => {
            ber::expect(rest, 0x30)?;
        }
        _ => return Err(BerError::Bad),
    }
    if seq.short {
        return Err(BerError::Short);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn get_request_v2c() {
        let mut pdu = vec![
            0xa0, 0x0b, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x00,
        ];
        let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x06];
        body.extend(b"public");
        body.append(&mut pdu);
        let mut msg = vec![0x30, body.len() as u8];
        msg.extend(body);
        assert_eq!(run(detect, UDP, 161, &[], &msg, false), Some("snmp".into()));
        assert_eq!(run(detect, UDP, 1161, &[], &msg, false), None);
        assert_eq!(run(detect, UDP, 161, &[], &msg[..10], false), None);
        assert_eq!(
            run(detect, UDP, 161, &[], &msg[..10], true),
            Some("snmp".into())
        );
        assert_eq!(run(detect, UDP, 161, &msg, &[], false), None, "unanswered");
        let mut v9 = msg.clone();
        v9[4] = 9;
        assert_eq!(run(detect, UDP, 161, &[], &v9, false), None);
    }
}
