//! Flow identities: [`FiveTuple`] is what one packet says (source to destination); [`FlowKey`]
//! is the canonical, direction-free identity both directions of a connection share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// IP protocol numbers tapflow tracks by name.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
}

/// An IPv4 or IPv6 address in 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
///
/// On the wire it is a MessagePack `bin` of 4 or 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

/// One 128-bit write (a single fold in foldhash), where the derived `Hash` wrote a length
/// prefix and then the 16 bytes. Only in-process hash maps read it: shard routing and uids hash
/// `FlowKey::to_bytes`, never this.
impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl Addr {
    pub const fn from_v4(octets: [u8; 4]) -> Addr {
        let [a, b, c, d] = octets;
        Addr([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
    }

    pub const fn from_v6(octets: [u8; 16]) -> Addr {
        Addr(octets)
    }

    pub fn is_v4(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }

    /// The address bytes as they appear in a packet: 4 for IPv4, 16 for IPv6.
    pub fn as_bytes(&self) -> &[u8] {
        if self.is_v4() {
            &self.0[12..]
        } else {
            &self.0
        }
    }

    /// Whether this address is in the network `net`/`len` (`len` in the address family's bits:
    /// 0-32 for IPv4, 0-128 for IPv6).
    pub fn in_net(&self, net: Addr, len: u8) -> bool {
        if self.is_v4() != net.is_v4() {
            return false;
        }
        let (a, n) = (self.as_bytes(), net.as_bytes());
        let len = usize::from(len).min(a.len() * 8);
        let (whole, rest) = (len / 8, len % 8);
        a[..whole] == n[..whole] && (rest == 0 || (a[whole] ^ n[whole]) >> (8 - rest) == 0)
    }

    pub fn to_ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Addr> {
        match bytes.len() {
            4 => Some(Addr::from_v4([bytes[0], bytes[1], bytes[2], bytes[3]])),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(bytes);
                Some(Addr(a))
            }
            _ => None,
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::from_v4(v4.octets()),
            IpAddr::V6(v6) => Addr::from_v6(v6.octets()),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Addr, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Addr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("4 or 16 address bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Addr, E> {
                Addr::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A network in configuration that is not `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network {0:?} is not ADDRESS/PREFIX (e.g. 10.0.0.0/8)")]
pub struct BadNet(pub String);

/// Parses `ADDRESS/PREFIX` (a bare address is a one-host network), as configuration gives
/// networks (local networks, allowlists, per-network thresholds).
pub fn parse_net(s: &str) -> Result<(Addr, u8), BadNet> {
    let bad = || BadNet(s.to_owned());
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = if len.is_empty() {
        max
    } else {
        len.trim().parse().map_err(|_| bad())?
    };
    if len > max {
        return Err(bad());
    }
    Ok((Addr::from(ip), len))
}

/// Which way a packet travels relative to its [`FlowKey`]: `Forward` is from `lo` to `hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Forward,
    Reverse,
}

/// What one packet says: from `src:sport` to `dst:dport`.
///
/// For ICMP and ICMPv6 the "ports" follow Zeek: `sport` is the message type and `dport` is its
/// counterpart type for request/reply pairs (echo 8/0, timestamp 13/14, ICMPv6 echo 128/129, ...)
/// or the message code for one-way messages, so a request and its reply share a [`FlowKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
}

impl FiveTuple {
    /// The ICMP/ICMPv6 five-tuple Zeek would build for a message of `icmp_type`/`icmp_code`.
    pub fn icmp(proto: u8, src: Addr, dst: Addr, icmp_type: u8, icmp_code: u8) -> FiveTuple {
        let counterpart = if proto == ip_proto::ICMPV6 {
            icmp6_counterpart(icmp_type)
        } else {
            icmp4_counterpart(icmp_type)
        };
        FiveTuple {
            proto,
            src,
            dst,
            sport: u16::from(icmp_type),
            dport: u16::from(counterpart.unwrap_or(icmp_code)),
        }
    }

    /// The canonical key and this packet's direction along it. `vlan` is 0 unless VLAN ids are
    /// configured to be part of the key (Zeek's default is that they are not).
    pub fn key(&self, vlan: u16) -> (FlowKey, Direction) {
        if (self.src, self.sport) <= (self.dst, self.dport) {
            let key = FlowKey {
                proto: self.proto,
                lo: self.src,
                hi: self.dst,
                lo_port: self.sport,
                hi_port: self.dport,
                vlan,
            };
            (key, Direction::Forward)
        } else {
            let key = FlowKey {
                proto: self.proto,
                lo: self.dst,
                hi: self.src,
                lo_port: self.dport,
                hi_port: self.sport,
                vlan,
            };
            (key, Direction::Reverse)
        }
    }
}

/// The canonical identity of a bidirectional flow: endpoints ordered so that `(lo, lo_port) <=
/// (hi, hi_port)`. Both directions of a connection give the same key.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct FlowKey {
    pub proto: u8,
    pub lo: Addr,
    pub hi: Addr,
    pub lo_port: u16,
    pub hi_port: u16,
    /// 0 unless VLAN ids are configured to be part of the key.
    pub vlan: u16,
}

impl FlowKey {
    /// Length of [`FlowKey::to_bytes`].
    pub const ENCODED_LEN: usize = 39;

    /// The fixed byte layout the shard hash is computed over, identical on every host:
    /// `proto | lo (16) | hi (16) | lo_port (LE) | hi_port (LE) | vlan (LE)`.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0] = self.proto;
        b[1..17].copy_from_slice(&self.lo.0);
        b[17..33].copy_from_slice(&self.hi.0);
        b[33..35].copy_from_slice(&self.lo_port.to_le_bytes());
        b[35..37].copy_from_slice(&self.hi_port.to_le_bytes());
        b[37..39].copy_from_slice(&self.vlan.to_le_bytes());
        b
    }

    /// The directional view of this key for a packet travelling in `dir`.
    pub fn tuple(&self, dir: Direction) -> FiveTuple {
        match dir {
            Direction::Forward => FiveTuple {
                proto: self.proto,
                src: self.lo,
                dst: self.hi,
                sport: self.lo_port,
                dport: self.hi_port,
            },
            Direction::Reverse => FiveTuple {
                proto: self.proto,
                src: self.hi,
                dst: self.lo,
                sport: self.hi_port,
                dport: self.lo_port,
            },
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} <-> {}:{} proto {}",
            self.lo, self.lo_port, self.hi, self.hi_port, self.proto
        )
    }
}

