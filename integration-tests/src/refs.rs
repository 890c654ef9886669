//! Independent references for the latency of each session (issue 15), and tapflow's conn log
//! read the same way: tshark's per-packet dissection (`tcp.analysis.initial_rtt`, flags,
//! raw sequence numbers), Argus's flow records (`argus -r`, then `ra -s synack ackdat`) and
//! nfstream's inter-arrival statistics (`statistical_analysis=True`). Each tool runs on a
//! capture; its output is parsed into per-flow values keyed by endpoints. The comparisons are
//! in `tests/latency_refs.rs`.
//!
//! The tools are installed by `deploy/install-deps.sh --test`; a missing one fails the test that
//! needs it, naming the script (CI installs them).
//!
//! Times are integer nanoseconds parsed exactly from the tools' decimal text (no float).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// TCP flag bits as tshark's `tcp.flags` prints them.
pub mod flag {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const ACK: u16 = 0x10;
    pub const ECE: u16 = 0x40;
    pub const CWR: u16 = 0x80;
}

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct End {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

fn end(addr: &str, port: &str) -> Option<End> {
    Some(End {
        addr: addr.trim().parse().ok()?,
        port: port.trim().parse().ok()?,
    })
}

/// Decimal seconds ("1324071333.493287000", "0.145559", "12") as nanoseconds, exactly (digits
/// past the ninth decimal are dropped).
pub fn secs_ns(text: &str) -> Option<i64> {
    let text = text.trim();
    let (neg, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(frac) {
        return None;
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut f: i64 = 0;
    for i in 0..9 {
        f = f * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    let ns = w.checked_mul(1_000_000_000)?.checked_add(f)?;
    Some(if neg { -ns } else { ns })
}

/// Runs a reference tool; its absence fails with the way to install it.
fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program).args(args).output();
    assert!(
        out.is_ok(),
        "cannot run `{program}` ({out:?}): install the reference tools with deploy/install-deps.sh --test"
    );
    out.expect("run a reference tool")
}

// ---------------------------------------------------------------- tshark

/// The fields asked of tshark, one tab-separated line per TCP packet (innermost headers).
pub const TSHARK_FIELDS: &[&str] = &[
    "tcp.stream",
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.analysis.initial_rtt",
];

/// One TCP packet as tshark dissects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsharkPacket {
    pub stream: u64,
    pub ts_ns: i64,
    pub src: End,
    pub dst: End,
    pub flags: u16,
    pub seq: u32,
    pub ack: u32,
    pub initial_rtt_ns: Option<i64>,
}

impl TsharkPacket {
    /// A SYN without ACK.
    pub fn is_syn(&self) -> bool {
        self.flags & (flag::SYN | flag::ACK) == flag::SYN
    }

    pub fn is_synack(&self) -> bool {
        self.flags & (flag::SYN | flag::ACK) == flag::SYN | flag::ACK
    }
}

/// Every TCP packet of `pcap` (not those quoted in ICMP errors), in capture order.
pub fn tshark_packets(pcap: &Path) -> Vec<TsharkPacket> {
    let mut args: Vec<&str> = vec!["-n", "-T", "fields", "-E", "occurrence=l"];
    for f in TSHARK_FIELDS {
        args.extend(["-e", f]);
    }
    let path = pcap.display().to_string();
    args.extend(["-Y", "tcp && !icmp && !icmpv6", "-r", &path]);
    let out = run("tshark", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark on {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets = parse_tshark(&text);
    assert!(packets.is_ok(), "tshark on {path}: {packets:?}");
    packets.expect("parse tshark's fields")
}

/// Parses [`TSHARK_FIELDS`] lines; a malformed line is an error naming it.
pub fn parse_tshark(text: &str) -> Result<Vec<TsharkPacket>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_tshark_line(l).ok_or_else(|| format!("bad tshark line: {l:?}")))
        .collect()
}

fn parse_tshark_line(line: &str) -> Option<TsharkPacket> {
    let c: Vec<&str> = line.split('\t').collect();
    if c.len() != TSHARK_FIELDS.len() {
        return None;
    }
    let addr = |v4: usize, v6: usize| if c[v6].is_empty() { c[v4] } else { c[v6] };
    Some(TsharkPacket {
        stream: c[0].parse().ok()?,
        ts_ns: secs_ns(c[1])?,
        src: end(addr(2, 3), c[4])?,
        dst: end(addr(5, 6), c[7])?,
        flags: u16::from_str_radix(c[8].trim_start_matches("0x"), 16).ok()?,
        seq: c[9].parse().ok()?,
        ack: c[10].parse().ok()?,
        initial_rtt_ns: if c[11].is_empty() {
            None
        } else {
            Some(secs_ns(c[11])?)
        },
    })
}

/// One tshark TCP stream (`tcp.stream`): its packets in capture order.
#[derive(Clone, Debug)]
pub struct TsharkStream {
    pub stream: u64,
    pub packets: Vec<TsharkPacket>,
}

impl TsharkStream {
    /// The SYNs without ACK.
    pub fn syns(&self) -> Vec<&TsharkPacket> {
        self.packets.iter().filter(|p| p.is_syn()).collect()
    }

    pub fn has_synack(&self) -> bool {
        self.packets.iter().any(TsharkPacket::is_synack)
    }

    /// tshark's `tcp.analysis.initial_rtt` (the same on every packet that carries it).
    pub fn initial_rtt_ns(&self) -> Option<i64> {
        self.packets.iter().find_map(|p| p.initial_rtt_ns)
    }
}

/// Groups packets by stream, in order of each stream's first packet.
pub fn tshark_streams(packets: Vec<TsharkPacket>) -> Vec<TsharkStream> {
    let mut by: BTreeMap<u64, Vec<TsharkPacket>> = BTreeMap::new();
    for p in packets {
        by.entry(p.stream).or_default().push(p);
    }
    by.into_iter()
        .map(|(stream, packets)| TsharkStream { stream, packets })
        .collect()
}

/// The issue's definitions, read as Argus computes `synack` and `ackdat`, applied to a
/// stream's packets: `synack` from the last SYN before the first SYN/ACK from the other side
/// that acknowledges that SYN's sequence number + 1; `ackdat` from the last such SYN/ACK
/// before the first non-SYN ACK (or RST) from the SYN's sender after it, defined when that
/// packet is no RST and acknowledges the SYN/ACK's sequence number + 1 (a SYN/ACK repeated for a
/// retransmitted SYN restarts it, as in Argus, where it is the SYN/ACK sender's last packet).
/// Nothing when both sides send a SYN without ACK (simultaneous open, split handshake). Used
/// only to explain where a reference differs.
pub fn handshake_model(stream: &TsharkStream) -> (Option<i64>, Option<i64>) {
    let syns = stream.syns();
    if syns.iter().any(|s| s.src != syns[0].src) {
        return (None, None);
    }
    let mut last_syn: Option<&TsharkPacket> = None;
    let mut answer = None;
    for (i, p) in stream.packets.iter().enumerate() {
        if p.is_syn() {
            last_syn = Some(p);
        } else if let Some(syn) = last_syn.filter(|s| p.is_synack() && p.src == s.dst) {
            if p.ack == syn.seq.wrapping_add(1) {
                answer = Some((syn, i));
                break;
            }
        }
    }
    let Some((syn, k)) = answer else {
        return (None, None);
    };
    let first = &stream.packets[k];
    let mut synack = first;
    let mut ackdat = None;
    for p in &stream.packets[k + 1..] {
        if p.is_synack() && p.src == first.src && p.seq == first.seq {
            synack = p;
        } else if p.src == syn.src
            && p.flags & flag::SYN == 0
            && p.flags & (flag::ACK | flag::RST) != 0
        {
            let acks = p.flags & (flag::ACK | flag::RST) == flag::ACK;
            ackdat =
                (acks && p.ack == synack.seq.wrapping_add(1)).then_some(p.ts_ns - synack.ts_ns);
            break;
        }
    }
    (Some(first.ts_ns - syn.ts_ns), ackdat)
}

// ---------------------------------------------------------------- Argus

/// One Argus flow record (TCP), times in nanoseconds (Argus keeps microseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgusFlow {
    pub start_ns: i64,
    pub last_ns: i64,
    pub src: End,
    pub dst: End,
    /// `None` where Argus prints 0 (it does for "not measured").
    pub synack_ns: Option<i64>,
    pub ackdat_ns: Option<i64>,
}

