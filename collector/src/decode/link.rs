//! The link layer, hand-written: find where the IP packet starts in a captured frame.
//!
//! Ethernet with any stack of VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, the old QinQ 0x9100),
//! MPLS label stacks (0x8847/0x8848) and PPPoE sessions (0x8864) in front of IPv4/IPv6, and the
//! headers Zeek's Ethernet analyzer looks through: Cisco FabricPath (0x8903), 802.1ah
//! provider backbone bridging (0x88e7) and VN-Tag (0x8926); the BSD loopback headers (NULL in
//! the capturing host's byte order, LOOP in network order); Linux cooked captures v1 and v2,
//! whose protocol field is an ethertype; NFLOG's TLV list; PPP ([`ppp`]); IEEE 802.11 data
//! frames, bare or behind radiotap ([`wifi`]); and raw IP. The views borrow the frame; nothing
//! is copied.
//!
//! Each of these headers only says where the IP packet starts: what is counted (one packet, the
//! IP header's own length) is the IP layer's business, as in Zeek, so a frame wrapped in
//! FabricPath or PBB counts exactly as the same packet unwrapped.

use tapflow_proto::DropReason;

use super::{be16, LinkType};

mod ppp;
mod wifi;

/// Where the IP packet starts in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct L3<'a> {
    /// From the IP header to the end of the captured frame (padding and trailers included:
    /// the IP layer cuts them off by its total length).
    pub(super) ip: &'a [u8],
    /// The outermost VLAN id on the way, if the frame had a tag.
    pub(super) vlan: Option<u16>,
}

/// The IP packet inside one captured frame of link type `link`.
pub(super) fn parse(link: LinkType, frame: &[u8]) -> Result<L3<'_>, DropReason> {
    match link {
        LinkType::Ethernet => ethernet(frame),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => ip_by_version(frame, None),
        LinkType::Null => bsd_loopback(frame, false),
        LinkType::Loop => bsd_loopback(frame, true),
        LinkType::LinuxSll => {
            let proto = be16(frame, 14).ok_or(DropReason::Truncated)?;
            ethertype(proto, frame.get(16..).ok_or(DropReason::Truncated)?, None)
        }
        LinkType::LinuxSll2 => {
            let proto = be16(frame, 0).ok_or(DropReason::Truncated)?;
            ethertype(proto, frame.get(20..).ok_or(DropReason::Truncated)?, None)
        }
        LinkType::Nflog => nflog(frame),
        LinkType::Ppp => ppp::ppp(frame),
        LinkType::PppSerial => ppp::serial(frame),
        LinkType::Ieee80211 => wifi::ieee80211(frame),
        LinkType::Radiotap => wifi::radiotap(frame),
    }
}

/// An Ethernet II frame: destination, source, ethertype, then [`ethertype`].
pub(super) fn ethernet(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    let (ty, rest) = ethernet_header(frame)?;
    ethertype(ty, rest, None)
}

/// The ethertype of an Ethernet header and what follows it. A Cisco FabricPath frame (outer
/// addresses, ethertype 0x8903, the 2-byte FTag/TTL field) is looked through to the Ethernet
/// frame it carries, once, as Zeek does.
fn ethernet_header(frame: &[u8]) -> Result<(u16, &[u8]), DropReason> {
    let frame = if be16(frame, 12) == Some(ETH_FABRICPATH) {
        frame.get(FABRICPATH_LEN..).ok_or(DropReason::Truncated)?
    } else {
        frame
    };
    let ty = be16(frame, 12).ok_or(DropReason::Truncated)?;
    Ok((ty, frame.get(14..).ok_or(DropReason::Truncated)?))
}

/// What follows an ethertype `ty`: VLAN tags are peeled off (the first one seen is the
/// outermost, kept in `vlan` unless the caller already had one), and so are VN-Tags (4 bytes and
/// the next ethertype) and 802.1ah I-TAGs (4 bytes, then the customer's Ethernet frame); then
/// IPv4/IPv6 directly or behind MPLS or PPPoE. Anything else (ARP, LLDP, 802.3 length fields,
/// ...) is `NonIp`.
pub(super) fn ethertype(
    mut ty: u16,
    mut rest: &[u8],
    mut vlan: Option<u16>,
) -> Result<L3<'_>, DropReason> {
    loop {
        match ty {
            ETH_IPV4 | ETH_IPV6 => return Ok(L3 { ip: rest, vlan }),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
                let tci = be16(rest, 0).ok_or(DropReason::Truncated)?;
                ty = be16(rest, 2).ok_or(DropReason::Truncated)?;
                rest = rest.get(4..).ok_or(DropReason::Truncated)?;
                vlan.get_or_insert(tci & 0x0fff);
            }
            ETH_VNTAG => {
                ty = be16(rest, 4).ok_or(DropReason::Truncated)?;
                rest = rest.get(6..).ok_or(DropReason::Truncated)?;
            }
            ETH_PBB => {
                (ty, rest) =
                    ethernet_header(rest.get(PBB_ITAG_LEN..).ok_or(DropReason::Truncated)?)?;
            }
            ETH_MPLS | ETH_MPLS_MULTICAST => return mpls(rest, vlan),
            ETH_PPPOE_SESSION => return pppoe(rest, vlan),
            _ => return Err(DropReason::NonIp),
        }
    }
}

