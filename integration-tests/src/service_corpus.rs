//! `service` and `server_name` against independent truths (issue 17): Zeek's conn.log `service`
//! column (on Zeek's own test traces, `../shared/zeek-corpus`, and on the shared captures with
//! a Zeek log) and tshark's `tls.handshake.extensions_server_name` and `http.host` (on every
//! shared capture). The comparison, the tshark extraction and the golden table; the pipeline
//! runs are in `tests/service_corpus.rs`. tshark's `http.host` is compared without its port,
//! as Zeek keeps the Host header's name (its `http.log` `host`).
//!
//! Golden table (`golden/service_corpus.tsv`): the figures (`total:*` rows) and one row per
//! difference, keyed by source and connection, with its kind and a reason. The reason column is
//! kept across regenerations for a difference that stays the same (same values), so a reason
//! written by hand survives; a new difference gets its kind as its reason until someone writes
//! a better one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::zeek::{json_row, Row};
use crate::zeek_corpus::take;

pub fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/service_corpus.tsv")
}

/// Reasons written by hand for differences (the golden table's columns; only key, truth, ours
/// and reason are read): used when the golden table is regenerated, before the kind.
pub fn reasons_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/service_corpus_reasons.tsv")
}

/// Our conn-log line as a row: Zeek's id columns and fields, `service` and `server_name` (`-`
/// when unset, as Zeek writes an unset field).
pub fn our_row(v: &Value) -> Row {
    let mut row = json_row(v);
    for f in ["service", "server_name", "uid"] {
        let text = v[f].as_str().unwrap_or("-").to_owned();
        row.insert(f.to_owned(), text);
    }
    row
}

/// Zeek's `service` cell as compared: `-` for none (Zeek writes `-`, `(empty)` or nothing).
fn zeek_service(cell: &str) -> String {
    match cell {
        "" | "(empty)" => "-".to_owned(),
        s => s.to_owned(),
    }
}

/// One difference: a golden row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `SOURCE PROTO ORIG_H:ORIG_P > RESP_H:RESP_P` (unique; `#2`... for repeated keys).
    pub key: String,
    pub kind: &'static str,
    /// The truth's value (Zeek's service, tshark's name).
    pub truth: String,
    pub ours: String,
}

/// The figures and differences of every source.
#[derive(Debug, Default)]
pub struct Tally {
    /// Zeek rows with a `service` column, and of those: identical, Zeek none, Zeek none and we
    /// label, Zeek labels and we do not, both label differently, no row of ours.
    pub rows: usize,
    pub identical: usize,
    pub zeek_none: usize,
    pub labelled_where_none: usize,
    pub not_identified: usize,
    pub services_differ: usize,
    pub no_row: usize,
    /// Sessions tshark names, and of those: our name equal, none, different, no row of ours.
    pub named: usize,
    pub names_equal: usize,
    pub names_missing: usize,
    pub names_differ: usize,
    pub names_no_row: usize,
    pub differences: Vec<Difference>,
    keys: HashMap<String, usize>,
}

impl Tally {
    /// Zeek's rows of one source against ours (each of ours matched at most once): by the id
    /// columns Zeek's rows have, or as a multiset of values when they have none.
    pub fn add_services(&mut self, source: &str, zeek: &[Row], mut ours: Vec<Row>) {
        let tuple = zeek
            .first()
            .is_some_and(|r| r.contains_key("id.orig_h") && r.contains_key("id.resp_h"));
        let mut left = Vec::new();
        for z in zeek {
            let Some(cell) = z.get("service") else {
                continue;
            };
            let want = zeek_service(cell);
            let key = self.key(source, z);
            let mine = if tuple {
                take(z, &mut ours).map(|(o, _)| o)
            } else {
                let same = ours.iter().position(|o| service_of(o) == want);
                same.map(|at| ours.remove(at))
            };
            match mine {
                Some(o) => self.compare(key, want, service_of(&o)),
                None if tuple => self.compare_missing(key, want),
                None => left.push((key, want)),
            }
        }
        // Multiset: Zeek's values that none of ours has, against the rest of ours in order.
        let mut rest = ours.into_iter();
        for (key, want) in left {
            match rest.next() {
                Some(o) => self.compare(key, want, service_of(&o)),
                None => self.compare_missing(key, want),
            }
        }
    }

    fn compare_missing(&mut self, key: String, want: String) {
        self.rows += 1;
        self.zeek_none += usize::from(want == "-");
        self.no_row += 1;
        self.push(key, "no such connection", want, "(no row)".into());
    }

