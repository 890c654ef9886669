//! The aggregator's per-record work at the end of a capture, one part at a time: the ordering
//! buffer (`ConnSorter`: push, then drain), the conn-log JSON line and detection, over 200,000
//! synthetic final records (the 5M/200k capture ends with about as many). Detection alone also
//! over the same records spread over 10 s (`detect_spread`) and over a spoofed SYN flood
//! (`detect_syn_flood`).
//!
//! `cargo bench -p tapflow-bench --bench aggregator -- --warm-up-time 1 --measurement-time 5`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tapflow_aggregator::conns::{conn_json, ConnSorter};
use tapflow_aggregator::detect::{DetectConfig, DetectInput, Detector};
use tapflow_aggregator::latency::Sample;
use tapflow_bench::records::conn_records;
use tapflow_proto::conn::ConnRecord;
use tapflow_proto::upstream::ConnBatch;
use tapflow_proto::Addr;

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
    g.bench_function("detect", |b| b.iter(|| detect(&inputs)));
    // The same records spread over 10 s of capture time, lasting up to 3 s: peak-rate
    // intervals and several flood windows per victim.
    let spread = spread(&inputs);
    g.bench_function("detect_spread", |b| b.iter(|| detect(&spread)));
    // A spoofed SYN flood as `tapflow-gen --syn-flood --rate 1000000` writes it.
    let flood = syn_flood(RECORDS);
    g.bench_function("detect_syn_flood", |b| b.iter(|| detect(&flood)));
    g.finish();
}

/// Detection alone over `inputs`, with the default settings: the number of alert events.
fn detect(inputs: &[DetectInput]) -> usize {
    let mut d = Detector::new(DetectConfig::default());
    let mut events = Vec::new();
    for i in inputs {
        d.on_input(i, &mut events);
    }
    d.finish(&mut events);
    events.len()
}

/// `inputs` with record `i` starting at `i` x 50 us and lasting up to 3 s, in release order.
fn spread(inputs: &[DetectInput]) -> Vec<DetectInput> {
    let t0 = inputs.first().map_or(0, |i| i.ts_ns);
    let mut out: Vec<DetectInput> = (0u64..)
        .zip(inputs)
        .map(|(n, i)| DetectInput {
            ts_ns: t0 + n * 50_000,
            duration_ns: Some(1_500_000 + (n * 7_919 % 3_000) * 1_000_000),
            ..*i
        })
        .collect();
    out.sort_by_key(DetectInput::last_ns);
    out
}

/// `n` bare SYNs from distinct spoofed sources to one victim's port 80, one a microsecond.
fn syn_flood(n: u64) -> Vec<DetectInput> {
    let t0 = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|i| DetectInput {
            ts_ns: t0 + i * 1_000,
            duration_ns: None,
            orig_h: Addr::from_v4([
                10 + (i >> 24) as u8,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ]),
            resp_h: Addr::from_v4([192, 0, 2, 1]),
            orig_p: 1024 + (i % 60_000) as u16,
            resp_p: 80,
            proto: 6,
            orig_pkts: 1,
            resp_pkts: 0,
            orig_ip_bytes: 40,
            resp_ip_bytes: 0,
            orig_tcp_flags: 0x02,
            resp_tcp_flags: 0,
            history_first: b'S',
            syn_acked: false,
            answered: false,
            latency: Sample::default(),
        })
        .collect()
}

criterion_group!(benches, bench_aggregator);
criterion_main!(benches);
