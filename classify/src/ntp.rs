//! NTP (Zeek's `ntp`): attached to UDP port 123 (its DPD signature file is not loaded) and
//! confirmed on the first message that parses: modes 1-5 carry the 48-octet standard header,
//! mode 6 (control) a 12-octet header and its data count, mode 7 (private) an 8-octet header;
//! Zeek's parser accepts any datagram of mode 0 (reserved) as is.

use crate::{Evidence, Found, UDP};

const PORT: u16 = 123;

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP || (ev.resp_port != PORT && ev.orig_port != PORT) {
        return None;
    }
    let ok = [ev.orig, ev.resp].into_iter().any(|side| {
        let n = side.segments.len();
        side.segments
            .iter()
            .enumerate()
            .any(|(i, d)| message_ok(d, side.truncated && i + 1 == n))
    });
    ok.then(|| Found {
        services: vec!["ntp"],
        ..Found::default()
    })
}

fn message_ok(d: &[u8], cut: bool) -> bool {
    let Some(&first) = d.first() else {
        return false;
    };
    let need = match first & 0x07 {
        0 => 1,
        1..=5 => 48,
        6 => match d.get(10..12) {
            Some(c) => 12 + usize::from(u16::from_be_bytes([c[0], c[1]])),
            None => 12,
        },
        _ => 8,
    };
    d.len() >= need || cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;

    fn check(orig: &[u8], port: u16) -> bool {
        let segs: &[&[u8]] = &[orig];
        let ev = Evidence {
            proto: UDP,
            orig_port: 123,
            resp_port: port,
            orig: Side {
                segments: segs,
                truncated: false,
                len: None,
            },
            resp: Side::default(),
        };
        detect(&ev).is_some()
    }

    #[test]
    fn client_control_and_short_messages() {
        let mut client = vec![0x23, 0, 6, 0xec];
        client.resize(48, 0);
        assert!(check(&client, 123));
        assert!(
            !check(&client[..40], 123),
            "a short standard message does not parse"
        );
        let mut control = vec![0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4];
        assert!(!check(&control, 123), "announces four data octets");
        control.extend([1, 2, 3, 4]);
        assert!(check(&control, 123));
        assert!(!check(&[], 123));
        let segs: &[&[u8]] = &[&client];
        let ev = Evidence {
            proto: UDP,
            orig_port: 5000,
            resp_port: 5001,
            orig: Side {
                segments: segs,
                truncated: false,
                len: None,
            },
            resp: Side::default(),
        };
        assert!(detect(&ev).is_none(), "port 123 only");
    }
}
