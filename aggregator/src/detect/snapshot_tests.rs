//! A detector restored from a snapshot taken between any two records decides what the
//! detector it was taken from decides: the same events, the same counters.

use tapflow_proto::summary::tcp;
use tapflow_proto::Addr;

use super::*;
use crate::testutil::scan_and_sessions;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// Six minutes of a port scan among sessions whose servers' handshakes slow down tenfold in
/// the fifth minute, a spoofed SYN flood over two minutes, a UDP flood of records spanning
/// flood windows, and unsolicited DNS answers from many servers: every kind of state the
/// detector keeps (distinct sets, SYN and volume aggregates, peak-rate intervals, one-way
/// flows, latency samples and baselines, episodes over several windows).
fn inputs() -> Vec<DetectInput> {
    let mut v: Vec<DetectInput> = scan_and_sessions(36_000)
        .iter()
        .map(|r| {
            let mut d = DetectInput::from(r);
            if r.resp_p == 443 {
                let slow = if r.ts_ns >= T0 + 240 * S { 10 } else { 1 };
                d.latency.tcp_rtt_ns = Some(slow * (1_000_000 + r.ts_ns % 7 * 1000));
            }
            d
        })
        .collect();
    let template = DetectInput::from(&scan_and_sessions(1)[0]);
    let v4 = |i: u32| Addr::from_v4(i.to_be_bytes());
    for i in 0..3_000u32 {
        v.push(DetectInput {
            ts_ns: T0 + 30 * S + u64::from(i) * 40_000_000,
            duration_ns: None,
            orig_h: v4(0x0b00_0000 + i),
            resp_h: v4(0x0a0a_0a0a),
            orig_p: 1024,
            resp_p: 25565,
            orig_pkts: 1,
            resp_pkts: 0,
            orig_tcp_flags: tcp::SYN,
            resp_tcp_flags: 0,
            history_first: b'S',
            syn_acked: false,
            answered: false,
            latency: Default::default(),
            ..template
        });
    }
    for i in 0..120u32 {
        v.push(DetectInput {
            ts_ns: T0 + 100 * S + u64::from(i) * 100_000_000,
            duration_ns: Some(4 * S + u64::from(i) * 1000),
            orig_h: v4(0x0c00_0000 + i),
            resp_h: v4(0x0a00_0063),
            orig_p: 1000,
            resp_p: 9,
            proto: 17,
            orig_pkts: 5_000,
            orig_ip_bytes: 5_000 * 600,
            resp_pkts: 0,
            resp_ip_bytes: 0,
            orig_tcp_flags: 0,
            resp_tcp_flags: 0,
            history_first: b'D',
            syn_acked: false,
            answered: false,
            latency: Default::default(),
        });
    }
    for i in 0..40u32 {
        v.push(DetectInput {
            ts_ns: T0 + 200 * S + u64::from(i) * S / 4,
            duration_ns: None,
            orig_h: v4(0x0a0a_0a0b),
            resp_h: v4(0xc612_0001 + i),
            orig_p: 40_000 + i as u16,
            resp_p: 53,
            proto: 17,
            orig_pkts: 0,
            resp_pkts: 3,
            orig_tcp_flags: 0,
            resp_tcp_flags: 0,
            history_first: b'^',
            syn_acked: false,
            answered: true,
            latency: Default::default(),
            ..template
        });
    }
    v.sort_by_key(DetectInput::last_ns);
    v
}

fn run(d: &mut Detector, inputs: &[DetectInput], out: &mut Vec<AlertEvent>) {
    for i in inputs {
        d.on_input(i, out);
    }
}