/// An MPLS label stack down to the bottom-of-stack bit; IPv4 or IPv6 by the version nibble
/// below it (pseudowires with a control word are not IP: `NonIp`).
fn mpls(mut rest: &[u8], vlan: Option<u16>) -> Result<L3<'_>, DropReason> {
    loop {
        let bottom = rest.get(2).ok_or(DropReason::Truncated)? & 0x01 != 0;
        rest = rest.get(4..).ok_or(DropReason::Truncated)?;
        if bottom {
            break;
        }
    }
    match rest.first().map(|b| b >> 4) {
        Some(4 | 6) => Ok(L3 { ip: rest, vlan }),
        Some(_) => Err(DropReason::NonIp),
        None => Err(DropReason::Truncated),
    }
}

/// A PPPoE session header (6 bytes) and the PPP protocol field (2 bytes).
fn pppoe(rest: &[u8], vlan: Option<u16>) -> Result<L3<'_>, DropReason> {
    let ppp = be16(rest, 6).ok_or(DropReason::Truncated)?;
    let ip = rest.get(8..).ok_or(DropReason::Truncated)?;
    match ppp {
        PPP_IPV4 | PPP_IPV6 => Ok(L3 { ip, vlan }),
        _ => Err(DropReason::NonIp),
    }
}

/// DLT_NULL (address family in the capturing host's byte order, so both are accepted) and
/// DLT_LOOP (network order).
fn bsd_loopback(frame: &[u8], network_order: bool) -> Result<L3<'_>, DropReason> {
    let raw: [u8; 4] = frame
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DropReason::Truncated)?;
    let family = if network_order {
        u32::from_be_bytes(raw)
    } else {
        // Address families are small numbers: whichever reading is small is the right one.
        let le = u32::from_le_bytes(raw);
        if le <= 0xffff {
            le
        } else {
            u32::from_be_bytes(raw)
        }
    };
    let ip = frame.get(4..).ok_or(DropReason::Truncated)?;
    match family {
        AF_INET | AF_INET6_LINUX | AF_INET6_OPENBSD | AF_INET6_FREEBSD | AF_INET6_DARWIN => {
            ip_by_version(ip, None)
        }
        _ => Err(DropReason::NonIp),
    }
}

/// DLT_NFLOG: a 4-byte header (family, version, resource id), then TLVs of a little-endian
/// length (header included) and type, each padded to 4 bytes; `NFULA_PAYLOAD` holds the packet.
fn nflog(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    let mut rest = frame.get(4..).ok_or(DropReason::Truncated)?;
    while !rest.is_empty() {
        let len = le16(rest, 0).ok_or(DropReason::Truncated)?;
        let ty = le16(rest, 2).ok_or(DropReason::Truncated)? & NLA_TYPE_MASK;
        let len = usize::from(len);
        if len < 4 {
            return Err(DropReason::Truncated);
        }
        let value = rest.get(4..len).ok_or(DropReason::Truncated)?;
        if ty == NFULA_PAYLOAD {
            return ip_by_version(value, None);
        }
        let padded = len.checked_add(3).map_or(len, |l| l & !3);
        rest = rest.get(padded..).unwrap_or_default();
    }
    Err(DropReason::NonIp)
}

/// Raw IP: the version nibble decides (the IP layer rejects anything but 4 and 6).
fn ip_by_version(ip: &[u8], vlan: Option<u16>) -> Result<L3<'_>, DropReason> {
    if ip.is_empty() {
        return Err(DropReason::Truncated);
    }
    Ok(L3 { ip, vlan })
}

#[inline]
fn le16(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    b.get(at..end)?.try_into().ok().map(u16::from_le_bytes)
}