    fn compare(&mut self, key: String, want: String, got: String) {
        self.rows += 1;
        self.zeek_none += usize::from(want == "-");
        if got == want {
            self.identical += 1;
            return;
        }
        let kind = if want == "-" {
            self.labelled_where_none += 1;
            "labelled where Zeek has none"
        } else if got == "-" {
            self.not_identified += 1;
            "not identified"
        } else {
            self.services_differ += 1;
            if sorted(&got) == sorted(&want) {
                "same services, other order"
            } else {
                "services differ"
            }
        };
        self.push(key, kind, want, got);
    }

    /// tshark's named sessions of one capture against our records.
    pub fn add_names(&mut self, source: &str, named: &[Named], ours: &[Row]) {
        for n in named {
            self.named += 1;
            let key = self.key_text(format!(
                "{source} {} {}:{} <> {}:{}",
                n.proto, n.a.0, n.a.1, n.b.0, n.b.1
            ));
            let mine: Vec<&str> = ours
                .iter()
                .filter(|r| n.is(r))
                .map(|r| r.get("server_name").map_or("-", String::as_str))
                .collect();
            if mine.is_empty() {
                self.names_no_row += 1;
                self.push(key, "no such connection", n.name.clone(), "(no row)".into());
            } else if mine.contains(&n.name.as_str()) {
                self.names_equal += 1;
            } else if mine.iter().all(|m| *m == "-") {
                self.names_missing += 1;
                self.push(key, "no server_name", n.name.clone(), "-".into());
            } else {
                self.names_differ += 1;
                let ours = mine.iter().find(|m| **m != "-").copied().unwrap_or("-");
                self.push(key, "server_name differs", n.name.clone(), ours.into());
            }
        }
    }

    fn push(&mut self, key: String, kind: &'static str, truth: String, ours: String) {
        self.differences.push(Difference {
            key,
            kind,
            truth,
            ours,
        });
    }

    fn key(&mut self, source: &str, z: &Row) -> String {
        let get = |k: &str| z.get(k).map_or("?", String::as_str);
        let text = if z.contains_key("id.orig_h") {
            format!(
                "{source} {} {}:{} > {}:{}",
                get("proto"),
                get("id.orig_h"),
                get("id.orig_p"),
                get("id.resp_h"),
                get("id.resp_p")
            )
        } else {
            format!("{source} (no id columns)")
        };
        self.key_text(text)
    }

    /// `text`, or `text #n` for its n-th use.
    fn key_text(&mut self, text: String) -> String {
        let n = self.keys.entry(text.clone()).or_default();
        *n += 1;
        if *n == 1 {
            text
        } else {
            format!("{text} #{n}")
        }
    }

    /// The figures by name, in the golden table's order.
    pub fn figures(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("service_rows", self.rows),
            ("service_identical", self.identical),
            ("service_zeek_none", self.zeek_none),
            ("service_labelled_where_zeek_none", self.labelled_where_none),
            ("service_not_identified", self.not_identified),
            ("service_differ", self.services_differ),
            ("service_no_row", self.no_row),
            ("names_tshark", self.named),
            ("names_equal", self.names_equal),
            ("names_missing", self.names_missing),
            ("names_differ", self.names_differ),
            ("names_no_row", self.names_no_row),
        ]
    }

    /// The acceptance figures in words: identical %, labelled where Zeek has none %, names.
    pub fn summary(&self) -> String {
        let pct = |a: usize, n: usize| {
            if n == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", a as f64 * 100.0 / n as f64)
            }
        };
        format!(
            "service: {}/{} rows identical ({}; goal >= 95%); labelled where Zeek has none: \
             {}/{} ({}; goal <= 1%); not identified {}, differ {}, no row {}\n\
             server_name: {}/{} sessions tshark names equal ({}; goal 100%); missing {}, \
             differ {}, no row {}",
            self.identical,
            self.rows,
            pct(self.identical, self.rows),
            self.labelled_where_none,
            self.zeek_none,
            pct(self.labelled_where_none, self.zeek_none),
            self.not_identified,
            self.services_differ,
            self.no_row,
            self.names_equal,
            self.named,
            pct(self.names_equal, self.named),
            self.names_missing,
            self.names_differ,
            self.names_no_row,
        )
    }

    /// The golden table; reasons written by hand are taken from `previous` (tables in this
    /// format, a later line winning) for the differences it lists with the same values.
    pub fn table(&self, previous: &str) -> String {
        let reasons: BTreeMap<(&str, &str, &str), &str> = previous
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                // A reason that is only the kind was not written by hand.
                (c.len() == 5 && c[4] != c[1]).then(|| ((c[0], c[2], c[3]), c[4]))
            })
            .collect();
        let mut out = String::from(HEADER);
        for (name, n) in self.figures() {
            out += &format!("total:{name}\tfigure\t{n}\t-\t-\n");
        }
        for d in &self.differences {
            let reason = reasons
                .get(&(d.key.as_str(), d.truth.as_str(), d.ours.as_str()))
                .copied()
                .unwrap_or(d.kind);
            out += &format!(
                "{}\t{}\t{}\t{}\t{}\n",
                d.key,
                d.kind,
                clean(&d.truth),
                clean(&d.ours),
                clean(reason)
            );
        }
        out
    }
}

