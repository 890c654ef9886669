//! Comparing tapflow's sessions with Zeek's own conn.log (the truth files beside the shared
//! captures): parsing Zeek's ASCII logs, turning our records into the same column/value form,
//! matching by five-tuple and tallying agreement per field against issue 3's thresholds.

use std::collections::BTreeMap;

use serde_json::Value;

/// Captures whose Zeek run used `-C` (ignore checksums), from `pcaps/README.md`.
pub const IGNORE_CHECKSUMS: &[&str] = &[
    "zeek-tcp-missing-syn",
    "zeek-gtp-outer-ip-frag",
    "zeek-pcapng-multi-interface",
];

/// Compared fields, in table order.
pub const FIELDS: &[&str] = &[
    "conn_state",
    "history",
    "orig_pkts",
    "resp_pkts",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "orig_bytes",
    "resp_bytes",
    "missed_bytes",
];

/// Least share of matched connections that must agree, per field (issue 3).
pub fn threshold(field: &str) -> Option<f64> {
    match field {
        "conn_state" | "orig_pkts" | "resp_pkts" | "orig_ip_bytes" | "resp_ip_bytes" => Some(0.95),
        "history" | "orig_bytes" | "resp_bytes" => Some(0.90),
        _ => None,
    }
}

/// One conn.log row: column name to value as Zeek prints it (`-` for unset).
pub type Row = BTreeMap<String, String>;

/// Parses a Zeek ASCII log (a `#fields` header, or a bare header line as in the btest
/// baselines that keep only some columns).
pub fn parse_zeek_log(text: &str) -> Vec<Row> {
    let mut fields: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = Some(rest.split('\t').map(str::to_owned).collect());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split('\t').collect();
        match &fields {
            None => fields = Some(values.iter().map(|s| s.to_string()).collect()),
            Some(f) => rows.push(
                f.iter()
                    .cloned()
                    .zip(values.iter().map(|s| s.to_string()))
                    .collect(),
            ),
        }
    }
    rows
}

/// One line of tapflow's JSON conn log as a Zeek row (absent fields become `-`).
pub fn json_row(v: &Value) -> Row {
    let mut row = Row::new();
    for f in ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"]
        .iter()
        .chain(FIELDS)
    {
        let text = match &v[*f] {
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        row.insert((*f).to_owned(), text);
    }
    row
}

/// Takes the first of our rows with Zeek's five-tuple, in either direction; a row without a
/// five-tuple (a btest baseline with few columns) takes the only row there is.
pub fn take_match(row: &Row, ours: &mut Vec<Row>) -> Option<Row> {
    let Some(orig_h) = row.get("id.orig_h") else {
        return (ours.len() == 1).then(|| ours.remove(0));
    };
    let get = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
    let want = (
        orig_h.clone(),
        get(row, "id.orig_p"),
        get(row, "id.resp_h"),
        get(row, "id.resp_p"),
        get(row, "proto"),
    );
    let fwd = |r: &Row| {
        (
            get(r, "id.orig_h"),
            get(r, "id.orig_p"),
            get(r, "id.resp_h"),
            get(r, "id.resp_p"),
            get(r, "proto"),
        )
    };
    let rev = |r: &Row| {
        (
            get(r, "id.resp_h"),
            get(r, "id.resp_p"),
            get(r, "id.orig_h"),
            get(r, "id.orig_p"),
            get(r, "proto"),
        )
    };
    let at = ours
        .iter()
        .position(|r| fwd(r) == want)
        .or_else(|| ours.iter().position(|r| rev(r) == want))?;
    Some(ours.remove(at))
}

/// Agreement over many captures.
#[derive(Default)]
pub struct Tally {
    pub zeek_conns: usize,
    pub missing: usize,
    /// field -> (agree, compared)
    pub matched: BTreeMap<&'static str, (usize, usize)>,
    pub report: String,
}

impl Tally {
    /// Compares one capture's rows and appends its table (and every mismatch) to the report.
    pub fn add(&mut self, file: &str, zeek: &[Row], mut ours: Vec<Row>) {
        let ours_total = ours.len();
        let mut missing = 0;
        let mut per: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        let mut lines = Vec::new();
        for row in zeek {
            let g = |k: &str| row.get(k).map_or("?", String::as_str).to_owned();
            let id = format!(
                "{} {}:{} > {}:{}",
                g("proto"),
                g("id.orig_h"),
                g("id.orig_p"),
                g("id.resp_h"),
                g("id.resp_p")
            );
            let Some(r) = take_match(row, &mut ours) else {
                missing += 1;
                lines.push(format!("  MISSING {id}"));
                continue;
            };
            for &field in FIELDS {
                let Some(theirs) = row.get(field) else {
                    continue;
                };
                let mine = r.get(field).cloned().unwrap_or_default();
                let e = per.entry(field).or_default();
                e.1 += 1;
                if mine == *theirs {
                    e.0 += 1;
                } else {
                    lines.push(format!("  {id}: {field} zeek={theirs} ours={mine}"));
                }
            }
        }
        self.report += &format!(
            "{file}: zeek {} conns, ours {ours_total}, missing {missing}\n",
            zeek.len()
        );
        for (field, (agree, n)) in &per {
            self.report += &format!("  {field:<14} {agree}/{n}\n");
        }
        for l in lines {
            self.report += &l;
            self.report.push('\n');
        }
        self.zeek_conns += zeek.len();
        self.missing += missing;
        for (field, (a, n)) in per {
            let e = self.matched.entry(field).or_default();
            e.0 += a;
            e.1 += n;
        }
    }

    /// The totals, and what falls below issue 3's thresholds.
    pub fn finish(&mut self) -> Vec<String> {
        self.report += &format!(
            "ALL: zeek {} conns, missing {}\n",
            self.zeek_conns, self.missing
        );
        let mut failures = Vec::new();
        for &field in FIELDS {
            let (agree, n) = self.matched.get(field).copied().unwrap_or_default();
            let share = if n == 0 { 1.0 } else { agree as f64 / n as f64 };
            self.report += &format!("  {field:<14} {agree}/{n} = {:.1}%\n", share * 100.0);
            if let Some(min) = threshold(field) {
                if share < min {
                    failures.push(format!(
                        "{field} agrees on {:.1}% < {:.0}%",
                        share * 100.0,
                        min * 100.0
                    ));
                }
            }
        }
        if self.missing > 2 {
            failures.push(format!(
                "{} of Zeek's connections missing (at most 2)",
                self.missing
            ));
        }
        failures
    }
}
