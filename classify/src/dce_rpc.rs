//! DCE/RPC over TCP (Zeek's `dce_rpc`): attached to port 135 and by DPD signature (a PDU
//! header: version 5, minor 0 or 1, a packet type up to 19, flags `0x03`, a whole fragment);
//! confirmed once a PDU parses (data representation, a fragment length of at least the
//! 16-octet header, held by the stream).

use crate::util::{found, on_port};
use crate::{Evidence, Found, TCP};

const PORTS: [u16; 1] = [135];

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let port = on_port(ev, &PORTS);
    let ok = |s: crate::Side| {
        let b = s.stream();
        (port || b.get(3) == Some(&0x03)) && pdu_ok(b, s.truncated)
    };
    (ok(ev.orig) || ok(ev.resp)).then_some(())?;
    found("dce_rpc")
}

fn pdu_ok(b: &[u8], cut: bool) -> bool {
    let [5, 0 | 1, ptype, _flags, drep, _, _, _, f0, f1, ..] = *b else {
        return false;
    };
    let little = drep & 0xf0 == 0x10;
    let frag = if little {
        u16::from_le_bytes([f0, f1])
    } else {
        u16::from_be_bytes([f0, f1])
    };
    let frag = usize::from(frag);
    ptype <= 19 && drep & 0xe0 == 0 && frag >= 16 && (b.len() >= frag || cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn bind_pdu() {
        let mut bind = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 72, 0, 0, 0, 1, 0, 0, 0];
        bind.resize(72, 0);
        assert_eq!(
            run(detect, TCP, 135, &bind, &[], false),
            Some("dce_rpc".into())
        );
        assert_eq!(
            run(detect, TCP, 49667, &bind, &[], false),
            Some("dce_rpc".into())
        );
        assert_eq!(run(detect, TCP, 135, &bind[..40], &[], false), None);
        // A SOCKS5 greeting matches the signature's first octets, not the header.
        assert_eq!(run(detect, TCP, 1080, &[5, 1, 0], &[5, 0], false), None);
    }
}
