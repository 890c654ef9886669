//! SOCKS (Zeek's `socks`, versions 4 and 5): attached to TCP 1080 and by DPD signature;
//! confirmed on the server's reply to a well-formed request: SOCKS4 `00 5a..5d` after
//! `04 01|02 port addr user NUL`, SOCKS5 a method choice after the client's method list.
//! (Zeek then runs DPD on the tunnelled stream, `socks,http`; that part is not followed.)

use crate::util::found;
use crate::{Evidence, Found, TCP};

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (o, r) = (ev.orig.stream(), ev.resp.stream());
    let ok = match o.first() {
        Some(4) => socks4(o, r),
        Some(5) => socks5(o, r),
        _ => false,
    };
    ok.then_some(())?;
    found("socks")
}

/// `dpd_socks4_client` then `dpd_socks4_server`: `04 01|02`, up to 32 octets and a NUL,
/// answered by `00 5a..5d`.
fn socks4(o: &[u8], r: &[u8]) -> bool {
    let request = matches!(o, [4, 1 | 2, ..]) && o[2..].iter().take(33).any(|&c| c == 0);
    request && matches!(r, [0, 0x5a..=0x5d, ..])
}

/// `dpd_socks5_client` then `dpd_socks5_server`: `05 n 00|01|02`, answered by `05 00` or
/// `05 01 00|01|02`.
fn socks5(o: &[u8], r: &[u8]) -> bool {
    matches!(o, [5, _, 0..=2, ..]) && matches!(r, [5, 0, ..] | [5, 1, 0..=2, ..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn versions_4_and_5() {
        let v4 = [4, 1, 0, 80, 93, 184, 216, 34, b'u', 0];
        assert_eq!(
            run(detect, TCP, 1080, &v4, &[0, 0x5a, 0, 0, 0, 0, 0, 0], false),
            Some("socks".into())
        );
        assert_eq!(run(detect, TCP, 1080, &v4, &[], false), None);
        assert_eq!(
            run(detect, TCP, 9050, &[5, 1, 0], &[5, 0], false),
            Some("socks".into())
        );
        assert_eq!(run(detect, TCP, 1080, &[5, 3, 9], &[5, 0], false), None);
        assert_eq!(run(detect, TCP, 1080, &[5, 1, 0], &[5, 0xff], false), None);
    }
}
