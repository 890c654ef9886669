//! Zeek's session rules on the traces of Zeek's own test suite that show them
//! (`../shared/zeek-corpus`, issue 16), in process: each trace decoded as its test ran it and fed
//! to one `FlowTable`, every row of Zeek's conn.log found in the same direction with every
//! compared field equal.
//! - No flip towards the IPv4 broadcast address: a DHCP server's broadcast reply
//!   (scripts.base.protocols.dhcp.dhcp-all-msg-types).
//! - No payload sizes for IP protocols Zeek has no analyzer for: SCTP (core.unknown-ip-protocol).
//! - The flip of a connection first seen at its SYN-ACK from a likely server port, `^h...`
//!   (scripts.base.protocols.krb.krb-service-name, scripts.base.protocols.ssh.half-duplex-server).

use tapflow_integration_tests::inprocess::{row, sessions};
use tapflow_integration_tests::zeek::{parse_zeek_log, Tally, FIELDS};
use tapflow_integration_tests::zeek_corpus::corpus_dir;

const TESTS: &[&str] = &[
    "scripts.base.protocols.dhcp.dhcp-all-msg-types",
    "core.unknown-ip-protocol",
    "scripts.base.protocols.krb.krb-service-name",
    "scripts.base.protocols.ssh.half-duplex-server",
];

#[test]
fn zeek_session_rules_on_zeeks_own_traces() {
    let Some(dir) = corpus_dir() else { return };
    let manifest =
        std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("reading the corpus manifest");
    let mut tally = Tally::default();
    for test in TESTS {
        let cols: Vec<&str> = manifest
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|c| c.first() == Some(test))
            .expect("the test's row in MANIFEST.tsv");
        let (truth, trace, collector_flags) = (cols[1], cols[2], cols[5]);
        let truth = std::fs::read_to_string(dir.join(truth)).expect("reading Zeek's conn.log");
        let verify = !collector_flags.contains("--ignore-checksums");
        let ours = sessions(&dir.join(trace), verify).expect("decoding the trace into sessions");
        tally.add(
            test,
            &parse_zeek_log(&truth),
            ours.iter().map(row).collect(),
        );
    }
    println!("{}", tally.report);
    for c in &tally.captures {
        assert!(
            c.zeek_conns > 0,
            "{}: an empty truth\n{}",
            c.capture,
            tally.report
        );
        assert_eq!(
            (c.found, c.flipped, c.ours),
            (c.zeek_conns, 0, c.zeek_conns),
            "{}: connections found, flipped, ours\n{}",
            c.capture,
            tally.report
        );
        for field in FIELDS {
            let (agree, n) = c.field(field);
            assert_eq!(agree, n, "{}: {field}\n{}", c.capture, tally.report);
        }
    }
}