/// Zeek's `ICMP4_counterpart`: the paired type of a request/reply message, `None` if one-way.
pub fn icmp4_counterpart(icmp_type: u8) -> Option<u8> {
    Some(match icmp_type {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        15 => 16,
        16 => 15,
        10 => 9,
        9 => 10,
        17 => 18,
        18 => 17,
        _ => return None,
    })
}

/// Zeek's `ICMP6_counterpart`: echo, router, neighbor, MLD and node-information pairs.
pub fn icmp6_counterpart(icmp_type: u8) -> Option<u8> {
    Some(match icmp_type {
        128 => 129,
        129 => 128,
        133 => 134,
        134 => 133,
        135 => 136,
        136 => 135,
        130 => 131,
        131 => 130,
        139 => 140,
        140 => 139,
        144 => 145,
        145 => 144,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Addr {
        Addr::from_v4([a, b, c, d])
    }

    fn check_same_key(a: FiveTuple, b: FiveTuple) {
        let (ka, da) = a.key(0);
        let (kb, db) = b.key(0);
        assert_eq!(ka, kb, "{a:?} and {b:?} must share a key");
        assert_ne!(da, db, "{a:?} and {b:?} travel opposite ways");
        assert_eq!(ka.tuple(da), a);
        assert_eq!(kb.tuple(db), b);
    }

    #[test]
    fn both_directions_share_a_key() {
        let a = FiveTuple {
            proto: 6,
            src: v4(10, 0, 0, 1),
            dst: v4(10, 0, 0, 2),
            sport: 40000,
            dport: 80,
        };
        let b = FiveTuple {
            proto: 6,
            src: a.dst,
            dst: a.src,
            sport: 80,
            dport: 40000,
        };
        check_same_key(a, b);
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = FiveTuple {
            proto: 17,
            src: v4(127, 0, 0, 1),
            dst: v4(127, 0, 0, 1),
            sport: 5000,
            dport: 53,
        };
        let b = FiveTuple {
            proto: 17,
            src: a.src,
            dst: a.src,
            sport: 53,
            dport: 5000,
        };
        check_same_key(a, b);
    }

    #[test]
    fn icmp_echo_pairs_with_reply() {
        let (x, y) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        check_same_key(
            FiveTuple::icmp(1, x, y, 8, 0),
            FiveTuple::icmp(1, y, x, 0, 0),
        );
        check_same_key(
            FiveTuple::icmp(1, x, y, 13, 0),
            FiveTuple::icmp(1, y, x, 14, 0),
        );
        let (x6, y6) = (
            Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        );
        check_same_key(
            FiveTuple::icmp(58, x6, y6, 128, 0),
            FiveTuple::icmp(58, y6, x6, 129, 0),
        );
    }

    #[test]
    fn icmp_one_way_uses_code_as_responder_port() {
        let t = FiveTuple::icmp(1, v4(10, 0, 0, 1), v4(10, 0, 0, 2), 3, 3);
        assert_eq!((t.sport, t.dport), (3, 3));
        let t = FiveTuple::icmp(1, v4(10, 0, 0, 1), v4(10, 0, 0, 2), 11, 1);
        assert_eq!((t.sport, t.dport), (11, 1));
    }

    #[test]
    fn v4_and_v6_addresses_round_trip() {
        let a = v4(192, 168, 1, 10);
        assert!(a.is_v4());
        assert_eq!(a.as_bytes(), &[192, 168, 1, 10]);
        assert_eq!(a.to_string(), "192.168.1.10");
        let ip6: IpAddr = "2001:db8::1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let b = Addr::from(ip6);
        assert!(!b.is_v4());
        assert_eq!(b.to_ip(), ip6);
    }

    #[test]
    fn networks_parse_and_contain() {
        let (net, len) = parse_net("10.1.0.0/16").expect("parse an IPv4 network");
        assert!(v4(10, 1, 200, 3).in_net(net, len));
        assert!(!v4(10, 2, 0, 1).in_net(net, len));
        assert_eq!(parse_net("192.0.2.1").map(|n| n.1), Ok(32));
        let (n6, l6) = parse_net("2001:db8::/32").expect("parse an IPv6 network");
        assert!(Addr::from(
            "2001:db8:1::1"
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        )
        .in_net(n6, l6));
        assert!(!v4(10, 1, 0, 1).in_net(n6, l6));
        assert!(v4(10, 1, 0, 1).in_net(net, 0) && v4(10, 1, 0, 1).in_net(v4(10, 1, 0, 0), 31));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_bytes_are_fixed_layout() {
        let k = FlowKey {
            proto: 6,
            lo: v4(1, 2, 3, 4),
            hi: v4(5, 6, 7, 8),
            lo_port: 0x0102,
            hi_port: 0x0304,
            vlan: 7,
        };
        let b = k.to_bytes();
        assert_eq!(b[0], 6);
        assert_eq!(&b[13..17], &[1, 2, 3, 4]);
        assert_eq!(&b[29..33], &[5, 6, 7, 8]);
        assert_eq!(&b[33..39], &[2, 1, 4, 3, 7, 0]);
    }
}
