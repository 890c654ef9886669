//! Packet decoding, sans-IO: one captured frame and its timestamp in, zero or more
//! [`PacketSummary`]s out. No IO, no clock (time is the packet's), no allocation per packet on
//! the common path (reassembly allocates, on the fragment path only, within its caps).
//!
//! # Layers
//! - **Link** (`link`, hand-written): Ethernet with stacked VLAN tags, MPLS, PPPoE, Cisco
//!   FabricPath, 802.1ah PBB and VN-Tag; BSD NULL/LOOP; Linux cooked v1/v2; NFLOG; PPP; IEEE
//!   802.11 data frames, bare or behind radiotap; raw IPv4/IPv6. The outermost VLAN id goes into the
//!   key only when [`DecodeConfig::vlan_in_key`] (Zeek's default is not to).
//! - **IP** (`ip`, etherparse slices): IPv4 with options, IPv6 with its extension headers.
//!   Lengths come from the headers: Ethernet padding is ignored; a capture cut by snaplen is
//!   summarised as far as it goes with [`flag::TRUNCATED`] and no checksum checks; a packet
//!   shorter than its header says without a snaplen cut is `Truncated`.
//! - **Fragments** (`frag`): reassembled in a bounded table, then decoded as one datagram
//!   (ports, tunnels and all) with [`flag::REASSEMBLED`] and the datagram's `ip_len`.
//! - **Transport** (`transport`, etherparse slices): TCP, UDP, ICMP, ICMPv6 fields; other
//!   protocols with ports 0. ICMP flows are keyed as Zeek keys them ([`FiveTuple::icmp`]); an
//!   ICMP error is its own flow (the quoted packet is not parsed).
//! - **Checksums** (`checksum`): with [`DecodeConfig::verify_checksums`] (Zeek's default; Zeek's
//!   `-C` turns it off), a wrong IPv4 header checksum drops the packet (`BadIpChecksum`), as
//!   Zeek does; a wrong TCP/UDP/ICMP/ICMPv6 checksum is flagged [`flag::BAD_CHECKSUM`] and the
//!   packet still summarised.
//! - **Tunnels** (`tunnel`): VXLAN, Geneve, GTP-U, GRE (ERSPAN I/II/III, PPTP's enhanced GRE,
//!   GRE in UDP), IP-in-IP, Teredo and AYIYA, as Zeek finds them. A tunnelled packet gives the
//!   outer flow's summary, then the inner flow's with [`flag::TUNNEL_INNER`] and
//!   `tunnel_parent` naming its immediate outer flow (for GRE in UDP, the GRE tunnel between the
//!   outer addresses, as Zeek names it); the outer one is flagged [`flag::TUNNEL_OUTER`] once
//!   the inner one is summarised, and a GRE or IP-in-IP packet always (Zeek makes no connection
//!   of them). Tunnels nest up to [`MAX_TUNNEL_DEPTH`] deep. A tunnel header that is malformed
//!   makes the inner packet undecodable as `MalformedTunnel` (`Truncated` when the capture cut
//!   it); an inner packet tapflow does not decode (Aruba's 802.11, PPP control) counts under its
//!   reason. A UDP datagram with a wrong checksum is not looked into (Zeek stops there).
//! - **No connection**: IGMP (Zeek's IGMP analyzer takes it) and IPv6 packets with no next header
//!   are dropped as `NoConnection`.
//!
//! # Accounting
//! Every call of [`Decoder::decode`] counts one packet, and at every moment
//! `packets == packets_summarised + fragments_merged + fragments_held + drops.packet_drops()`:
//! - a packet that yields a summary (one, or more for tunnels) is [`Outcome::Summarised`];
//! - a fragment stored for reassembly is [`Outcome::Held`] and counted in `fragments_held`
//!   until it leaves the table: into `fragments_merged` when its datagram completes (whatever
//!   then becomes of the datagram: the completing fragment is the one summarised or dropped),
//!   or into a drop reason with its datagram (`FragmentTimeout`, `FragmentTableFull`,
//!   `FragmentInvalid`, and `FragmentIncomplete` at [`Decoder::finish`], after which
//!   `fragments_held == 0`);
//! - anything else is [`Outcome::Dropped`] with its reason.
//!
//! Inside a tunnel the packet was already summarised by its outer layer, so inner layers stay
//! out of this sum: an inner packet that cannot be decoded counts in `inner_undecodable`, and
//! inner fragments are reassembled (keyed apart from the outer layer's) but never counted as
//! held or merged; an inner fragment whose datagram is dropped counts in `inner_undecodable`.

