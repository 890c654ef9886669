use super::*;
use tapflow_proto::upstream::LinkAccount;

fn counters(sent: Vec<u64>) -> CollectorCounters {
    let total: u64 = sent.iter().sum();
    CollectorCounters {
        packets_read: total + 2,
        packets_summarised: total,
        fragments_merged: 2,
        summaries: total,
        summaries_sent: sent,
        ..Default::default()
    }
}

fn link(
    sender: &str,
    shard: u16,
    sent: u64,
    received: u64,
    gaps: u64,
    c: &CollectorCounters,
) -> LinkAccount {
    LinkAccount {
        sender: sender.into(),
        incarnation: 1,
        claim: Some(ShardClaim {
            epoch: 1,
            shard_count: 2,
            shard,
        }),
        summaries_received: received,
        gaps,
        eos_seq: Some(sent),
        eos_status: Some(EosStatus::Complete),
        counters: Some(c.clone()),
        ..Default::default()
    }
}

fn account(name: &str, links: Vec<LinkAccount>) -> ProcessorAccount {
    ProcessorAccount {
        processor: name.into(),
        links,
        ..Default::default()
    }
}

#[test]
fn complete_run_reconciles() {
    let c = counters(vec![10, 5]);
    let r = reconcile(&[
        account("p0", vec![link("a", 0, 10, 10, 0, &c)]),
        account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
    ]);
    assert!(r.reconciled && r.routing_consistent, "{}", table(&r));
    assert_eq!(r.collectors[0].links.len(), 2);
}

#[test]
fn gaps_reconcile_but_a_silent_loss_does_not() {
    let c = counters(vec![10, 5]);
    let r = reconcile(&[
        account("p0", vec![link("a", 0, 10, 7, 3, &c)]),
        account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
    ]);
    assert!(r.reconciled, "gaps are accounted: {}", table(&r));
    let r = reconcile(&[
        account("p0", vec![link("a", 0, 10, 7, 0, &c)]),
        account("p1", vec![link("a", 1, 5, 5, 0, &c)]),
    ]);
    assert!(!r.reconciled);
}

#[test]
fn a_missing_link_does_not_reconcile() {
    let c = counters(vec![10, 5]);
    let r = reconcile(&[account("p0", vec![link("a", 0, 10, 10, 0, &c)])]);
    assert!(!r.reconciled);
    assert_eq!(r.collectors[0].links[1].processor, None);
}

#[test]
fn a_dead_processor_incarnation_is_named_with_what_it_lost() {
    use tapflow_proto::upstream::{LinkProgress, ProcessorHeartbeat};
    // Link 1: 100 sent; incarnation 1 had received 30 at its last heartbeat and died;
    // incarnation 2 joined at 45 and received the remaining 55.
    let c = counters(vec![10, 100]);
    let mut restarted = link("a", 1, 100, 55, 0, &c);
    restarted.first_seq = 45;
    let mut p1 = account("p1", vec![restarted]);
    p1.incarnation = 2;
    p1.counters.flows_split = 4;
    let mut upstream = Upstream::new();
    upstream.on_heartbeat(&ProcessorHeartbeat {
        processor: "p1".into(),
        incarnation: 1,
        flows_open: 4,
        member: None,
        links: vec![LinkProgress {
            sender: "a".into(),
            incarnation: 1,
            shard: 1,
            first_seq: 0,
            summaries_received: 30,
            gaps: 0,
        }],
        ..Default::default()
    });
    let r = reconcile_with(
        &[account("p0", vec![link("a", 0, 10, 10, 0, &c)]), p1],
        &upstream,
    );
    assert!(r.reconciled && !r.complete, "{}", table(&r));
    let l = &r.collectors[0].links[1];
    assert_eq!(
        (
            l.received,
            l.lost_with_dead_processor,
            l.dead_processor_received
        ),
        (55, 45, 30)
    );
    let d = &r.dead_processors[0];
    assert_eq!(
        (
            d.superseded,
            d.summaries_after_last_heartbeat,
            d.sessions_lost_upper_bound
        ),
        (true, 15, 19)
    );
    // A hole the surviving incarnation's join does not explain is a silent loss.
    let mut silent = link("a", 1, 100, 50, 0, &c);
    silent.first_seq = 45;
    let r = reconcile(&[
        account("p0", vec![link("a", 0, 10, 10, 0, &c)]),
        account("p1", vec![silent]),
    ]);
    assert!(!r.reconciled, "{}", table(&r));
}

