//! The collector's Prometheus endpoint (`--metrics-listen`): the counters as last published,
//! and what the links handed to ZeroMQ.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapflow_proto::CollectorCounters;

use crate::link::Shared;

/// Serves the metrics of `shared` on `addr` (a thread of its own).
pub fn serve(addr: &str, shared: &Arc<Shared>) -> std::io::Result<std::net::SocketAddr> {
    let shared = shared.clone();
    let render = Arc::new(move || {
        let c = match shared.counters.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let wire = (
            shared.messages_sent.load(Ordering::Relaxed),
            shared.bytes_sent.load(Ordering::Relaxed),
        );
        render(&c, wire)
    });
    tapflow_runtime::serve_metrics(addr, render)
}

/// The collector's counters in Prometheus text format.
fn render(c: &CollectorCounters, (messages, bytes): (u64, u64)) -> String {
    let mut named: Vec<(String, u64)> = vec![
        ("packets_read".into(), c.packets_read),
        ("packets_summarised".into(), c.packets_summarised),
        ("fragments_merged".into(), c.fragments_merged),
        ("summaries".into(), c.summaries),
        ("pcap_received_packets".into(), c.capture.received),
        ("kernel_dropped_packets".into(), c.capture.kernel_dropped),
        ("interface_dropped_packets".into(), c.capture.if_dropped),
        ("messages_sent".into(), messages),
        ("wire_bytes_sent".into(), bytes),
    ];
    named.extend(
        c.summaries_sent
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("summaries_sent{{shard=\"{i}\"}}"), *n)),
    );
    named.extend(
        c.drops
            .iter()
            .map(|(r, n)| (format!("drops{{reason=\"{r}\"}}"), *n)),
    );
    // Payload evidence: what was shipped, and the payload packets not shipped by reason.
    named.extend(c.evidence.named().into_iter().map(|(k, n)| match k {
        "flows" | "pieces_shipped" | "bytes_shipped" => (format!("evidence_{k}"), n),
        reason => (format!("evidence_unshipped{{reason=\"{reason}\"}}"), n),
    }));
    let mut out = String::new();
    tapflow_runtime::prometheus_counters(
        "collector",
        named.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut out,
    );
    out
}