pub(super) const ETH_IPV4: u16 = 0x0800;
pub(super) const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MULTICAST: u16 = 0x8848;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_FABRICPATH: u16 = 0x8903;
const ETH_PBB: u16 = 0x88e7;
const ETH_VNTAG: u16 = 0x8926;
/// Outer destination and source, ethertype, FTag and TTL: where the inner frame starts.
const FABRICPATH_LEN: usize = 16;
/// The 802.1ah I-TAG after its ethertype: priority, flags and the 24-bit service id.
const PBB_ITAG_LEN: usize = 4;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const AF_INET: u32 = 2;
const AF_INET6_LINUX: u32 = 10;
const AF_INET6_OPENBSD: u32 = 24;
const AF_INET6_FREEBSD: u32 = 28;
const AF_INET6_DARWIN: u32 = 30;
const NFULA_PAYLOAD: u16 = 9;
/// Netlink attribute types carry two flag bits (nested, network byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv4 and IPv6 header start, enough to tell the versions apart.
    const V4: &[u8] = &[0x45, 0, 0, 20];
    const V6: &[u8] = &[0x60, 0, 0, 0];

    /// `frame` is `head ++ ip`; the IP view must start right after `head`.
    fn check(link: LinkType, head: &[u8], ip: &[u8], expected: Result<Option<u16>, DropReason>) {
        let frame = [head, ip].concat();
        let got = parse(link, &frame);
        match expected {
            Ok(vlan) => assert_eq!(got, Ok(L3 { ip, vlan }), "{link:?} {head:02x?}"),
            Err(reason) => assert_eq!(got, Err(reason), "{link:?} {head:02x?}"),
        }
    }

    fn eth(ty: u16) -> Vec<u8> {
        let mut h = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        h.extend_from_slice(&ty.to_be_bytes());
        h
    }

    #[test]
    fn ethernet_and_tags() {
        check(LinkType::Ethernet, &eth(0x0800), V4, Ok(None));
        check(LinkType::Ethernet, &eth(0x86dd), V6, Ok(None));
        let one_tag = [eth(0x8100), vec![0x20, 0x0a, 0x08, 0x00]].concat();
        check(LinkType::Ethernet, &one_tag, V4, Ok(Some(10)));
        // QinQ: the outer (service) tag is the one kept.
        let qinq = [eth(0x88a8), vec![0, 100, 0x81, 0x00, 0, 200, 0x86, 0xdd]].concat();
        check(LinkType::Ethernet, &qinq, V6, Ok(Some(100)));
        let three = [
            eth(0x9100),
            vec![0x0f, 0xff, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0],
        ]
        .concat();
        check(LinkType::Ethernet, &three, V4, Ok(Some(0xfff)));
        check(LinkType::Ethernet, &eth(0x0806), V4, Err(DropReason::NonIp));
        check(
            LinkType::Ethernet,
            &eth(0x88cc),
            &[],
            Err(DropReason::NonIp),
        );
        check(LinkType::Ethernet, &eth(0x0040), V4, Err(DropReason::NonIp));
        check(
            LinkType::Ethernet,
            &eth(0x8100)[..13],
            &[],
            Err(DropReason::Truncated),
        );
        check(
            LinkType::Ethernet,
            &[eth(0x8100), vec![0, 1, 8]].concat(),
            &[],
            Err(DropReason::Truncated),
        );
    }

    #[test]
    fn mpls_and_pppoe() {
        // Two labels, the second with the bottom-of-stack bit.
        let mpls = [eth(0x8847), vec![0, 0x01, 0x00, 64, 0, 0x02, 0x01, 64]].concat();
        check(LinkType::Ethernet, &mpls, V4, Ok(None));
        check(LinkType::Ethernet, &mpls, V6, Ok(None));
        let multicast = [eth(0x8848), vec![0, 0x01, 0x01, 64]].concat();
        check(LinkType::Ethernet, &multicast, V4, Ok(None));
        // A pseudowire control word (first nibble 0) is not IP.
        check(
            LinkType::Ethernet,
            &multicast,
            &[0, 0, 0, 0],
            Err(DropReason::NonIp),
        );
        check(
            LinkType::Ethernet,
            &[eth(0x8847), vec![0, 0x01, 0x00, 64]].concat(),
            &[],
            Err(DropReason::Truncated),
        );
        let vlan_mpls = [eth(0x8100), vec![0, 7, 0x88, 0x47, 0, 0, 0x01, 1]].concat();
        check(LinkType::Ethernet, &vlan_mpls, V6, Ok(Some(7)));

        let session = |ppp: u16| {
            [
                eth(0x8864),
                vec![0x11, 0, 0, 1, 0, 42],
                ppp.to_be_bytes().to_vec(),
            ]
            .concat()
        };
        check(LinkType::Ethernet, &session(0x0021), V4, Ok(None));
        check(LinkType::Ethernet, &session(0x0057), V6, Ok(None));
        check(
            LinkType::Ethernet,
            &session(0xc021),
            &[1, 2, 3, 4],
            Err(DropReason::NonIp),
        );
        check(
            LinkType::Ethernet,
            &session(0x0021)[..20],
            &[],
            Err(DropReason::Truncated),
        );
    }

    #[test]
    fn other_link_types() {
        check(LinkType::Raw, &[], V4, Ok(None));
        check(LinkType::Raw, &[], &[], Err(DropReason::Truncated));
        check(LinkType::Ipv4, &[], V4, Ok(None));
        check(LinkType::Ipv6, &[], V6, Ok(None));
        // NULL: either byte order of the capturing host.
        check(LinkType::Null, &[2, 0, 0, 0], V4, Ok(None));
        check(LinkType::Null, &[0, 0, 0, 2], V4, Ok(None));
        for af in [10u32, 24, 28, 30] {
            check(LinkType::Null, &af.to_le_bytes(), V6, Ok(None));
            check(LinkType::Null, &af.to_be_bytes(), V6, Ok(None));
        }
        check(LinkType::Null, &[7, 0, 0, 0], V4, Err(DropReason::NonIp));
        check(LinkType::Null, &[2, 0], &[], Err(DropReason::Truncated));
        check(LinkType::Loop, &[0, 0, 0, 2], V4, Ok(None));
        check(LinkType::Loop, &[0, 0, 0, 30], V6, Ok(None));
        check(LinkType::Loop, &[2, 0, 0, 0], V4, Err(DropReason::NonIp));

        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        check(LinkType::LinuxSll, &sll, V4, Ok(None));
        sll[14..16].copy_from_slice(&[0x81, 0x00]);
        check(
            LinkType::LinuxSll,
            &[sll.clone(), vec![0, 5, 0x86, 0xdd]].concat(),
            V6,
            Ok(Some(5)),
        );
        sll[14..16].copy_from_slice(&[0x00, 0x04]);
        check(LinkType::LinuxSll, &sll, V4, Err(DropReason::NonIp));
        check(
            LinkType::LinuxSll,
            &sll[..15],
            &[],
            Err(DropReason::Truncated),
        );

        let sll2 = [vec![0x86, 0xdd, 0, 0], vec![0; 16]].concat();
        check(LinkType::LinuxSll2, &sll2, V6, Ok(None));
        check(
            LinkType::LinuxSll2,
            &sll2[..19],
            &[],
            Err(DropReason::Truncated),
        );
    }

    #[test]
    fn nflog_tlvs() {
        let header = [2u8, 0, 0, 1];
        // A 5-byte prefix TLV (padded to 8), then the payload TLV.
        let prefix = [5u8, 0, 10, 0, b'x', 0, 0, 0];
        let payload_hdr = |len: u16| [(len + 4).to_le_bytes(), 9u16.to_le_bytes()].concat();
        let head = [&header[..], &prefix, &payload_hdr(4)].concat();
        // Only the TLV's value is the packet, not what follows it.
        let frame = [head.clone(), V4.to_vec()].concat();
        assert_eq!(
            parse(LinkType::Nflog, &frame),
            Ok(L3 { ip: V4, vlan: None })
        );
        let with_trailer = [frame.clone(), vec![8, 0, 99, 0, 1, 2, 3, 4]].concat();
        assert_eq!(
            parse(LinkType::Nflog, &with_trailer),
            Ok(L3 { ip: V4, vlan: None })
        );
        check(
            LinkType::Nflog,
            &[&header[..], &prefix].concat(),
            &[],
            Err(DropReason::NonIp),
        );
        check(
            LinkType::Nflog,
            &[&header[..], &[2, 0, 9, 0]].concat(),
            V4,
            Err(DropReason::Truncated),
        );
        check(LinkType::Nflog, &head, &V4[..2], Err(DropReason::Truncated));
        check(
            LinkType::Nflog,
            &header[..3],
            &[],
            Err(DropReason::Truncated),
        );
    }

    #[test]
    fn every_prefix_is_handled() {
        let frames = [
            [eth(0x8100), vec![0, 1, 0x88, 0x47, 0, 0, 1, 1], V4.to_vec()].concat(),
            [
                eth(0x8864),
                vec![0x11, 0, 0, 1, 0, 42, 0, 0x57],
                V6.to_vec(),
            ]
            .concat(),
        ];
        for frame in &frames {
            for n in 0..frame.len() {
                for link in [
                    LinkType::Ethernet,
                    LinkType::Nflog,
                    LinkType::LinuxSll,
                    LinkType::Null,
                ] {
                    let _ = parse(link, &frame[..n]);
                }
            }
        }
    }
}
