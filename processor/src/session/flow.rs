//! One tracked connection: its fixed-size state, how a packet updates it (UDP, ICMP and other
//! protocols here, TCP in `tcp`), when it ends, and the record it becomes.

use tapflow_classify::Settings;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::{flag, tcp as tf};
use tapflow_proto::upstream::Expected;
use tapflow_proto::{Addr, FlowKey, PacketSummary};

use super::endpoint::{self, TcpEp};
use super::evidence::{Conn, Labels};
use super::history::{bit, cased, scaled, Extra, History};
use super::{ConnRecord, ConnState, SessionConfig, SECOND, ZEEK_DNS_PORTS_UDP};

/// [`Flow::bits`].
pub(super) mod bits {
    /// The originator is the key's `lo` endpoint.
    pub const ORIG_IS_LO: u16 = 1 << 0;
    /// `pending_at` is Zeek's attempt timer (it only fires while the attempt is unanswered);
    /// otherwise it is a delete timer.
    pub const PENDING_ATTEMPT: u16 = 1 << 1;
    /// Zeek's `is_partial` (TCP).
    pub const PARTIAL: u16 = 1 << 2;
    /// Zeek's `first_packet_seen` bits (TCP).
    pub const SEEN_ORIG: u16 = 1 << 3;
    pub const SEEN_RESP: u16 = 1 << 4;
    /// A close waits for data still pending in the reassembler (TCP).
    pub const CLOSE_DEFERRED: u16 = 1 << 5;
    /// History letters were dropped past the limit.
    pub const HIST_TRUNCATED: u16 = 1 << 6;
    /// The slab slot is free.
    pub const FREE: u16 = 1 << 7;
    /// Continues a connection another processor closed at a processor-set switch.
    pub const SPLIT_CONTINUED: u16 = 1 << 8;
    /// Closed at a processor-set switch; goes on at another processor.
    pub const SPLIT_CLOSED: u16 = 1 << 9;
}

/// IPv4 limited broadcast, the only address Zeek's `IPAddr::IsBroadcast` accepts.
const BROADCAST: Addr = Addr::from_v4([255; 4]);

/// Settings plus lookup tables derived from them, shared by every flow.
pub(super) struct Ctx {
    pub cfg: SessionConfig,
    server_tcp: Box<[u64; 1024]>,
    server_udp: Box<[u64; 1024]>,
}

impl Ctx {
    pub fn new(cfg: SessionConfig) -> Ctx {
        let set = |ports: &[u16]| {
            let mut b = Box::new([0u64; 1024]);
            for &p in ports {
                b[usize::from(p >> 6)] |= 1 << (p & 63);
            }
            b
        };
        let (server_tcp, server_udp) = (
            set(&cfg.likely_server_ports_tcp),
            set(&cfg.likely_server_ports_udp),
        );
        Ctx {
            cfg,
            server_tcp,
            server_udp,
        }
    }

