//! Tumbling windows of event time and what accumulates in them (sans-IO, bounded).

use std::collections::BTreeMap;
use std::hash::Hash;

use tapflow_proto::key::ip_proto;
use tapflow_proto::Addr;

use super::classify::Observation;
use super::distinct::{Distinct, HashMap, HashSet, Sources};
use super::failed::Failed;
use super::rates::{Peaks, Span};
use super::shape::OneWay;
use super::{AlertKey, AlertKind, DetectConfig, DetectInput, WindowAlerts};

const SECOND: u64 = 1_000_000_000;

#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
struct SynAgg {
    unanswered: u64,
    syns: u64,
    sources: Option<Distinct<Addr>>,
    ports: Option<Distinct<u16>>,
}

#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
struct Scans {
    /// Failed attempts: distinct ports per (src, dst), distinct hosts per (src, proto, port).
    failed: Failed,
    /// (src, dst) -> distinct ports probed with stealth flags.
    stealth_ports: HashMap<(Addr, Addr), Distinct<u16>>,
    syn: HashMap<Addr, SynAgg>,
    /// victim -> distinct reflectors, and responses.
    reflection: HashMap<Addr, (Distinct<Addr>, u64)>,
    /// TCP servers' latency samples.
    latency: crate::latency::Window,
    /// One-way UDP flows, for reflection by shape.
    one_way: OneWay,
}

#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
struct Volume {
    to: HashMap<(Addr, Flood), VolAgg>,
}

/// What went to one victim in one flood window, by protocol kind.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct VolAgg {
    pkts: f64,
    bytes: f64,
    /// Distinct sources: those of new flows (up to `distinct_cap`: evidence, so no cap hit
    /// past it), and two at most of other packets (enough to tell one source from many).
    sources: Sources,
    /// Flows whose first packet came to the victim in the window.
    flows: u64,
    /// Packets and bytes per short interval: the peak rates.
    bins: Peaks,
}

/// The volumetric kinds, by the traffic's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Flood {
    Udp,
    Icmp,
    Other,
}

impl Flood {
    fn of(proto: u8) -> Flood {
        match proto {
            ip_proto::UDP => Flood::Udp,
            ip_proto::ICMP | ip_proto::ICMPV6 => Flood::Icmp,
            _ => Flood::Other,
        }
    }

    fn kind(self) -> AlertKind {
        match self {
            Flood::Udp => AlertKind::UdpFlood,
            Flood::Icmp => AlertKind::IcmpFlood,
            Flood::Other => AlertKind::VolumetricFlood,
        }
    }
}

/// See [`Windows::shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub window_ns: u64,
    pub flood_window_ns: u64,
    pub interval_ns: u64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "window {} s, flood window {} s, peak interval {} ms",
            self.window_ns / SECOND,
            self.flood_window_ns / SECOND,
            self.interval_ns / 1_000_000
        )
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Windows {
    len: u64,
    flood_len: u64,
    /// The peak-rate interval.
    interval: u64,
    hold: u64,
    scans: BTreeMap<u64, Scans>,
    volume: BTreeMap<u64, Volume>,
    judged_scans: u64,
    judged_volume: u64,
    cap_hits: u64,
    baselines: super::latency::Baselines,
}

impl Windows {
    pub fn new(cfg: &DetectConfig) -> Windows {
        Windows {
            len: cfg.window_s.max(1) * SECOND,
            flood_len: cfg.flood_window_s.max(1) * SECOND,
            interval: cfg
                .peak_interval_ms
                .clamp(1, cfg.flood_window_s.max(1) * 1000)
                * 1_000_000,
            hold: cfg.hold_s * SECOND,
            scans: BTreeMap::new(),
            volume: BTreeMap::new(),
            judged_scans: 0,
            judged_volume: 0,
            cap_hits: 0,
            baselines: super::latency::Baselines::default(),
        }
    }

    pub fn cap_hits(&self) -> u64 {
        self.cap_hits + self.baselines.over_cap()
    }

    /// The lengths that give the windows held their bounds: the scan window, the flood window
    /// and the peak-rate interval. Windows of one shape cannot be read as windows of another.
    pub fn shape(&self) -> Shape {
        Shape {
            window_ns: self.len,
            flood_window_ns: self.flood_len,
            interval_ns: self.interval,
        }
    }

    /// Judges windows `hold_s` past their end from now on (the configuration's, where a
    /// restored state came with its own).
    pub fn set_hold(&mut self, cfg: &DetectConfig) {
        self.hold = cfg.hold_s * SECOND;
    }

