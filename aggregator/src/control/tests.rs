use std::collections::BTreeMap;

use super::*;

const SEC: Duration = Duration::from_secs(1);
const WM: u64 = 1_700_000_000_000_000_000;

fn policy(pinned: bool) -> Policy {
    Policy {
        dead_after: 2 * SEC,
        hold_down: 3 * SEC,
        margin_ns: 1_000_000_000,
        pinned,
    }
}

fn set(initial: &[u16]) -> ProcessorSet {
    ProcessorSet::replay(initial, &[], BTreeMap::new()).expect("valid set")
}

/// `set` with the decided change appended, as the aggregator applies it.
fn apply(set: &ProcessorSet, d: &Decision) -> ProcessorSet {
    let (initial, mut changes) = set.history();
    changes.push((d.change, d.switch_at_ns));
    let new = set
        .with_history(&initial, &changes, false)
        .expect("applies");
    assert!(new.extends(set));
    new
}

/// Heartbeats of `ids` (named pID) every 200 ms from `from` to `to` (inclusive).
fn beat(m: &mut Membership, ids: &[u16], from: Instant, to: Instant) {
    let mut t = from;
    while t <= to {
        for &id in ids {
            m.heartbeat(&format!("p{id}"), Some(id), WM, t);
        }
        t += SEC / 5;
    }
}

