//! A deterministic synthetic traffic generator.
//!
//! [`Generator`] yields Ethernet frames in time order. A seed gives the same frames, byte for
//! byte, on every host. The mix, per [`Plan`]:
//! - ordinary flows: ~80% TCP sessions (handshake, MSS-sized and small segments both ways with
//!   real sequence/acknowledgement numbers, FIN or RST close), ~12% UDP (two thirds DNS
//!   query/response on port 53, the rest NTP-, syslog-, QUIC- and RTP-like), ~3% ICMP echo
//!   request/reply; ~5% of them over IPv6;
//! - a spoofed-source SYN flood to [`attack::FLOOD_VICTIM`] (~2% of packets, in the middle of
//!   the capture) and a SYN port scan of [`attack::SCAN_TARGET`] answered by RSTs (up to 1500
//!   ports, earlier on);
//! - every checksum correct; frames average about 600 bytes.
//!
//! Three mixes ([`Mix`]) share these parts and differ in how many packets open a session:
//! - `bench`, the above: `flows` as given (`bench/run.sh` uses one per 25 packets);
//! - `session-heavy`: the same parts with one five-tuple per six packets
//!   ([`Mix::default_flows`]);
//! - `flood-heavy`: ordinary traffic (one five-tuple per 25 of its packets) plus a spoofed SYN
//!   flood that is 24% of the packets, each SYN from a five-tuple of its own, spread over the
//!   middle 80% of the capture: at least one packet in four opens a session.
//!
//! `flows` is the exact number of distinct five-tuples (as tapflow keys them: ICMP by type
//! pair) and `packets` the exact number of frames. Ordinary flows interleave: `active` of them
//! are in progress at once and each packet comes from one of them at random, weighted by the
//! packets it has left. Memory depends on `active`, never on `packets` or `flows`.

pub mod attack;
mod flows;
mod frame;
mod rng;

#[cfg(test)]
mod tests;

use attack::{Flood, Scan};
use flows::{Cx, Flow, Kind};
use rng::{mix64, Rng};

/// What to generate. Every field has a usable default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Frames to generate, exactly. Default 1,000,000.
    pub packets: u64,
    /// Distinct five-tuples, exactly. Default 50,000.
    pub flows: u64,
    /// Same seed, same frames. Default 1.
    pub seed: u64,
    /// Mean packet rate of capture time (timestamps), packets per second. Default 100,000.
    pub rate_pps: u64,
    /// Ordinary flows in progress at once. Default 4096.
    pub active: usize,
    /// Time of the first packet, ns since the Unix epoch. Default 2024-01-01T00:00:00Z.
    pub start_ns: u64,
    /// How the packets are shared between ordinary flows and attacks. Default [`Mix::Bench`].
    pub mix: Mix,
}

/// The traffic mixes `tapflow-gen --mix` offers (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mix {
    /// Ordinary flows, a 2% SYN flood and a port scan; five-tuples as configured.
    #[default]
    Bench,
    /// The bench mix's parts with one five-tuple per six packets.
    SessionHeavy,
    /// Ordinary flows plus a spoofed SYN flood of one-packet five-tuples, 24% of the packets.
    FloodHeavy,
}

impl Mix {
    pub const ALL: [Mix; 3] = [Mix::Bench, Mix::SessionHeavy, Mix::FloodHeavy];

    /// The name `--mix` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Bench => "bench",
            Mix::SessionHeavy => "session-heavy",
            Mix::FloodHeavy => "flood-heavy",
        }
    }

    /// The five-tuples this mix has in `packets` packets when none are asked for: one per 25
    /// packets (bench), one per six (session-heavy), the flood's plus one per 25 of the rest
    /// (flood-heavy).
    pub fn default_flows(self, packets: u64) -> u64 {
        let flows = match self {
            Mix::Bench => packets / 25,
            Mix::SessionHeavy => packets / 6,
            Mix::FloodHeavy => {
                let flood = flood_heavy_packets(packets);
                flood + (packets - flood) / 25
            }
        };
        flows.max(1)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        Mix::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mix {s:?}: bench, session-heavy or flood-heavy"))
    }
}

