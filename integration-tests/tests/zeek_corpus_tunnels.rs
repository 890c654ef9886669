//! Tunnels against Zeek's own test suite, in process: the tunnel tests of `../shared/zeek-corpus`
//! (`core.tunnels.*` and `core.unknown-ip-protocol` of Zeek's regression suite) are decoded, fed
//! to one `FlowTable` and compared with the conn.log Zeek wrote for each, field by field. Every
//! connection of Zeek's must be found, no other made, and every field agree (the tunnel-change
//! `X` and the unknown transport's byte counts included).

use tapflow_integration_tests::inprocess::{row, sessions};
use tapflow_integration_tests::zeek::{parse_zeek_log, Tally};
use tapflow_integration_tests::zeek_corpus::corpus_dir;

#[test]
fn tunnel_traces_agree_with_zeek() {
    let Some(dir) = corpus_dir() else { return };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("reading MANIFEST");
    let mut tally = Tally::default();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(test), Some(truth), Some(trace), Some(flags)) =
            (cols.first(), cols.get(1), cols.get(2), cols.get(3))
        else {
            continue;
        };
        if !(test.starts_with("core.tunnels.") || *test == "core.unknown-ip-protocol") {
            continue;
        }
        let verify = !flags.split(' ').any(|f| f == "-C");
        let zeek = parse_zeek_log(&std::fs::read_to_string(dir.join(truth)).expect("truth"));
        let ours = sessions(&dir.join(trace), verify).expect("decoding the trace into sessions");
        tally.add(test, &zeek, ours.iter().map(row).collect());
    }
    println!("{}", tally.report);
    println!("{}", tally.table());
    assert!(tally.captures.len() >= 13, "{} tests", tally.captures.len());
    for c in &tally.captures {
        let name = c.capture.as_str();
        assert_eq!(
            (c.found, c.ours, c.flipped),
            (c.zeek_conns, c.zeek_conns, 0),
            "{name}: Zeek's connections found, ours, flipped\n{}",
            tally.report
        );
        for (field, (agree, n)) in &c.fields {
            assert!(
                agree == n,
                "{name}: {field} agrees on {agree}/{n}\n{}",
                tally.report
            );
        }
    }
}
