//! The collector's per-packet hot path over ~100k synthetic frames held in memory:
//! (a) decode + summarise, (b) the same plus the shard function, each with checksum
//! verification on (the default) and off (`--ignore-checksums`), and (c) MessagePack encoding
//! of batches of 1024 summaries.
//!
//! Each frame is first copied into a small reused buffer, as libpcap's savefile reader copies
//! each record into its own buffer, so the decoder sees cache-warm bytes as it does in the
//! collector. (Decoding in place from the 60 MB frame buffer instead makes every header read a
//! cache miss unless the checksum pass happens to stream the payload in first, which makes
//! verification look faster than no verification.) `stage_only` measures the copy alone.
//!
//! `cargo bench -p tapflow-bench --bench collector -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapflow_bench::gen::{GenConfig, Generator};
use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType, Outcome};
use tapflow_proto::summary::flag;
use tapflow_proto::wire::{encode_batch, LinkHeader};
use tapflow_proto::{shard, PacketSummary};

/// Same packets-per-flow ratio as the 5M/200k capture of `bench/run.sh`.
const PACKETS: u64 = 100_000;
const FLOWS: u64 = 4_000;
const BATCH: usize = 1024;
const SHARDS: u16 = 2;

/// Frames back to back in one buffer, with their timestamps and extents.
struct Frames {
    bytes: Vec<u8>,
    index: Vec<(u64, usize, usize)>,
}

impl Frames {
    fn generate() -> Frames {
        let cfg = GenConfig {
            packets: PACKETS,
            flows: FLOWS,
            ..GenConfig::default()
        };
        let mut gen = Generator::new(&cfg).expect("the bench's plan is valid");
        let (mut bytes, mut index, mut frame) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(p) = gen.next_packet(&mut frame) {
            index.push((p.ts_ns, bytes.len(), bytes.len() + frame.len()));
            bytes.extend_from_slice(&frame);
        }
        Frames { bytes, index }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.index.iter().map(|&(ts, a, b)| (ts, &self.bytes[a..b]))
    }
}

fn decoder(verify_checksums: bool) -> Decoder {
    Decoder::new(DecodeConfig {
        verify_checksums,
        ..DecodeConfig::default()
    })
}

/// Decodes every frame (copied into `staged` first), handing each packet's summaries to `each`.
fn decode_all(
    dec: &mut Decoder,
    frames: &Frames,
    staged: &mut Vec<u8>,
    out: &mut Vec<PacketSummary>,
    mut each: impl FnMut(&[PacketSummary]),
) {
    for (ts, frame) in frames.iter() {
        out.clear();
        staged.clear();
        staged.extend_from_slice(frame);
        let frame = &staged[..];
        let outcome = dec.decode(LinkType::Ethernet, ts, frame, frame.len() as u32, out);
        black_box(outcome);
        each(out);
    }
}

/// Checks once that the frames decode as intended and prints what the bench runs over.
fn describe(frames: &Frames) -> Vec<PacketSummary> {
    let mut dec = decoder(true);
    let (mut all, mut out) = (Vec::new(), Vec::new());
    let (mut summarised, mut bad) = (0u64, 0u64);
    for (ts, frame) in frames.iter() {
        out.clear();
        if dec.decode(LinkType::Ethernet, ts, frame, frame.len() as u32, &mut out)
            == Outcome::Summarised
        {
            summarised += 1;
        }
        bad += out
            .iter()
            .filter(|s| s.flags & flag::BAD_CHECKSUM != 0)
            .count() as u64;
        all.extend_from_slice(&out);
    }
    dec.finish();
    eprintln!(
        "collector bench: {} frames, {} bytes (avg {:.0}), {} summarised, {} summaries, {} with bad checksums, drops {:?}",
        frames.index.len(),
        frames.bytes.len(),
        frames.bytes.len() as f64 / frames.index.len() as f64,
        summarised,
        all.len(),
        bad,
        dec.counters().drops
    );
    all
}

fn bench_collector(c: &mut Criterion) {
    let frames = Frames::generate();
    let summaries = describe(&frames);
    let mut out = Vec::with_capacity(8);
    let mut staged = Vec::with_capacity(2048);

    let mut g = c.benchmark_group("collector");
    g.throughput(Throughput::Elements(frames.index.len() as u64));
    g.bench_function("stage_only", |b| {
        b.iter(|| {
            for (_, frame) in frames.iter() {
                staged.clear();
                staged.extend_from_slice(frame);
                black_box(&staged);
            }
        })
    });
    for (name, verify) in [("verify", true), ("no_verify", false)] {
        let mut dec = decoder(verify);
        g.bench_function(format!("decode_summarise/{name}"), |b| {
            b.iter(|| {
                decode_all(&mut dec, &frames, &mut staged, &mut out, |s| {
                    black_box(s);
                })
            })
        });
        let mut dec = decoder(verify);
        g.bench_function(format!("decode_summarise_shard/{name}"), |b| {
            b.iter(|| {
                let mut per_shard = [0u64; SHARDS as usize];
                decode_all(&mut dec, &frames, &mut staged, &mut out, |s| {
                    for summary in s {
                        per_shard[usize::from(shard(&summary.key, SHARDS))] += 1;
                    }
                });
                black_box(per_shard)
            })
        });
    }

    let mut header = LinkHeader {
        sender: "bench".into(),
        incarnation: 1,
        epoch: 1,
        shard_count: SHARDS,
        shard: 0,
        seq: 0,
        watermark_ns: 0,
    };
    let mut buf = Vec::with_capacity(128 * BATCH);
    let encoded: usize = summaries
        .chunks(BATCH)
        .map(|chunk| {
            encode_batch(&header, chunk, &mut buf);
            buf.len()
        })
        .sum();
    eprintln!(
        "collector bench: MessagePack batches of {BATCH}: {:.1} bytes per summary (frame header and link header included)",
        encoded as f64 / summaries.len() as f64
    );
    g.throughput(Throughput::Elements(summaries.len() as u64));
    g.bench_function(format!("encode_batch_{BATCH}"), |b| {
        b.iter(|| {
            for chunk in summaries.chunks(BATCH) {
                header.watermark_ns = chunk[0].ts_ns;
                encode_batch(&header, chunk, &mut buf);
                header.seq += chunk.len() as u64;
                black_box(&buf);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_collector);
criterion_main!(benches);