/// The flood-heavy mix's SYNs in `packets` packets: 24%, at most 2^24 (distinct sources).
fn flood_heavy_packets(packets: u64) -> u64 {
    (packets * 24 / 100).min(1 << 24)
}

impl Default for GenConfig {
    fn default() -> GenConfig {
        GenConfig {
            packets: 1_000_000,
            flows: 50_000,
            seed: 1,
            rate_pps: 100_000,
            active: 4096,
            start_ns: 1_704_067_200_000_000_000,
            mix: Mix::Bench,
        }
    }
}

/// Why a configuration cannot be generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("flows must be at least 1")]
    NoFlows,
    #[error("{0} flows is more than the generator can keep distinct (2^28)")]
    TooManyFlows(u64),
    #[error("{packets} packets cannot carry {flows} flows: they need at least {needed} packets")]
    TooFewPackets {
        packets: u64,
        flows: u64,
        needed: u64,
    },
    #[error("rate must be at least 1 packet per second")]
    ZeroRate,
    #[error("active must be at least 1")]
    ZeroActive,
}

/// How packets and five-tuples are shared out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub packets: u64,
    pub flows: u64,
    /// Ordinary flows: TCP, DNS, other UDP, ICMP echo.
    pub tcp_flows: u64,
    pub dns_flows: u64,
    pub udp_flows: u64,
    pub icmp_flows: u64,
    /// Packets of the ordinary flows.
    pub normal_packets: u64,
    /// Spoofed five-tuples of the SYN flood, and its SYNs.
    pub flood_tuples: u64,
    pub flood_packets: u64,
    /// Ports the scan probes (one five-tuple each), and its packets (probes and answers).
    pub scan_ports: u64,
    pub scan_packets: u64,
    /// Packet indices the flood is spread over.
    pub flood_window: (u64, u64),
}

impl Plan {
    pub fn new(cfg: &GenConfig) -> Result<Plan, PlanError> {
        let (n, f) = (cfg.packets, cfg.flows);
        if f == 0 {
            return Err(PlanError::NoFlows);
        }
        if f > 1 << 28 {
            return Err(PlanError::TooManyFlows(f));
        }
        if cfg.rate_pps == 0 {
            return Err(PlanError::ZeroRate);
        }
        if cfg.active == 0 {
            return Err(PlanError::ZeroActive);
        }
        let scan_ports = (n / 200).min(f / 40).min(1500);
        let (flood_tuples, flood_packets, flood_window) = if cfg.mix == Mix::FloodHeavy {
            // One SYN per spoofed five-tuple; the ordinary flows keep at least one tuple.
            let t = flood_heavy_packets(n).min(f.saturating_sub(scan_ports + 1));
            (t, t, (n / 10, n * 9 / 10))
        } else {
            // About 5% of the five-tuples: the scan up to 1500 of them, the flood the rest,
            // each spoofed tuple sending its SYN a few times to make ~2% of the packets.
            let t = (f * 5 / 100).saturating_sub(scan_ports).min(n / 50);
            (
                t,
                if t > 0 { n / 50 } else { 0 },
                (n * 45 / 100, n * 65 / 100),
            )
        };
        let scan_packets = Scan::packets(scan_ports as u32);
        let normal = f - scan_ports - flood_tuples;
        let dns_flows = normal * 8 / 95;
        let udp_flows = normal * 4 / 95;
        let icmp_flows = normal * 3 / 95;
        let tcp_flows = normal - dns_flows - udp_flows - icmp_flows;
        let plan = Plan {
            packets: n,
            flows: f,
            tcp_flows,
            dns_flows,
            udp_flows,
            icmp_flows,
            normal_packets: n.saturating_sub(flood_packets + scan_packets),
            flood_tuples,
            flood_packets,
            scan_ports,
            scan_packets,
            flood_window,
        };
        let needed = plan.min_normal_packets() + flood_packets + scan_packets;
        if n < needed {
            return Err(PlanError::TooFewPackets {
                packets: n,
                flows: f,
                needed,
            });
        }
        Ok(plan)
    }