const HEADER: &str = "\
# `service` against Zeek's conn.log (../shared/zeek-corpus and the shared captures' Zeek logs)
# and `server_name` against tshark (tls.handshake.extensions_server_name, http.host) on the
# shared captures, through the real pipeline (tests/service_corpus.rs). `total:*` rows are the
# figures; every other row is one difference: its kind, the truth's value (Zeek's service or
# tshark's name), ours and the reason (kept across regenerations while the values stay; write
# a better one by hand). Checked exactly; regenerate with
#   UPDATE_GOLDEN=1 cargo nextest run -p tapflow-integration-tests --test service_corpus
# and review the diff (reasons also come from golden/service_corpus_reasons.tsv).
# key\tkind\ttruth\tours\treason
";

/// A cell without tabs or line ends.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Our row's service (`-` when none).
fn service_of(r: &Row) -> String {
    r.get("service").cloned().unwrap_or_else(|| "-".into())
}

/// A service list's names, sorted.
fn sorted(list: &str) -> Vec<&str> {
    let mut v: Vec<&str> = list.split(',').collect();
    v.sort_unstable();
    v
}

/// One session tshark names: its transport, endpoints (in tshark's first packet's direction)
/// and the first name it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub proto: &'static str,
    pub a: (String, String),
    pub b: (String, String),
    pub name: String,
}

impl Named {
    /// Our row is this session (either direction).
    fn is(&self, r: &Row) -> bool {
        let get = |k: &str| r.get(k).map_or("", String::as_str);
        let (o, p) = (
            (get("id.orig_h"), get("id.orig_p")),
            (get("id.resp_h"), get("id.resp_p")),
        );
        let (a, b) = (
            (self.a.0.as_str(), self.a.1.as_str()),
            (self.b.0.as_str(), self.b.1.as_str()),
        );
        get("proto") == self.proto && ((o, p) == (a, b) || (o, p) == (b, a))
    }
}

/// The sessions tshark names in `pcap` (`None`: tshark is not installed). The innermost
/// addresses of a tunnelled packet are used.
pub fn tshark_names(pcap: &Path) -> Option<Vec<Named>> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-n",
            "-Y",
            "tls.handshake.extensions_server_name or http.host",
        ])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=l"])
        .args([
            "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
        ])
        .args(["-e", "tcp.srcport", "-e", "tcp.dstport"])
        .args(["-e", "udp.srcport", "-e", "udp.dstport"])
        .args([
            "-e",
            "tls.handshake.extensions_server_name",
            "-e",
            "http.host",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen: Vec<Named> = Vec::new();
    for line in text.lines() {
        if let Some(n) = parse_tshark_line(line) {
            if !seen.iter().any(|s| s.proto == n.proto && same_pair(s, &n)) {
                seen.push(n);
            }
        }
    }
    Some(seen)
}

fn same_pair(x: &Named, y: &Named) -> bool {
    (x.a == y.a && x.b == y.b) || (x.a == y.b && x.b == y.a)
}

/// An HTTP `Host` value without its port, as Zeek keeps it (`host:8080` -> `host`); an IPv6
/// literal keeps its brackets (`[2001:db8::1]:80` -> `[2001:db8::1]`, RFC 3986's host).
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}