fn change(v: Option<Verdict>) -> Option<(Change, u64)> {
    match v {
        Some(Verdict::Change(d)) => Some((d.change, d.for_ms)),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn a_silent_member_is_removed_after_dead_after_and_comes_back_after_the_hold_down() {
    let t0 = Instant::now();
    let mut m = Membership::new(policy(false));
    let mut s = set(&[0, 1, 2]);
    beat(&mut m, &[0, 1, 2], t0, t0);
    // Silent 1.8 s: not yet.
    beat(&mut m, &[0, 2], t0, t0 + 2 * SEC);
    assert_eq!(m.decide(&s, t0 + SEC * 19 / 10), None);
    let v = m.decide(&s, t0 + 2 * SEC).expect("decided");
    let Verdict::Change(d) = v else {
        panic!("{v:?}")
    };
    assert_eq!(d.change, Change::Remove(1));
    assert_eq!(d.processor, "p1");
    assert_eq!(d.for_ms, 2000);
    assert_eq!(
        d.switch_at_ns,
        WM + 1_000_000_000,
        "the newest watermark plus the margin"
    );
    s = apply(&s, &d);
    assert_eq!(s.latest().table.members(), &[0, 2]);
    // Decided once.
    assert_eq!(m.decide(&s, t0 + 3 * SEC), None);

    // p1 restarted at +5 s: back only once heard without a gap for the hold-down (3 s).
    let t1 = t0 + 5 * SEC;
    beat(&mut m, &[0, 1, 2], t1, t1 + 3 * SEC);
    assert_eq!(m.decide(&s, t1 + SEC * 29 / 10), None);
    let v = m.decide(&s, t1 + 3 * SEC);
    assert_eq!(change(v.clone()), Some((Change::Add(1), 3000)));
    let Some(Verdict::Change(d)) = v else {
        unreachable!()
    };
    assert!(d.switch_at_ns > s.latest().starts_ns);
    s = apply(&s, &d);
    assert_eq!(s.latest().table.members(), &[0, 1, 2]);
    assert_eq!(s.epochs().len(), 3);
    assert_eq!(m.decide(&s, t1 + 4 * SEC), None);
    assert_eq!(
        m.counts,
        MembershipCounts {
            removed: 1,
            added: 1,
            ..MembershipCounts::default()
        }
    );
    assert_eq!(m.decisions.len(), 2);
}

#[test]
fn a_flapping_processor_restarts_its_hold_down_at_each_gap() {
    let t0 = Instant::now();
    let mut m = Membership::new(policy(false));
    let mut s = set(&[0, 1]);
    beat(&mut m, &[0, 1], t0, t0);
    beat(&mut m, &[0], t0, t0 + 2 * SEC);
    let Some(Verdict::Change(d)) = m.decide(&s, t0 + 2 * SEC) else {
        panic!("not removed")
    };
    s = apply(&s, &d);
    // Back for 2 s, gone 2.5 s, back again: the hold-down counts from the second return.
    let t1 = t0 + 3 * SEC;
    beat(&mut m, &[0, 1], t1, t1 + 2 * SEC);
    let t2 = t1 + 2 * SEC + SEC * 5 / 2;
    beat(&mut m, &[0], t1 + 2 * SEC, t2 + 3 * SEC);
    beat(&mut m, &[1], t2, t2 + 3 * SEC);
    assert_eq!(m.decide(&s, t1 + 3 * SEC), None, "not healthy for 3 s yet");
    assert_eq!(
        m.decide(&s, t2 + SEC * 29 / 10),
        None,
        "the gap restarted it"
    );
    assert_eq!(
        change(m.decide(&s, t2 + 3 * SEC)),
        Some((Change::Add(1), 3000))
    );
}

#[test]
fn pinned_decides_nothing_and_reports_each_once() {
    let t0 = Instant::now();
    let mut m = Membership::new(policy(true));
    let s = set(&[0, 1, 2]);
    beat(&mut m, &[0, 1, 2], t0, t0);
    beat(&mut m, &[0], t0, t0 + 10 * SEC);
    let v = m.decide(&s, t0 + 2 * SEC);
    assert!(
        matches!(&v, Some(Verdict::Pinned(d)) if d.change == Change::Remove(1)),
        "{v:?}"
    );
    let v = m.decide(&s, t0 + 2 * SEC);
    assert!(
        matches!(&v, Some(Verdict::Pinned(d)) if d.change == Change::Remove(2)),
        "{v:?}"
    );
    assert_eq!(m.decide(&s, t0 + 10 * SEC), None);
    assert_eq!(m.counts.pinned_suppressed, 2);
    assert!(m.decisions.is_empty());
}

#[test]
fn the_last_member_the_unheard_and_the_ended_stay() {
    let t0 = Instant::now();
    // The last member.
    let mut m = Membership::new(policy(false));
    let s = set(&[4]);
    beat(&mut m, &[4], t0, t0);
    let v = m.decide(&s, t0 + 5 * SEC);
    assert_eq!(
        v,
        Some(Verdict::LastMember {
            id: 4,
            processor: "p4".into()
        })
    );
    assert_eq!(m.decide(&s, t0 + 6 * SEC), None);
    assert_eq!(m.counts.last_member_kept, 1);

    // Never heard (2), or ended by itself (1): never removed.
    let mut m = Membership::new(policy(false));
    let s = set(&[0, 1, 2]);
    beat(&mut m, &[0, 1], t0, t0);
    m.ended("p1");
    beat(&mut m, &[0], t0, t0 + 60 * SEC);
    assert_eq!(m.decide(&s, t0 + 60 * SEC), None);

    // No watermark yet (or only a processor without input's u64::MAX): no instant to
    // announce, nothing decided.
    let mut m = Membership::new(policy(false));
    m.heartbeat("p0", Some(0), u64::MAX, t0);
    m.heartbeat("p0", Some(0), 0, t0);
    m.heartbeat("p1", Some(1), 0, t0);
    m.heartbeat("p0", Some(0), 0, t0 + 5 * SEC);
    assert_eq!(m.decide(&s, t0 + 5 * SEC), None);
    // Once there is one, u64::MAX does not move it.
    m.heartbeat("p0", Some(0), WM, t0 + 5 * SEC);
    m.heartbeat("p0", Some(0), u64::MAX, t0 + 5 * SEC);
    let v = m.decide(&s, t0 + 5 * SEC);
    assert!(
        matches!(&v, Some(Verdict::Change(d)) if d.switch_at_ns == WM + 1_000_000_000),
        "{v:?}"
    );
}

#[test]
fn an_operators_removal_is_not_undone() {
    let t0 = Instant::now();
    let mut m = Membership::new(policy(false));
    let s =
        ProcessorSet::replay(&[0, 1], &[(Change::Remove(1), WM)], BTreeMap::new()).expect("valid");
    // p1 keeps draining, healthy for long: it stays out.
    beat(&mut m, &[0, 1], t0, t0 + 60 * SEC);
    assert_eq!(m.decide(&s, t0 + 60 * SEC), None);
}