    /// Zeek's `IsLikelyServerPort`.
    fn likely_server(&self, proto: u8, port: u16) -> bool {
        let set = match proto {
            ip_proto::TCP => &self.server_tcp,
            ip_proto::UDP => &self.server_udp,
            _ => return false,
        };
        set[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    fn is_local(&self, a: Addr) -> Option<bool> {
        let nets = &self.cfg.local_nets;
        (!nets.is_empty()).then(|| nets.iter().any(|&(net, len)| a.in_net(net, len)))
    }
}

/// A datagram endpoint (UDP, ICMP, other protocols): Zeek's request/reply length and whether
/// any valid packet came from it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DgramEp {
    pub size: u64,
    pub active: bool,
    pub bad_checksums: u16,
}

/// Protocol state, per physical endpoint (0 = the key's `lo`, 1 = `hi`).
#[derive(Clone, Copy, Debug)]
pub(super) enum L4 {
    Tcp([TcpEp; 2]),
    Dgram([DgramEp; 2]),
}

/// One connection. Per-endpoint arrays are physical (`lo`, `hi`), so a role flip is one bit.
#[derive(Clone, Debug)]
pub(super) struct Flow {
    pub key: FlowKey,
    pub first_ts: u64,
    /// Zeek's `last_time`: the last packet that counted (for TCP, not past a full close).
    pub last_ts: u64,
    /// A pending TCP timer (attempt or delete), 0 = none.
    pub pending_at: u64,
    pub ip_bytes: [u64; 2],
    pub pkts: [u64; 2],
    pub extra: Option<Box<Extra>>,
    /// Latency and jitter, from the second counted packet on (see [`super::timing`]).
    pub timing: Option<Box<super::timing::TimingState>>,
    /// The collector the first packet came from (until `timing` exists).
    pub tap0: u16,
    /// The deadline (whole seconds, rounded up) of this flow's live heap entry; for a free
    /// slot, the next free slot.
    pub timer_at: u32,
    /// Zeek's `hist_seen` bits, packed: see [`super::history::bit`].
    pub hist_seen: u16,
    pub hist: History,
    pub bits: u16,
    /// TCP flags seen from each physical endpoint, OR-ed (for stealth-scan detection).
    pub tcp_flags: [u8; 2],
    pub l4: L4,
}

impl Flow {
    /// A connection whose first packet is `s`, oriented as Zeek would (`WantConnection`).
    pub fn new(s: &PacketSummary, ctx: &Ctx) -> Flow {
        let l4 = if s.key.proto == ip_proto::TCP {
            L4::Tcp([TcpEp::new(); 2])
        } else {
            L4::Dgram([DgramEp::default(); 2])
        };
        let mut f = Flow {
            key: s.key,
            first_ts: s.ts_ns,
            last_ts: s.ts_ns,
            pending_at: 0,
            ip_bytes: [0; 2],
            pkts: [0; 2],
            extra: None,
            timing: None,
            tap0: 0,
            timer_at: 0,
            hist_seen: 0,
            hist: History::default(),
            bits: 0,
            tcp_flags: [0; 2],
            l4,
        };
        if physical(s) == 0 {
            f.bits |= bits::ORIG_IS_LO;
        }
        let t = s.tuple();
        let (src, dst) = (
            ctx.likely_server(t.proto, t.sport),
            ctx.likely_server(t.proto, t.dport),
        );
        let flip = match t.proto {
            ip_proto::TCP => {
                let (syn, ack) = (s.tcp_flags & tf::SYN != 0, s.tcp_flags & tf::ACK != 0);
                // Started mid-stream or with a SYN-ACK: guess the responder by its port; with
                // both ports plausible, flip only a non-SYN towards the higher port.
                (!syn || ack) && src && (!dst || (!syn && t.sport < t.dport))
            }
            ip_proto::UDP => src && !dst,
            _ => false,
        };
        // Zeek never flips a connection towards the IPv4 broadcast address (`NewConn`): a
        // DHCP server's broadcast reply from port 67 keeps the server as originator.
        if flip && t.dst != BROADCAST {
            f.bits ^= bits::ORIG_IS_LO;
            f.add_letter(b'^');
        }
        f
    }

    /// Applies one packet of this connection.
    pub fn apply(&mut self, s: &PacketSummary, ctx: &Ctx) {
        self.track_tunnel(s, ctx);
        if s.payload.is_some() || s.tunnel_kind != 0 || s.flags & flag::EVIDENCE_CUT != 0 {
            self.take_evidence(s, ctx.cfg.payload_bytes);
        }
        let a = physical(s);
        self.tcp_flags[a] |= s.tcp_flags;
        match self.key.proto {
            ip_proto::TCP => self.tcp_packet(s, a, ctx),
            ip_proto::UDP => self.datagram(s, a, true),
            _ => self.datagram(s, a, false),
        }
    }

