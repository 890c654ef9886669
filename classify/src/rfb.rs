//! RFB, the VNC protocol (Zeek's `rfb`): enabled by DPD signature only (the server's and the
//! client's streams both start with `RFB`), confirmed once the client's version parses
//! (`RFB 003.008\n`, twelve octets).

use crate::util::found;
use crate::{Evidence, Found, TCP};

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    (r.starts_with(b"RFB") && version(o)).then_some(())?;
    found("rfb")
}

/// `RFB xxx.yyy\n` with decimal digits.
fn version(b: &[u8]) -> bool {
    let Some(v) = b.get(..12) else { return false };
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    v.starts_with(b"RFB ")
        && digits(&v[4..7])
        && v[7] == b'.'
        && digits(&v[8..11])
        && v[11] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn version_exchange() {
        let v = b"RFB 003.008\n";
        assert_eq!(run(detect, TCP, 5900, v, v, false), Some("rfb".into()));
        assert_eq!(
            run(detect, TCP, 5900, &[], v, false),
            None,
            "the client's version confirms"
        );
        assert_eq!(run(detect, TCP, 5900, b"RFB 003.0x8\n", v, false), None);
        assert_eq!(run(detect, TCP, 5900, v, b"SSH-2.0-x\r\n", false), None);
    }
}
