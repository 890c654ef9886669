//! Comparing tapflow's conn log with Zeek's on Zeek's own regression tests
//! (`../shared/zeek-corpus`, see its README.md): reading `MANIFEST.tsv`, matching our records to
//! each baseline's rows and counting agreement per test and per field, with every remaining
//! difference listed. The per-test counts are held exactly in `golden/zeek_corpus.tsv`
//! (refreshed with `UPDATE_GOLDEN=1`), the totals against the constants below.
//!
//! Matching: a baseline with the `id.orig_h` and `id.resp_h` columns is matched row by row on
//! the id columns it has (and `proto` when it has it), in Zeek's direction first, then swapped
//! ("tuple" mode). A baseline without them (the btests that cut their conn.log down to
//! `history` and the like) can only be compared as multisets of values per field ("multiset"
//! mode): a test's agreement on a field is the size of the intersection of Zeek's values and
//! ours, its connections found the smaller of the two counts. Only the columns a baseline has
//! are compared; `service` is not compared here.
//!
//! Direction in bare mode: tapflow orients a connection as Zeek does with its default scripts
//! loaded (the processor's `Flow::new`: a first packet that is not a plain SYN, or a UDP
//! datagram, coming from one of `ZEEK_SERVER_PORTS_TCP`/`_UDP` is flipped and its history
//! starts with `^`). A bare-mode (`-b`) Zeek registers only the analyzers its test loads, so it
//! knows fewer likely server ports and keeps such a connection as it came. The rule, kept
//! small: on a bare-mode row, a connection we found swapped, whose history starts with `^`, and
//! whose Zeek originator port is in our likely-server ports for its protocol, is **explained**
//! (counted apart, with the reason); its fields are compared with ours mirrored (originator and
//! responder counts swapped, the `^` dropped and the history's case swapped). In multiset mode
//! on a bare-mode row, a record of ours whose history starts with `^` is mirrored the same way
//! when its mirrored history is one of Zeek's still unmatched and its own is not. Any other
//! swap is a disagreement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tapflow_processor::session::{ZEEK_SERVER_PORTS_TCP, ZEEK_SERVER_PORTS_UDP};

use crate::zeek::{Row, FIELDS};

/// The totals this test holds (`ALL` of the table): tests, tests whose three processes all
/// exited 0, Zeek's connections, found, of those explained by bare mode, and field values
/// agreeing / compared.
pub const TOTAL_TESTS: usize = 79;
pub const TOTAL_CLEAN_RUNS: usize = 79;
pub const TOTAL_ZEEK_CONNS: usize = 237;
pub const TOTAL_FOUND: usize = 237;
pub const TOTAL_EXPLAINED: usize = 0;
pub const TOTAL_AGREE: usize = 1816;
pub const TOTAL_COMPARED: usize = 1822;

/// The id columns, and each one's counterpart with originator and responder swapped.
const ID_COLUMNS: &[(&str, &str)] = &[
    ("id.orig_h", "id.resp_h"),
    ("id.orig_p", "id.resp_p"),
    ("id.resp_h", "id.orig_h"),
    ("id.resp_p", "id.orig_p"),
    ("proto", "proto"),
    ("ip_proto", "ip_proto"),
];

/// The counted fields with an originator and a responder side.
const SIDED: &[(&str, &str)] = &[
    ("orig_pkts", "resp_pkts"),
    ("orig_ip_bytes", "resp_ip_bytes"),
    ("orig_bytes", "resp_bytes"),
];

/// `../shared/zeek-corpus` beside the repository, or `None` (with the reason printed) when
/// absent: a user's clone may not have it; CI always does.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = crate::repo_root().join("../shared/zeek-corpus");
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (Zeek's test traces sit beside the clone in CI)",
            dir.display()
        );
        None
    }
}

/// The golden per-test table, `integration-tests/golden/zeek_corpus.tsv`.
pub fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/zeek_corpus.tsv")
}

/// One row of `MANIFEST.tsv`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub test: String,
    pub truth: PathBuf,
    pub trace: PathBuf,
    /// Zeek ran with `-b` (bare mode).
    pub bare: bool,
    pub collector_flags: Vec<String>,
    pub zeek_conns: usize,
}