    /// Adds a record's observations; false if its window was judged already (late).
    pub fn add(&mut self, r: &DetectInput, o: &Observation, cfg: &DetectConfig) -> bool {
        let start = r.ts_ns / self.len * self.len;
        let in_time = start >= self.judged_scans;
        if in_time {
            self.add_scans(start, r, o, cfg);
        }
        in_time & self.add_volume(r, cfg)
    }

    fn add_scans(&mut self, start: u64, r: &DetectInput, o: &Observation, cfg: &DetectConfig) {
        let (cap, keys) = (cfg.distinct_cap, cfg.keys_cap);
        let w = self.scans.entry(start).or_default();
        let mut misses = 0;
        if o.failed && !o.allowed {
            misses += w
                .failed
                .add(r.orig_h, r.resp_h, r.proto, r.resp_p, cap, keys);
        }
        if o.stealth && !o.allowed {
            misses += add_to(
                &mut w.stealth_ports,
                (r.orig_h, r.resp_h),
                r.resp_p,
                cap,
                keys,
            );
        }
        if o.syn && (w.syn.len() < keys || w.syn.contains_key(&r.resp_h)) {
            let agg = w.syn.entry(r.resp_h).or_default();
            agg.syns += 1;
            if o.unanswered_syn {
                agg.unanswered += 1;
                misses += u64::from(
                    !agg.sources
                        .get_or_insert_with(Distinct::new)
                        .add(r.orig_h, cap),
                );
                misses += u64::from(
                    !agg.ports
                        .get_or_insert_with(Distinct::new)
                        .add(r.resp_p, cap),
                );
            }
        } else if o.syn {
            misses += 1;
        }
        if let Some((victim, reflector)) = o.unsolicited {
            if w.reflection.len() < keys || w.reflection.contains_key(&victim) {
                let e = w
                    .reflection
                    .entry(victim)
                    .or_insert_with(|| (Distinct::new(), 0));
                e.1 += r.orig_pkts.max(r.resp_pkts);
                misses += u64::from(!e.0.add(reflector, cap));
            } else {
                misses += 1;
            }
        }
        misses += w.one_way.add(r, cfg);
        let server = crate::latency::Server {
            addr: r.resp_h,
            port: r.resp_p,
        };
        misses += u64::from(!w.latency.add(server, r.latency, cfg.latency_caps));
        self.cap_hits += misses;
    }

    /// Spreads the record's packets over the flood windows it spans, and over their short
    /// intervals; counts the flow as new where its first packet arrived. False if part of it
    /// fell in windows judged already.
    fn add_volume(&mut self, r: &DetectInput, cfg: &DetectConfig) -> bool {
        let kind = Flood::of(r.proto);
        let first = r.ts_ns;
        let last = r.last_ns();
        let span = (last - first).max(1) as f64;
        // Who asked (sent the first packet), as the history says; the other received it.
        let resp_first = r.resp_first();
        let (orig_at, resp_at) = if resp_first {
            (last, first)
        } else {
            (first, last)
        };
        let mut all_in_time = true;
        let mut t = first / self.flood_len * self.flood_len;
        while t <= last {
            let overlap = if last == first {
                1.0
            } else {
                (last.min(t + self.flood_len) - first.max(t)) as f64 / span
            };
            if t < self.judged_volume {
                all_in_time = false;
            } else if overlap > 0.0 {
                let new_flow = t <= first;
                // Sized like the window before: its keys are mostly this one's.
                let size = self.volume.last_key_value().map_or(0, |(_, w)| w.to.len());
                let w = self.volume.entry(t).or_insert_with(|| Volume {
                    to: HashMap::with_capacity_and_hasher(
                        size.min(cfg.keys_cap),
                        Default::default(),
                    ),
                });
                let s = Span {
                    start: t,
                    len: self.flood_len,
                    interval: self.interval,
                };
                for (victim, source, pkts, bytes, at, receiver) in [
                    (
                        r.resp_h,
                        r.orig_h,
                        r.orig_pkts,
                        r.orig_ip_bytes,
                        orig_at,
                        !resp_first,
                    ),
                    (
                        r.orig_h,
                        r.resp_h,
                        r.resp_pkts,
                        r.resp_ip_bytes,
                        resp_at,
                        resp_first,
                    ),
                ] {
                    if pkts == 0 {
                        continue;
                    }
                    if w.to.len() >= cfg.keys_cap && !w.to.contains_key(&(victim, kind)) {
                        self.cap_hits += 1;
                        continue;
                    }
                    let e = w.to.entry((victim, kind)).or_default();
                    e.pkts += pkts as f64 * overlap;
                    e.bytes += bytes as f64 * overlap;
                    e.bins.place(&s, (first, last, at), pkts, bytes);
                    if new_flow && receiver {
                        e.flows += 1;
                        // Every source of a new flow (evidence: past the cap, not a cap hit).
                        e.sources.add_new(source, cfg.distinct_cap);
                    } else {
                        // Two are enough to tell one source from many: not a cap hit.
                        e.sources.add_other(source);
                    }
                }
            }
            t += self.flood_len;
        }
        all_in_time
    }

