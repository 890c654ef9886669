//! Small helpers the group B detectors share.

use crate::{Evidence, Found, Side};

/// One service, as a detector's finding.
pub(crate) fn found(service: &'static str) -> Option<Found> {
    Some(Found {
        services: vec![service],
        ..Found::default()
    })
}

/// Either port of the connection is in `ports`.
pub(crate) fn on_port(ev: &Evidence, ports: &[u16]) -> bool {
    ports.contains(&ev.resp_port) || ports.contains(&ev.orig_port)
}

/// Some datagram of either side satisfies `ok(datagram, cut)`, where `cut` says the budget
/// may have cut that datagram (only a side's last one can be).
pub(crate) fn any_datagram(ev: &Evidence, ok: impl Fn(&[u8], bool) -> bool) -> bool {
    [ev.orig, ev.resp].into_iter().any(|side: Side| {
        let n = side.segments.len();
        side.segments
            .iter()
            .enumerate()
            .any(|(i, d)| ok(d, side.truncated && i + 1 == n))
    })
}

/// The first datagram of a side (or the TCP stream), or empty.
pub(crate) fn first<'a>(side: &Side<'a>) -> &'a [u8] {
    side.segments.first().copied().unwrap_or(&[])
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::{Evidence, Side};

    /// Runs `detect` over one segment per side (`&[]` for none) and joins the services.
    pub(crate) fn run(
        detect: fn(&Evidence) -> Option<crate::Found>,
        proto: u8,
        port: u16,
        orig: &[u8],
        resp: &[u8],
        cut: bool,
    ) -> Option<String> {
        found(detect, proto, port, orig, resp, cut).map(|f| f.services.join(","))
    }

    /// Runs `detect` over one segment per side (`&[]` for none).
    pub(crate) fn found(
        detect: fn(&Evidence) -> Option<crate::Found>,
        proto: u8,
        port: u16,
        orig: &[u8],
        resp: &[u8],
        cut: bool,
    ) -> Option<crate::Found> {
        let o: &[&[u8]] = if orig.is_empty() {
            &[]
        } else {
            std::slice::from_ref(&orig)
        };
        let r: &[&[u8]] = if resp.is_empty() {
            &[]
        } else {
            std::slice::from_ref(&resp)
        };
        let ev = Evidence {
            proto,
            orig_port: 50123,
            resp_port: port,
            orig: Side {
                segments: o,
                truncated: cut,
                len: None,
            },
            resp: Side {
                segments: r,
                truncated: cut,
                len: None,
            },
        };
        detect(&ev)
    }

    /// Every group B detector, for the hostile-input test.
    const GROUP_B: &[fn(&Evidence) -> Option<crate::Found>] = &[
        crate::ldap::detect,
        crate::krb::detect,
        crate::dhcp::detect,
        crate::ntp::detect,
        crate::rdp::detect,
        crate::smb::detect,
        crate::sip::detect,
        crate::snmp::detect,
        crate::mysql::detect,
        crate::syslog::detect,
        crate::radius::detect,
        crate::modbus::detect,
        crate::dce_rpc::detect,
        crate::socks::detect,
        crate::mqtt::detect,
        crate::postgresql::detect,
        crate::redis::detect,
        crate::rfb::detect,
    ];

    /// Prefixes that lead the detectors deep into their parsers before the noise starts.
    const PREFIXES: &[&[u8]] = &[
        b"",
        b"\x30\x84\x00\x00\x01\x00\x02\x01\x01\x60\x84\x00\x00\x00\xf0\x02\x01\x03\x04\x00\xa3",
        b"\x00\x00\x01\x00\xfeSMB\x40\x00\x00\x00\x00\x00\x00\x00\x01\x00",
        b"\x60\x82\x01\x00\x06\x06\x2b\x06\x01\x05\x05\x02\xa0\x82",
        b"\x03\x00\x00\x40\x3a\xe0\x00\x00",
        b"\x00\x00\x00\x80\x6a\x7e\x30\x7c\xa1\x03\x02\x01\x05",
        b"\x01\x01\x06\x00",
        b"SIP/2.0 200 ",
        b"\x05\x00\x0b\x03\x10\x00\x00\x00",
    ];

    #[test]
    fn hostile_evidence_never_panics_and_stays_bounded() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let ports = [
            88, 123, 67, 389, 445, 3389, 5060, 161, 3306, 514, 1812, 502, 135, 1080,
        ];
        for round in 0..3000 {
            let len = (next() % 700) as usize;
            let prefix = PREFIXES[round % PREFIXES.len()];
            let mut a = prefix.to_vec();
            a.extend((0..len).map(|_| next() as u8));
            let b: Vec<u8> = (0..(next() % 300) as usize).map(|_| next() as u8).collect();
            let cut = next() % 2 == 0;
            let port = ports[(next() % ports.len() as u64) as usize];
            for proto in [crate::TCP, crate::UDP] {
                for detect in GROUP_B {
                    let _ = run(*detect, proto, port, &a, &b, cut);
                    let _ = run(*detect, proto, port, &b, &a, cut);
                    let _ = run(*detect, proto, port, &a[..a.len() / 2], &a, cut);
                }
            }
        }
    }
}
