//! Comparing tapflow's sessions with Zeek's own conn.log (the truth files beside the shared
//! captures): parsing Zeek's ASCII logs, turning our records into the same column/value form,
//! matching by five-tuple and counting agreement per capture and per field. The counts are held
//! exactly: per capture in `golden/zeek.tsv` (refreshed with `UPDATE_GOLDEN=1`, reviewed in the
//! diff), and in total against the figures the README states.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// The README's figures ("Agreement with Zeek's own conn.log"): 9 files, 49 connections, none
/// missing; `conn_state`, `history`, `orig/resp_pkts` agree on 49/49, the other fields on 48/48
/// (zeek-dns-corrupt's truth has only five columns).
pub const README_FILES: usize = 9;
pub const README_CONNS: usize = 49;
pub fn readme_agreement(field: &str) -> (usize, usize) {
    match field {
        "conn_state" | "history" | "orig_pkts" | "resp_pkts" => (49, 49),
        _ => (48, 48),
    }
}

/// The golden per-capture table, `integration-tests/golden/zeek.tsv`.
pub fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/zeek.tsv")
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
    // Zeek's `ip_proto` column (the IP protocol number, which `proto` names only for TCP,
    // UDP and ICMP) tells apart two `unknown_transport` connections between the same hosts.
    if let Some(p) = v["ip_proto"].as_u64() {
        row.insert("ip_proto".to_owned(), p.to_string());
    }
    row
}

/// How one of Zeek's connections was found among ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Our originator is Zeek's.
    Same,
    /// Found only with the endpoints swapped: we chose the other side as originator.
    Flipped,
}

/// Takes the first of our rows with Zeek's five-tuple, in Zeek's direction first, then swapped;
/// a row without a five-tuple (a btest baseline with few columns) takes the only row there is.
pub fn take_match(row: &Row, ours: &mut Vec<Row>) -> Option<(Row, Direction)> {
    let Some(orig_h) = row.get("id.orig_h") else {
        return (ours.len() == 1).then(|| (ours.remove(0), Direction::Same));
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
    let (at, dir) = match ours.iter().position(|r| fwd(r) == want) {
        Some(at) => (at, Direction::Same),
        None => (
            ours.iter().position(|r| rev(r) == want)?,
            Direction::Flipped,
        ),
    };
    Some((ours.remove(at), dir))
}

/// One capture's agreement with Zeek: one row of `golden/zeek.tsv`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureAgreement {
    pub capture: String,
    /// Connections in Zeek's conn.log.
    pub zeek_conns: usize,
    /// Records in ours.
    pub ours: usize,
    /// Zeek's connections we have (a missing one counts in no field below).
    pub found: usize,
    /// Of those, found only with the endpoints swapped.
    pub flipped: usize,
    /// field -> (agree, compared); a field Zeek's truth lacks is absent.
    pub fields: BTreeMap<&'static str, (usize, usize)>,
}

impl CaptureAgreement {
    /// The header of the golden table.
    pub fn header() -> String {
        format!(
            "# capture\tzeek_conns\tours\tfound\tflipped\t{}",
            FIELDS.join("\t")
        )
    }

    /// This capture as a table row: counts, then `agree/compared` per field (`-`: not in
    /// Zeek's truth).
    pub fn row(&self) -> String {
        let mut cells = vec![
            self.capture.clone(),
            self.zeek_conns.to_string(),
            self.ours.to_string(),
            self.found.to_string(),
            self.flipped.to_string(),
        ];
        cells.extend(FIELDS.iter().map(|f| match self.fields.get(f) {
            Some((agree, n)) => format!("{agree}/{n}"),
            None => "-".to_owned(),
        }));
        cells.join("\t")
    }

    /// (agree, compared) for `field`, (0, 0) when never compared.
    pub fn field(&self, field: &str) -> (usize, usize) {
        self.fields.get(field).copied().unwrap_or_default()
    }
}

/// Agreement over many captures: one [`CaptureAgreement`] each, and a readable report with
/// every mismatch.
#[derive(Default)]
pub struct Tally {
    pub captures: Vec<CaptureAgreement>,
    pub report: String,
}