/// The fields asked of `ra`.
pub const RA_FIELDS: &[&str] = &[
    "stime", "ltime", "saddr", "sport", "daddr", "dport", "proto", "synack", "ackdat",
];

/// Argus's TCP flow records of `pcap` (`argus -r pcap -w tmp`, then `ra`), or Argus's own
/// message when it cannot read the capture (a link type it does not know).
pub fn argus_flows(pcap: &Path, dir: &Path) -> Result<Vec<ArgusFlow>, String> {
    let file = dir.join(format!(
        "{}.argus",
        pcap.file_name().map_or("x".into(), |n| n.to_string_lossy())
    ));
    let (p, f) = (pcap.display().to_string(), file.display().to_string());
    // `argus -w` appends to an existing file.
    let _ = std::fs::remove_file(&file);
    let out = run("argus", &["-r", &p, "-w", &f]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !file.is_file() || err.contains("ArgusError") {
        return Err(err);
    }
    let mut args = vec!["-r", &f, "-n", "-u", "-p", "6", "-c", ",", "-s"];
    args.extend(RA_FIELDS);
    args.extend(["-", "tcp"]);
    let out = run("ra", &args);
    // `ra` exits 1, saying nothing, when its filter matches no record.
    assert!(
        out.status.success() || (out.stdout.is_empty() && out.stderr.is_empty()),
        "ra on {f}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    parse_ra(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ra -c , -s` [`RA_FIELDS`] output (a header line first).
pub fn parse_ra(text: &str) -> Result<Vec<ArgusFlow>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("StartTime"))
        .map(|l| parse_ra_line(l).ok_or_else(|| format!("bad ra line: {l:?}")))
        .collect()
}

fn parse_ra_line(line: &str) -> Option<ArgusFlow> {
    let c: Vec<&str> = line.split(',').map(str::trim).collect();
    if c.len() != RA_FIELDS.len() || c[6] != "tcp" {
        return None;
    }
    let nonzero = |s: &str| secs_ns(s).map(|v| (v != 0).then_some(v));
    Some(ArgusFlow {
        start_ns: secs_ns(c[0])?,
        last_ns: secs_ns(c[1])?,
        src: end(c[2], c[3])?,
        dst: end(c[4], c[5])?,
        synack_ns: nonzero(c[7])?,
        ackdat_ns: nonzero(c[8])?,
    })
}

// ---------------------------------------------------------------- nfstream

/// nfstream's inter-arrival statistics of one direction, in milliseconds as it reports them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Piat {
    pub min: f64,
    pub mean: f64,
    pub stddev: f64,
    pub max: f64,
}