    /// UDP (`udp`), ICMP and other protocols: a bad checksum is recorded (UDP: `C`/`c`) and the
    /// packet otherwise ignored; a valid one sets the endpoint active and adds its payload.
    /// Zeek's size analyzer does not see a packet cut short by the capture length, so such
    /// packets count in history and size but not in packets or IP bytes.
    fn datagram(&mut self, s: &PacketSummary, a: usize, udp: bool) {
        let is_orig = self.is_orig(a);
        let icmp = matches!(self.key.proto, ip_proto::ICMP | ip_proto::ICMPV6);
        let L4::Dgram(e) = &mut self.l4 else {
            return;
        };
        if s.flags & flag::BAD_CHECKSUM != 0 && (udp || icmp) {
            if udp && scaled(&mut e[a].bad_checksums) {
                self.add_letter(cased(b'C', is_orig));
            }
            return;
        }
        e[a].active = true;
        if udp || icmp {
            // Zeek has no analyzer for other IP protocols: their sizes stay 0.
            e[a].size = e[a].size.saturating_add(u64::from(s.payload_len));
        }
        self.last_ts = s.ts_ns;
        if udp {
            let (mask, code) = if is_orig {
                (bit::UDP_ORIG_DATA, b'D')
            } else {
                (bit::UDP_RESP_DATA, b'd')
            };
            self.check_history(mask, code);
        }
        if s.flags & flag::TRUNCATED == 0 || !(udp || icmp) {
            self.count(a, s.ip_len);
        }
    }

    /// A summary that carries evidence, a tunnel kind or a cut (the caller checks, so flows
    /// without any pay one branch): kept in the flow's `Extra`.
    #[inline(never)]
    fn take_evidence(&mut self, s: &PacketSummary, cap: u32) {
        let a = physical(s);
        let ev = self.extra_mut().evidence.get_or_insert_with(Box::default);
        ev.take(s, a, cap);
    }

    /// What the evidence says for the record, whose payload bytes by role are `sizes` (nothing
    /// without evidence).
    fn labels(&self, sizes: [u64; 2], settings: &Settings) -> Labels {
        match self.extra.as_ref().and_then(|x| x.evidence.as_deref()) {
            Some(ev) => {
                let (proto, ports, o) = (self.key.proto, self.ports(), self.orig_index());
                ev.labels(proto, ports, o, sizes, settings)
            }
            None => Labels::default(),
        }
    }

    /// Announced data connections the evidence holds that were not sent yet, stamped with
    /// `ts_ns`, the packet that completed them.
    pub fn new_expects(&mut self, ts_ns: u64, settings: &Settings, out: &mut Vec<Expected>) {
        if self.extra.as_ref().is_none_or(|x| x.evidence.is_none()) {
            return;
        }
        let c = Conn {
            proto: self.key.proto,
            addrs: [self.key.lo, self.key.hi],
            ports: self.ports(),
            orig: self.orig_index(),
            key: self.key,
            first_ts: self.first_ts,
            ts_ns,
        };
        if let Some(ev) = self.extra.as_mut().and_then(|x| x.evidence.as_deref_mut()) {
            ev.new_expects(&c, settings, out);
        }
    }

    /// The evidence bytes held for the originator's and the responder's stream.
    pub fn evidence_streams(&self) -> Option<[Vec<u8>; 2]> {
        let ev = self.extra.as_ref()?.evidence.as_deref()?;
        Some(ev.streams(self.orig_index()))
    }

    /// The key's ports in physical order.
    fn ports(&self) -> [u16; 2] {
        [self.key.lo_port, self.key.hi_port]
    }

    /// Outer-tunnel bookkeeping (Zeek's `CheckEncapsulation` and `tunnel_changed`).
    fn track_tunnel(&mut self, s: &PacketSummary, ctx: &Ctx) {
        let last = self.extra.as_ref().and_then(|x| x.last_parent);
        if last == s.tunnel_parent {
            return;
        }
        // The packet that makes the connection sets its encapsulation without a change;
        // after it, gaining, losing or switching a tunnel is a change, as in Zeek, and past
        // `max_tunnel_changes` the history gets an `X` and no new parent is recorded.
        let first = self.pkts == [0, 0];
        let max = ctx.cfg.max_tunnel_changes;
        let x = self.extra_mut();
        x.last_parent = s.tunnel_parent;
        let within = first || max == 0 || x.tunnel_changes < max;
        if !first && within {
            x.tunnel_changes += 1;
        }
        match s.tunnel_parent {
            Some(new) if within && !x.parents.contains(&new) => x.parents.push(new),
            _ => {}
        }
        if !within {
            self.check_history(bit::TUNNEL_X, b'X');
        }
    }