/// One line of [`tshark_names`]' fields.
pub fn parse_tshark_line(line: &str) -> Option<Named> {
    let c: Vec<&str> = line.split('\t').collect();
    let cell = |i: usize| c.get(i).copied().unwrap_or("");
    let pick = |v4: &str, v6: &str| if v4.is_empty() { v6 } else { v4 }.to_owned();
    let (src, dst) = (pick(cell(0), cell(1)), pick(cell(2), cell(3)));
    let (proto, sp, dp) = if cell(4).is_empty() {
        ("udp", cell(6), cell(7))
    } else {
        ("tcp", cell(4), cell(5))
    };
    let name = if cell(8).is_empty() {
        host_without_port(cell(9))
    } else {
        cell(8)
    };
    if src.is_empty() || sp.is_empty() || name.is_empty() {
        return None;
    }
    Some(Named {
        proto,
        a: (src, sp.to_owned()),
        b: (dst, dp.to_owned()),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, &str)]) -> Row {
        cells
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn conn(orig_p: &str, service: &str) -> Row {
        row(&[
            ("id.orig_h", "10.0.0.1"),
            ("id.orig_p", orig_p),
            ("id.resp_h", "10.0.0.2"),
            ("id.resp_p", "21"),
            ("proto", "tcp"),
            ("service", service),
        ])
    }

    #[test]
    fn every_kind_of_difference_is_counted_and_listed() {
        let zeek = vec![
            conn("1", "ftp"),
            conn("2", "-"),
            conn("3", "-"),
            conn("4", "ftp,ssl"),
            conn("5", "ssl,ftp"),
            conn("6", "http"),
            conn("7", "dns"),
        ];
        let ours = vec![
            conn("1", "ftp"),
            conn("2", "-"),
            conn("3", "ftp"),
            conn("4", "-"),
            conn("5", "ftp,ssl"),
            conn("6", "ssl"),
        ];
        let mut t = Tally::default();
        t.add_services("corpus:x", &zeek, ours);
        assert_eq!(
            (t.rows, t.identical, t.zeek_none, t.labelled_where_none),
            (7, 2, 2, 1)
        );
        assert_eq!((t.not_identified, t.services_differ, t.no_row), (1, 2, 1));
        let kinds: Vec<&str> = t.differences.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                "labelled where Zeek has none",
                "not identified",
                "same services, other order",
                "services differ",
                "no such connection"
            ]
        );
        let table = t.table("");
        let edited = table.replace(
            "\tnot identified\tftp,ssl\t-\tnot identified",
            "\tnot identified\tftp,ssl\t-\tSTARTTLS not followed",
        );
        assert_ne!(edited, table);
        assert_eq!(t.table(&edited), edited, "a reason written by hand is kept");
    }

    #[test]
    fn baselines_without_id_columns_compare_as_multisets() {
        let only = |s: &str| row(&[("service", s)]);
        let zeek = vec![only("dns"), only("http"), only("-"), only("quic,ssl")];
        let ours = vec![only("http"), only("ssl"), only("dns")];
        let mut t = Tally::default();
        t.add_services("corpus:cut", &zeek, ours);
        assert_eq!((t.rows, t.identical, t.zeek_none), (4, 2, 1));
        assert_eq!(
            (t.labelled_where_none, t.services_differ, t.no_row),
            (1, 0, 1)
        );
        assert_eq!(t.differences[0].key, "corpus:cut (no id columns) #3");
    }

    #[test]
    fn tshark_names_match_our_sessions_in_either_direction() {
        let n = parse_tshark_line("10.0.0.1\t\t10.0.0.2\t\t40000\t443\t\t\texample.com\t")
            .expect("a TLS name");
        assert_eq!((n.proto, n.name.as_str()), ("tcp", "example.com"));
        let quic = parse_tshark_line("\t2001:db8::1\t\t2001:db8::2\t\t\t5000\t443\tq.example\t")
            .expect("a QUIC name");
        assert_eq!((quic.proto, quic.a.0.as_str()), ("udp", "2001:db8::1"));
        assert_eq!(parse_tshark_line("\t\t\t\t\t\t\t\t\t"), None);
        let host = parse_tshark_line("10.0.0.1\t\t10.0.0.2\t\t40000\t8080\t\t\t\tweb:8080")
            .expect("an HTTP Host");
        assert_eq!(host.name, "web", "Zeek keeps the host without its port");
        assert_eq!(host_without_port("[2001:db8::1]:80"), "[2001:db8::1]");
        assert_eq!(host_without_port("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(host_without_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(host_without_port("a:b"), "a:b");
        let ours = vec![row(&[
            ("id.orig_h", "10.0.0.2"),
            ("id.orig_p", "443"),
            ("id.resp_h", "10.0.0.1"),
            ("id.resp_p", "40000"),
            ("proto", "tcp"),
            ("server_name", "example.com"),
        ])];
        let mut t = Tally::default();
        t.add_names("pcaps:x", &[n.clone(), quic], &ours);
        assert_eq!((t.named, t.names_equal, t.names_no_row), (2, 1, 1));
        let mut other = ours;
        other[0].insert("server_name".into(), "-".into());
        t.add_names("pcaps:y", &[n], &other);
        assert_eq!(t.names_missing, 1);
    }
}