    fn by_kind(&self) -> [u64; 4] {
        [
            self.tcp_flows,
            self.dns_flows,
            self.udp_flows,
            self.icmp_flows,
        ]
    }

    fn min_normal_packets(&self) -> u64 {
        Kind::ALL
            .iter()
            .zip(self.by_kind())
            .map(|(k, c)| k.min_packets() * c)
            .sum()
    }
}

/// One generated frame's metadata (the bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time, ns since the Unix epoch; never decreases.
    pub ts_ns: u64,
}

/// Yields the planned frames one by one into a caller's buffer.
pub struct Generator {
    plan: Plan,
    rng: Rng,
    key: u64,
    clock_ns: u64,
    mean_gap_ns: u64,
    tick: u64,
    flood: Flood,
    flood_left: u64,
    flood_start: u64,
    flood_end: u64,
    scan: Scan,
    scan_left: u64,
    scan_end: u64,
    spawner: Spawner,
    slots: Vec<Option<Flow>>,
    weights: Fenwick,
    pattern: Vec<u8>,
    scratch: Vec<u8>,
}

impl Generator {
    pub fn new(cfg: &GenConfig) -> Result<Generator, PlanError> {
        let plan = Plan::new(cfg)?;
        let mut rng = Rng::new(cfg.seed);
        let key = rng.next_u64();
        let mut pattern_rng = Rng::new(mix64(cfg.seed ^ 0x7061_7474_6572_6e00));
        let pattern = (0..2048).map(|_| pattern_rng.next_u64() as u8).collect();
        let scan = Scan::new(plan.scan_ports as u32, &mut rng);
        let n = plan.packets;
        let slots_len = cfg.active.min(plan.flows as usize).max(1);
        let mut g = Generator {
            rng,
            key,
            clock_ns: cfg.start_ns,
            mean_gap_ns: (1_000_000_000 / cfg.rate_pps).max(1),
            tick: 0,
            flood: Flood::new(plan.flood_tuples, key),
            flood_left: plan.flood_packets,
            flood_start: plan.flood_window.0,
            flood_end: plan.flood_window.1,
            scan,
            scan_left: plan.scan_packets,
            scan_end: n * 35 / 100,
            spawner: Spawner::new(&plan),
            slots: (0..slots_len).map(|_| None).collect(),
            weights: Fenwick::new(slots_len),
            pattern,
            scratch: Vec::with_capacity(512),
            plan,
        };
        for slot in 0..slots_len {
            g.refill(slot);
        }
        Ok(g)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Clears `frame` and writes the next frame into it; `None` once all packets are out.
    pub fn next_packet(&mut self, frame: &mut Vec<u8>) -> Option<Packet> {
        let n = self.plan.packets;
        let i = self.tick;
        if i >= n {
            return None;
        }
        frame.clear();
        let ts_ns = self.clock_ns;
        self.clock_ns += self.rng.below(2 * self.mean_gap_ns + 1);
        self.tick += 1;
        if due(
            &mut self.rng,
            i,
            self.flood_start,
            self.flood_end,
            self.flood_left,
        ) {
            self.flood.emit(&mut self.rng, frame);
            self.flood_left -= 1;
        } else if due(
            &mut self.rng,
            i,
            n * 15 / 100,
            self.scan_end,
            self.scan_left,
        ) {
            self.scan.emit(&mut self.rng, frame);
            self.scan_left -= 1;
        } else {
            let total = self.weights.total;
            let slot = self.weights.find(self.rng.below(total));
            let mut cx = Cx {
                rng: &mut self.rng,
                pattern: &self.pattern,
                scratch: &mut self.scratch,
            };
            if let Some(flow) = &mut self.slots[slot] {
                flow.emit(&mut cx, frame);
                self.weights.add(slot, -1);
                if flow.remaining() == 0 {
                    self.weights.add(slot, -(WEIGHT_BIAS as i64));
                    self.slots[slot] = None;
                    self.refill(slot);
                }
            }
        }
        Some(Packet { ts_ns })
    }

    /// Starts the next ordinary flow in `slot`, if any are left.
    fn refill(&mut self, slot: usize) {
        if let Some((kind, index, packets)) = self.spawner.next(&mut self.rng) {
            let v6 = self.rng.chance(0.05);
            let flow = Flow::new(kind, index, packets as u32, v6, self.key, &mut self.rng);
            self.weights.add(slot, (packets + WEIGHT_BIAS) as i64);
            self.slots[slot] = Some(flow);
        }
    }
}

/// Added to each flow's packets-left when picking, so short flows are not starved.
const WEIGHT_BIAS: u64 = 2;

/// Whether packet `i` belongs to a stream that has `left` packets to spread over `start..end`:
/// a random merge that places exactly `left` of them by `end`.
fn due(rng: &mut Rng, i: u64, start: u64, end: u64, left: u64) -> bool {
    left > 0 && i >= start && (i >= end || rng.below(end - i) < left)
}

/// Decides the kind, index and length of each ordinary flow so that lengths add up to the
/// planned packets exactly while looking natural (many short flows, some long ones).
struct Spawner {
    kinds_left: [u64; 4],
    budget: u64,
    min_left: u64,
    next_index: u64,
    other_sum: u64,
    other_count: u64,
}

impl Spawner {
    fn new(plan: &Plan) -> Spawner {
        Spawner {
            kinds_left: plan.by_kind(),
            budget: plan.normal_packets,
            min_left: plan.min_normal_packets(),
            next_index: 0,
            other_sum: 10,
            other_count: 1,
        }
    }

