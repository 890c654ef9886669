//! DHCP (Zeek's `dhcp`): attached to UDP ports 67 and 68 and to any UDP payload holding the
//! magic cookie (its DPD signature); confirmed once a message parses: the 236-octet BOOTP
//! fixed part, the cookie `63 82 53 63` (checked), then options up to the end option (255).
//! Zeek does not check the op code.

use crate::{Evidence, Found, UDP};

const PORTS: [u16; 2] = [67, 68];
const COOKIE: [u8; 4] = [0x63, 0x82, 0x53, 0x63];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP {
        return None;
    }
    let on_port = PORTS.contains(&ev.resp_port) || PORTS.contains(&ev.orig_port);
    let ok = [ev.orig, ev.resp].into_iter().any(|side| {
        let n = side.segments.len();
        side.segments.iter().enumerate().any(|(i, d)| {
            // Only the last datagram can have been cut by the budget.
            message_ok(d, on_port && side.truncated && i + 1 == n)
        })
    });
    ok.then(|| Found {
        services: vec!["dhcp"],
        ..Found::default()
    })
}

/// A BOOTP message with the DHCP cookie and its options up to the end option; `cut`: the
/// budget cut the datagram, so a sound beginning counts.
fn message_ok(d: &[u8], cut: bool) -> bool {
    if d.len() < 240 {
        return cut && !d.is_empty();
    }
    if d[236..240] != COOKIE {
        return false;
    }
    let mut at = 240;
    while let Some(&code) = d.get(at) {
        match code {
            255 => return true,
            0 => at += 1,
            _ => match d.get(at + 1) {
                Some(&len) => at += 2 + usize::from(len),
                None => break,
            },
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;

    fn discover() -> Vec<u8> {
        let mut d = vec![1, 1, 6, 0, 0x3d, 0x1e, 0x75, 0xa2];
        d.resize(28, 0);
        d.extend([0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42]);
        d.resize(236, 0);
        d.extend(COOKIE);
        d.extend([53, 1, 1, 0xff]);
        d
    }

    fn check(port: u16, orig: &[u8], cut: bool) -> Option<Vec<&'static str>> {
        let segs: &[&[u8]] = &[orig];
        let ev = Evidence {
            proto: UDP,
            orig_port: 40000,
            resp_port: port,
            orig: Side {
                segments: segs,
                truncated: cut,
                len: None,
            },
            resp: Side::default(),
        };
        detect(&ev).map(|f| f.services)
    }

    #[test]
    fn bootp_with_cookie_on_any_port() {
        let d = discover();
        assert_eq!(check(67, &d, false), Some(vec!["dhcp"]));
        assert_eq!(
            check(9999, &d, false),
            Some(vec!["dhcp"]),
            "the DPD signature"
        );
        let mut no_cookie = d.clone();
        no_cookie[237] = 0;
        assert_eq!(check(67, &no_cookie, false), None);
        assert_eq!(check(67, &d[..100], false), None);
        assert_eq!(check(67, &d[..d.len() - 1], false), None, "no end option");
        assert_eq!(
            check(67, &d[..100], true),
            Some(vec!["dhcp"]),
            "cut by the budget"
        );
        assert_eq!(check(9999, &d[..100], true), None);
        assert_eq!(check(67, &[], true), None);
    }
}