use tapflow_proto::account::DropCounts;
use tapflow_proto::account::EvidenceCounters;
#[cfg(doc)]
use tapflow_proto::{summary::flag, FiveTuple, FlowKey};
use tapflow_proto::{DropReason, PacketSummary};

use crate::evidence::{EvidenceConfig, EvidenceTable};

mod checksum;
mod frag;
mod ip;
mod link;
#[cfg(test)]
mod testutil;
mod transport;
mod tunnel;
mod walk;

use ip::len32;
use walk::Layer;

/// How deep tunnels are followed: the captured packet is depth 0, its inner packet depth 1, ...
pub const MAX_TUNNEL_DEPTH: u8 = 4;

/// Decoder settings. Every default is Zeek's where Zeek has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeConfig {
    /// Verify IPv4 header and transport checksums. Default true; `--ignore-checksums` (Zeek's
    /// `-C`) sets it false.
    pub verify_checksums: bool,
    /// Put the outermost VLAN id into [`FlowKey::vlan`]. Default false.
    pub vlan_in_key: bool,
    /// Look inside VXLAN, Geneve, GTP-U, GRE, IP-in-IP, Teredo and AYIYA. Default true.
    pub decode_tunnels: bool,
    /// Datagrams in reassembly at once. Default 4096.
    pub frag_max_datagrams: usize,
    /// Bytes buffered for reassembly. Default 64 MiB.
    pub frag_max_bytes: usize,
    /// A datagram not complete this long after its first fragment (packet time) is dropped.
    /// Default 30 s.
    pub frag_timeout_ns: u64,
    /// Payload evidence of young flows ([`crate::evidence`]). Off here by default; the
    /// collector's command line turns it on (`--payload-bytes`, `--payload-flows`).
    pub evidence: EvidenceConfig,
}

impl Default for DecodeConfig {
    fn default() -> DecodeConfig {
        DecodeConfig {
            verify_checksums: true,
            vlan_in_key: false,
            decode_tunnels: true,
            frag_max_datagrams: 4096,
            frag_max_bytes: 64 << 20,
            frag_timeout_ns: 30_000_000_000,
            evidence: EvidenceConfig::OFF,
        }
    }
}

/// The link types tapflow decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Raw IP, version by the first nibble.
    Raw,
    Ipv4,
    Ipv6,
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: address family in network byte order.
    Loop,
    LinuxSll,
    LinuxSll2,
    Nflog,
    /// PPP (RFC 1661), with or without the HDLC-like `ff 03` address and control bytes.
    Ppp,
    /// PPP in HDLC framing (`ff 03`), or Cisco HDLC (`0f`/`8f 00` and an ethertype), as BSD
    /// captures serial links.
    PppSerial,
    /// IEEE 802.11 frames as captured in monitor mode (no radio header).
    Ieee80211,
    /// A radiotap header, then an IEEE 802.11 frame.
    Radiotap,
}

impl LinkType {
    /// Every link type tapflow decodes.
    pub const ALL: [LinkType; 13] = [
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::Null,
        LinkType::Loop,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Nflog,
        LinkType::Ppp,
        LinkType::PppSerial,
        LinkType::Ieee80211,
        LinkType::Radiotap,
    ];

    /// The link type of a pcap `DLT_`/`LINKTYPE_` value, if tapflow decodes it.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        Some(match dlt {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            50 => LinkType::PppSerial,
            105 => LinkType::Ieee80211,
            127 => LinkType::Radiotap,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            239 => LinkType::Nflog,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// libpcap's name for it.
    pub fn name(self) -> &'static str {
        match self {
            LinkType::Ethernet => "EN10MB",
            LinkType::Raw => "RAW",
            LinkType::Ipv4 => "IPV4",
            LinkType::Ipv6 => "IPV6",
            LinkType::Null => "NULL",
            LinkType::Loop => "LOOP",
            LinkType::LinuxSll => "LINUX_SLL",
            LinkType::LinuxSll2 => "LINUX_SLL2",
            LinkType::Nflog => "NFLOG",
            LinkType::Ppp => "PPP",
            LinkType::PppSerial => "PPP_SERIAL",
            LinkType::Ieee80211 => "IEEE802_11",
            LinkType::Radiotap => "IEEE802_11_RADIO",
        }
    }
}