/// One nfstream flow; index 0 is `src2dst` (the first packet's sender), 1 `dst2src`.
#[derive(Clone, Debug, PartialEq)]
pub struct NfFlow {
    pub proto: u8,
    pub src: End,
    pub dst: End,
    pub vlan: u16,
    pub first_ms: i64,
    pub last_ms: i64,
    pub pkts: [u64; 2],
    pub piat: [Piat; 2],
}

/// The Python that has nfstream: `$TAPFLOW_NFSTREAM_PYTHON`, the venv that
/// `deploy/install-deps.sh` makes (under `$XDG_CACHE_HOME` or `~/.cache`), or `python3`; fails, naming the script, when none imports it.
pub fn nfstream_python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default();
    let candidates = [
        std::env::var_os("TAPFLOW_NFSTREAM_PYTHON").map(PathBuf::from),
        Some(cache.join("tapflow/nfstream-venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    let found = candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import nfstream"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        found.is_some(),
        "no Python with nfstream: install it with deploy/install-deps.sh --test"
    );
    found.expect("a Python with nfstream")
}

/// The script run by [`nfstream_flows`]: one line per flow, the capture's path first.
pub const NFSTREAM_SCRIPT: &str = r#"
import sys
from nfstream import NFStreamer
cols = ["protocol", "src_ip", "src_port", "dst_ip", "dst_port", "vlan_id",
        "bidirectional_first_seen_ms", "bidirectional_last_seen_ms",
        "src2dst_packets", "dst2src_packets"]
for d in ("src2dst", "dst2src"):
    cols += [d + "_min_piat_ms", d + "_mean_piat_ms", d + "_stddev_piat_ms", d + "_max_piat_ms"]
for path in sys.argv[1:]:
    s = NFStreamer(source=path, statistical_analysis=True, decode_tunnels=True, n_meters=1,
                   idle_timeout=120, active_timeout=1800)
    for f in s:
        print("\t".join([path] + [repr(getattr(f, c)) if isinstance(getattr(f, c), float)
                                  else str(getattr(f, c)) for c in cols]))
"#;

/// nfstream's flows of each capture (one Python process for all), by the capture's path.
pub fn nfstream_flows(pcaps: &[PathBuf]) -> BTreeMap<String, Vec<NfFlow>> {
    let python = nfstream_python();
    let mut cmd = Command::new(&python);
    cmd.args(["-c", NFSTREAM_SCRIPT]).args(pcaps);
    let out = cmd.output().expect("run nfstream");
    assert!(
        out.status.success(),
        "nfstream ({}): {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let flows = parse_nfstream(&String::from_utf8_lossy(&out.stdout));
    assert!(flows.is_ok(), "{flows:?}");
    flows.expect("parse nfstream's flows")
}

/// Parses [`NFSTREAM_SCRIPT`]'s lines.
pub fn parse_nfstream(text: &str) -> Result<BTreeMap<String, Vec<NfFlow>>, String> {
    let mut out: BTreeMap<String, Vec<NfFlow>> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = l.split('\t').collect();
        let flow = parse_nf_line(&c).ok_or_else(|| format!("bad nfstream line: {l:?}"))?;
        out.entry(c[0].to_owned()).or_default().push(flow);
    }
    Ok(out)
}

fn parse_nf_line(c: &[&str]) -> Option<NfFlow> {
    if c.len() != 19 {
        return None;
    }
    let f = |i: usize| c[i].parse::<f64>().ok();
    let piat = |i: usize| {
        Some(Piat {
            min: f(i)?,
            mean: f(i + 1)?,
            stddev: f(i + 2)?,
            max: f(i + 3)?,
        })
    };
    Some(NfFlow {
        proto: c[1].parse().ok()?,
        src: end(c[2], c[3])?,
        dst: end(c[4], c[5])?,
        vlan: c[6].parse().ok()?,
        first_ms: c[7].parse().ok()?,
        last_ms: c[8].parse().ok()?,
        pkts: [c[9].parse().ok()?, c[10].parse().ok()?],
        piat: [piat(11)?, piat(15)?],
    })
}

// ---------------------------------------------------------------- tapflow's conn log

/// Inter-arrival statistics of one direction from the conn log, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iat {
    pub min: i64,
    pub mean: i64,
    pub max: i64,
    pub stddev: Option<i64>,
}

