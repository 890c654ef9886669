//! The give-up check (issue 17), like Zeek's DPD giving up on a connection no analyzer wants:
//! whether a direction whose payload starts with these bytes can still matter to any detector
//! of [`crate::DETECTORS`]. The collector asks it on the first bytes of each direction (TCP:
//! the bytes at stream offset 0; UDP: the first datagram) and ships nothing more for a
//! direction that cannot; the classifier's verdict is then the same as with every byte shipped,
//! because each detector either rejects such a side or ignores it, and rejects it when empty
//! too (`tests::a_hopeless_side_changes_no_verdict` holds it over generated evidence).
//!
//! The check is role-blind (it does not know which side opened the connection), so two taps
//! that each see one direction decide alike; it is cheap (a few byte comparisons), and it
//! answers `true` whenever the bytes are too few to decide.

use crate::{TCP, UDP};

/// Fewer first bytes than this never give up (a pattern could still complete).
pub const DECIDE_BYTES: usize = 7;

/// Ports on which a detector takes any payload as its own (its analyzer is attached by port):
/// no give-up there.
const TCP_PORTS: &[u16] = &[
    53,   // dns (TCP)
    88,   // krb_tcp
    135,  // dce_rpc
    139,  // smb
    389,  // ldap_tcp
    445,  // smb
    502,  // modbus
    1434, // mysql
    3268, // ldap_tcp (global catalog)
    3306, // mysql
    3389, // rdp
    6379, // redis
];
const UDP_PORTS: &[u16] = &[
    53, 67, 68, 88, 123, 137, 161, 162, 389, 514, 1812, 1813, 3389, 5060, 5353, 5355,
];

/// Whether a direction of a `proto` flow between `ports` whose payload starts with `first`
/// may still confirm a service (or name a server): `false` only when no detector can use it.
pub fn may_match(proto: u8, ports: [u16; 2], first: &[u8]) -> bool {
    let listed = match proto {
        TCP => TCP_PORTS,
        UDP => UDP_PORTS,
        _ => return false,
    };
    if first.len() < DECIDE_BYTES || ports.iter().any(|p| listed.contains(p)) {
        return true;
    }
    text(first)
        || tls(first)
        || match proto {
            TCP => tcp_binary(first),
            _ => udp_binary(first),
        }
}

/// A text protocol's first bytes (HTTP, SSH, SMTP, POP3, IMAP, FTP, IRC, XMPP, SIP, RFB,
/// Redis): printable ASCII and line breaks, after an optional UTF-8 byte order mark.
fn text(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b);
    b.iter()
        .take(4)
        .all(|&c| matches!(c, b'\t'..=b'\r' | b' '..=b'~'))
}

/// A TLS handshake record, or an SSLv2 ClientHello.
fn tls(b: &[u8]) -> bool {
    matches!(b, [22, 3, 0..=4, ..]) || matches!(b, [h, _, 1, 0 | 3, ..] if h & 0x80 != 0)
}

/// The binary TCP protocols' openings, either role.
fn tcp_binary(b: &[u8]) -> bool {
    match b {
        // SMB after NetBIOS framing (a session message, or the session service's own).
        [0, _, _, _, 0xfd..=0xff, b'S', b'M', b'B', ..] | [0x81..=0x83 | 0x85, ..] => true,
        // LDAP (a BER sequence), RDP (TPKT), DCE-RPC, MQTT CONNECT.
        [0x30, ..] | [3, 0, ..] | [5, 0 | 1, ..] | [0x10, ..] => true,
        // SOCKS 4 and 5 requests and replies.
        [4, 1 | 2, ..] | [5, ..] | [0, 0x5a..=0x5d, ..] => true,
        // PostgreSQL: SSLRequest or StartupMessage (protocol 3.0); its replies (`N`, `S`, or a
        // message type and a length below 64 KiB).
        [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f, ..] | [_, _, _, _, 0, 3, 0, ..] => true,
        [b'N' | b'S', ..] => true,
        [t, 0, 0, ..] => t.is_ascii_alphanumeric(),
        _ => false,
    }
}

/// The binary UDP protocols' first datagrams, either role: QUIC v1/v2 long headers, DTLS
/// handshakes, an RDPEUDP SYN or SYN/ACK, CLDAP (a BER sequence), DHCP's cookie. `d` holds at
/// least [`DECIDE_BYTES`].
fn udp_binary(d: &[u8]) -> bool {
    const RDPEUDP_SYN_ACK: u16 = 0x0001 | 0x0004;
    let quic =
        d[0] & 0xc0 == 0xc0 && matches!(d.get(1..5), Some([0, 0, 0, 1] | [0x6b, 0x33, 0x43, 0xcf]));
    let dtls = matches!(d, [22, 0xfe, 0xff | 0xfd, ..]);
    let rdpeudp = d.starts_with(&[0xff; 4])
        || d.get(6..8)
            .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & RDPEUDP_SYN_ACK == RDPEUDP_SYN_ACK);
    let dhcp = d.get(236..240) == Some(&[0x63, 0x82, 0x53, 0x63]);
    quic || dtls || rdpeudp || dhcp || d.first() == Some(&0x30)
}

#[cfg(test)]
mod tests;
