//! The processor's Prometheus text: its counters, the open-flows gauge and, per collector,
//! the clock-skew gauges (see [`crate::merge`]).

use std::collections::BTreeMap;

use tapflow_proto::upstream::{LinkAccount, ProcessorAccount, ProcessorCounters};

/// The metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsError {
    addr: String,
    source: std::io::Error,
}

/// Serves the text returned on `addr` (when given), which the caller replaces whole.
pub fn serve(addr: Option<&str>) -> Result<tapflow_runtime::MetricsText, MetricsError> {
    tapflow_runtime::serve_metrics_text(addr).map_err(|source| MetricsError {
        addr: addr.unwrap_or_default().to_owned(),
        source,
    })
}

/// The processor's counters in Prometheus text format, with the per-collector skew gauges
/// (collector name -> current and largest skew, ms).
pub fn render(
    account: &ProcessorAccount,
    counters: &ProcessorCounters,
    skews: &BTreeMap<String, (u64, u64)>,
) -> String {
    let sum = |f: fn(&LinkAccount) -> u64| account.links.iter().map(f).sum::<u64>();
    let mut named: Vec<(String, u64)> = vec![
        ("summaries_received".into(), sum(|l| l.summaries_received)),
        ("summaries_gap".into(), sum(|l| l.gaps)),
        ("summaries_misrouted".into(), sum(|l| l.misrouted)),
        ("messages_misrouted".into(), account.misrouted_messages),
    ];
    named.extend(
        account
            .malformed
            .iter()
            .map(|(r, n)| (format!("messages_malformed{{reason=\"{r}\"}}"), *n)),
    );
    named.extend(counters.totals().map(|(k, v)| (k.to_owned(), v)));
    let mut out = String::new();
    tapflow_runtime::prometheus_counters(
        "processor",
        named.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut out,
    );
    out.push_str(&format!(
        "# TYPE tapflow_processor_{0} gauge\ntapflow_processor_{0} {1}\n",
        ProcessorCounters::GAUGE,
        counters.flows_open
    ));
    let mut gauge = |metric: &str, pick: fn(&(u64, u64)) -> u64| {
        out.push_str(&format!("# TYPE tapflow_processor_{metric} gauge\n"));
        for (name, v) in skews {
            out.push_str(&format!(
                "tapflow_processor_{metric}{{collector=\"{}\"}} {}\n",
                label_value(name),
                pick(v)
            ));
        }
    };
    gauge("collector_skew_ms", |v| v.0);
    gauge("collector_skew_max_ms", |v| v.1);
    out
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_gauges_carry_the_collector_label() {
        let skews: BTreeMap<String, (u64, u64)> = [
            ("tap-a".to_owned(), (0, 12)),
            ("tap \"b\"".to_owned(), (4_990, 5_003)),
        ]
        .into_iter()
        .collect();
        let text = render(
            &ProcessorAccount::default(),
            &ProcessorCounters::default(),
            &skews,
        );
        for line in [
            "# TYPE tapflow_processor_collector_skew_ms gauge",
            "tapflow_processor_collector_skew_ms{collector=\"tap-a\"} 0",
            "tapflow_processor_collector_skew_max_ms{collector=\"tap-a\"} 12",
            "tapflow_processor_collector_skew_ms{collector=\"tap \\\"b\\\"\"} 4990",
            "tapflow_processor_collector_skew_max_ms{collector=\"tap \\\"b\\\"\"} 5003",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
