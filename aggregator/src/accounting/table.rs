//! The accounting report as a text table for the log.

use super::AccountingReport;

/// The report as an aligned text table for the log.
pub fn table(report: &AccountingReport) -> String {
    let mut s = String::new();
    s.push_str("collector                                read  summarised  frag_merged  drops  summaries  skew_max_ms  link: sent=received+gaps\n");
    for c in &report.collectors {
        let drops: u64 = c.drops.values().sum();
        let links: Vec<String> = c
            .links
            .iter()
            .map(|l| {
                let lost = match (l.lost_with_dead_processor, l.lost_with_collector_at_least) {
                    (0, 0) => String::new(),
                    (0, n) => format!(" (collector dead: >={n} lost with it)"),
                    (n, _) => format!("+{n} lost with a dead processor incarnation"),
                };
                format!(
                    "#{}: {}={}+{}{}{}",
                    l.shard,
                    l.sent,
                    l.received,
                    l.gaps,
                    lost,
                    if l.reconciles || c.dead {
                        ""
                    } else {
                        " MISMATCH"
                    }
                )
            })
            .collect();
        s.push_str(&format!(
            "{:<38} {:>6} {:>11} {:>12} {:>6} {:>10} {:>12}  {}{}\n",
            c.sender,
            c.packets_read,
            c.packets_summarised,
            c.fragments_merged,
            drops,
            c.summaries,
            c.skew_max_ms,
            links.join("  "),
            if c.dead {
                "  DEAD: no end-of-stream, counters as of its last heartbeat"
            } else if c.packets_reconcile && c.summaries_reconcile {
                ""
            } else {
                "  COUNTERS MISMATCH"
            }
        ));
    }
    for d in &report.dead_processors {
        s.push_str(&format!(
            "processor {} incarnation {} sent no end-of-stream{}: received {} summaries (gaps {}) as of its last heartbeat, {} more after it; sessions lost <= {} ({} open at its last heartbeat)\n",
            d.processor,
            d.incarnation,
            if d.superseded { " (restarted)" } else { "" },
            d.summaries_received,
            d.gaps,
            d.summaries_after_last_heartbeat,
            d.sessions_lost_upper_bound,
            d.flows_open
        ));
    }
    for p in report
        .processors
        .iter()
        .filter(|p| p.records_before_start + p.records_gaps > 0)
    {
        s.push_str(&format!(
            "processor {}: connection records handed {} = received {} + before this aggregator started {} + gaps {}\n",
            p.processor, p.records_handed, p.records_received, p.records_before_start, p.records_gaps
        ));
    }
    s.push_str(&format!(
        "reconciled: {}  complete: {}  routing consistent: {}",
        report.reconciled, report.complete, report.routing_consistent
    ));
    s
}
