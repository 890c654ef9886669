//! Batching against real links (ZeroMQ PUSH sockets towards an endpoint nobody serves, so
//! the links fill up): every summary is counted once, as sent or as `queue_full`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tapflow_proto::CollectorCounters;

use super::*;
use crate::link::{LinkSet, LinkSettings, Shared};

/// Links to `n` endpoints nobody serves, with one batch of queue each; the batcher's pool.
fn links(n: u16) -> (LinkSet, Arc<Shared>, Receiver<Vec<PacketSummary>>) {
    let shared = Arc::new(Shared {
        watermark_ns: AtomicU64::new(0),
        counters: Mutex::new(CollectorCounters::default()),
        live: false,
        shutdown: Arc::new(AtomicBool::new(false)),
        messages_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
    });
    let settings = LinkSettings {
        sender: "batch-test".into(),
        incarnation: 1,
        epoch: 1,
        shard_count: n,
        heartbeat: Duration::from_secs(60),
        linger: Duration::ZERO,
        batch_bytes: 1 << 20,
        security: tapflow_runtime::curve::LinkSecurity::Plain,
    };
    let endpoints: Vec<String> = (0..n).map(|_| "tcp://127.0.0.1:9".to_owned()).collect();
    let ids: Vec<u16> = (0..n).collect();
    let (pool_tx, pool_rx) = crossbeam_channel::unbounded();
    let set = LinkSet::start(
        &zmq::Context::new(),
        &endpoints,
        &ids,
        settings,
        1,
        shared.clone(),
        pool_tx,
    )
    .expect("starting links");
    (set, shared, pool_rx)
}

fn stop(set: LinkSet, shared: &Shared) {
    shared.shutdown.store(true, Ordering::Relaxed);
    set.join();
}

#[test]
fn a_full_queue_drops_whole_batches_and_counts_each_summary_once() {
    let (set, shared, pool) = links(1);
    let mut b = Batcher::new(1, 2, Duration::from_secs(60), SlowPolicy::Drop, pool);
    let flush = Flush {
        links: set.links(),
        watermark_ns: 0,
        epoch: 1,
    };
    // Far more batches than the socket's high-water mark and the link's queue can hold.
    for _ in 0..2_000 {
        b.push(0, PacketSummary::default(), &flush);
    }
    assert_eq!(b.sent()[0] + b.queue_full(), 2_000);
    assert!(b.queue_full() > 0, "nothing refused: {:?}", b.sent());
    assert_eq!(b.queue_full() % 2, 0, "only whole batches are dropped");
    stop(set, &shared);
}

#[test]
fn batches_go_out_when_full_or_flushed_and_age_from_the_first_packet() {
    let (set, shared, pool) = links(2);
    let mut b = Batcher::new(2, 3, Duration::ZERO, SlowPolicy::Block, pool);
    let flush = Flush {
        links: set.links(),
        watermark_ns: 5,
        epoch: 1,
    };
    assert!(!b.is_due(), "nothing pending");
    for i in 0..7 {
        b.push(i % 2, PacketSummary::default(), &flush);
        b.mark_read();
    }
    // Link 0 got 4 (one full batch), link 1 got 3 (one full batch).
    assert_eq!(b.sent(), [3, 3]);
    assert!(b.is_due(), "a zero batch age is due at once");
    b.flush_all(&flush);
    assert_eq!((b.sent(), b.queue_full()), (&[4, 3][..], 0));
    assert!(!b.is_due(), "a flush of everything restarts the age");
    b.add_link();
    assert_eq!(b.sent(), [4, 3, 0]);
    stop(set, &shared);
}
