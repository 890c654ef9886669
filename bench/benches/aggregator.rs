//! The aggregator's per-record work at the end of a capture, one part at a time: the ordering
//! buffer (`ConnSorter`: push, then drain), the conn-log JSON line and detection, over 200,000
//! synthetic final records (the 5M/200k capture ends with about as many).
//!
//! `cargo bench -p tapflow-bench --bench aggregator -- --warm-up-time 1 --measurement-time 5`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tapflow_aggregator::conns::{conn_json, ConnSorter};
use tapflow_aggregator::detect::{DetectConfig, DetectInput, Detector};
use tapflow_bench::records::conn_records;
use tapflow_proto::conn::ConnRecord;
use tapflow_proto::upstream::ConnBatch;

const RECORDS: u64 = 200_000;

fn batch(processor: &str, records: Vec<ConnRecord>) -> ConnBatch {
    ConnBatch {
        processor: processor.into(),
        incarnation: 1,
        watermark_ns: u64::MAX,
        settle_ns: 0,
        records,
        tunnel_outers: vec![],
        traffic: vec![],
        records_seq: 0,
    }
}

fn bench_aggregator(c: &mut Criterion) {
    let mut all = conn_records(RECORDS);
    // Release order, as detection sees it.
    all.sort_by_key(|r| (r.ts_ns + r.duration_ns.unwrap_or(0), r.uid.clone()));
    let inputs: Vec<DetectInput> = all.iter().map(DetectInput::from).collect();
    let mut g = c.benchmark_group("aggregator");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);

    g.bench_function("sorter_push_drain", |b| {
        let half = all.len().div_ceil(2);
        b.iter_batched(
            || (all[..half].to_vec(), all[half..].to_vec()),
            |(a, z)| {
                let mut sorter = ConnSorter::new(2, 10_000_000);
                sorter.push(batch("p0", a));
                sorter.push(batch("p1", z));
                let mut n = 0u64;
                sorter.drain_with(|r, _| n += r.orig_pkts);
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("conn_json", |b| {
        let mut out = String::with_capacity(1 << 20);
        b.iter(|| {
            let mut bytes = 0;
            for r in &all {
                conn_json(r, &[], &mut out);
                if out.len() > 1 << 19 {
                    bytes += out.len();
                    out.clear();
                }
            }
            bytes + out.len()
        })
    });
    g.bench_function("detect_input_from", |b| {
        b.iter(|| {
            all.iter()
                .map(DetectInput::from)
                .map(|d| d.orig_pkts)
                .sum::<u64>()
        })
    });
    g.bench_function("detect", |b| {
        b.iter(|| {
            let mut d = Detector::new(DetectConfig::default());
            let mut events = Vec::new();
            for i in &inputs {
                d.on_input(i, &mut events);
            }
            d.finish(&mut events);
            events.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_aggregator);
criterion_main!(benches);