    fn next(&mut self, rng: &mut Rng) -> Option<(Kind, u64, u64)> {
        let flows_left: u64 = self.kinds_left.iter().sum();
        if flows_left == 0 {
            return None;
        }
        let mut r = rng.below(flows_left);
        let mut k = 0;
        while r >= self.kinds_left[k] {
            r -= self.kinds_left[k];
            k += 1;
        }
        let kind = Kind::ALL[k];
        let min = kind.min_packets();
        let max = self.budget - (self.min_left - min);
        let packets = if flows_left == 1 {
            self.budget
        } else if kind == Kind::Tcp {
            let others = flows_left - self.kinds_left[0];
            let others_need = others * self.other_sum / self.other_count;
            let mean = (self.budget.saturating_sub(others_need) / self.kinds_left[0]).max(min);
            let x = match rng.below(100) {
                0..=83 => rng.unit(),
                84..=98 => 6.0 * rng.unit(),
                _ => 26.0 * rng.unit(),
            };
            min + ((mean - min) as f64 * x) as u64
        } else {
            let p = Flow::natural_packets(kind, rng);
            self.other_sum += p;
            self.other_count += 1;
            p
        }
        .clamp(min, max);
        self.kinds_left[k] -= 1;
        self.budget -= packets;
        self.min_left -= min;
        let index = self.next_index;
        self.next_index += 1;
        Some((kind, index, packets))
    }
}

/// A Fenwick tree of slot weights: weighted random choice of a slot in O(log slots).
struct Fenwick {
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn new(len: usize) -> Fenwick {
        Fenwick {
            tree: vec![0; len + 1],
            total: 0,
        }
    }

    fn add(&mut self, slot: usize, delta: i64) {
        self.total = self.total.wrapping_add(delta as u64);
        let mut i = slot + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add(delta as u64);
            i += i & i.wrapping_neg();
        }
    }

    /// The slot whose weight range contains `target` (`target < total`).
    fn find(&self, mut target: u64) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut step = n.checked_ilog2().map_or(0, |b| 1usize << b);
        while step > 0 {
            if pos + step <= n && self.tree[pos + step] <= target {
                pos += step;
                target -= self.tree[pos];
            }
            step >>= 1;
        }
        pos.min(n - 1)
    }
}
