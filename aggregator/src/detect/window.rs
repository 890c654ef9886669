//! Tumbling windows of event time and what accumulates in them (sans-IO, bounded).

use std::collections::BTreeMap;
use std::hash::Hash;

use tapflow_proto::key::ip_proto;
use tapflow_proto::Addr;

use super::classify::Observation;
use super::{AlertKey, AlertKind, DetectConfig, DetectInput, WindowAlerts};

/// Keys here are addresses anyone can forge: seeded per process (unlike FxHash) and several
/// times faster than the standard SipHash on them.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

const SECOND: u64 = 1_000_000_000;

/// A set that keeps at most `cap` distinct values and counts what it had to leave out. Empty
/// and one-value sets are held inline: in a spoofed flood nearly every key (a source) has one
/// value, and a hash set per key (an allocation of ~100 bytes) was most of the aggregator's
/// memory at a million sources.
#[derive(Debug)]
enum Distinct<T> {
    Empty,
    One(T),
    /// Boxed so the enum, held in every map entry, is the size of a pointer or a value, not of
    /// a hash set (48 bytes): most entries are `One`.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<T>>),
}

impl<T: Hash + Eq> Distinct<T> {
    fn new() -> Self {
        Distinct::Empty
    }

    /// Adds `v`; false if the cap kept it out.
    fn add(&mut self, v: T, cap: usize) -> bool {
        match self {
            Distinct::Empty if cap >= 1 => *self = Distinct::One(v),
            Distinct::One(x) if *x == v => {}
            Distinct::Many(set) if set.len() < cap || set.contains(&v) => {
                set.insert(v);
            }
            Distinct::One(_) if cap >= 2 => {
                if let Distinct::One(x) = std::mem::replace(self, Distinct::Empty) {
                    *self = Distinct::Many(Box::new(HashSet::from_iter([x, v])));
                }
            }
            _ => return false,
        }
        true
    }

    fn len(&self) -> usize {
        match self {
            Distinct::Empty => 0,
            Distinct::One(_) => 1,
            Distinct::Many(set) => set.len(),
        }
    }

    fn only(&self) -> Option<&T> {
        match self {
            Distinct::One(x) => Some(x),
            Distinct::Many(set) if set.len() == 1 => set.iter().next(),
            _ => None,
        }
    }
}

#[derive(Default, Debug)]
struct SynAgg {
    unanswered: u64,
    syns: u64,
    sources: Option<Distinct<Addr>>,
    ports: Option<Distinct<u16>>,
}

#[derive(Default, Debug)]
struct Scans {
    /// (src, dst) -> distinct (proto << 16 | port) that failed.
    failed_ports: HashMap<(Addr, Addr), Distinct<u32>>,
    /// (src, proto, port) -> distinct hosts that failed.
    failed_hosts: HashMap<(Addr, u8, u16), Distinct<Addr>>,
    /// (src, dst) -> distinct ports probed with stealth flags.
    stealth_ports: HashMap<(Addr, Addr), Distinct<u16>>,
    syn: HashMap<Addr, SynAgg>,
    /// victim -> distinct reflectors, and responses.
    reflection: HashMap<Addr, (Distinct<Addr>, u64)>,
    /// TCP servers' latency samples.
    latency: crate::latency::Window,
}

#[derive(Default, Debug)]
struct Volume {
    /// (victim, kind) -> packets, bytes, distinct sources.
    to: HashMap<(Addr, Flood), (f64, f64, Distinct<Addr>)>,
}

/// The volumetric kinds, by the traffic's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

pub(super) struct Windows {
    len: u64,
    flood_len: u64,
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
            misses += add_to(
                &mut w.failed_ports,
                (r.orig_h, r.resp_h),
                u32::from(r.proto) << 16 | u32::from(r.resp_p),
                cap,
                keys,
            );
            misses += add_to(
                &mut w.failed_hosts,
                (r.orig_h, r.proto, r.resp_p),
                r.resp_h,
                cap,
                keys,
            );
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
        let server = crate::latency::Server {
            addr: r.resp_h,
            port: r.resp_p,
        };
        misses += u64::from(!w.latency.add(server, r.latency, cfg.latency_caps));
        self.cap_hits += misses;
    }

    /// Spreads the record's packets over the flood windows it spans; false if part of it fell
    /// in windows judged already.
    fn add_volume(&mut self, r: &DetectInput, cfg: &DetectConfig) -> bool {
        let kind = Flood::of(r.proto);
        let first = r.ts_ns;
        let last = r.last_ns();
        let span = (last - first).max(1) as f64;
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
                let w = self.volume.entry(t).or_default();
                for (victim, source, pkts, bytes) in [
                    (r.resp_h, r.orig_h, r.orig_pkts, r.orig_ip_bytes),
                    (r.orig_h, r.resp_h, r.resp_pkts, r.resp_ip_bytes),
                ] {
                    if pkts == 0 {
                        continue;
                    }
                    if w.to.len() >= cfg.keys_cap && !w.to.contains_key(&(victim, kind)) {
                        self.cap_hits += 1;
                        continue;
                    }
                    let e =
                        w.to.entry((victim, kind))
                            .or_insert_with(|| (0.0, 0.0, Distinct::new()));
                    e.0 += pkts as f64 * overlap;
                    e.1 += bytes as f64 * overlap;
                    // Two are enough to tell one source from many: not a cap hit.
                    e.2.add(source, 2);
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
                    let w = self.volume.remove(&v).unwrap_or_default();
                    self.judged_volume = v + self.flood_len;
                    out.push((v, v + self.flood_len, judge_volume(&w, cfg, self.flood_len)));
                }
                _ => return out,
            }
        }
    }
}

