//! The walk through one packet's layers: IP, reassembly, transport, and tunnels down to
//! [`MAX_TUNNEL_DEPTH`], pushing one summary per layer that has a flow.

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::{DropReason, FiveTuple, FlowKey, PacketSummary};

use super::frag::{self, FragKey, Insert, Piece};
use super::ip::{self, len32, Net};
use super::tunnel::{self, Inner, Tunnel};
use super::{link, transport, Decoder, Outcome, MAX_TUNNEL_DEPTH};

/// Where in the tunnel nesting a packet is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layer {
    /// 0 for the captured packet, 1 for a tunnel's inner packet, ...
    pub(super) depth: u8,
    /// The immediate outer flow.
    pub(super) parent: Option<FlowKey>,
    /// VLAN id for the key (0 unless configured).
    pub(super) vlan: u16,
    /// Bytes the capture left out at the end of this layer (snaplen).
    pub(super) missing: u32,
}

impl Decoder {
    /// One IP packet at `layer`.
    pub(super) fn ip_packet(
        &mut self,
        layer: &Layer,
        ts: u64,
        bytes: &[u8],
        out: &mut Vec<PacketSummary>,
    ) -> Outcome {
        let p = match ip::parse(bytes, layer.missing, self.cfg.verify_checksums) {
            Ok(p) => p,
            Err(reason) => return Outcome::Dropped(reason),
        };
        match p.frag {
            None => self.transport(layer, ts, &p.net, p.proto, p.payload, p.payload_len, 0, out),
            Some(f) => self.fragment(layer, ts, &p, f, out),
        }
    }

    /// A fragment: stored, and decoded as a whole datagram when it completes one.
    #[inline(never)]
    fn fragment(
        &mut self,
        layer: &Layer,
        ts: u64,
        p: &ip::Packet<'_>,
        f: ip::Frag,
        out: &mut Vec<PacketSummary>,
    ) -> Outcome {
        let key = FragKey {
            src: p.net.src,
            dst: p.net.dst,
            id: f.id,
            proto: p.proto,
            v6: p.net.v6,
            depth: layer.depth,
            parent: layer.parent,
        };
        let piece = Piece {
            data: p.payload,
            len: p.payload_len,
            offset: f.offset,
            more: f.more,
            hdr_len: f.hdr_len,
        };
        match self
            .frags
            .insert(key, ts, piece, layer.depth == 0, &mut self.counters)
        {
            Insert::Held => Outcome::Held,
            Insert::Dropped(reason) => Outcome::Dropped(reason),
            Insert::Complete(d) => {
                let outcome = self.reassembled(layer, ts, &p.net, p.proto, &d, out);
                self.frags.recycle(d.data);
                outcome
            }
        }
    }

    /// A completed datagram, decoded from its transport header on.
    fn reassembled(
        &mut self,
        layer: &Layer,
        ts: u64,
        net: &Net,
        proto: u8,
        d: &frag::Datagram,
        out: &mut Vec<PacketSummary>,
    ) -> Outcome {
        let data = d.data.as_slice();
        // IPv6: extension headers may follow the fragment header (a second fragment header
        // would be a fragment of a fragment: malformed).
        let (proto, skip) = if net.v6 {
            match ip::ext_chain(proto, data, data.len()) {
                Ok(c) if c.frag.is_none() => (c.proto, c.len),
                Ok(_) => return Outcome::Dropped(DropReason::MalformedIp),
                Err(reason) => return Outcome::Dropped(reason),
            }
        } else {
            (proto, 0)
        };
        let net = Net {
            ip_len: d.hdr_len.saturating_add(len32(data.len())),
            truncated: d.truncated,
            ..*net
        };
        let payload = data.get(skip..).unwrap_or_default();
        let layer = Layer {
            missing: 0,
            ..*layer
        };
        self.transport(
            &layer,
            ts,
            &net,
            proto,
            payload,
            len32(payload.len()),
            flag::REASSEMBLED,
            out,
        )
    }

