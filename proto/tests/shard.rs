//! Flow affinity (DESIGN invariant 1), held from outside the crate:
//! - both directions of any five-tuple, and ICMP request/reply pairs, give one `FlowKey` and one
//!   shard for every N;
//! - `flow_hash` and the shard assignments of a fixed list of keys never change (golden file
//!   `tests/golden/shard.txt`; refresh with `UPDATE_GOLDEN=1 cargo test -p tapflow-proto --test
//!   shard` and review the diff);
//! - going from n to n + 1 shards moves about 1 / (n + 1) of the keys, all to the new shard, and
//!   keys spread evenly over the shards.

mod common;
use common::SplitMix64;
use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;
use tapflow_proto::key::ip_proto;
use tapflow_proto::shard::{shard_of_hash, HASH_MULTIPLIER, HASH_SEED};
use tapflow_proto::{flow_hash, shard, Addr, Direction, FiveTuple, FlowKey};

/// Largest processor count the properties check.
const MAX_SHARDS: u16 = 64;

/// Request/reply ICMPv4 type pairs Zeek pairs up (`ICMP4_counterpart`).
const ICMP4_PAIRS: [(u8, u8); 5] = [(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)];
/// Request/reply ICMPv6 type pairs Zeek pairs up (`ICMP6_counterpart`).
const ICMP6_PAIRS: [(u8, u8); 6] = [
    (128, 129),
    (133, 134),
    (135, 136),
    (130, 131),
    (139, 140),
    (144, 145),
];

// ---------------------------------------------------------------------------------------------
// (a) both directions agree

fn arb_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(Addr::from_v4),
        any::<[u8; 16]>().prop_map(Addr::from_v6),
    ]
}

/// Any five-tuple; a third of them talk to themselves (same address, maybe same port) so the
/// tie-breaking on ports is exercised too.
fn arb_tuple() -> impl Strategy<Value = FiveTuple> {
    (
        any::<u8>(),
        arb_addr(),
        arb_addr(),
        any::<u16>(),
        any::<u16>(),
        0..3u8,
    )
        .prop_map(|(proto, src, dst, sport, dport, shape)| {
            let dst = if shape == 0 { src } else { dst };
            let dport = if shape == 0 && sport & 1 == 0 {
                sport
            } else {
                dport
            };
            FiveTuple {
                proto,
                src,
                dst,
                sport,
                dport,
            }
        })
}

fn reversed(t: &FiveTuple) -> FiveTuple {
    FiveTuple {
        proto: t.proto,
        src: t.dst,
        dst: t.src,
        sport: t.dport,
        dport: t.sport,
    }
}

/// `there` and `back` are two directions of one flow: one key, opposite directions (unless the
/// flow talks to itself on one port), each direction recoverable from the key, one shard.
fn check_one_flow(there: &FiveTuple, back: &FiveTuple, vlan: u16) -> Result<(), TestCaseError> {
    let (k1, d1) = there.key(vlan);
    let (k2, d2) = back.key(vlan);
    prop_assert_eq!(k1, k2, "{:?} and {:?} must share a key", there, back);
    prop_assert_eq!(k1.vlan, vlan);
    prop_assert!(
        (k1.lo, k1.lo_port) <= (k1.hi, k1.hi_port),
        "key {:?} is not canonical",
        k1
    );
    if (there.src, there.sport) == (there.dst, there.dport) {
        prop_assert_eq!(d1, Direction::Forward);
    } else {
        prop_assert_ne!(d1, d2, "{:?} and {:?} travel opposite ways", there, back);
    }
    prop_assert_eq!(&k1.tuple(d1), there);
    prop_assert_eq!(&k2.tuple(d2), back);
    prop_assert_eq!(flow_hash(&k1), flow_hash(&k2));
    for n in 1..=MAX_SHARDS {
        let s = shard(&k1, n);
        prop_assert!(s < n, "shard {} out of range for n = {}", s, n);
        prop_assert_eq!(s, shard(&k2, n), "n = {}", n);
    }
    Ok(())
}