/// What became of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// At least one summary was appended.
    Summarised,
    /// A fragment, stored until its datagram is complete.
    Held,
    Dropped(DropReason),
}

/// The decoder's accounting (see the module docs for how it reconciles).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeCounters {
    /// Packets given to [`Decoder::decode`] (and [`Decoder::unsupported_link`]).
    pub packets: u64,
    /// Packets that yielded at least one summary.
    pub packets_summarised: u64,
    /// Fragments absorbed into a completed datagram (all but the completing one).
    pub fragments_merged: u64,
    /// Fragments waiting in the reassembly table now.
    pub fragments_held: u64,
    /// Summaries appended (a tunnelled packet gives two or more).
    pub summaries: u64,
    /// Tunnel payloads that could not be decoded (the outer summary was kept).
    pub inner_undecodable: u64,
    /// `inner_undecodable` by reason (a tunnel header that is malformed is `MalformedTunnel`,
    /// one cut by snaplen `Truncated`). Not in the packet accounting.
    pub inner_drops: DropCounts,
    pub drops: DropCounts,
}

/// The decoder: configuration, counters and the reassembly table.
#[derive(Debug)]
pub struct Decoder {
    cfg: DecodeConfig,
    counters: DecodeCounters,
    frags: frag::Table,
    evidence: EvidenceTable,
}

impl Decoder {
    pub fn new(cfg: DecodeConfig) -> Decoder {
        let limits = frag::Limits {
            max_datagrams: cfg.frag_max_datagrams,
            max_bytes: cfg.frag_max_bytes,
            timeout_ns: cfg.frag_timeout_ns,
        };
        Decoder {
            cfg,
            counters: DecodeCounters::default(),
            frags: frag::Table::new(limits),
            evidence: EvidenceTable::new(cfg.evidence),
        }
    }

    /// One captured frame: `frame` is the captured bytes, `wire_len` the original length (pcap
    /// header `len`). Appends 0, 1 or more summaries to `out` (does not clear it) and counts
    /// the packet exactly once.
    pub fn decode(
        &mut self,
        link: LinkType,
        ts_ns: u64,
        frame: &[u8],
        wire_len: u32,
        out: &mut Vec<PacketSummary>,
    ) -> Outcome {
        self.counters.packets = self.counters.packets.saturating_add(1);
        self.frags.expire(ts_ns, &mut self.counters);
        let start = out.len();
        let outcome = match link::parse(link, frame) {
            Ok(l3) => {
                let layer = Layer {
                    depth: 0,
                    parent: None,
                    vlan: self.key_vlan(l3.vlan),
                    missing: wire_len.saturating_sub(len32(frame.len())),
                };
                self.ip_packet(&layer, ts_ns, l3.ip, out)
            }
            Err(reason) => Outcome::Dropped(reason),
        };
        let c = &mut self.counters;
        match outcome {
            Outcome::Summarised => c.packets_summarised = c.packets_summarised.saturating_add(1),
            Outcome::Held => c.fragments_held = c.fragments_held.saturating_add(1),
            Outcome::Dropped(reason) => c.drops.add(reason, 1),
        }
        let pushed = out.len().saturating_sub(start);
        c.summaries = c.summaries.saturating_add(pushed as u64);
        outcome
    }

    /// Counts a packet of a link type tapflow does not decode ([`LinkType::from_dlt`] gave
    /// `None`), so the accounting still sees every packet.
    pub fn unsupported_link(&mut self) -> Outcome {
        self.counters.packets = self.counters.packets.saturating_add(1);
        self.counters.drops.add(DropReason::UnsupportedLink, 1);
        Outcome::Dropped(DropReason::UnsupportedLink)
    }

    /// End of input: every fragment still held is dropped as `FragmentIncomplete`.
    pub fn finish(&mut self) {
        self.frags.finish(&mut self.counters);
    }

    pub fn counters(&self) -> &DecodeCounters {
        &self.counters
    }

    /// The payload evidence shipped and not shipped.
    pub fn evidence(&self) -> &EvidenceCounters {
        self.evidence.counters()
    }

    /// Datagrams waiting in the reassembly table.
    pub fn datagrams_held(&self) -> usize {
        self.frags.len()
    }
}

/// A big-endian u16 at `at`, if the bytes are there.
#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    b.get(at..end)?.try_into().ok().map(u16::from_be_bytes)
}

#[cfg(test)]
mod tests;
