//! Reflection recognised by its shape, whatever the service (sans-IO): many distinct sources
//! sending UDP to one victim from one or a few source ports, in flows the victim never spoke
//! in, each source sending few packets.
//!
//! Zeek orients a datagram from a port on its likely-server list towards its client, and that
//! orientation stays in the conn log; here, who asked is who sent a flow's first packet (the
//! history's first letter says whose it was). A flow whose first sender heard nothing back is
//! one-way; one-way flows are grouped by (receiver, the sender's port). The receiver did ask a
//! service port of its own accord when it sent a one-way flow to that port in the window (a
//! multicast or broadcast discovery, answered by unicast from the port it asked): answers from
//! that port are then not unsolicited.

use std::collections::BTreeMap;

use tapflow_proto::key::ip_proto;
use tapflow_proto::Addr;

use super::distinct::{Distinct, HashMap, HashSet};
use super::{DetectConfig, DetectInput};

/// One source port's one-way datagrams to one receiver in a window.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct PortAgg {
    pkts: u64,
    bytes: u64,
    sources: Distinct<Addr>,
}

/// One window's one-way UDP flows.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct OneWay {
    /// (receiver, sender's port) -> what came.
    by_port: HashMap<(Addr, u16), PortAgg>,
    /// (sender, receiver's port) of one-way flows: the service ports each host asked itself.
    asked: HashSet<(Addr, u16)>,
}

/// The shape of one victim's unsolicited datagrams, for the alert's evidence.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Shape {
    pub sources: u64,
    pub pkts: u64,
    pub bytes: u64,
    /// Distinct source ports of the one-way flows, and the top ones with their packets.
    pub ports: u64,
    pub top: Vec<(u16, u64)>,
    /// Packets of the top ports.
    pub top_pkts: u64,
}

impl OneWay {
    /// Adds a UDP record that only its first sender spoke in; returns the cap hits.
    pub fn add(&mut self, r: &DetectInput, cfg: &DetectConfig) -> u64 {
        if r.proto != ip_proto::UDP {
            return 0;
        }
        let (from, from_p, to, to_p, pkts, back, bytes) = if r.resp_first() {
            (
                r.resp_h,
                r.resp_p,
                r.orig_h,
                r.orig_p,
                r.resp_pkts,
                r.orig_pkts,
                r.resp_ip_bytes,
            )
        } else {
            (
                r.orig_h,
                r.orig_p,
                r.resp_h,
                r.resp_p,
                r.orig_pkts,
                r.resp_pkts,
                r.orig_ip_bytes,
            )
        };
        if back > 0 || pkts == 0 {
            return 0;
        }
        let keys = cfg.keys_cap;
        let mut misses = 0;
        if self.asked.len() < keys || self.asked.contains(&(from, to_p)) {
            self.asked.insert((from, to_p));
        } else {
            misses += 1;
        }
        if self.by_port.len() >= keys && !self.by_port.contains_key(&(to, from_p)) {
            return misses + 1;
        }
        let e = self.by_port.entry((to, from_p)).or_insert_with(|| PortAgg {
            pkts: 0,
            bytes: 0,
            sources: Distinct::new(),
        });
        e.pkts += pkts;
        e.bytes += bytes;
        misses + u64::from(!e.sources.add(from, cfg.distinct_cap))
    }

    /// Every receiver of unsolicited datagrams with its shape: one-way flows from the ports it
    /// did not ask, the top `cfg.reflection_ports` of them by packets (ties to the lower port),
    /// their distinct sources.
    pub fn shapes(&self, cfg: &DetectConfig) -> BTreeMap<Addr, Shape> {
        let floor = cfg
            .subnets
            .iter()
            .filter_map(|s| s.reflection_sources)
            .chain([cfg.reflection_sources])
            .min()
            .unwrap_or(1) as u64;
        // A victim with enough sources over its top K ports has a port with a K-th of them.
        let k = cfg.reflection_ports.max(1) as u64;
        let candidates: HashSet<Addr> = self
            .by_port
            .iter()
            .filter(|(_, a)| a.sources.len() as u64 * k >= floor)
            .map(|((to, _), _)| *to)
            .collect();
        let mut by_victim: HashMap<Addr, Vec<(u16, &PortAgg)>> = HashMap::default();
        for ((to, port), agg) in &self.by_port {
            if candidates.contains(to) && !self.asked.contains(&(*to, *port)) {
                by_victim.entry(*to).or_default().push((*port, agg));
            }
        }
        let mut out = BTreeMap::new();
        for (victim, mut ports) in by_victim {
            let all: u64 = ports.iter().map(|(_, a)| a.sources.len() as u64).sum();
            // Too few sources even counted with repeats: nothing to look at.
            if all < floor {
                continue;
            }
            ports.sort_by(|a, b| b.1.pkts.cmp(&a.1.pkts).then(a.0.cmp(&b.0)));
            let top = &ports[..ports.len().min(cfg.reflection_ports.max(1))];
            let mut sources = Distinct::new();
            for (_, a) in top {
                sources.merge(&a.sources, cfg.distinct_cap);
            }
            out.insert(
                victim,
                Shape {
                    sources: sources.len() as u64,
                    pkts: ports.iter().map(|(_, a)| a.pkts).sum(),
                    bytes: ports.iter().map(|(_, a)| a.bytes).sum(),
                    ports: ports.len() as u64,
                    top: top.iter().map(|(p, a)| (*p, a.pkts)).collect(),
                    top_pkts: top.iter().map(|(_, a)| a.pkts).sum(),
                },
            );
        }
        out
    }
}

impl Shape {
    /// Reflection by shape: enough sources, the top ports carrying the share, few packets
    /// per source.
    pub fn is_reflection(&self, min_sources: usize, cfg: &DetectConfig) -> bool {
        self.sources >= min_sources as u64
            && self.top_pkts.saturating_mul(100)
                >= self.pkts.saturating_mul(cfg.reflection_port_share_pct)
            && self.top_pkts
                <= self
                    .sources
                    .saturating_mul(cfg.reflection_max_pkts_per_source)
    }

    /// The evidence: sources, packets, bytes, bytes per packet, and each top port with its
    /// share of the packets (percent).
    pub fn evidence(&self, out: &mut BTreeMap<&'static str, u64>) {
        const PORTS: [(&str, &str); 3] = [
            ("src_port_1", "src_port_1_pct"),
            ("src_port_2", "src_port_2_pct"),
            ("src_port_3", "src_port_3_pct"),
        ];
        out.insert("one_way_sources", self.sources);
        out.insert("packets", self.pkts);
        out.insert("bytes", self.bytes);
        out.insert("bytes_per_packet", self.bytes / self.pkts.max(1));
        out.insert("src_ports", self.ports);
        for ((port, share), (p, n)) in PORTS.iter().zip(&self.top) {
            out.insert(port, u64::from(*p));
            out.insert(share, n * 100 / self.pkts.max(1));
        }
    }
}
