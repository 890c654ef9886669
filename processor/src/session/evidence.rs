//! A connection's payload evidence (issue 17): the pieces the collectors shipped, put back in
//! stream order per direction, in the flow's cold `Extra` box (allocated only when a flow
//! gets payload), bounded by `SessionConfig::payload_bytes` per direction; classified by
//! [`tapflow_classify`] into Zeek's `service` and the server's name when the record is made,
//! and into announced data connections ([`Expected`]) as soon as they are parsed.

use tapflow_classify::{
    announcements_with, classify_with, ftp_announcement, Evidence, Settings, Side, Verdict,
    FTP_LINE_MAX, UDP_WHOLE,
};
use tapflow_proto::conn::clean_server_name;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::{flag, merge_range, tunnel_kind, Payload};
use tapflow_proto::upstream::Expected;
use tapflow_proto::{Addr, FlowKey, PacketSummary};

/// UDP datagrams kept per direction at most.
const MAX_DATAGRAMS: usize = 8;
/// Gaps a TCP direction may have (pieces past them wait for the gap to fill).
const MAX_RANGES: usize = 8;
/// FTP announcement lines kept per direction past the bound (see `EvDir::late`).
const MAX_LATE: usize = 32;
/// Announced connections sent per connection at most.
const MAX_EXPECTS: usize = 64;

/// One direction's evidence (physical: 0 = the key's `lo`).
#[derive(Clone, Debug, Default)]
pub(super) struct EvDir {
    /// TCP: stream bytes by offset (unfilled bytes are zero), up to the highest filled one.
    buf: Vec<u8>,
    /// TCP: filled `[start, end)` ranges, sorted, disjoint.
    have: Vec<(u32, u32)>,
    /// UDP: the datagrams, in order.
    dgrams: Vec<Vec<u8>>,
    /// The collector cut this direction's evidence, or this processor's bound did.
    cut: bool,
    /// TCP: lines past a gap, as the collector ships FTP announcements past its budget (its
    /// `ftp_late_line`), read for `ftp-data` once the connection is `ftp`.
    late: Vec<Vec<u8>>,
}

/// A connection's evidence and what was already sent of it.
#[derive(Clone, Debug, Default)]
pub(super) struct EvState {
    pub dirs: [EvDir; 2],
    /// [`tunnel_kind`] of a tunnel's outer connection.
    pub tunnel_kind: u8,
    /// Announced connections already sent (address, port, announced by the responder): the
    /// classifier lists them by direction, not by time, so a later one can come first.
    sent: Vec<(Option<std::net::IpAddr>, u16, bool)>,
}

impl EvDir {
    /// Adds a shipped piece, first bytes winning, within `cap` bytes.
    fn add(&mut self, p: &Payload, udp: bool, cap: u32) {
        if udp {
            let used: usize = self.dgrams.iter().map(Vec::len).sum();
            // Whole up to UDP_WHOLE when it starts within the bound, as the collector ships it.
            let room = match (cap as usize).saturating_sub(used) {
                0 => 0,
                room => room.max(UDP_WHOLE as usize),
            };
            if self.dgrams.len() >= MAX_DATAGRAMS || room == 0 {
                self.cut = true;
                return;
            }
            self.cut |= p.bytes.len() > room;
            self.dgrams
                .push(p.bytes[..p.bytes.len().min(room)].to_vec());
            return;
        }
        let start = p.offset;
        // A line past a gap (the collector's budget): perhaps an FTP announcement.
        let line = p.bytes.len() <= FTP_LINE_MAX && p.bytes.ends_with(b"\n");
        let past = start > self.stream().len() as u32;
        if past && line && self.late.len() < MAX_LATE && !self.late.contains(&p.bytes) {
            self.late.push(p.bytes.clone());
        }
        let end = start.saturating_add(p.bytes.len() as u32).min(cap);
        if end < start.saturating_add(p.bytes.len() as u32) {
            self.cut = true;
        }
        let mut at = start;
        while at < end {
            // The next filled range at or after `at`.
            let next = self.have.iter().find(|&&(_, b)| b > at).copied();
            let to = match next {
                Some((a, b)) if a <= at => {
                    at = b;
                    continue;
                }
                Some((a, _)) => a.min(end),
                None => end,
            };
            if !self.fill(
                at,
                to,
                &p.bytes[(at - start) as usize..(to - start) as usize],
            ) {
                self.cut = true;
                return;
            }
            at = to;
        }
    }

    /// Copies `bytes` to `[from, to)` and records the range; false past [`MAX_RANGES`].
    fn fill(&mut self, from: u32, to: u32, bytes: &[u8]) -> bool {
        let Some(merged) = merge_range(&self.have, from, to, MAX_RANGES) else {
            return false;
        };
        self.have = merged;
        if self.buf.len() < to as usize {
            self.buf.resize(to as usize, 0);
        }
        self.buf[from as usize..to as usize].copy_from_slice(bytes);
        true
    }