impl Tally {
    /// Compares one capture's rows and appends its table (and every mismatch) to the report.
    pub fn add(&mut self, file: &str, zeek: &[Row], mut ours: Vec<Row>) {
        let mut a = CaptureAgreement {
            capture: file.to_owned(),
            zeek_conns: zeek.len(),
            ours: ours.len(),
            ..CaptureAgreement::default()
        };
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
            let Some((r, dir)) = take_match(row, &mut ours) else {
                lines.push(format!("  MISSING {id}"));
                continue;
            };
            a.found += 1;
            if dir == Direction::Flipped {
                a.flipped += 1;
                lines.push(format!("  FLIPPED {id}"));
            }
            for &field in FIELDS {
                let Some(theirs) = row.get(field) else {
                    continue;
                };
                let mine = r.get(field).cloned().unwrap_or_default();
                let e = a.fields.entry(field).or_default();
                e.1 += 1;
                if mine == *theirs {
                    e.0 += 1;
                } else {
                    lines.push(format!("  {id}: {field} zeek={theirs} ours={mine}"));
                }
            }
        }
        self.report += &format!(
            "{file}: zeek {} conns, ours {}, found {}, flipped {}\n",
            a.zeek_conns, a.ours, a.found, a.flipped
        );
        for (field, (agree, n)) in &a.fields {
            self.report += &format!("  {field:<14} {agree}/{n}\n");
        }
        for l in lines {
            self.report += &l;
            self.report.push('\n');
        }
        self.captures.push(a);
    }

    /// Every capture summed, named `ALL`.
    pub fn totals(&self) -> CaptureAgreement {
        let mut all = CaptureAgreement {
            capture: "ALL".to_owned(),
            ..CaptureAgreement::default()
        };
        for c in &self.captures {
            all.zeek_conns += c.zeek_conns;
            all.ours += c.ours;
            all.found += c.found;
            all.flipped += c.flipped;
            for (field, (agree, n)) in &c.fields {
                let e = all.fields.entry(field).or_default();
                e.0 += agree;
                e.1 += n;
            }
        }
        all
    }

    /// The golden table's text: a comment, the header, one row per capture.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "# Agreement with Zeek's own conn.log (../shared/pcaps/truth/*.zeek-conn.log), one row per\n\
             # capture with a truth: Zeek's connections, our records, Zeek's connections we found, of\n\
             # those how many with originator and responder swapped, and per field `agree/compared`\n\
             # (`-`: not in Zeek's truth). Checked exactly by tests/zeek_inprocess.rs and\n\
             # tests/zeek_pipeline.rs; refresh with UPDATE_GOLDEN=1 and review the diff.\n",
        );
        out += &CaptureAgreement::header();
        out.push('\n');
        for c in &self.captures {
            out += &c.row();
            out.push('\n');
        }
        out
    }

    /// Appends the totals to the report and returns every way they differ from the README.
    pub fn readme_differences(&mut self) -> Vec<String> {
        let all = self.totals();
        self.report += &format!("{}\n{}\n", CaptureAgreement::header(), all.row());
        let mut out = Vec::new();
        let mut expect = |what: &str, got: (usize, usize), want: (usize, usize)| {
            if got != want {
                out.push(format!(
                    "{what}: {}/{} where the README says {}/{}",
                    got.0, got.1, want.0, want.1
                ));
            }
        };
        expect(
            "files, connections",
            (self.captures.len(), all.zeek_conns),
            (README_FILES, README_CONNS),
        );
        expect(
            "found (\"no connection missing\")",
            (all.found, all.zeek_conns),
            (README_CONNS, README_CONNS),
        );
        expect("flipped", (all.flipped, all.found), (0, README_CONNS));
        for &field in FIELDS {
            expect(field, all.field(field), readme_agreement(field));
        }
        out
    }
}

/// Compares `actual` with the golden file at `path`, or writes it when `UPDATE_GOLDEN` is set.
/// Both are tab-separated tables keyed by their first column, with a `# key\tcol...` header:
/// returns, for each row whose cells differ, `key: column golden=A now=B`, and rows only in one
/// as `- row` (golden) or `+ row` (now). Empty when equal.
pub fn golden_differences(path: &Path, actual: &str) -> Vec<String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).expect("writing the golden file");
        return Vec::new();
    }
    let Ok(want) = std::fs::read_to_string(path) else {
        return vec![format!(
            "{} is missing: create it with UPDATE_GOLDEN=1 and review it",
            path.display()
        )];
    };
    let header: Vec<&str> = actual
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains('\t'))
        .unwrap_or_default()
        .split('\t')
        .collect();
    let rows = |text: &'_ str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    };
    let (want_rows, got_rows) = (rows(&want), rows(actual));
    let shown = |r: &[String]| r.join(" | ");
    let mut out = Vec::new();
    for w in &want_rows {
        match got_rows.iter().find(|g| g[0] == w[0]) {
            None => out.push(format!("- {}", shown(w))),
            Some(g) => {
                for (k, (a, b)) in w.iter().zip(g).enumerate().skip(1) {
                    if a != b {
                        let col = header.get(k).copied().unwrap_or("?");
                        out.push(format!("{}: {col} golden={a} now={b}", w[0]));
                    }
                }
                if w.len() != g.len() {
                    out.push(format!(
                        "{}: {} cells golden, {} now",
                        w[0],
                        w.len(),
                        g.len()
                    ));
                }
            }
        }
    }
    for g in &got_rows {
        if !want_rows.iter().any(|w| w[0] == g[0]) {
            out.push(format!("+ {}", shown(g)));
        }
    }
    if out.is_empty() && want != actual {
        out.push("the comments or the row order differ".to_owned());
    }
    out
}

/// Fails, naming the file and the differing lines, unless `actual` equals the golden file.
pub fn assert_golden(path: &Path, actual: &str) {
    let diff = golden_differences(path, actual);
    assert!(
        diff.is_empty(),
        "{} differs (- golden, + now):\n{}\nIf the change is intended, refresh with UPDATE_GOLDEN=1 \
         and review the diff.",
        path.display(),
        diff.join("\n")
    );
}