    /// When this connection ends if no packet comes: its idle timeout, or a TCP timer.
    pub fn deadline(&self, ctx: &Ctx) -> u64 {
        let cfg = &ctx.cfg;
        match &self.l4 {
            L4::Tcp(e) => self.tcp_deadline(e, ctx),
            L4::Dgram(_) => {
                let idle = match self.key.proto {
                    ip_proto::UDP => cfg.udp_inactivity_ns,
                    ip_proto::ICMP | ip_proto::ICMPV6 => cfg.icmp_inactivity_ns,
                    _ => cfg.other_inactivity_ns,
                };
                self.last_ts
                    .saturating_add(idle)
                    .min(self.dns_deadline(ctx))
            }
        }
    }

    /// Zeek's DNS analyzer, on a UDP connection whose responder port is one it is registered
    /// for, checks every `dns_session_timeout` from the first packet and removes the
    /// connection once it has been idle for a second less than that (`DNS_Analyzer::
    /// ExpireTimer`). The checks fall at `first_ts + k * timeout` (where Zeek's fall when
    /// traffic is dense): the first one at least `timeout - 1 s` after the last packet.
    /// `u64::MAX` for other flows or with the timeout off.
    fn dns_deadline(&self, ctx: &Ctx) -> u64 {
        let step = ctx.cfg.dns_session_timeout_ns;
        let resp_port = if self.orig_index() == 0 {
            self.key.hi_port
        } else {
            self.key.lo_port
        };
        if step == 0 || self.key.proto != ip_proto::UDP || !ZEEK_DNS_PORTS_UDP.contains(&resp_port)
        {
            return u64::MAX;
        }
        let idle_needed = self
            .last_ts
            .saturating_sub(self.first_ts)
            .saturating_add(step.saturating_sub(SECOND));
        let checks = idle_needed.div_ceil(step).max(1);
        self.first_ts.saturating_add(checks.saturating_mul(step))
    }

    /// Whether a packet at `t` is the first at or past an interim boundary
    /// (`first_ts + k * active_timeout`).
    pub fn interim_due(&self, t: u64, ctx: &Ctx) -> bool {
        let step = ctx.cfg.active_timeout_ns;
        step > 0
            && t.saturating_sub(self.first_ts) / step
                > self.last_ts.saturating_sub(self.first_ts) / step
    }

    /// Payload sizes (originator, responder) and `conn_state`.
    fn sizes_and_state(&self, o: usize, r: usize, history: &str) -> ([u64; 2], ConnState) {
        match &self.l4 {
            L4::Tcp(e) => {
                let sizes = [e[o].size(e[r].state), e[r].size(e[o].state)];
                (
                    sizes,
                    endpoint::conn_state(e[o].state, e[r].state, sizes, history),
                )
            }
            L4::Dgram(e) => {
                let state = if self.key.proto != ip_proto::UDP {
                    ConnState::OTH
                } else {
                    match (e[o].active, e[r].active) {
                        (true, true) => ConnState::SF,
                        (true, false) => ConnState::S0,
                        (false, true) => ConnState::SHR,
                        (false, false) => ConnState::OTH,
                    }
                };
                ([e[o].size, e[r].size], state)
            }
        }
    }

    /// The time of the last packet as the record tells it: `ts` plus the duration (never
    /// before the first packet's time).
    pub fn end_ts(&self) -> u64 {
        self.first_ts.max(self.last_ts)
    }

