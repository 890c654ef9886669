//! Pipeline accounting (sans-IO): joins the processors' accounts of their inputs with the
//! collectors' own counters and checks DESIGN invariant 5 hop by hop:
//!
//! - per collector: `packets_read = packets_summarised + fragments_merged + Σ packet drops` and
//!   `summaries = Σ sent per link + queue_full`;
//! - per link: `sent (collector counter) = end-of-stream sequence = received + wire gaps` at the
//!   processor that served it.

use std::collections::BTreeMap;

use serde::Serialize;
use tapflow_proto::upstream::{ProcessorAccount, ShardClaim};
use tapflow_proto::{CollectorCounters, EosStatus};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LinkRow {
    pub shard: u16,
    pub processor: Option<String>,
    /// What the collector says it sent on this link.
    pub sent: u64,
    /// The sequence number of the link's end-of-stream, as the processor saw it.
    pub eos_seq: Option<u64>,
    pub received: u64,
    pub gaps: u64,
    pub misrouted: u64,
    pub reconciles: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CollectorRow {
    pub sender: String,
    pub incarnation: u64,
    pub status: Option<String>,
    pub packets_read: u64,
    pub packets_summarised: u64,
    pub fragments_merged: u64,
    pub drops: BTreeMap<String, u64>,
    pub summaries: u64,
    pub kernel_dropped: u64,
    pub if_dropped: u64,
    pub packets_reconcile: bool,
    pub summaries_reconcile: bool,
    pub links: Vec<LinkRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessorRow {
    pub processor: String,
    pub claim: Option<ShardClaim>,
    pub malformed: BTreeMap<String, u64>,
    pub misrouted_messages: u64,
    pub summaries_wrong_shard: u64,
    pub counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccountingReport {
    pub kind: &'static str,
    /// Every identity above holds for every collector and link.
    pub reconciled: bool,
    /// No processor saw conflicting shard claims or summaries hashed to another shard.
    pub routing_consistent: bool,
    pub collectors: Vec<CollectorRow>,
    pub processors: Vec<ProcessorRow>,
    /// Connection records written (set by the run loop).
    pub conns: Option<crate::conns::ConnStats>,
    /// Detection counters (set by the run loop).
    pub detection: Option<crate::detect::DetectStats>,
    /// The InfluxDB sink's counters (set by the run loop when it writes to InfluxDB).
    pub influx: Option<crate::influx::InfluxStats>,
}

/// What the processors saw of one collector incarnation: its freshest counters, its
/// end-of-stream status and one row per link.
type Seen = (Option<CollectorCounters>, Option<EosStatus>, Vec<LinkRow>);

/// Builds the report from every processor's end-of-stream account.
pub fn reconcile(accounts: &[ProcessorAccount]) -> AccountingReport {
    // (sender, incarnation) -> the freshest counters and the links seen for it.
    let mut collectors: BTreeMap<(String, u64), Seen> = BTreeMap::new();
    for acc in accounts {
        for link in &acc.links {
            let entry = collectors
                .entry((link.sender.clone(), link.incarnation))
                .or_default();
            if link.eos_seq.is_some() || entry.0.is_none() {
                if let Some(c) = &link.counters {
                    entry.0 = Some(c.clone());
                }
            }
            if link.eos_status.is_some() {
                entry.1 = link.eos_status.clone();
            }
            entry.2.push(LinkRow {
                shard: link.claim.map(|c| c.shard).unwrap_or(0),
                processor: Some(acc.processor.clone()),
                sent: 0,
                eos_seq: link.eos_seq,
                received: link.summaries_received,
                gaps: link.gaps,
                misrouted: link.misrouted,
                reconciles: false,
            });
        }
    }
    let mut rows = Vec::new();
    for ((sender, incarnation), (counters, status, mut links)) in collectors {
        let counters = counters.unwrap_or_default();
        for (shard, &sent) in counters.summaries_sent.iter().enumerate() {
            let shard = u16::try_from(shard).unwrap_or(u16::MAX);
            if !links.iter().any(|l| l.shard == shard) {
                links.push(LinkRow {
                    shard,
                    processor: None,
                    sent,
                    eos_seq: None,
                    received: 0,
                    gaps: 0,
                    misrouted: 0,
                    reconciles: false,
                });
            }
        }
        for l in &mut links {
            l.sent = counters
                .summaries_sent
                .get(usize::from(l.shard))
                .copied()
                .unwrap_or(0);
            l.reconciles = l.eos_seq == Some(l.sent) && l.sent == l.received + l.gaps;
        }
        links.sort_by_key(|l| l.shard);
        let r = counters.reconcile();
        rows.push(CollectorRow {
            sender,
            incarnation,
            status: status.map(|s| status_name(&s)),
            packets_read: counters.packets_read,
            packets_summarised: counters.packets_summarised,
            fragments_merged: counters.fragments_merged,
            drops: counters.drops.clone(),
            summaries: counters.summaries,
            kernel_dropped: counters.capture.kernel_dropped,
            if_dropped: counters.capture.if_dropped,
            packets_reconcile: r.packets_read == r.packets_accounted,
            summaries_reconcile: r.summaries == r.summaries_accounted,
            links,
        });
    }
    let processors: Vec<ProcessorRow> = accounts
        .iter()
        .map(|a| ProcessorRow {
            processor: a.processor.clone(),
            claim: a.claim,
            malformed: a.malformed.clone(),
            misrouted_messages: a.misrouted_messages,
            summaries_wrong_shard: a.summaries_wrong_shard,
            counters: a.counters.clone(),
        })
        .collect();
    let reconciled = rows.iter().all(|c| {
        c.packets_reconcile && c.summaries_reconcile && c.links.iter().all(|l| l.reconciles)
    });
    let routing_consistent = processors
        .iter()
        .all(|p| p.misrouted_messages == 0 && p.summaries_wrong_shard == 0)
        && rows
            .iter()
            .all(|c| c.links.iter().all(|l| l.misrouted == 0));
    AccountingReport {
        kind: "accounting",
        reconciled,
        routing_consistent,
        collectors: rows,
        processors,
        conns: None,
        detection: None,
        influx: None,
    }
}

fn status_name(s: &EosStatus) -> String {
    match s {
        EosStatus::Complete => "complete".into(),
        EosStatus::Interrupted => "interrupted".into(),
        EosStatus::Damaged(m) => format!("damaged: {m}"),
        EosStatus::OpenFailed(m) => format!("open failed: {m}"),
        EosStatus::Failed(m) => format!("failed: {m}"),
    }
}

/// The report as an aligned text table for the log.
pub fn table(report: &AccountingReport) -> String {
    let mut s = String::new();
    s.push_str("collector                                read  summarised  frag_merged  drops  summaries  link: sent=received+gaps\n");
    for c in &report.collectors {
        let drops: u64 = c.drops.values().sum();
        let links: Vec<String> = c
            .links
            .iter()
            .map(|l| {
                format!(
                    "#{}: {}={}+{}{}",
                    l.shard,
                    l.sent,
                    l.received,
                    l.gaps,
                    if l.reconciles { "" } else { " MISMATCH" }
                )
            })
            .collect();
        s.push_str(&format!(
            "{:<38} {:>6} {:>11} {:>12} {:>6} {:>10}  {}{}\n",
            c.sender,
            c.packets_read,
            c.packets_summarised,
            c.fragments_merged,
            drops,
            c.summaries,
            links.join("  "),
            if c.packets_reconcile && c.summaries_reconcile {
                ""
            } else {
                "  COUNTERS MISMATCH"
            }
        ));
    }
    s.push_str(&format!(
        "reconciled: {}  routing consistent: {}",
        report.reconciled, report.routing_consistent
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::upstream::LinkAccount;

    fn counters(sent: Vec<u64>) -> CollectorCounters {
        let total: u64 = sent.iter().sum();
        CollectorCounters {
            packets_read: total + 2,
            packets_summarised: total,
            fragments_merged: 2,
            summaries: total,
            summaries_sent: sent,
            ..Default::default()
        }
    }

    fn link(
        sender: &str,
        shard: u16,
        sent: u64,
        received: u64,
        gaps: u64,
        c: &CollectorCounters,
    ) -> LinkAccount {
        LinkAccount {
            sender: sender.into(),
            incarnation: 1,
            claim: Some(ShardClaim {
                epoch: 1,
                shard_count: 2,
                shard,
            }),
            summaries_received: received,
            gaps,
            eos_seq: Some(sent),
            eos_status: Some(EosStatus::Complete),
            counters: Some(c.clone()),
            ..Default::default()
        }
    }

    fn account(name: &str, links: Vec<LinkAccount>) -> ProcessorAccount {
        ProcessorAccount {
            processor: name.into(),
            links,
            ..Default::default()
        }
    }

    #[test]
    fn complete_run_reconciles() {
        let c = counters(vec![10, 5]);
        let r = reconcile(&[
            account("p0", vec![link("a", 0, 10, 10, 0, &c)]),
            account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
        ]);
        assert!(r.reconciled && r.routing_consistent, "{}", table(&r));
        assert_eq!(r.collectors[0].links.len(), 2);
    }

    #[test]
    fn gaps_reconcile_but_a_silent_loss_does_not() {
        let c = counters(vec![10, 5]);
        let r = reconcile(&[
            account("p0", vec![link("a", 0, 10, 7, 3, &c)]),
            account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
        ]);
        assert!(r.reconciled, "gaps are accounted: {}", table(&r));
        let r = reconcile(&[
            account("p0", vec![link("a", 0, 10, 7, 0, &c)]),
            account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
        ]);
        assert!(!r.reconciled);
    }

    #[test]
    fn a_missing_link_does_not_reconcile() {
        let c = counters(vec![10, 5]);
        let r = reconcile(&[account("p0", vec![link("a", 0, 10, 10, 0, &c)])]);
        assert!(!r.reconciled);
        assert_eq!(r.collectors[0].links[1].processor, None);
    }

    #[test]
    fn misrouting_is_flagged() {
        let c = counters(vec![10, 5]);
        let mut l = link("a", 1, 5, 5, 0, &c);
        l.misrouted = 5;
        let r = reconcile(&[
            account("p0", vec![link("a", 0, 10, 10, 0, &c)]),
            account("p1", vec![l]),
        ]);
        assert!(!r.routing_consistent);
    }
}