    /// The classifier's segments: the datagrams, or the stream prefix (none when empty).
    fn parts(&self, udp: bool) -> Vec<&[u8]> {
        if udp {
            return self.dgrams.iter().map(Vec::as_slice).collect();
        }
        let s = self.stream();
        if s.is_empty() {
            Vec::new()
        } else {
            vec![s]
        }
    }

    /// The stream's first bytes without a gap.
    pub fn stream(&self) -> &[u8] {
        match self.have.first() {
            Some(&(0, end)) => &self.buf[..end as usize],
            _ => &[],
        }
    }
}

impl EvState {
    /// The classifier's view, by Zeek's roles (`orig` = physical endpoint `o`; `lens`: the
    /// TCP streams' whole lengths by role, when known), through `classify` ([`classify_with`],
    /// or [`announcements_with`] where only announcements are wanted).
    fn verdict(
        &self,
        (proto, ports, o): (u8, [u16; 2], usize),
        lens: [Option<u64>; 2],
        settings: &Settings,
        classify: fn(&Evidence, &Settings) -> Verdict,
    ) -> Verdict {
        let udp = proto == ip_proto::UDP;
        let (orig, resp) = (&self.dirs[o], &self.dirs[1 - o]);
        let (op, rp) = (orig.parts(udp), resp.parts(udp));
        let ev = Evidence {
            proto,
            orig_port: ports[o],
            resp_port: ports[1 - o],
            orig: Side {
                segments: &op,
                truncated: orig.cut || orig.have.len() > 1,
                len: lens[0],
            },
            resp: Side {
                segments: &rp,
                truncated: resp.cut || resp.have.len() > 1,
                len: lens[1],
            },
        };
        classify(&ev, settings)
    }
}

/// What the evidence says for a record: `service`, `server_name`, `service_incomplete`.
#[derive(Default)]
pub(super) struct Labels {
    pub service: Option<String>,
    pub server_name: Option<String>,
    pub incomplete: bool,
}

impl EvState {
    /// A summary that carries evidence, a tunnel kind or a cut, from physical endpoint `a`.
    pub fn take(&mut self, s: &PacketSummary, a: usize, cap: u32) {
        let udp = s.key.proto == ip_proto::UDP;
        if s.tunnel_kind != 0 {
            self.tunnel_kind = s.tunnel_kind;
        }
        if s.flags & flag::EVIDENCE_CUT != 0 {
            self.dirs[a].cut = true;
        }
        if let Some(p) = &s.payload {
            self.dirs[a].add(p, udp, cap);
        }
    }

    /// The labels of the connection's record (`o`: the originator's physical index; `sizes`:
    /// the record's payload bytes by role; `settings`: the services disabled, which are
    /// never listed, tunnels included).
    pub fn labels(
        &self,
        proto: u8,
        ports: [u16; 2],
        o: usize,
        sizes: [u64; 2],
        settings: &Settings,
    ) -> Labels {
        let tcp = proto == ip_proto::TCP;
        let lens = sizes.map(|n| tcp.then_some(n));
        let v = self.verdict((proto, ports, o), lens, settings, classify_with);
        let tunnel = tunnel_kind::service(self.tunnel_kind).filter(|t| settings.enabled(t));
        let mut names: Vec<&str> = tunnel.into_iter().collect();
        for s in &v.services {
            if !names.contains(s) {
                names.push(s);
            }
        }
        Labels {
            service: (!names.is_empty()).then(|| names.join(",")),
            server_name: v.server_name.as_deref().and_then(clean_server_name),
            incomplete: self.dirs.iter().any(|d| d.cut),
        }
    }

    /// Announced data connections not sent yet (TCP only), from the connection `c`; none of
    /// a disabled service, nor from a disabled announcer (`settings`).
    pub fn new_expects(&mut self, c: &Conn, settings: &Settings, out: &mut Vec<Expected>) {
        if c.proto != ip_proto::TCP || self.sent.len() >= MAX_EXPECTS {
            return;
        }
        // Every payload packet: the detectors that can announce alone.
        let v = self.verdict(
            (c.proto, c.ports, c.orig),
            [None; 2],
            settings,
            announcements_with,
        );
        let o = c.orig;
        let mut expects = v.expects;
        if v.services.contains(&"ftp") {
            let late = |a: usize, by_resp: bool| {
                let lines = self.dirs[a].late.iter();
                lines.filter_map(move |l| ftp_announcement(l, by_resp))
            };
            let late = late(o, false).chain(late(1 - o, true));
            expects.extend(late.filter(|e| settings.enabled(e.service)));
        }
        let mut uid = None;
        for e in &expects {
            let id = (e.addr, e.port, e.by_resp);
            if self.sent.len() >= MAX_EXPECTS || self.sent.contains(&id) {
                continue;
            }
            self.sent.push(id);
            // Made once, and only when something new was announced.
            let uid = uid.get_or_insert_with(|| tapflow_proto::conn::uid(&c.key, c.first_ts));
            out.push(Expected {
                uid: uid.to_string(),
                ts_ns: c.ts_ns,
                orig_h: c.addrs[o],
                resp_h: c.addrs[1 - o],
                addr: e.addr.map(Addr::from),
                port: e.port,
                by_resp: e.by_resp,
                service: e.service.to_owned(),
            });
        }
    }