#[test]
fn a_detector_restored_anywhere_decides_what_one_that_ran_through_decides() {
    let inputs = inputs();
    let cfg = DetectConfig::default;
    let mut through = Detector::new(cfg());
    let mut expected = Vec::new();
    run(&mut through, &inputs, &mut expected);
    through.finish(&mut expected);
    let kinds: std::collections::BTreeSet<_> = expected.iter().map(|e| e.kind).collect();
    for k in [
        AlertKind::PortScan,
        AlertKind::SynFlood,
        AlertKind::UdpFlood,
        AlertKind::Reflection,
        AlertKind::Latency,
    ] {
        assert!(kinds.contains(&k), "the input raises {k}: {kinds:?}");
    }
    assert!(
        expected.iter().any(|e| e.event == EventKind::Update),
        "an episode spans windows"
    );
    let n = inputs.len();
    for split in [0, 1, n / 7, n / 3, n / 2, 2 * n / 3, 5 * n / 6, n - 1, n] {
        let mut before = Detector::new(cfg());
        let mut got = Vec::new();
        run(&mut before, &inputs[..split], &mut got);
        let state = before.save().expect("the state encodes");
        let mut after = Detector::new(cfg());
        after.restore(&state).expect("the state reads back");
        run(&mut after, &inputs[split..], &mut got);
        after.finish(&mut got);
        assert_eq!(got, expected, "restored after {split} of {n} records");
        assert_eq!(after.stats(), through.stats(), "counters, split at {split}");
    }
}

/// A detector that took the first half of `inputs`, and its saved state.
fn halfway(inputs: &[DetectInput]) -> (Detector, Vec<u8>) {
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &inputs[..inputs.len() / 2], &mut Vec::new());
    let state = d.save().expect("the state encodes");
    (d, state)
}

#[test]
fn a_damaged_state_is_refused_and_leaves_the_detector_as_it_was() {
    let (_, state) = halfway(&inputs());
    let mut fresh = Detector::new(DetectConfig::default());
    for cut in [0, 1, state.len() / 3, state.len() - 1] {
        assert!(fresh.restore(&state[..cut]).is_err(), "cut at {cut}");
        assert_eq!(fresh.stats(), DetectStats::default());
    }
}

/// A restart with other window lengths cannot read the windows held (their bounds differ):
/// the state is refused, saying why, and the detector starts afresh; a restart with another
/// hold or episode gap takes the state and applies its own values from then on.
#[test]
fn a_state_is_refused_by_a_detector_whose_windows_differ() {
    let inputs = inputs();
    let (d, state) = halfway(&inputs);
    let differ: [fn(&mut DetectConfig); 3] = [
        |c| c.window_s /= 2,
        |c| c.flood_window_s += 1,
        |c| c.peak_interval_ms *= 2,
    ];
    for change in differ {
        let mut cfg = DetectConfig::default();
        change(&mut cfg);
        let mut other = Detector::new(cfg);
        let err = other.restore(&state).expect_err("other windows");
        assert!(matches!(err, StateError::Shape { .. }), "{err}");
        assert!(
            err.to_string().contains("are not this configuration's"),
            "{err}"
        );
        assert_eq!(other.stats(), DetectStats::default());
    }
    let cfg = DetectConfig {
        hold_s: 0,
        episode_gap: 3,
        ..DetectConfig::default()
    };
    let mut other = Detector::new(cfg);
    other.restore(&state).expect("the same windows");
    assert_eq!(other.stats(), d.stats());
    // With no hold, the next record's time judges every window that ended before it.
    let judged = other.stats().windows_judged;
    run(
        &mut other,
        &inputs[inputs.len() / 2..][..1],
        &mut Vec::new(),
    );
    let mut held = Detector::new(DetectConfig::default());
    held.restore(&state).expect("the same configuration");
    run(&mut held, &inputs[inputs.len() / 2..][..1], &mut Vec::new());
    assert!(
        other.stats().windows_judged > held.stats().windows_judged.max(judged),
        "the restored detector judges with its own hold"
    );
}

/// A state of another format (a later build's, or one from before formats were numbered) is
/// refused by its number, not read field by field.
#[test]
fn a_state_of_another_format_is_refused_by_its_number() {
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &inputs()[..50], &mut Vec::new());
    let state = d.save().expect("the state encodes");
    // A four-element array whose first element is the format, a positive fixint.
    assert_eq!(state[..2], [0x94, STATE_FORMAT as u8]);
    let mut later = state.clone();
    later[1] = STATE_FORMAT as u8 + 1;
    let mut unnumbered = vec![0x93];
    unnumbered.extend_from_slice(&state[2..]);
    for (bytes, found) in [(later, STATE_FORMAT + 1), (unnumbered, 0)] {
        let mut fresh = Detector::new(DetectConfig::default());
        let err = fresh.restore(&bytes).expect_err("another format");
        assert!(
            matches!(err, StateError::Format { found: f } if f == found),
            "{err}"
        );
        assert_eq!(fresh.stats(), DetectStats::default());
    }
}
