//! `ssh`: Zeek's SSH analyzer parses each side's version line (`SSH-x.y-software`) and then the
//! binary packets of the key exchange, and confirms on a `NEWKEYS` message (SSH-1: the session
//! key). The key exchange often runs past the shipped budget: a side whose evidence was cut
//! while its packets still parsed is taken as one that would reach it, unless the side's whole
//! stream ([`Side::len`]) ends within the packet it was cut in (nothing followed it: no
//! `NEWKEYS` from that side, as with an oversized `KEXINIT` and a hang-up).

use crate::scan::{found, lines_with_end, Reader};
use crate::{Evidence, Found, Side, TCP};

const MSG_NEWKEYS: u8 = 21;
const SSH1_CMSG_SESSION_KEY: u8 = 3;
/// Lines a server may send before its version line (RFC 4253 section 4.2), at most.
const MAX_PRE_LINES: usize = 20;
const MAX_PACKET: u32 = 256 * 1024;

pub fn detect(ev: &Evidence) -> Option<Found> {
    // Zeek labels no half-duplex SSH (its tests capture one side only): both version lines.
    let both = banner(ev.orig.stream()).is_some() && banner(ev.resp.stream()).is_some();
    (ev.proto == TCP && both && (side(&ev.orig) || side(&ev.resp))).then(|| found(&["ssh"]))
}

/// The offset after the version line and whether it announces SSH-1 only.
pub(crate) fn banner(stream: &[u8]) -> Option<(usize, bool)> {
    lines_with_end(stream, MAX_PRE_LINES).find_map(|(line, end)| {
        let rest = line.strip_prefix(b"SSH-")?;
        let (proto, _software) = rest.split_at(rest.iter().position(|&b| b == b'-')?);
        let ssh1 = proto.starts_with(b"1.") && proto != b"1.99";
        (proto.starts_with(b"1.") || proto.starts_with(b"2.")).then_some((end, ssh1))
    })
}

fn side(s: &Side) -> bool {
    let stream = s.stream();
    let Some((start, ssh1)) = banner(stream) else {
        return false;
    };
    let mut r = Reader::new(stream.get(start..).unwrap_or(&[]));
    loop {
        let at = (start + r.pos()) as u64;
        let Some(len) = r.u32() else {
            return s.truncated;
        };
        // A cut side goes on only if its stream goes on past this packet.
        let goes_on = s.truncated && s.len.is_none_or(|total| total > at + 4 + u64::from(len));
        if len == 0 || len > MAX_PACKET {
            return false;
        }
        let kind = if ssh1 {
            // SSH-1: padding to a multiple of 8, then the type.
            let pad = 8 - (len % 8);
            r.take(pad as usize).and_then(|_| r.u8())
        } else {
            r.u8().and_then(|_padding| r.u8())
        };
        let Some(kind) = kind else { return goes_on };
        if (ssh1 && kind == SSH1_CMSG_SESSION_KEY) || (!ssh1 && kind == MSG_NEWKEYS) {
            return true;
        }
        let consumed = if ssh1 { 1 } else { 2 };
        if r.take((len as usize).saturating_sub(consumed)).is_none() {
            return goes_on;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, payload_len: usize) -> Vec<u8> {
        let pad = 4usize;
        let len = (1 + 1 + payload_len + pad) as u32;
        let mut p = len.to_be_bytes().to_vec();
        p.push(pad as u8);
        p.push(kind);
        p.extend(std::iter::repeat_n(0x41, payload_len + pad));
        p
    }

    fn ev<'a>(orig: &'a [&'a [u8]], resp: &'a [&'a [u8]], truncated: bool) -> Evidence<'a> {
        Evidence {
            proto: TCP,
            orig_port: 51000,
            resp_port: 22,
            orig: Side {
                segments: orig,
                truncated,
                len: None,
            },
            resp: Side {
                segments: resp,
                truncated,
                len: None,
            },
        }
    }

    #[test]
    fn a_key_exchange_up_to_newkeys_confirms_ssh() {
        let mut c = b"SSH-2.0-OpenSSH_9.6\r\n".to_vec();
        c.extend(packet(20, 300)); // KEXINIT
        c.extend(packet(30, 40)); // KEX_ECDH_INIT
        c.extend(packet(MSG_NEWKEYS, 0));
        let s = b"SSH-2.0-OpenSSH_8.9\r\n";
        assert_eq!(
            detect(&ev(&[&c], &[s], false)).expect("newkeys").services,
            vec!["ssh"]
        );
    }

    #[test]
    fn a_cut_key_exchange_counts_only_when_the_budget_cut_it() {
        let mut c = b"SSH-2.0-PuTTY\r\n".to_vec();
        c.extend(packet(20, 1200));
        let cut = &c[..600];
        let s: &[u8] = b"SSH-2.0-srv\r\n";
        assert!(detect(&ev(&[cut], &[s], true)).is_some());
        assert_eq!(detect(&ev(&[cut], &[s], false)), None);
        assert_eq!(detect(&ev(&[cut], &[], true)), None, "one side only");
    }

    #[test]
    fn a_cut_side_whose_stream_ends_in_that_packet_never_reaches_newkeys() {
        // An oversized KEXINIT and a hang-up (Zeek's kex-quadratic trace): each side's stream
        // ends where its KEXINIT does, so neither sends NEWKEYS.
        let mut c = b"SSH-2.0-PuTTY\r\n".to_vec();
        c.extend(packet(20, 1200));
        let whole = c.len() as u64;
        let mut s = b"SSH-2.0-srv\r\n".to_vec();
        s.extend(packet(20, 300));
        let mut e = ev(&[], &[], true);
        let (cut, srv) = ([&c[..600]], [&s[..]]);
        e.orig = Side {
            segments: &cut,
            truncated: true,
            len: Some(whole),
        };
        e.resp = Side {
            segments: &srv,
            truncated: false,
            len: Some(s.len() as u64),
        };
        assert_eq!(detect(&e), None, "the stream ends with the cut packet");
        e.orig.len = Some(whole + 16);
        assert!(detect(&e).is_some(), "a packet follows the cut one");
    }

    #[test]
    fn other_banners_are_not_ssh() {
        assert_eq!(
            detect(&ev(&[b"SSH-3.0-x\r\n"], &[b"SSH-2.0-y\r\n"], true)),
            None
        );
        assert_eq!(detect(&ev(&[b"HTTP/1.1 200 OK\r\n"], &[], true)), None);
        let mut c = b"SSH-2.0-x\r\n".to_vec();
        c.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(detect(&ev(&[&c], &[], true)), None, "absurd packet length");
        assert_eq!(banner(b"hello\r\nSSH-1.99-srv\r\n"), Some((21, false)));
    }
}