    /// The conn.log record of this connection as it stands.
    pub fn record(&self, ctx: &Ctx, interim: bool, evicted: bool) -> ConnRecord {
        let (o, r) = (self.orig_index(), 1 - self.orig_index());
        let ends = [
            (self.key.lo, self.key.lo_port),
            (self.key.hi, self.key.hi_port),
        ];
        let ((orig_h, orig_p), (resp_h, resp_p)) = (ends[o], ends[r]);
        let history = self.hist.render(self.extra.as_deref());
        let (sizes, conn_state) = self.sizes_and_state(o, r, &history);
        let duration = self.last_ts.saturating_sub(self.first_ts);
        let duration_ns = (duration > 0).then_some(duration);
        let mut tunnel_parents = self
            .extra
            .as_ref()
            .map(|x| x.parents.clone())
            .unwrap_or_default();
        tunnel_parents.sort_unstable();
        let labels = self.labels(sizes, &ctx.cfg.classify);
        ConnRecord {
            ts_ns: self.first_ts,
            uid: tapflow_proto::conn::uid(&self.key, self.first_ts),
            orig_h,
            orig_p,
            resp_h,
            resp_p,
            proto: self.key.proto,
            duration_ns,
            orig_bytes: duration_ns.map(|_| sizes[0]),
            resp_bytes: duration_ns.map(|_| sizes[1]),
            conn_state,
            local_orig: ctx.is_local(orig_h),
            local_resp: ctx.is_local(resp_h),
            missed_bytes: self.extra.as_ref().map_or(0, |x| x.missed_bytes),
            history,
            orig_pkts: self.pkts[o],
            orig_ip_bytes: self.ip_bytes[o],
            resp_pkts: self.pkts[r],
            resp_ip_bytes: self.ip_bytes[r],
            tunnel_parents,
            community_id: tapflow_proto::conn::community_id(
                self.key.proto,
                orig_h,
                orig_p,
                resp_h,
                resp_p,
            ),
            interim,
            evicted,
            orig_tcp_flags: self.tcp_flags[o],
            resp_tcp_flags: self.tcp_flags[r],
            timing: self.timing_record(),
            split: u8::from(self.has_bit(bits::SPLIT_CONTINUED))
                * tapflow_proto::conn::split::CONTINUED
                + u8::from(self.has_bit(bits::SPLIT_CLOSED)) * tapflow_proto::conn::split::CLOSED,
            key: self.key,
            service: labels.service,
            server_name: labels.server_name,
            service_incomplete: labels.incomplete,
        }
    }

    pub fn is_orig(&self, a: usize) -> bool {
        (a == 0) == self.has_bit(bits::ORIG_IS_LO)
    }

    pub fn orig_index(&self) -> usize {
        if self.has_bit(bits::ORIG_IS_LO) {
            0
        } else {
            1
        }
    }

    pub fn has_bit(&self, b: u16) -> bool {
        self.bits & b != 0
    }

    pub fn set_bit(&mut self, b: u16, on: bool) {
        if on {
            self.bits |= b;
        } else {
            self.bits &= !b;
        }
    }

    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The ConnSize analyzer: one packet and its IP length for physical endpoint `a`.
    pub fn count(&mut self, a: usize, ip_len: u32) {
        self.pkts[a] += 1;
        self.ip_bytes[a] += u64::from(ip_len);
    }

    pub fn add_letter(&mut self, c: u8) {
        if !self.hist.push(c, &mut self.extra) {
            self.bits |= bits::HIST_TRUNCATED;
        }
    }

    /// Zeek's `Connection::CheckHistory`: adds `code` the first time `mask` is seen; returns
    /// whether it had been seen before.
    pub fn check_history(&mut self, mask: u16, code: u8) -> bool {
        if self.hist_seen & mask == 0 {
            self.hist_seen |= mask;
            self.add_letter(code);
            false
        } else {
            true
        }
    }
}

/// The physical endpoint (0 = `lo`, 1 = `hi`) that sent `s`.
pub(super) fn physical(s: &PacketSummary) -> usize {
    usize::from(s.flags & flag::REVERSE != 0)
}