/// One conn-log record, the fields the comparisons use (times in nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub ts_ns: i64,
    pub duration_ns: i64,
    pub proto: u8,
    pub orig: End,
    pub resp: End,
    pub vlan: u16,
    pub pkts: [u64; 2],
    pub synack_ns: Option<i64>,
    pub ackdat_ns: Option<i64>,
    pub rtt_ns: Option<i64>,
    /// `orig_iat_*`, `resp_iat_*`.
    pub iat: [Option<Iat>; 2],
}

/// A conn-log time (seconds with 6 decimals) in nanoseconds. serde_json prints small numbers
/// with an exponent (`6e-6`), so this goes through `f64`: microseconds since the epoch stay
/// below 2^53, exact after rounding.
fn ns(v: &Value, k: &str) -> Option<i64> {
    let s = v.get(k)?.as_f64()?;
    Some((s * 1e6).round() as i64 * 1_000)
}

impl Conn {
    /// A conn-log line's record; `None` for a line without endpoints or time.
    pub fn from_json(v: &Value) -> Option<Conn> {
        let proto = v.get("ip_proto")?.as_u64()? as u8;
        let port = |k: &str| v.get(k)?.as_u64().map(|p| p as u16);
        let iat = |d: &str| {
            Some(Iat {
                min: ns(v, &format!("{d}_iat_min"))?,
                mean: ns(v, &format!("{d}_iat_mean"))?,
                max: ns(v, &format!("{d}_iat_max"))?,
                stddev: ns(v, &format!("{d}_iat_stddev")),
            })
        };
        Some(Conn {
            ts_ns: ns(v, "ts")?,
            duration_ns: ns(v, "duration").unwrap_or(0),
            proto,
            orig: End {
                addr: v.get("id.orig_h")?.as_str()?.parse().ok()?,
                port: port("id.orig_p")?,
            },
            resp: End {
                addr: v.get("id.resp_h")?.as_str()?.parse().ok()?,
                port: port("id.resp_p")?,
            },
            vlan: v.get("vlan").and_then(Value::as_u64).unwrap_or(0) as u16,
            pkts: [v.get("orig_pkts")?.as_u64()?, v.get("resp_pkts")?.as_u64()?],
            synack_ns: ns(v, "tcp_synack"),
            ackdat_ns: ns(v, "tcp_ackdat"),
            rtt_ns: ns(v, "tcp_rtt"),
            iat: [iat("orig"), iat("resp")],
        })
    }