    /// The originator's and the responder's stream prefixes.
    pub fn streams(&self, o: usize) -> [Vec<u8>; 2] {
        [
            self.dirs[o].stream().to_vec(),
            self.dirs[1 - o].stream().to_vec(),
        ]
    }
}

/// What [`EvState::new_expects`] needs of a connection (physical order: 0 = the key's `lo`).
pub(super) struct Conn {
    pub proto: u8,
    pub addrs: [Addr; 2],
    pub ports: [u16; 2],
    /// The originator's physical index.
    pub orig: usize,
    /// For the uid, made only when there is something to send.
    pub key: FlowKey,
    pub first_ts: u64,
    /// The packet that completed the announcements.
    pub ts_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{FlowTable, SessionConfig};
    use tapflow_proto::FiveTuple;

    fn udp(sport: u16, dport: u16, ts: u64) -> PacketSummary {
        let t = FiveTuple {
            proto: ip_proto::UDP,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            sport,
            dport,
        };
        let mut s = PacketSummary {
            ts_ns: ts,
            ip_len: 100,
            payload_len: 72,
            ..PacketSummary::default()
        };
        s.set_tuple(&t, 0);
        s
    }

    /// A VXLAN outer connection is `vxlan`; a cut marks `service_incomplete`; a connection
    /// without evidence has neither (and no `Extra`).
    #[test]
    fn records_carry_the_tunnel_service_and_the_cut() {
        let mut t = FlowTable::new(SessionConfig::default());
        let mut out = Vec::new();
        let mut outer = udp(50_000, 4789, 1_000);
        outer.flags |= flag::TUNNEL_OUTER;
        outer.tunnel_kind = tunnel_kind::VXLAN;
        t.on_summary(&outer, &mut out);
        let mut cut = udp(50_001, 53, 2_000);
        cut.flags |= flag::EVIDENCE_CUT;
        cut.payload = Some(Box::new(piece(0, b"not dns")));
        t.on_summary(&cut, &mut out);
        t.on_summary(&udp(50_002, 9999, 3_000), &mut out);
        t.flush(&mut out);
        out.sort_by_key(|r| r.orig_p);
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.service.as_deref(), r.service_incomplete))
            .collect();
        assert_eq!(got, [(Some("vxlan"), false), (None, true), (None, false)]);
        assert!(out.iter().all(|r| r.validate().is_ok()));
    }

    /// The processor's settings reach the labels: a disabled tunnel and a disabled DNS are
    /// not listed, and a lower `dns_max_queries` refuses a message the default accepts.
    #[test]
    fn disabled_services_and_the_dns_limit_reach_the_records() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 4, 0, 0, 0, 0, 0, 0];
        for c in b"abcd" {
            q.extend_from_slice(&[1, *c, 0, 0, 1, 0, 1]);
        }
        let run = |settings: Settings| {
            let cfg = SessionConfig {
                classify: settings,
                ..SessionConfig::default()
            };
            let mut t = FlowTable::new(cfg);
            let mut out = Vec::new();
            let mut outer = udp(50_000, 4789, 1_000);
            outer.flags |= flag::TUNNEL_OUTER;
            outer.tunnel_kind = tunnel_kind::VXLAN;
            t.on_summary(&outer, &mut out);
            let mut dns = udp(50_001, 53, 2_000);
            dns.payload = Some(Box::new(piece(0, &q)));
            t.on_summary(&dns, &mut out);
            t.flush(&mut out);
            out.sort_by_key(|r| r.orig_p);
            out.iter().map(|r| r.service.clone()).collect::<Vec<_>>()
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(run(Settings::default()), [some("vxlan"), some("dns")]);
        let off = Settings {
            disabled: vec!["vxlan", "dns"],
            ..Settings::default()
        };
        assert_eq!(run(off), [None, None]);
        let three = Settings {
            dns_max_queries: 3,
            ..Settings::default()
        };
        assert_eq!(run(three), [some("vxlan"), None]);
    }

    fn piece(offset: u32, bytes: &[u8]) -> Payload {
        Payload {
            offset,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn pieces_are_put_back_in_order_first_bytes_winning_within_the_cap() {
        let mut d = EvDir::default();
        d.add(&piece(5, b"fghij"), false, 12);
        assert_eq!(d.stream(), b"");
        d.add(&piece(0, b"abcde"), false, 12);
        assert_eq!(d.stream(), b"abcdefghij");
        // A retransmission with other bytes does not overwrite.
        d.add(&piece(3, b"XXXXXX"), false, 12);
        assert_eq!(d.stream(), b"abcdefghij");
        assert!(!d.cut);
        d.add(&piece(10, b"klmnop"), false, 12);
        assert_eq!(d.stream(), b"abcdefghijkl");
        assert!(d.cut);
        let mut u = EvDir::default();
        for i in 0..10 {
            u.add(&piece(i, b"dgram"), true, 1024);
        }
        assert_eq!(u.dgrams.len(), MAX_DATAGRAMS);
        assert!(u.cut);
    }

    /// The classifier lists announcements by direction, not by time: one that comes later in
    /// time but earlier in the list (a client's PORT after a server's 227) is still sent, once.
    #[test]
    fn every_announcement_is_sent_once_whatever_its_place_in_the_list() {
        let (client, server) = (Addr::from_v4([10, 0, 0, 1]), Addr::from_v4([10, 0, 0, 2]));
        let t = FiveTuple {
            proto: ip_proto::TCP,
            src: client,
            dst: server,
            sport: 40_000,
            dport: 21,
        };
        let key = t.key(0).0;
        let orig = usize::from(key.lo != client);
        let conn = |ts_ns| Conn {
            proto: ip_proto::TCP,
            addrs: [key.lo, key.hi],
            ports: [key.lo_port, key.hi_port],
            orig,
            key,
            first_ts: 1,
            ts_ns,
        };
        let mut ev = EvState::default();
        let c2s = b"USER a\r\nPASS b\r\nPASV\r\n";
        let s2c = b"220 hi\r\n331 ok\r\n230 ok\r\n227 Entering Passive Mode (10,0,0,2,19,137)\r\n";
        ev.dirs[orig].add(&piece(0, c2s), false, 4096);
        ev.dirs[1 - orig].add(&piece(0, s2c), false, 4096);
        let mut out = Vec::new();
        ev.new_expects(&conn(10), &Settings::default(), &mut out);
        assert_eq!(out.iter().map(|e| e.port).collect::<Vec<_>>(), [5001]);
        ev.dirs[orig].add(
            &piece(c2s.len() as u32, b"PORT 10,0,0,1,4,1\r\n"),
            false,
            4096,
        );
        ev.new_expects(&conn(20), &Settings::default(), &mut out);
        ev.new_expects(&conn(30), &Settings::default(), &mut out);
        let sent: Vec<_> = out.iter().map(|e| (e.port, e.ts_ns)).collect();
        assert_eq!(sent, [(5001, 10), (1025, 20)]);
        // Past the collector's budget (a gap), announcement lines still count, once each;
        // other lines past it do not.
        for (at, line) in [
            (
                3000,
                &b"227 Entering Passive Mode (10,0,0,2,221,90).\r\n"[..],
            ),
            (3100, b"150 Here comes the listing\r\n"),
            (3000, b"227 Entering Passive Mode (10,0,0,2,221,90).\r\n"),
            (5000, b"229 Extended Passive Mode (|||2121|)\r\n"),
        ] {
            ev.dirs[1 - orig].add(&piece(at, line), false, 4096);
        }
        ev.new_expects(&conn(40), &Settings::default(), &mut out);
        let late: Vec<_> = out[2..].iter().map(|e| (e.port, e.by_resp)).collect();
        assert_eq!(late, [(56666, true), (2121, true)]);
        assert_eq!(ev.dirs[1 - orig].late.len(), 3);
    }

    /// Late lines of a connection that is not FTP announce nothing.
    #[test]
    fn late_lines_count_only_on_ftp() {
        let mut ev = EvState::default();
        ev.dirs[0].add(&piece(0, b"GET / HTTP/1.1\r\n"), false, 4096);
        ev.dirs[1].add(&piece(2000, b"227 x (10,0,0,2,1,1)\r\n"), false, 4096);
        let key = FiveTuple {
            proto: ip_proto::TCP,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            sport: 40_000,
            dport: 21,
        }
        .key(0)
        .0;
        let c = Conn {
            proto: ip_proto::TCP,
            addrs: [key.lo, key.hi],
            ports: [key.lo_port, key.hi_port],
            orig: 0,
            key,
            first_ts: 1,
            ts_ns: 2,
        };
        let mut out = Vec::new();
        ev.new_expects(&c, &Settings::default(), &mut out);
        assert!(out.is_empty());
    }
}
