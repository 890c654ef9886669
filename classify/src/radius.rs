//! RADIUS (Zeek's `radius`, UDP 1812): confirmed once a message parses: a known code, a length
//! of 20 to 4096 that the datagram holds, and attributes that fill it.

use crate::util::{any_datagram, found, on_port};
use crate::{Evidence, Found, UDP};

const PORTS: [u16; 2] = [1812, 1813];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP || !on_port(ev, &PORTS) {
        return None;
    }
    any_datagram(ev, message_ok).then_some(())?;
    found("radius")
}

fn message_ok(d: &[u8], cut: bool) -> bool {
    let [code, _id, l0, l1, ..] = *d else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let known = matches!(code, 1..=5 | 11..=13 | 40..=45);
    if !known || !(20..=4096).contains(&len) || (d.len() < len && !cut) {
        return false;
    }
    let mut at = 20;
    let end = len.min(d.len());
    while at + 2 <= end {
        let alen = usize::from(d[at + 1]);
        if alen < 2 {
            return false;
        }
        at += alen;
    }
    at == len || (cut && at >= end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn access_request() {
        let mut m = vec![1, 7, 0, 0];
        m.extend([0x11; 16]);
        m.extend([1, 7]);
        m.extend(b"steve");
        let n = m.len() as u16;
        m[2..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(
            run(detect, UDP, 1812, &m, &[], false),
            Some("radius".into())
        );
        assert_eq!(run(detect, UDP, 1812, &m[..24], &[], false), None);
        let mut zero = m.clone();
        zero[21] = 0;
        assert_eq!(run(detect, UDP, 1812, &zero, &[], false), None);
        assert_eq!(run(detect, UDP, 53, &m, &[], false), None);
    }
}
