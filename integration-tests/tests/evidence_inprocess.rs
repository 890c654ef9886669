//! Payload evidence (issue 17) from the decoder to the processor's connections, in process:
//! the collector's evidence table attaches each young flow's first bytes to its summaries,
//! and the flow table puts them back in stream order in the connection, by Zeek's roles.

use std::path::{Path, PathBuf};

use tapflow_collector::evidence::EvidenceConfig;
use tapflow_integration_tests::inprocess::run;

fn ssh_pcap() -> Option<PathBuf> {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/pcaps/zeek-ssh.pcap"
    ))
    .to_path_buf();
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (the shared captures sit beside the clone in CI)",
            p.display()
        );
        None
    }
}

/// The (originator port, responder port) of Zeek's rows with `service` `ssh` in the truth.
fn zeek_ssh_ports(pcap: &Path) -> Vec<(u16, u16)> {
    let name = pcap.file_name().expect("a file name").to_string_lossy();
    let truth = pcap.with_file_name(format!("truth/{name}.zeek-conn.log"));
    let text = std::fs::read_to_string(&truth).expect("read the Zeek truth");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.get(7) == Some(&"ssh"))
        .map(|c| {
            let port = |i: usize| c[i].parse::<u16>().expect("a port");
            (port(3), port(5))
        })
        .collect()
}

/// zeek-ssh.pcap: each connection Zeek labels `ssh` holds evidence in both directions that
/// starts with the SSH version banner, within the budget; no other holds a banner.
#[test]
fn ssh_banners_reach_the_processor_connections() {
    let Some(pcap) = ssh_pcap() else { return };
    let mut want = zeek_ssh_ports(&pcap);
    assert_eq!(want.len(), 22, "the truth's ssh rows");
    let r = run(&pcap, true, EvidenceConfig::default()).expect("run zeek-ssh.pcap");
    let mut got = Vec::new();
    for key in &r.with_payload {
        let [orig, resp] = r
            .table
            .evidence(key)
            .expect("a connection that got payload holds evidence");
        let budget = EvidenceConfig::DEFAULT_BYTES as usize;
        assert!(orig.len() <= budget && resp.len() <= budget, "{key:?}");
        if orig.starts_with(b"SSH-") && resp.starts_with(b"SSH-") {
            // The banners say who is who: the client speaks from its own port.
            let ports = [(key.lo_port, key.hi_port), (key.hi_port, key.lo_port)];
            let hit = ports.into_iter().find(|p| want.contains(p));
            got.push(hit.unwrap_or((key.lo_port, key.hi_port)));
        }
    }
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    let c = r.evidence;
    assert!(c.bytes_shipped > 0 && c.pieces_shipped > 0, "{c:?}");
    assert_eq!(c.table_full, 0, "{c:?}");
    // SSH has no early stop: its encrypted traffic runs past the budget (a cut).
    assert!(c.budget > 0, "{c:?}");
}

/// With evidence off, nothing is shipped and the connections hold none.
#[test]
fn evidence_off_ships_nothing() {
    let Some(pcap) = ssh_pcap() else { return };
    let r = run(&pcap, true, EvidenceConfig::OFF).expect("run zeek-ssh.pcap");
    assert!(r.with_payload.is_empty());
    assert_eq!(r.evidence.pieces_shipped, 0);
}