/// Adds `v` to the distinct set under `key`; returns 1 if a cap kept it out.
fn add_to<K: Hash + Eq, T: Hash + Eq>(
    map: &mut HashMap<K, Distinct<T>>,
    key: K,
    v: T,
    cap: usize,
    keys: usize,
) -> u64 {
    if map.len() >= keys && !map.contains_key(&key) {
        return 1;
    }
    u64::from(!map.entry(key).or_insert_with(Distinct::new).add(v, cap))
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
    for ((src, dst), ports) in &w.failed_ports {
        let min = cfg
            .subnet(*src)
            .and_then(|t| t.port_scan_ports)
            .unwrap_or(cfg.port_scan_ports);
        if ports.len() >= min {
            scanners.insert((*src, *dst));
            alerts.insert(
                AlertKey::new(AlertKind::PortScan, ip(src), ip(dst)),
                (
                    ports.len() as u64,
                    [("distinct_ports", ports.len() as u64)].into(),
                ),
            );
        }
    }
    scanners
}

fn judge_address_scans(w: &Scans, cfg: &DetectConfig, alerts: &mut WindowAlerts) {
    let mut by_src: HashMap<Addr, (u64, u16)> = HashMap::default();
    for ((src, _proto, port), hosts) in &w.failed_hosts {
        if hosts.len()
            >= cfg
                .subnet(*src)
                .and_then(|t| t.address_scan_hosts)
                .unwrap_or(cfg.address_scan_hosts)
        {
            let e = by_src.entry(*src).or_default();
            // Ties go to the lowest port, whatever order the map iterates in.
            let n = hosts.len() as u64;
            if n > e.0 || (n == e.0 && *port < e.1) {
                *e = (n, *port);
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

fn judge_reflection(w: &Scans, cfg: &DetectConfig, alerts: &mut WindowAlerts) {
    for (victim, (sources, responses)) in &w.reflection {
        if sources.len()
            >= cfg
                .subnet(*victim)
                .and_then(|t| t.reflection_sources)
                .unwrap_or(cfg.reflection_sources)
        {
            alerts.insert(
                AlertKey::new(AlertKind::Reflection, "*", ip(victim)),
                (
                    *responses,
                    [
                        ("distinct_sources", sources.len() as u64),
                        ("responses", *responses),
                    ]
                    .into(),
                ),
            );
        }
    }
}

fn judge_volume(w: &Volume, cfg: &DetectConfig, len: u64) -> WindowAlerts {
    let secs = (len / SECOND).max(1) as f64;
    let mut alerts = WindowAlerts::new();
    for ((victim, kind), (pkts, bytes, sources)) in &w.to {
        let (pps, bps) = (pkts / secs, bytes * 8.0 / secs);
        let flood_pps = cfg
            .subnet(*victim)
            .and_then(|t| t.flood_pps)
            .unwrap_or(cfg.flood_pps);
        if pps >= flood_pps as f64 || bps >= cfg.flood_bps as f64 {
            let src = match sources.only() {
                Some(s) => ip(s),
                None => "*".into(),
            };
            let evidence = [
                ("pps", pps.round() as u64),
                ("bps", bps.round() as u64),
                ("packets", pkts.round() as u64),
            ];
            alerts.insert(
                AlertKey::new(kind.kind(), src, ip(victim)),
                (pkts.round() as u64, evidence.into()),
            );
        }
    }
    alerts
}

#[cfg(test)]
mod distinct_tests {
    use super::Distinct;

    #[test]
    fn distinct_counts_values_once_and_keeps_to_its_cap() {
        let mut d = Distinct::new();
        assert_eq!((d.len(), d.only()), (0, None));
        assert!(d.add(7u16, 3) && d.add(7, 3));
        assert_eq!((d.len(), d.only()), (1, Some(&7)));
        assert!(d.add(8, 3) && d.add(9, 3) && d.add(8, 3));
        assert_eq!((d.len(), d.only()), (3, None));
        assert!(!d.add(10, 3), "a fourth value past cap 3");
        assert!(d.add(9, 3), "a value already in is no cap hit");
        let mut one = Distinct::new();
        assert!(one.add(1u32, 1) && !one.add(2, 1) && one.add(1, 1));
        assert_eq!(one.len(), 1);
        let mut none = Distinct::new();
        assert!(!none.add(1u32, 0));
        assert_eq!(none.len(), 0);
    }
}