/// The rows of `dir/MANIFEST.tsv`, in its order (columns found by the header's names).
pub fn manifest(dir: &Path) -> Vec<Entry> {
    let text = crate::read_text(&dir.join("MANIFEST.tsv"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (test, truth, trace, flags, scripts, cflags, conns) = (
        col("test"),
        col("truth"),
        col("trace"),
        col("zeek_flags"),
        col("zeek_scripts"),
        col("collector_flags"),
        col("zeek_conns"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            let get = |c: Option<usize>| c.and_then(|c| cells.get(c)).copied().unwrap_or("");
            Entry {
                test: get(test).to_owned(),
                truth: dir.join(get(truth)),
                trace: dir.join(get(trace)),
                bare: get(flags).split_whitespace().any(|f| f == "-b")
                    || get(scripts).starts_with("bare"),
                collector_flags: get(cflags)
                    .split_whitespace()
                    .filter(|f| *f != "-")
                    .map(str::to_owned)
                    .collect(),
                zeek_conns: get(conns).parse().unwrap_or(0),
            }
        })
        .collect()
}

/// The exit codes of one run's collector, processor and aggregator (`None`: killed at the
/// deadline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exits {
    pub collector: Option<i32>,
    pub processor: Option<i32>,
    pub aggregator: Option<i32>,
}

impl Exits {
    pub fn clean(&self) -> bool {
        [self.collector, self.processor, self.aggregator]
            .iter()
            .all(|c| *c == Some(0))
    }

    /// `collector/processor/aggregator`, `k` for killed.
    pub fn cell(&self) -> String {
        let c = |c: Option<i32>| c.map_or_else(|| "k".to_owned(), |c| c.to_string());
        format!(
            "{}/{}/{}",
            c(self.collector),
            c(self.processor),
            c(self.aggregator)
        )
    }
}

/// One test's agreement with Zeek: one row of the golden table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestAgreement {
    pub test: String,
    /// `tuple` or `multiset` (see the module doc).
    pub mode: &'static str,
    pub bare: bool,
    pub exits: Exits,
    pub zeek_conns: usize,
    pub ours: usize,
    /// Zeek's connections we have, in either direction.
    pub found: usize,
    /// Found only swapped, not explained by bare mode.
    pub flipped: usize,
    /// Found swapped as full-mode Zeek would have (see the module doc).
    pub explained: usize,
    /// Our records matched to none of Zeek's, and Zeek's connections we lack.
    pub extra: usize,
    pub missing: usize,
    /// field -> (agree, compared); a field the baseline lacks is absent.
    pub fields: BTreeMap<&'static str, (usize, usize)>,
}

impl TestAgreement {
    pub fn header() -> String {
        format!(
            "# test\tmode\tscripts\texits\tzeek_conns\tours\tfound\tflipped\texplained\textra\tmissing\t{}",
            FIELDS.join("\t")
        )
    }

    pub fn row(&self) -> String {
        let mut cells = vec![
            self.test.clone(),
            self.mode.to_owned(),
            (if self.bare { "bare" } else { "full" }).to_owned(),
            self.exits.cell(),
        ];
        cells.extend(
            [
                self.zeek_conns,
                self.ours,
                self.found,
                self.flipped,
                self.explained,
                self.extra,
                self.missing,
            ]
            .iter()
            .map(usize::to_string),
        );
        cells.extend(FIELDS.iter().map(|f| match self.fields.get(f) {
            Some((agree, n)) => format!("{agree}/{n}"),
            None => "-".to_owned(),
        }));
        cells.join("\t")
    }

    /// Agreeing and compared field values, all fields together.
    pub fn values(&self) -> (usize, usize) {
        self.fields
            .values()
            .fold((0, 0), |(a, n), (fa, fn_)| (a + fa, n + fn_))
    }

    fn count(&mut self, field: &'static str, agree: bool) {
        let e = self.fields.entry(field).or_default();
        e.1 += 1;
        e.0 += usize::from(agree);
    }
}

/// One remaining difference: test, connection (Zeek's five-tuple, or `(multiset)`), field,
/// Zeek's value and ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub test: String,
    pub conn: String,
    pub field: String,
    pub zeek: String,
    pub ours: String,
}

/// A direction difference explained by bare mode, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub test: String,
    pub conn: String,
    pub reason: String,
}

/// Agreement over the corpus.
#[derive(Default)]
pub struct Corpus {
    pub tests: Vec<TestAgreement>,
    pub differences: Vec<Difference>,
    pub explained: Vec<Explained>,
}

/// `proto orig_h:orig_p > resp_h:resp_p` of a row, `?` for a column it lacks.
fn conn_name(row: &Row) -> String {
    let g = |k: &str| row.get(k).map_or("?", String::as_str);
    format!(
        "{} {}:{} > {}:{}",
        g("proto"),
        g("id.orig_h"),
        g("id.orig_p"),
        g("id.resp_h"),
        g("id.resp_p")
    )
}