    /// Judges, oldest first, every window that ended at least `hold` before `now_ns`.
    pub fn judge_until(
        &mut self,
        now_ns: u64,
        cfg: &DetectConfig,
    ) -> Vec<(u64, u64, WindowAlerts)> {
        let mut out = Vec::new();
        loop {
            let next_scan = self
                .scans
                .keys()
                .next()
                .copied()
                .filter(|s| s.saturating_add(self.len).saturating_add(self.hold) <= now_ns);
            let next_vol =
                self.volume.keys().next().copied().filter(|s| {
                    s.saturating_add(self.flood_len).saturating_add(self.hold) <= now_ns
                });
            match (next_scan, next_vol) {
                (Some(s), v) if v.is_none_or(|v| s + self.len <= v + self.flood_len) => {
                    let mut w = self.scans.remove(&s).unwrap_or_default();
                    self.judged_scans = s + self.len;
                    let mut alerts = judge_scans(&w, cfg, self.len);
                    let servers = std::mem::take(&mut w.latency).summarise();
                    self.baselines
                        .judge(s, self.len, &servers, cfg, &mut alerts);
                    out.push((s, s + self.len, alerts));
                }
                (_, Some(v)) => {
                    let mut w = self.volume.remove(&v).unwrap_or_default();
                    self.judged_volume = v + self.flood_len;
                    out.push((
                        v,
                        v + self.flood_len,
                        judge_volume(
                            &mut w,
                            cfg,
                            &Span {
                                start: v,
                                len: self.flood_len,
                                interval: self.interval,
                            },
                        ),
                    ));
                }
                _ => return out,
            }
        }
    }
}

/// Adds `v` to the distinct set under `key`; returns 1 if a cap kept it out.
pub(super) fn add_to<K: Hash + Eq, T: Hash + Eq>(
    map: &mut HashMap<K, Distinct<T>>,
    key: K,
    v: T,
    cap: usize,
    keys: usize,
) -> u64 {
    if map.len() >= keys && !map.contains_key(&key) {
        return 1;
    }
    u64::from(!map.entry(key).or_default().add(v, cap))
}

fn ip(a: &Addr) -> String {
    a.to_string()
}

fn judge_scans(w: &Scans, cfg: &DetectConfig, len: u64) -> WindowAlerts {
    let mut alerts = WindowAlerts::new();
    let scanners = judge_port_scans(w, cfg, &mut alerts);
    judge_address_scans(w, cfg, &mut alerts);
    judge_stealth_scans(w, cfg, &mut alerts);
    judge_syn_floods(w, cfg, len, &scanners, &mut alerts);
    judge_reflection(w, cfg, &mut alerts);
    alerts
}

/// Port scans; returns the (scanner, host) pairs, which no SYN flood is about.
fn judge_port_scans(
    w: &Scans,
    cfg: &DetectConfig,
    alerts: &mut WindowAlerts,
) -> HashSet<(Addr, Addr)> {
    let mut scanners: HashSet<(Addr, Addr)> = HashSet::default();
    for (src, dst, ports) in w.failed.ports() {
        let min = cfg
            .subnet(src)
            .and_then(|t| t.port_scan_ports)
            .unwrap_or(cfg.port_scan_ports);
        if ports >= min {
            scanners.insert((src, dst));
            alerts.insert(
                AlertKey::new(AlertKind::PortScan, ip(&src), ip(&dst)),
                (ports as u64, [("distinct_ports", ports as u64)].into()),
            );
        }
    }
    scanners
}