#[test]
fn a_dead_collector_is_reported_not_reconciled() {
    let c = counters(vec![10, 5]);
    let mut l = link("a", 0, 10, 8, 0, &c);
    (l.eos_seq, l.eos_status) = (None, None);
    let r = reconcile(&[account("p0", vec![l])]);
    let row = &r.collectors[0];
    assert!(row.dead && r.reconciled && !r.complete, "{}", table(&r));
    assert_eq!(row.links[0].lost_with_collector_at_least, 2);
}

#[test]
fn skew_and_late_are_reported_per_link_and_collector() {
    let c = counters(vec![10, 5]);
    let mut l0 = link("a", 0, 10, 10, 0, &c);
    (l0.skew_max_ms, l0.late) = (4_980, 3);
    let mut l1 = link("a", 1, 5, 5, 0, &c);
    l1.skew_max_ms = 5_010;
    let r = reconcile(&[account("p0", vec![l0]), account("p1", vec![l1])]);
    let row = &r.collectors[0];
    let links: Vec<(u64, u64)> = row.links.iter().map(|l| (l.skew_max_ms, l.late)).collect();
    assert_eq!(
        (row.skew_max_ms, links),
        (5_010, vec![(4_980, 3), (5_010, 0)])
    );
    assert!(r.reconciled && table(&r).contains("5010"), "{}", table(&r));
}

#[test]
fn misrouting_is_flagged() {
    let c = counters(vec![10, 5]);
    let mut l = link("a", 1, 5, 5, 0, &c);
    l.misrouted = 5;
    let r = reconcile(&[
        account("p0", vec![link("a", 0, 10, 10, 0, &c)]),
        account("p1", vec![l]),
    ]);
    assert!(!r.routing_consistent);
}

#[test]
fn a_link_to_a_member_removed_for_good_is_counted_lost_with_it() {
    use crate::control::{Decision, MembershipReport};
    use tapflow_proto::procset::Change;
    use tapflow_proto::upstream::{LinkProgress, ProcessorHeartbeat};
    // Link 1 (p1): 40 sent, 25 received at p1's last heartbeat, then p1 died and never
    // ended; the aggregator removed it from the set.
    let c = counters(vec![10, 40]);
    let mut upstream = Upstream::new();
    upstream.on_heartbeat(&ProcessorHeartbeat {
        processor: "p1".into(),
        incarnation: 1,
        links: vec![LinkProgress {
            sender: "a".into(),
            incarnation: 1,
            shard: 1,
            first_seq: 0,
            summaries_received: 25,
            gaps: 0,
        }],
        ..Default::default()
    });
    let accounts = [account("p0", vec![link("a", 0, 10, 10, 0, &c)])];
    let membership = |changes: &[Change]| MembershipReport {
        pinned: false,
        dead_after_ms: 10_000,
        hold_down_ms: 30_000,
        counts: Default::default(),
        decisions: changes
            .iter()
            .map(|&change| Decision {
                change,
                switch_at_ns: 1,
                processor: "p1".into(),
                for_ms: 10_000,
            })
            .collect(),
        restored: 0,
    };
    let settled = |changes: &[Change]| {
        let mut r = reconcile_with(&accounts, &upstream);
        assert!(!r.reconciled, "no end-of-stream on link 1: {}", table(&r));
        r.membership = Some(membership(changes));
        r.settle_removed();
        r
    };
    let r = settled(&[Change::Remove(1)]);
    assert!(r.reconciled && !r.complete, "{}", table(&r));
    let l = &r.collectors[0].links[1];
    assert_eq!((l.sent, l.lost_with_dead_processor), (40, 40));
    assert!(!table(&r).contains("MISMATCH"), "{}", table(&r));
    // Added back (its return never ended either) or never removed: still a mismatch.
    for changes in [&[Change::Remove(1), Change::Add(1)][..], &[]] {
        let r = settled(changes);
        assert!(!r.reconciled, "{changes:?}: {}", table(&r));
    }
}
