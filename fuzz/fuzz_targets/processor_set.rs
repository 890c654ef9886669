//! Any bytes as a processor set, both ways one reaches a host: `SlotTable::from_bytes` (a
//! serialised slot table) and `ProcessorSet::parse` (the set file, the bytes read as UTF-8,
//! lossily). Neither may panic, whatever the bytes (DESIGN invariant 7).
//! - A table that decodes is well formed (members strictly ascending, every slot owned by a
//!   member, every member owning a slot), re-encodes to exactly the bytes it came from (the
//!   format has one encoding per table), and those decode to an equal table.
//! - A set that parses has epochs numbered 1, 2, ... in packet-time order, each table well
//!   formed and round-tripping, each epoch its predecessor plus or minus the one member its
//!   change names. Requiring endpoints changes nothing but a `NoEndpoint` for a member without
//!   one.
//!
//! A valid table is at least 4,111 bytes, past libFuzzer's default `-max_len` of 4,096 for an
//! empty corpus: the table checks run once the corpus holds a table (or with `-max_len`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow_proto::procset::{Change, ProcessorSet, SetError};
use tapflow_proto::slots::{SlotTable, SLOTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = SlotTable::from_bytes(data) {
        check_table(&table);
        assert_eq!(table.to_bytes(), data, "re-encoded {table:?}");
    }
    let text = String::from_utf8_lossy(data);
    match ProcessorSet::parse(&text, false) {
        Ok(set) => {
            check_set(&set);
            match ProcessorSet::parse(&text, true) {
                Ok(with) => assert_eq!(with, set),
                Err(SetError::NoEndpoint(id)) => {
                    assert!(set.all_members().contains(&id) && set.endpoint(id).is_none());
                }
                Err(e) => panic!("parsed without endpoints, but with them: {e}"),
            }
        }
        // Endpoints are checked last: any other error is the same either way.
        Err(e) => match ProcessorSet::parse(&text, true) {
            Err(with) => assert_eq!(with.to_string(), e.to_string()),
            Ok(_) => panic!("parsed with endpoints, but without them: {e}"),
        },
    }
});

/// `table` keeps the invariants every constructor keeps and survives a round trip.
fn check_table(table: &SlotTable) {
    let members = table.members();
    assert!(!members.is_empty(), "{table:?}");
    assert!(members.windows(2).all(|w| w[0] < w[1]), "{table:?}");
    assert_eq!(table.owners().len(), SLOTS);
    for &owner in table.owners() {
        assert!(
            table.contains(owner),
            "owner {owner} is not a member of {table:?}"
        );
    }
    let loads = table.loads();
    assert!(
        loads.iter().all(|&(_, l)| l > 0),
        "idle member in {table:?}"
    );
    assert_eq!(loads.iter().map(|&(_, l)| l).sum::<usize>(), SLOTS);
    let decoded = SlotTable::from_bytes(&table.to_bytes());
    assert_eq!(decoded.as_ref(), Ok(table), "round trip of {table:?}");
}

/// `set`'s epochs are its history replayed in order.
fn check_set(set: &ProcessorSet) {
    let epochs = set.epochs();
    assert!(!epochs.is_empty());
    assert_eq!((epochs[0].starts_ns, epochs[0].change), (0, None));
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e.table.epoch() as usize, i + 1);
        assert_eq!(set.epoch(e.table.epoch()), Some(e));
        check_table(&e.table);
    }
    for w in epochs.windows(2) {
        let (old, new) = (&w[0].table, &w[1].table);
        assert!(w[0].starts_ns <= w[1].starts_ns, "epochs out of order");
        let mut expected = old.members().to_vec();
        match w[1].change {
            Some(Change::Add(id)) => {
                assert!(!old.contains(id));
                expected.push(id);
                expected.sort_unstable();
            }
            Some(Change::Remove(id)) => {
                assert!(old.contains(id));
                expected.retain(|&m| m != id);
            }
            None => panic!("epoch {} has no change", new.epoch()),
        }
        assert_eq!(new.members(), expected, "epoch {}", new.epoch());
    }
    assert!(set.extends(set));
    assert_eq!(set.epoch_at(0), &epochs[0]);
    assert_eq!(set.latest(), &epochs[epochs.len() - 1]);
}