fn judge_address_scans(w: &Scans, cfg: &DetectConfig, alerts: &mut WindowAlerts) {
    let mut by_src: HashMap<Addr, (u64, u16)> = HashMap::default();
    for (src, _proto, port, hosts) in w.failed.hosts() {
        if hosts
            >= cfg
                .subnet(src)
                .and_then(|t| t.address_scan_hosts)
                .unwrap_or(cfg.address_scan_hosts)
        {
            let e = by_src.entry(src).or_default();
            // Ties go to the lowest port, whatever order the map iterates in.
            let n = hosts as u64;
            if n > e.0 || (n == e.0 && port < e.1) {
                *e = (n, port);
            }
        }
    }
    for (src, (hosts, port)) in by_src {
        alerts.insert(
            AlertKey::new(AlertKind::AddressScan, ip(&src), "*"),
            (
                hosts,
                [("distinct_hosts", hosts), ("port", u64::from(port))].into(),
            ),
        );
    }
}

fn judge_stealth_scans(w: &Scans, cfg: &DetectConfig, alerts: &mut WindowAlerts) {
    for ((src, dst), ports) in &w.stealth_ports {
        if ports.len()
            >= cfg
                .subnet(*src)
                .and_then(|t| t.stealth_scan_ports)
                .unwrap_or(cfg.stealth_scan_ports)
        {
            alerts.insert(
                AlertKey::new(AlertKind::StealthScan, ip(src), ip(dst)),
                (
                    ports.len() as u64,
                    [("distinct_ports", ports.len() as u64)].into(),
                ),
            );
        }
    }
}

fn judge_syn_floods(
    w: &Scans,
    cfg: &DetectConfig,
    len: u64,
    scanners: &HashSet<(Addr, Addr)>,
    alerts: &mut WindowAlerts,
) {
    for (victim, agg) in &w.syn {
        let per_min = cfg
            .subnet(*victim)
            .and_then(|t| t.syn_flood_per_min)
            .unwrap_or(cfg.syn_flood_per_min);
        let threshold = per_min.saturating_mul(len / SECOND) / 60;
        let sources = agg.sources.as_ref().map_or(0, Distinct::len);
        let ports = agg.ports.as_ref().map_or(0, Distinct::len);
        let many_sources = sources >= cfg.syn_flood_min_sources;
        let few_ports = ports <= cfg.syn_flood_max_ports;
        // One source walking many ports is a port scan, not a flood.
        let single_scanner = agg
            .sources
            .as_ref()
            .and_then(Distinct::only)
            .is_some_and(|s| scanners.contains(&(*s, *victim)));
        if agg.unanswered > threshold && (many_sources || few_ports) && !single_scanner {
            let src = match agg.sources.as_ref().and_then(Distinct::only) {
                Some(s) => ip(s),
                None => "*".into(),
            };
            let answered_pct = (agg.syns - agg.unanswered) * 100 / agg.syns.max(1);
            let evidence = [
                ("unanswered_syns", agg.unanswered),
                ("syns", agg.syns),
                ("answered_pct", answered_pct),
                ("distinct_sources", sources as u64),
                ("distinct_ports", ports as u64),
            ];
            alerts.insert(
                AlertKey::new(AlertKind::SynFlood, src, ip(victim)),
                (agg.unanswered, evidence.into()),
            );
        }
    }
}

/// Reflection: unsolicited responses as Zeek's orientation shows them (DNS answers with no
/// query, SYN-ACKs or RSTs with no SYN) from enough sources, or one-way datagrams with the
/// shape of reflection from any service ([`super::shape`]).
fn judge_reflection(w: &Scans, cfg: &DetectConfig, alerts: &mut WindowAlerts) {
    let mut shapes = w.one_way.shapes(cfg);
    let min = |v: &Addr| {
        cfg.subnet(*v)
            .and_then(|t| t.reflection_sources)
            .unwrap_or(cfg.reflection_sources)
    };
    for (victim, (sources, responses)) in &w.reflection {
        let shape = shapes
            .remove(victim)
            .filter(|s| s.is_reflection(min(victim), cfg));
        if sources.len() >= min(victim) || shape.is_some() {
            let mut evidence: BTreeMap<&'static str, u64> = [
                ("distinct_sources", sources.len() as u64),
                ("responses", *responses),
            ]
            .into();
            let mut count = *responses;
            if let Some(s) = shape {
                s.evidence(&mut evidence);
                evidence.insert("distinct_sources", s.sources.max(sources.len() as u64));
                count = count.max(s.pkts);
            }
            alerts.insert(
                AlertKey::new(AlertKind::Reflection, "*", ip(victim)),
                (count, evidence),
            );
        }
    }
    for (victim, s) in shapes {
        if s.is_reflection(min(&victim), cfg) {
            let mut evidence = BTreeMap::new();
            s.evidence(&mut evidence);
            evidence.insert("distinct_sources", s.sources);
            evidence.insert("responses", s.pkts);
            alerts.insert(
                AlertKey::new(AlertKind::Reflection, "*", ip(&victim)),
                (s.pkts, evidence),
            );
        }
    }
}