/// A history with originator and responder swapped: the `^` dropped, each letter's case
/// swapped (upper case is the originator's).
pub fn mirror_history(h: &str) -> String {
    let h = h.strip_prefix('^').unwrap_or(h);
    if h.is_empty() {
        return "-".to_owned();
    }
    h.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Our row with originator and responder swapped, as Zeek would have logged the connection
/// had it kept the first packet's direction.
pub fn mirror(row: &Row) -> Row {
    let mut out = row.clone();
    let sided = SIDED.iter().flat_map(|&(a, b)| [(a, b), (b, a)]);
    for (a, b) in ID_COLUMNS.iter().copied().chain(sided) {
        if let Some(v) = row.get(b) {
            out.insert(a.to_owned(), v.clone());
        }
    }
    if let Some(h) = row.get("history") {
        out.insert("history".to_owned(), mirror_history(h));
    }
    // A datagram flow only one side spoke on: S0 when it was the originator, SHR when the
    // responder (Zeek's `conn_state` for UDP, ICMP and other protocols).
    let state = match out.get("conn_state").map(String::as_str) {
        Some("S0") => "SHR",
        Some("SHR") => "S0",
        _ => "",
    };
    if row.get("proto").is_some_and(|p| p != "tcp") && !state.is_empty() {
        out.insert("conn_state".to_owned(), state.to_owned());
    }
    out
}

/// Why full-mode Zeek would have flipped a connection that bare-mode Zeek logged as `zeek`
/// (with the columns of a conn.log row), or `None`: Zeek's own history does not start with `^`,
/// its originator port is a likely server port with the default scripts (tapflow's list, the
/// processor's `Flow::new`) and its responder port is not, and the responder is not the IPv4
/// broadcast address (Zeek keeps broadcasts as they came).
pub fn full_mode_flip(zeek: &Row) -> Option<String> {
    let g = |k: &str| zeek.get(k).map_or("", String::as_str);
    let (proto, orig_p, resp_p) = (g("proto"), g("id.orig_p"), g("id.resp_p"));
    let flips = !g("history").starts_with('^')
        && likely_server(proto, orig_p)
        && !likely_server(proto, resp_p)
        && g("id.resp_h") != "255.255.255.255";
    flips.then(|| {
        format!(
            "bare mode: {orig_p}/{proto} is a likely server port only with Zeek's default scripts"
        )
    })
}

/// Whether `port` is one of tapflow's (full-mode Zeek's) likely server ports for `proto`.
pub fn likely_server(proto: &str, port: &str) -> bool {
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    match proto {
        "tcp" => ZEEK_SERVER_PORTS_TCP.contains(&port),
        "udp" => ZEEK_SERVER_PORTS_UDP.contains(&port),
        _ => false,
    }
}

/// Takes our row matching Zeek's on the id columns Zeek's row has: in Zeek's direction first
/// (false), then swapped (true).
pub fn take(zeek: &Row, ours: &mut Vec<Row>) -> Option<(Row, bool)> {
    let cols: Vec<&(&str, &str)> = ID_COLUMNS
        .iter()
        .filter(|(c, _)| zeek.contains_key(*c))
        .collect();
    let matches = |r: &Row, swapped: bool| {
        cols.iter().all(|(c, m)| {
            let k = if swapped { *m } else { *c };
            r.get(k) == zeek.get(*c)
        })
    };
    let (at, swapped) = match ours.iter().position(|r| matches(r, false)) {
        Some(at) => (at, false),
        None => (ours.iter().position(|r| matches(r, true))?, true),
    };
    Some((ours.remove(at), swapped))
}

impl Corpus {
    /// Compares one test's baseline rows with our records, adding its row and differences.
    pub fn add(&mut self, entry: &Entry, exits: Exits, zeek: &[Row], ours: Vec<Row>) {
        let mut a = TestAgreement {
            test: entry.test.clone(),
            bare: entry.bare,
            exits,
            zeek_conns: zeek.len(),
            ours: ours.len(),
            ..TestAgreement::default()
        };
        let tuple = zeek
            .first()
            .is_some_and(|r| r.contains_key("id.orig_h") && r.contains_key("id.resp_h"));
        if tuple {
            a.mode = "tuple";
            self.add_tuple(&mut a, zeek, ours);
        } else {
            a.mode = "multiset";
            self.add_multiset(&mut a, zeek, ours);
        }
        self.tests.push(a);
    }

    fn differ(&mut self, test: &str, conn: &str, field: &str, zeek: &str, ours: &str) {
        self.differences.push(Difference {
            test: test.to_owned(),
            conn: conn.to_owned(),
            field: field.to_owned(),
            zeek: zeek.to_owned(),
            ours: ours.to_owned(),
        });
    }

    fn add_tuple(&mut self, a: &mut TestAgreement, zeek: &[Row], mut ours: Vec<Row>) {
        let test = a.test.clone();
        for row in zeek {
            let conn = conn_name(row);
            let Some((mut r, swapped)) = take(row, &mut ours) else {
                a.missing += 1;
                self.differ(&test, &conn, "connection", "present", "absent");
                continue;
            };
            a.found += 1;
            if swapped {
                // Zeek's row, its missing columns taken from ours as Zeek would have logged it.
                let mut view = mirror(&r);
                view.extend(row.iter().map(|(k, v)| (k.clone(), v.clone())));
                let ours_history = r.get("history").map_or("", String::as_str);
                match full_mode_flip(&view).filter(|_| a.bare && ours_history.starts_with('^')) {
                    Some(reason) => {
                        a.explained += 1;
                        self.explained.push(Explained {
                            test: test.clone(),
                            conn: conn.clone(),
                            reason: format!("{reason} (ours {ours_history})"),
                        });
                        r = mirror(&r);
                    }
                    None => {
                        a.flipped += 1;
                        self.differ(&test, &conn, "direction", &conn, &conn_name(&r));
                    }
                }
            }
            for &field in FIELDS {
                let Some(theirs) = row.get(field) else {
                    continue;
                };
                let mine = r.get(field).map_or("-", String::as_str);
                a.count(field, mine == theirs);
                if mine != theirs {
                    self.differ(&test, &conn, field, theirs, mine);
                }
            }
        }
        a.extra = ours.len();
        for r in &ours {
            self.differ(&test, &conn_name(r), "connection", "absent", "present");
        }
    }

    fn add_multiset(&mut self, a: &mut TestAgreement, zeek: &[Row], mut ours: Vec<Row>) {
        let test = a.test.clone();
        a.found = zeek.len().min(ours.len());
        a.missing = zeek.len() - a.found;
        a.extra = ours.len() - a.found;
        if a.bare && zeek.first().is_some_and(|r| r.contains_key("history")) {
            self.mirror_explained(&test, a, zeek, &mut ours);
        }
        for &field in FIELDS {
            if !zeek.first().is_some_and(|r| r.contains_key(field)) {
                continue;
            }
            let mut mine: Vec<&str> = ours
                .iter()
                .map(|r| r.get(field).map_or("-", String::as_str))
                .collect();
            let mut theirs_left = Vec::new();
            for row in zeek {
                let theirs = row.get(field).map_or("-", String::as_str);
                match mine.iter().position(|m| *m == theirs) {
                    Some(at) => {
                        mine.remove(at);
                    }
                    None => theirs_left.push(theirs),
                }
            }
            // Of the `found` pairs, those Zeek's values and ours could not be paired up in.
            let differ = a.found.saturating_sub(zeek.len() - theirs_left.len());
            let e = a.fields.entry(field).or_default();
            e.0 += a.found - differ;
            e.1 += a.found;
            for (theirs, mine) in theirs_left.iter().zip(mine).take(differ) {
                self.differ(&test, "(multiset)", field, theirs, mine);
            }
        }
    }

    /// Multiset mode, bare-mode row: mirrors each record of ours that full-mode Zeek would have
    /// flipped (see [`full_mode_flip`]), whose history Zeek lacks and whose mirrored history it
    /// has.
    fn mirror_explained(
        &mut self,
        test: &str,
        a: &mut TestAgreement,
        zeek: &[Row],
        ours: &mut [Row],
    ) {
        let mut left: Vec<String> = zeek
            .iter()
            .map(|r| r.get("history").cloned().unwrap_or_default())
            .collect();
        for r in ours.iter_mut() {
            let h = r.get("history").cloned().unwrap_or_default();
            if let Some(at) = left.iter().position(|z| *z == h) {
                left.remove(at);
                continue;
            }
            let view = mirror(r);
            let mirrored = view.get("history").cloned().unwrap_or_default();
            let Some(at) = left.iter().position(|z| *z == mirrored) else {
                continue;
            };
            let Some(reason) = full_mode_flip(&view).filter(|_| h.starts_with('^')) else {
                continue;
            };
            left.remove(at);
            a.explained += 1;
            self.explained.push(Explained {
                test: test.to_owned(),
                conn: conn_name(&view),
                reason: format!("{reason} (ours {h}, Zeek {mirrored})"),
            });
            *r = view;
        }
    }

    /// Every test summed, named `ALL`.
    pub fn totals(&self) -> TestAgreement {
        let mut all = TestAgreement {
            test: "ALL".to_owned(),
            mode: "-",
            ..TestAgreement::default()
        };
        for t in &self.tests {
            all.zeek_conns += t.zeek_conns;
            all.ours += t.ours;
            all.found += t.found;
            all.flipped += t.flipped;
            all.explained += t.explained;
            all.extra += t.extra;
            all.missing += t.missing;
            for (field, (agree, n)) in &t.fields {
                let e = all.fields.entry(field).or_default();
                e.0 += agree;
                e.1 += n;
            }
        }
        all
    }

    /// Tests whose three processes all exited 0.
    pub fn clean_runs(&self) -> usize {
        self.tests.iter().filter(|t| t.exits.clean()).count()
    }

    /// The golden table's text: a comment, the header, one row per test.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "# Agreement with Zeek's conn.log on Zeek's own tests (../shared/zeek-corpus/MANIFEST.tsv),\n\
             # one row per test: how Zeek's test scripts ran (full or bare), the exit codes of the\n\
             # collector/processor/aggregator (k: killed at the deadline), Zeek's connections, our\n\
             # records, Zeek's connections found, of those swapped (a disagreement) and swapped as\n\
             # explained by bare mode, our records matching none and Zeek's we lack, and per field\n\
             # `agree/compared` (`-`: not in the baseline). mode: tuple (matched by id columns) or\n\
             # multiset (baseline without id columns). Checked exactly by tests/zeek_corpus.rs;\n\
             # refresh with UPDATE_GOLDEN=1 and review the diff.\n",
        );
        out += &TestAgreement::header();
        out.push('\n');
        for t in &self.tests {
            out += &t.row();
            out.push('\n');
        }
        out
    }

    /// The readable report: the table with the totals, the percentages, every explained
    /// direction and every remaining difference.
    pub fn report(&self) -> String {
        let all = self.totals();
        let mut out = self.table();
        let mut cells: Vec<String> = all.row().split('\t').map(str::to_owned).collect();
        cells[2] = "-".to_owned();
        cells[3] = format!("{}/{} clean", self.clean_runs(), self.tests.len());
        out += &cells.join("\t");
        out.push('\n');
        let (agree, compared) = all.values();
        out += &format!(
            "\nruns exiting 0: {}/{} tests\nconnections found: {}/{} ({})\nfield values agreeing: {agree}/{compared} ({})\n",
            self.clean_runs(),
            self.tests.len(),
            all.found,
            all.zeek_conns,
            percent(all.found, all.zeek_conns),
            percent(agree, compared),
        );
        for (field, (a, n)) in &all.fields {
            out += &format!("  {field:<14} {a}/{n} ({})\n", percent(*a, *n));
        }
        out += &format!("\nexplained by bare mode ({}):\n", self.explained.len());
        for e in &self.explained {
            out += &format!("  {}\t{}\t{}\n", e.test, e.conn, e.reason);
        }
        let mut by_field: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for d in &self.differences {
            *by_field.entry((&d.test, &d.field)).or_default() += 1;
        }
        out += "\ndifferences by test and field:\n";
        for ((test, field), n) in &by_field {
            out += &format!("  {n:>4}  {test}  {field}\n");
        }
        out += &format!(
            "\nremaining differences ({}): test, connection, field, zeek, ours\n",
            self.differences.len()
        );
        for d in &self.differences {
            out += &format!(
                "  {}\t{}\t{}\tzeek={}\tours={}\n",
                d.test, d.conn, d.field, d.zeek, d.ours
            );
        }
        out
    }

    /// Every way the totals differ from the constants above.
    pub fn total_differences(&self) -> Vec<String> {
        let all = self.totals();
        let (agree, compared) = all.values();
        let checks = [
            ("tests", self.tests.len(), TOTAL_TESTS),
            ("runs exiting 0", self.clean_runs(), TOTAL_CLEAN_RUNS),
            ("zeek connections", all.zeek_conns, TOTAL_ZEEK_CONNS),
            ("found", all.found, TOTAL_FOUND),
            ("explained by bare mode", all.explained, TOTAL_EXPLAINED),
            ("field values agreeing", agree, TOTAL_AGREE),
            ("field values compared", compared, TOTAL_COMPARED),
        ];
        checks
            .iter()
            .filter(|(_, got, want)| got != want)
            .map(|(what, got, want)| format!("{what}: {got}, expected {want}"))
            .collect()
    }
}

/// `a/n` as a percentage with one decimal.
pub fn percent(a: usize, n: usize) -> String {
    if n == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", a as f64 * 100.0 / n as f64)
}
