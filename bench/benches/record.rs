//! What naming a connection record costs the processor: its uid and its community id (a
//! SHA-1 each), over 200,000 distinct flow keys.
//!
//! `cargo bench -p tapflow-bench --bench record -- --warm-up-time 1 --measurement-time 5`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapflow_proto::conn::{community_id, uid};
use tapflow_proto::{Addr, FlowKey};

const KEYS: u64 = 200_000;

fn keys() -> Vec<(FlowKey, u64)> {
    (0..KEYS)
        .map(|i| {
            let a = Addr::from_v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let b = Addr::from_v4([192, 0, 2, (i % 7) as u8]);
            let key = FlowKey {
                proto: 6,
                lo: a,
                hi: b,
                lo_port: 1024 + (i % 60_000) as u16,
                hi_port: 443,
                vlan: 0,
            };
            (key, 1_700_000_000_000_000_000 + i * 1_000)
        })
        .collect()
}

fn bench_record(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(KEYS));
    g.sample_size(10);
    g.bench_function("uid", |b| {
        b.iter(|| keys.iter().map(|(k, ts)| uid(k, *ts).len()).sum::<usize>())
    });
    g.bench_function("community_id", |b| {
        b.iter(|| {
            keys.iter()
                .map(|(k, _)| community_id(k.proto, k.lo, k.lo_port, k.hi, k.hi_port).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_record);
criterion_main!(benches);