/// Floods by their average over the window (`flood_pps`, `flood_bps`) or their peak over the
/// short intervals (`peak_pps`, `peak_bps`); `flow_flood` by new flows per second to a victim.
fn judge_volume(w: &mut Volume, cfg: &DetectConfig, span: &Span) -> WindowAlerts {
    let (len, interval) = (span.len, span.interval);
    let secs = (len / SECOND).max(1) as f64;
    let per_s = SECOND as f64 / interval as f64;
    let mut alerts = WindowAlerts::new();
    let mut flows: HashMap<Addr, Vec<&VolAgg>> = HashMap::default();
    // A victim's flows are summed over at most three kinds: one of them holds a third.
    let min_flows = cfg
        .subnets
        .iter()
        .filter_map(|t| t.new_flows_per_s)
        .fold(cfg.new_flows_per_s, u64::min) as f64
        * secs;
    for ((victim, kind), v) in &mut w.to {
        let (pps, bps) = (v.pkts / secs, v.bytes * 8.0 / secs);
        let sub = cfg.subnet(*victim);
        let flood_pps = sub.and_then(|t| t.flood_pps).unwrap_or(cfg.flood_pps);
        let peak_pps_min = sub.and_then(|t| t.peak_pps).unwrap_or(cfg.peak_pps);
        let peak_bps_min = sub.and_then(|t| t.peak_bps).unwrap_or(cfg.peak_bps);
        // No interval holds more than the window: look only where the window could do.
        let (peak_p, peak_b) = if v.pkts * per_s >= peak_pps_min as f64
            || v.bytes * 8.0 * per_s >= peak_bps_min as f64
        {
            v.bins.peak(span)
        } else {
            (0.0, 0.0)
        };
        let (peak_pps, peak_bps) = (peak_p * per_s, peak_b * 8.0 * per_s);
        if v.flows > 0 && v.flows as f64 * 3.0 >= min_flows {
            v.sources.settle(cfg.distinct_cap);
            flows.entry(*victim).or_default().push(v);
        }
        if pps >= flood_pps as f64
            || bps >= cfg.flood_bps as f64
            || peak_pps >= peak_pps_min as f64
            || peak_bps >= peak_bps_min as f64
        {
            let src = match v.sources.only() {
                Some(s) => ip(s),
                None => "*".into(),
            };
            let evidence = [
                ("pps", pps.round() as u64),
                ("bps", bps.round() as u64),
                ("packets", v.pkts.round() as u64),
                ("peak_pps", peak_pps.round() as u64),
                ("peak_bps", peak_bps.round() as u64),
                ("peak_interval_ms", interval / 1_000_000),
            ];
            alerts.insert(
                AlertKey::new(kind.kind(), src, ip(victim)),
                (v.pkts.round() as u64, evidence.into()),
            );
        }
    }
    judge_flow_floods(&flows, cfg, secs, &mut alerts);
    alerts
}

/// New flows per second to one victim (every protocol), over the window.
fn judge_flow_floods(
    flows: &HashMap<Addr, Vec<&VolAgg>>,
    cfg: &DetectConfig,
    secs: f64,
    alerts: &mut WindowAlerts,
) {
    for (victim, aggs) in flows {
        let n: u64 = aggs.iter().map(|v| v.flows).sum();
        let min = cfg
            .subnet(*victim)
            .and_then(|t| t.new_flows_per_s)
            .unwrap_or(cfg.new_flows_per_s);
        if (n as f64) < min as f64 * secs {
            continue;
        }
        let mut sources = Distinct::new();
        for v in aggs {
            sources.merge(v.sources.settled(), cfg.distinct_cap);
        }
        let src = match sources.only() {
            Some(s) => ip(s),
            None => "*".into(),
        };
        let evidence = [
            ("new_flows", n),
            ("new_flows_per_s", (n as f64 / secs).round() as u64),
            ("distinct_sources", sources.len() as u64),
        ];
        alerts.insert(
            AlertKey::new(AlertKind::FlowFlood, src, ip(victim)),
            (n, evidence.into()),
        );
    }
}