    /// Every record of a conn log (JSON lines); a line that is not a record fails.
    pub fn parse_log(log: &str) -> Vec<Conn> {
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let c = serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| Conn::from_json(&v));
                assert!(c.is_some(), "not a conn record: {l}");
                c.expect("a conn record")
            })
            .collect()
    }

    /// Both ends are `a` and `b`, either way round.
    pub fn joins(&self, a: &End, b: &End) -> bool {
        (self.orig == *a && self.resp == *b) || (self.orig == *b && self.resp == *a)
    }

    /// `t` within the record's first and last packet, with `slack_ns` either side.
    pub fn covers(&self, t: i64, slack_ns: i64) -> bool {
        t >= self.ts_ns - slack_ns && t <= self.ts_ns + self.duration_ns + slack_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tshark 4.0.17 on tcpdump-tcp-handshake-nano.pcap (nanosecond times) and one IPv6
    /// handshake of chrissanders-http_ip4and6.pcapng, fields as [`tshark_packets`] asks.
    const TSHARK: &str = "\
0\t1418145369.924505488\t131.155.215.69\t\t46656\t137.116.81.94\t\t80\t0x0002\t797190859\t0\t
0\t1418145370.052027262\t137.116.81.94\t\t80\t131.155.215.69\t\t46656\t0x0012\t3078856592\t797190860\t
0\t1418145370.052115157\t131.155.215.69\t\t46656\t137.116.81.94\t\t80\t0x0010\t797190860\t3078856593\t0.127609669
1\t1448215096.399450000\t\t2001:db8:1:2::1002\t35023\t\t2001:db8:1:2::1000\t80\t0x0002\t3425944284\t0\t
1\t1448215096.399481000\t\t2001:db8:1:2::1000\t80\t\t2001:db8:1:2::1002\t35023\t0x0012\t2789029319\t3425944285\t
1\t1448215096.399675000\t\t2001:db8:1:2::1002\t35023\t\t2001:db8:1:2::1000\t80\t0x0010\t3425944285\t2789029320\t0.000225000
";

    #[test]
    fn tshark_streams_and_the_handshake_model() {
        let packets = parse_tshark(TSHARK).expect("parse tshark's output");
        let streams = tshark_streams(packets);
        assert_eq!(streams.len(), 2);
        let nano = &streams[0];
        assert_eq!(nano.syns().len(), 1);
        assert!(nano.has_synack());
        assert_eq!(nano.initial_rtt_ns(), Some(127_609_669));
        assert_eq!(nano.packets[0].ts_ns, 1_418_145_369_924_505_488);
        // 052027262 - 924505488 and 052115157 - 052027262: the sum is tshark's figure.
        assert_eq!(handshake_model(nano), (Some(127_521_774), Some(87_895)));
        let v6 = &streams[1];
        assert_eq!(v6.packets[0].src.to_string(), "[2001:db8:1:2::1002]:35023");
        assert_eq!(v6.packets[1].flags, flag::SYN | flag::ACK);
        assert_eq!(handshake_model(v6), (Some(31_000), Some(194_000)));
        assert_eq!(v6.initial_rtt_ns(), Some(225_000));
        assert!(parse_tshark("0\tx\n").is_err());
    }

    #[test]
    fn handshake_model_needs_the_acknowledgements() {
        let mut packets = parse_tshark(TSHARK).expect("parse tshark's output");
        packets.truncate(3);
        packets[2].ack = 1; // the ACK does not acknowledge the SYN/ACK
        let s = tshark_streams(packets.clone()).remove(0);
        assert_eq!(handshake_model(&s), (Some(127_521_774), None));
        packets[1].ack = 5; // the SYN/ACK does not answer the SYN
        let s = tshark_streams(packets).remove(0);
        assert_eq!(handshake_model(&s), (None, None));
    }

    /// tshark on suricata-tcp-split-handshake-4whs.pcap: both sides send a SYN.
    const SPLIT: &str = "\
0\t1716816844.443188000\t1.1.1.1\t\t12345\t2.2.2.2\t\t80\t0x0002\t1000\t0\t
0\t1716816844.443763000\t2.2.2.2\t\t80\t1.1.1.1\t\t12345\t0x0002\t3000\t0\t
0\t1716816844.444297000\t1.1.1.1\t\t12345\t2.2.2.2\t\t80\t0x0012\t1000\t3001\t
0\t1716816844.444828000\t2.2.2.2\t\t80\t1.1.1.1\t\t12345\t0x0010\t3001\t1001\t0.001065000
";

    #[test]
    fn handshake_model_split_and_retransmitted_syn() {
        let split = tshark_streams(parse_tshark(SPLIT).expect("parse")).remove(0);
        assert_eq!(split.syns().len(), 2);
        assert_eq!(handshake_model(&split), (None, None));
        // The nano handshake with its SYN sent twice: measured from the last one.
        let mut packets = parse_tshark(TSHARK).expect("parse tshark's output");
        packets.truncate(3);
        let mut again = packets[0].clone();
        again.ts_ns += 1_000_000;
        packets.insert(1, again);
        let s = tshark_streams(packets).remove(0);
        assert_eq!(handshake_model(&s), (Some(126_521_774), Some(87_895)));
        // SYN, SYN/ACK, SYN again, SYN/ACK again, ACK (zeek-ssh.pcap stream 18): `synack`
        // from the first exchange, `ackdat` from the SYN/ACK the ACK follows, as Argus.
        let mut p = parse_tshark(TSHARK).expect("parse tshark's output");
        p.truncate(3);
        let (mut syn2, mut synack2) = (p[0].clone(), p[1].clone());
        syn2.ts_ns = p[1].ts_ns + 100_000_000;
        synack2.ts_ns = syn2.ts_ns + 40_000;
        p[2].ts_ns = synack2.ts_ns + 995_000;
        p.splice(2..2, [syn2, synack2]);
        let s = tshark_streams(p).remove(0);
        assert_eq!(handshake_model(&s), (Some(127_521_774), Some(995_000)));
    }

    /// `ra -n -u -p 6 -c , -s` [`RA_FIELDS`] over `argus -r` of the same two captures
    /// (argus-client 3.0.8.2): Argus keeps microseconds.
    const RA: &str = "\
StartTime,LastTime,SrcAddr,Sport,DstAddr,Dport,Proto,SynAck,AckDat
1418145369.924505,1418145370.052115,131.155.215.69,46656,137.116.81.94,80,tcp,0.127522,0.000088
1448215096.399450,1448215096.404047,2001:db8:1:2::1002,35023,2001:db8:1:2::1000,80,tcp,0.000031,0.000194
1055289978.756932,1055289981.914834,66.59.111.190,40264,172.28.2.3,22,tcp,0.000000,0.000000
";

    #[test]
    fn ra_records() {
        let flows = parse_ra(RA).expect("parse ra's output");
        assert_eq!(flows.len(), 3);
        assert_eq!(flows[0].synack_ns, Some(127_522_000));
        assert_eq!(flows[0].ackdat_ns, Some(88_000));
        assert_eq!(flows[0].start_ns, 1_418_145_369_924_505_000);
        assert_eq!(flows[1].dst.to_string(), "[2001:db8:1:2::1000]:80");
        assert_eq!((flows[2].synack_ns, flows[2].ackdat_ns), (None, None));
        assert!(parse_ra("1,2,3\n").is_err());
    }

    /// [`NFSTREAM_SCRIPT`] with nfstream 6.6.0 on the same two captures.
    const NF: &str = "\
a.pcap\t6\t131.155.215.69\t46656\t137.116.81.94\t80\t0\t1418145369924\t1418145370052\t2\t1\t128\t128.0\t0.0\t128\t0\t0.0\t0.0\t0
b.pcapng\t6\t2001:db8:1:2::1002\t35023\t2001:db8:1:2::1000\t80\t0\t1448215096399\t1448215096404\t6\t4\t0\t1.0\t1.224744871391589\t3\t0\t1.3333333333333335\t1.5275252316519465\t3
";

    #[test]
    fn nfstream_flows_by_capture() {
        let flows = parse_nfstream(NF).expect("parse nfstream's output");
        assert_eq!(flows.len(), 2);
        let a = &flows["a.pcap"][0];
        assert_eq!(
            (a.proto, a.pkts, a.first_ms),
            (6, [2, 1], 1_418_145_369_924)
        );
        assert_eq!(a.piat[0].max, 128.0);
        let b = &flows["b.pcapng"][0];
        assert_eq!(b.piat[1].stddev, 1.5275252316519465);
        assert!(parse_nfstream("a\t6\n").is_err());
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(
            secs_ns("1418145369.924505488"),
            Some(1_418_145_369_924_505_488)
        );
        assert_eq!(secs_ns("0.000088"), Some(88_000));
        assert_eq!(secs_ns("12"), Some(12_000_000_000));
        assert_eq!(secs_ns("-0.5"), Some(-500_000_000));
        for bad in ["", ".", "1e5", "0x1", "1.2.3"] {
            assert_eq!(secs_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn conn_records_read_the_timing_fields() {
        let line = r#"{"ts":1418145369.924505,"uid":"C1","id.orig_h":"131.155.215.69","id.orig_p":46656,"id.resp_h":"137.116.81.94","id.resp_p":80,"proto":"tcp","duration":0.12761,"conn_state":"S1","orig_pkts":2,"orig_ip_bytes":112,"resp_pkts":1,"resp_ip_bytes":60,"ip_proto":6,"community_id":"x","tcp_synack":0.127521,"tcp_ackdat":0.000006,"tcp_rtt":0.127609,"orig_iat_min":0.000009,"orig_iat_mean":0.12761,"orig_iat_max":0.12761}"#;
        let c = Conn::parse_log(line).remove(0);
        assert_eq!((c.synack_ns, c.ackdat_ns), (Some(127_521_000), Some(6_000)));
        assert_eq!(c.rtt_ns, Some(127_609_000));
        assert_eq!(c.iat[0].map(|i| (i.min, i.stddev)), Some((9_000, None)));
        assert_eq!(c.iat[1], None);
        assert!(c.covers(1_418_145_370_052_115_157, 2_000));
        assert!(!c.covers(1_418_145_370_052_117_157, 1_000));
    }
}