    /// Summarises the transport layer, then follows a tunnel if there is one.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        layer: &Layer,
        ts: u64,
        net: &Net,
        proto: u8,
        payload: &[u8],
        payload_len: u32,
        flags: u8,
        out: &mut Vec<PacketSummary>,
    ) -> Outcome {
        // The summary is built where it will stay, at the end of `out`.
        let at = out.len();
        out.push(PacketSummary {
            ts_ns: ts,
            flags: if layer.depth > 0 {
                flags | flag::TUNNEL_INNER
            } else {
                flags
            },
            tunnel_parent: layer.parent,
            ..PacketSummary::default()
        });
        let Some(s) = out.last_mut() else {
            return Outcome::Dropped(DropReason::MalformedTransport);
        };
        let verify = self.cfg.verify_checksums;
        let t = match transport::parse(net, proto, payload, payload_len, verify, s) {
            Ok(t) => t,
            Err(reason) => {
                out.truncate(at);
                return Outcome::Dropped(reason);
            }
        };
        s.set_tuple(&t.tuple, layer.vlan);
        // Zeek stops at a UDP datagram with a wrong checksum: its tunnel is not looked into.
        let bad_udp = proto == ip_proto::UDP && s.flags & flag::BAD_CHECKSUM != 0;
        if self.cfg.decode_tunnels && layer.depth < MAX_TUNNEL_DEPTH && !bad_udp {
            let (key, missing) = (s.key, if net.truncated { layer.missing } else { 0 });
            self.tunnel(layer, &t.tuple, key, missing, t.inner, ts, at, out);
        }
        // Evidence for the flow's own payload; a tunnel's outer flow is named by its tunnel
        // (also one whose inner packet was only an ARP frame: a kind without `TUNNEL_OUTER`).
        if let Some(s) = out.get_mut(at) {
            if s.flags & flag::TUNNEL_OUTER == 0 && s.tunnel_kind == 0 {
                self.evidence.observe(s, t.inner);
            }
        }
        Outcome::Summarised
    }

    /// Decodes the inner packet of a tunnel, if `tuple` is one; the outer summary is
    /// `out[at]`, flagged `TUNNEL_OUTER` when the inner packet gives a summary.
    #[allow(clippy::too_many_arguments)]
    fn tunnel(
        &mut self,
        layer: &Layer,
        tuple: &FiveTuple,
        outer: FlowKey,
        missing: u32,
        data: &[u8],
        ts: u64,
        at: usize,
        out: &mut Vec<PacketSummary>,
    ) {
        // Zeek makes no connection of an IP tunnel's packets (GRE, IP-in-IP), whatever their
        // payload: they are outer packets even when the inner one is not summarised.
        let ip_tunnel = tunnel::ip_tunnel(tuple.proto, tuple.dport);
        if ip_tunnel && tuple.proto != ip_proto::UDP {
            Self::mark_outer(out, at);
        }
        let found = tunnel::detect(tuple.proto, tuple.sport, tuple.dport, data);
        let arp = tunnel::carries_arp(&found);
        let inner = match found {
            Tunnel::No => return,
            // A header cut by snaplen is truncation; anything else wrong with it is malformed.
            Tunnel::Bad if missing > 0 => Err(DropReason::Truncated),
            Tunnel::Bad => Err(DropReason::MalformedTunnel),
            Tunnel::Skip(reason) => Err(reason),
            Tunnel::Inner(Inner::Ethernet(b)) => link::ethernet(b),
            Tunnel::Inner(Inner::EtherType(ty, b)) => link::ethertype(ty, b, None),
            Tunnel::Inner(Inner::Ip(b)) => Ok(link::L3 { ip: b, vlan: None }),
            Tunnel::Inner(Inner::Ieee80211(b)) => link::parse(super::LinkType::Ieee80211, b),
        };
        let outcome = match inner {
            Ok(l3) => {
                let child = Layer {
                    depth: layer.depth.saturating_add(1),
                    parent: Some(Self::parent(tuple, outer, ip_tunnel)),
                    vlan: self.key_vlan(l3.vlan),
                    // Zeek's IP tunnels take what was captured of the inner packet for all of
                    // it: one cut by snaplen is dropped (its `truncated_IP_len`).
                    missing: if ip_tunnel { 0 } else { missing },
                };
                self.ip_packet(&child, ts, l3.ip, out)
            }
            Err(reason) => Outcome::Dropped(reason),
        };
        match outcome {
            Outcome::Summarised => {
                Self::mark_outer(out, at);
                if let Some(s) = out.get_mut(at) {
                    s.tunnel_kind = tunnel::kind(tuple.proto, tuple.sport, tuple.dport, data);
                }
            }
            Outcome::Held => {}
            Outcome::Dropped(reason) => {
                // Zeek's ARP analyzer takes an ARP frame in a tunnel, which confirms the tunnel
                // (`vxlan` on a connection that carried only ARP); nothing else it drops does.
                if arp {
                    if let Some(s) = out.get_mut(at) {
                        s.tunnel_kind = tunnel::kind(tuple.proto, tuple.sport, tuple.dport, data);
                    }
                }
                self.counters.inner_undecodable = self.counters.inner_undecodable.saturating_add(1);
                self.counters.inner_drops.add(reason, 1);
            }
        }
    }

    fn mark_outer(out: &mut [PacketSummary], at: usize) {
        if let Some(s) = out.get_mut(at) {
            s.flags |= flag::TUNNEL_OUTER;
        }
    }

    /// The inner flows' parent: the outer flow, but for GRE in UDP, which is to Zeek a GRE
    /// tunnel between the outer addresses as over IP (however the UDP ports vary).
    fn parent(tuple: &FiveTuple, outer: FlowKey, ip_tunnel: bool) -> FlowKey {
        if ip_tunnel && tuple.proto == ip_proto::UDP {
            let gre = FiveTuple {
                proto: ip_proto::GRE,
                sport: 0,
                dport: 0,
                ..*tuple
            };
            gre.key(outer.vlan).0
        } else {
            outer
        }
    }

    pub(super) fn key_vlan(&self, vlan: Option<u16>) -> u16 {
        if self.cfg.vlan_in_key {
            vlan.unwrap_or(0)
        } else {
            0
        }
    }
}