fn arb_icmp_pair() -> impl Strategy<Value = (FiveTuple, FiveTuple)> {
    (
        any::<bool>(),
        arb_addr(),
        arb_addr(),
        0..ICMP6_PAIRS.len(),
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(v6, a, b, pair, swap, code_a, code_b)| {
            let (proto, (req, rep)) = if v6 {
                (ip_proto::ICMPV6, ICMP6_PAIRS[pair])
            } else {
                (ip_proto::ICMP, ICMP4_PAIRS[pair % ICMP4_PAIRS.len()])
            };
            let (req, rep) = if swap { (rep, req) } else { (req, rep) };
            // Two-way messages pair by type whatever their codes say (Zeek ignores them).
            (
                FiveTuple::icmp(proto, a, b, req, code_a),
                FiveTuple::icmp(proto, b, a, rep, code_b),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn both_directions_share_key_and_shard(
        t in arb_tuple(),
        vlan in prop_oneof![Just(0u16), any::<u16>()],
    ) {
        check_one_flow(&t, &reversed(&t), vlan)?;
    }

    #[test]
    fn icmp_request_and_reply_share_key_and_shard(
        (req, rep) in arb_icmp_pair(),
        vlan in prop_oneof![Just(0u16), 1..4095u16],
    ) {
        prop_assert_eq!(req.sport, rep.dport);
        prop_assert_eq!(req.dport, rep.sport);
        check_one_flow(&req, &rep, vlan)?;
    }

    /// A one-way ICMP message (unreachable, time exceeded, ...) keeps its code as responder port.
    #[test]
    fn icmp_one_way_keys_by_type_and_code(
        v6 in any::<bool>(),
        a in arb_addr(),
        b in arb_addr(),
        ty in any::<u8>(),
        code in any::<u8>(),
    ) {
        let proto = if v6 { ip_proto::ICMPV6 } else { ip_proto::ICMP };
        let paired = if v6 {
            ICMP6_PAIRS.iter().any(|&(x, y)| ty == x || ty == y)
        } else {
            ICMP4_PAIRS.iter().any(|&(x, y)| ty == x || ty == y)
        };
        let t = FiveTuple::icmp(proto, a, b, ty, code);
        prop_assert_eq!(t.sport, u16::from(ty));
        if !paired {
            prop_assert_eq!(t.dport, u16::from(code));
        }
        check_one_flow(&t, &reversed(&t), 0)?;
    }

    /// The VLAN id is part of the key when configured: the same tuple on two VLANs is two flows.
    #[test]
    fn vlan_separates_keys(t in arb_tuple(), v1 in any::<u16>(), v2 in any::<u16>()) {
        prop_assume!(v1 != v2);
        prop_assert_ne!(t.key(v1).0, t.key(v2).0);
    }

    /// `flow_hash` is the documented word mix over the documented 39-byte layout, checked
    /// against an independent implementation that reads the words out of `to_bytes()`.
    #[test]
    fn flow_hash_is_the_documented_mix(t in arb_tuple(), vlan in any::<u16>()) {
        let key = t.key(vlan).0;
        let bytes = key.to_bytes();
        prop_assert_eq!(bytes[0], key.proto);
        prop_assert_eq!(&bytes[1..17], &key.lo.0[..]);
        prop_assert_eq!(&bytes[17..33], &key.hi.0[..]);
        prop_assert_eq!(&bytes[33..35], &key.lo_port.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[35..37], &key.hi_port.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[37..39], &key.vlan.to_le_bytes()[..]);
        prop_assert_eq!(flow_hash(&key), reference_flow_hash(&bytes));
    }

    /// `shard` is jump consistent hash of `flow_hash`, and `shard_of_hash` is Lamping and Veach's.
    #[test]
    fn shard_is_jump_of_flow_hash(t in arb_tuple(), n in 1..=u16::MAX) {
        let key = t.key(0).0;
        let s = shard(&key, n);
        prop_assert_eq!(s, shard_of_hash(flow_hash(&key), n));
        prop_assert_eq!(i64::from(s), reference_jump(flow_hash(&key), i64::from(n)));
    }
}

#[test]
fn hash_constants_are_the_documented_ones() {
    assert_eq!(HASH_SEED, u64::from_le_bytes(*b"tapflow!"));
    assert_eq!(HASH_MULTIPLIER, 0x9e37_79b9_7f4a_7c15);
}

// ---------------------------------------------------------------------------------------------
// (b) golden assignments

/// Shard counts the golden file records for every key.
const GOLDEN_SHARDS: std::ops::RangeInclusive<u16> = 1..=16;
const GOLDEN_KEYS: u32 = 64;

/// Key `i` of the golden list: a fixed formula mixing IPv4/IPv6, TCP/UDP/ICMP/ICMPv6/GRE, both
/// directions, and VLAN ids (every fifth key has one).
fn golden_key(i: u32) -> FlowKey {
    let b = |x: u32| (x & 0xff) as u8;
    let v6 = i % 3 == 1;
    let (src, dst) = if v6 {
        let mut s = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut d = s;
        s[7] = b(i);
        s[15] = b(i * 7 + 1);
        d[4] = 0xff;
        d[14] = b(i * 3);
        d[15] = b(250 - i);
        (Addr::from_v6(s), Addr::from_v6(d))
    } else {
        (
            Addr::from_v4([10, b(i), b(i * 7), b(1 + i)]),
            Addr::from_v4([192, 168, b(i * 3), b(200 - i)]),
        )
    };
    let sport = (1024 + i * 997 % 60000) as u16;
    let dport = [80u16, 443, 53, 123, 22, 8080, 5353][(i % 7) as usize];
    let tuple = match i % 8 {
        0..=2 => FiveTuple {
            proto: ip_proto::TCP,
            src,
            dst,
            sport,
            dport,
        },
        3 | 4 => FiveTuple {
            proto: ip_proto::UDP,
            src: dst, // the reply direction
            dst: src,
            sport: dport,
            dport: sport,
        },
        5 | 6 => {
            let proto = if v6 { ip_proto::ICMPV6 } else { ip_proto::ICMP };
            let (ty, code) = match (v6, (i / 8) % 4) {
                (false, 0 | 1) => (8, 0),
                (false, 2) => (0, 0),
                (false, _) => (3, b(i % 16)),
                (true, 0 | 1) => (128, 0),
                (true, 2) => (129, 0),
                (true, _) => (1, b(i % 7)),
            };
            FiveTuple::icmp(proto, src, dst, ty, code)
        }
        _ => FiveTuple {
            proto: ip_proto::GRE,
            src,
            dst,
            sport: 0,
            dport: 0,
        },
    };
    let vlan = match i % 5 {
        0 => (100 + i * 13) as u16,
        _ => 0,
    };
    tuple.key(vlan).0
}

fn golden_text() -> String {
    let mut out = String::new();
    out.push_str(
        "# tapflow shard assignments: flow_hash (documented word mix) and shard(key, n) for n = 1..=16.\n\
         # Generated by proto/tests/shard.rs (golden_key). A change here moves flows between\n\
         # processors of mixed-version deployments: review it, then refresh with\n\
         # UPDATE_GOLDEN=1 cargo test -p tapflow-proto --test shard\n\
         # columns: i, flow_hash, shard(key, n) for n = 1..=16 (one hex digit each), key, vlan\n",
    );
    for i in 0..GOLDEN_KEYS {
        let key = golden_key(i);
        let shards: Vec<String> = GOLDEN_SHARDS
            .map(|n| format!("{:x}", shard(&key, n)))
            .collect();
        // `{:x}` keeps every shard (< 16) to one character, so columns line up.
        let _ = writeln!(
            out,
            "{i:02} {:016x} {} {key} vlan {}",
            flow_hash(&key),
            shards.join(""),
            key.vlan
        );
    }
    out
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/shard.txt")
}

#[test]
fn golden_shard_assignments() {
    let actual = golden_text();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create tests/golden");
        }
        std::fs::write(&path, &actual).expect("write golden file");
        println!("wrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path);
    assert!(
        expected.is_ok(),
        "cannot read {}: {expected:?}\n\
         Create it with UPDATE_GOLDEN=1 cargo test -p tapflow-proto --test shard",
        path.display()
    );
    let expected = expected.expect("read the golden file");
    if expected != actual {
        panic!(
            "shard assignments differ from {}:\n{}\nIf the change is intended, refresh with \
             UPDATE_GOLDEN=1 cargo test -p tapflow-proto --test shard and review the diff.",
            path.display(),
            line_diff(&expected, &actual)
        );
    }
}

#[test]
fn golden_keys_cover_every_kind() {
    let keys: Vec<FlowKey> = (0..GOLDEN_KEYS).map(golden_key).collect();
    let has = |f: &dyn Fn(&FlowKey) -> bool| keys.iter().any(f);
    assert!(has(&|k| k.lo.is_v4() && k.proto == ip_proto::TCP));
    assert!(has(&|k| !k.lo.is_v4() && k.proto == ip_proto::TCP));
    assert!(has(&|k| k.lo.is_v4() && k.proto == ip_proto::UDP));
    assert!(has(&|k| !k.lo.is_v4() && k.proto == ip_proto::UDP));
    assert!(has(
        &|k| k.proto == ip_proto::ICMP && k.lo_port.min(k.hi_port) == 0
    ));
    assert!(has(&|k| k.proto == ip_proto::ICMPV6 && k.lo_port == 128));
    assert!(has(&|k| k.proto == ip_proto::ICMP && k.lo_port == 3));
    assert!(has(&|k| k.proto == ip_proto::ICMPV6 && k.lo_port == 1));
    assert!(has(&|k| k.proto == ip_proto::GRE));
    assert!(has(&|k| k.vlan != 0));
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len(), "golden keys must be distinct");
}

/// Every line that differs, numbered, as `- expected` / `+ actual`.
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            let _ = writeln!(out, "line {}:", i + 1);
            if let Some(x) = x {
                let _ = writeln!(out, "- {x}");
            }
            if let Some(y) = y {
                let _ = writeln!(out, "+ {y}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (c) consistency and balance

const RANDOM_KEYS: usize = 100_000;

/// `RANDOM_KEYS` keys from a fixed seed: random v4/v6 endpoints, ports and protocols.
fn random_keys() -> Vec<FlowKey> {
    let mut rng = SplitMix64(0x7461_7066_6c6f_7721);
    (0..RANDOM_KEYS)
        .map(|_| {
            let r = rng.next();
            let addr = |rng: &mut SplitMix64| {
                if r & 1 == 0 {
                    Addr::from_v4(rng.next().to_le_bytes()[..4].try_into().unwrap_or_default())
                } else {
                    let mut a = [0u8; 16];
                    a[..8].copy_from_slice(&rng.next().to_le_bytes());
                    a[8..].copy_from_slice(&rng.next().to_le_bytes());
                    Addr::from_v6(a)
                }
            };
            let proto = [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP][(r >> 1) as usize % 3];
            let (src, dst) = (addr(&mut rng), addr(&mut rng));
            FiveTuple {
                proto,
                src,
                dst,
                sport: (r >> 8) as u16,
                dport: (r >> 24) as u16,
            }
            .key(0)
            .0
        })
        .collect()
}

#[test]
fn adding_a_shard_moves_its_share_and_only_to_the_new_shard() {
    let keys = random_keys();
    let hashes: Vec<u64> = keys.iter().map(flow_hash).collect();
    for n in 1..=16u16 {
        let mut moved = 0usize;
        for &h in &hashes {
            let (before, after) = (shard_of_hash(h, n), shard_of_hash(h, n + 1));
            if before != after {
                assert_eq!(
                    after, n,
                    "hash {h:#x} moved from {before} to {after}, not to the new shard {n}"
                );
                moved += 1;
            }
        }
        let share = moved as f64 / hashes.len() as f64;
        let ideal = 1.0 / f64::from(n + 1);
        println!(
            "{n:2} -> {:2}: moved {share:.4} of keys (ideal {ideal:.4})",
            n + 1
        );
        assert!(
            (share - ideal).abs() < 0.01,
            "{n} -> {}: moved {share:.4} of keys, expected {ideal:.4} +- 0.01",
            n + 1
        );
    }
}

#[test]
fn random_keys_spread_evenly() {
    let hashes: Vec<u64> = random_keys().iter().map(flow_hash).collect();
    for n in (1..=16u16).chain([24, 32, 64]) {
        check_balance(&format!("random keys, n = {n}"), &hashes, n);
    }
}

/// Low-entropy keys, as a port scan or a SYN flood makes them: one host pair walking every port,
/// and many spoofed sources (consecutive addresses) to one port.
#[test]
fn scan_and_flood_keys_spread_evenly() {
    let (a, b) = (Addr::from_v4([10, 0, 0, 1]), Addr::from_v4([10, 0, 0, 2]));
    let scan: Vec<u64> = (1..=u16::MAX)
        .map(|p| {
            let t = FiveTuple {
                proto: ip_proto::TCP,
                src: a,
                dst: b,
                sport: 40000,
                dport: p,
            };
            flow_hash(&t.key(0).0)
        })
        .collect();
    let flood: Vec<u64> = (0..65536u32)
        .map(|i| {
            let [_, _, x, y] = i.to_be_bytes();
            let t = FiveTuple {
                proto: ip_proto::TCP,
                src: Addr::from_v4([172, 16, x, y]),
                dst: b,
                sport: 1234,
                dport: 80,
            };
            flow_hash(&t.key(0).0)
        })
        .collect();
    for n in [2u16, 3, 4, 7, 8, 16] {
        check_balance(&format!("port scan, n = {n}"), &scan, n);
        check_balance(&format!("spoofed flood, n = {n}"), &flood, n);
    }
}

/// Chi-square of the shard counts against uniform, and each shard's deviation, both far from
/// what a biased function gives and far from what a fair one reaches by chance: chi-square must
/// stay below its mean (df) plus ten standard deviations (sqrt(2 df)), and every shard's count
/// within six binomial standard deviations of its share (with 100k keys over 16 shards: +-7.4 %).
fn check_balance(what: &str, hashes: &[u64], n: u16) {
    let mut counts = vec![0u64; usize::from(n)];
    for &h in hashes {
        counts[usize::from(shard_of_hash(h, n))] += 1;
    }
    let p = 1.0 / f64::from(n);
    let expected = hashes.len() as f64 * p;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let df = f64::from(n.max(2) - 1);
    let bound = df + 10.0 * (2.0 * df).sqrt();
    assert!(
        chi2 < bound,
        "{what}: chi-square {chi2:.1} >= {bound:.1}, counts {counts:?}"
    );
    let sigma = (expected * (1.0 - p)).sqrt();
    let worst = counts
        .iter()
        .map(|&c| (c as f64 - expected).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 6.0 * sigma,
        "{what}: a shard is {:.1} % off its share (bound {:.1} %), counts {counts:?}",
        100.0 * worst / expected,
        600.0 * sigma / expected
    );
}

// ---------------------------------------------------------------------------------------------
// Independent references

/// Lamping and Veach's jump consistent hash, from the paper.
fn reference_jump(mut key: u64, buckets: i64) -> i64 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b
}

/// The documented hash, written from the spec over `FlowKey::to_bytes()`: words lo[0..8],
/// lo[8..16], hi[0..8], hi[8..16], then proto | lo_port << 8 | hi_port << 24 | vlan << 40;
/// `h = (h ^ w) * K; h ^= h >> 29` from the seed; MurmurHash3's fmix64 at the end.
fn reference_flow_hash(b: &[u8; 39]) -> u64 {
    let le = |s: &[u8]| {
        s.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    };
    let words = [
        le(&b[1..9]),
        le(&b[9..17]),
        le(&b[17..25]),
        le(&b[25..33]),
        u64::from(b[0]) | le(&b[33..35]) << 8 | le(&b[35..37]) << 24 | le(&b[37..39]) << 40,
    ];
    let mut h = HASH_SEED;
    for w in words {
        h = (h ^ w).wrapping_mul(HASH_MULTIPLIER);
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
