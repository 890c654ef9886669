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
            },
            resp: Side {
                segments: r,
                truncated: cut,
            },
        };
        detect(&ev).map(|f| f.services.join(","))
    }
}
