//! Slot tables (issue 8, `proto/src/slots.rs`), held from outside the crate:
//! - flow affinity: both directions of a flow have one owner, in every table;
//! - initial tables, and tables after any sequence of adds and removes, are balanced within one
//!   slot, every slot owned by a member and every member owning a slot;
//! - adding a member moves exactly the slots it is given, about 1 / (n + 1) of the flows;
//!   removing any member (first, middle, last) moves only its own slots, its share of the flows;
//! - plain jump hash, removing the middle of n processors by renumbering, moves about half;
//! - serialisation round-trips and malformed bytes are typed errors.
//!
//! The measuring tests print their tables: `cargo nextest run -p tapflow-proto --test slots
//! --no-capture` (figures copied into `docs/scaling.md`).

mod common;
use common::SplitMix64;
use proptest::prelude::*;
use tapflow_proto::key::ip_proto;
use tapflow_proto::shard::shard_of_hash;
use tapflow_proto::slots::{
    slot, slot_of_hash, SlotTable, TableDecodeError, TableError, SLOTS, TABLE_HEADER_LEN,
    TABLE_MAGIC,
};
use tapflow_proto::{flow_hash, shard, Addr, FiveTuple, FlowKey};

/// Random keys the measurements hash.
const RANDOM_KEYS: usize = 200_000;
/// Largest distance from an ideal fraction a measurement may show.
const TOLERANCE: f64 = 0.01;

// ---------------------------------------------------------------------------------------------
// Invariants of any table

/// `table` is well formed and balanced: members ascending, every slot owned by a member, every
/// member owning a slot, loads within one of each other.
fn check_table(table: &SlotTable) -> Result<(), TestCaseError> {
    let members = table.members();
    prop_assert!(!members.is_empty());
    prop_assert!(members.windows(2).all(|w| w[0] < w[1]), "{:?}", members);
    prop_assert_eq!(table.owners().len(), SLOTS);
    let mut owners = table.owners().to_vec();
    owners.sort_unstable();
    owners.dedup();
    prop_assert_eq!(&owners[..], members, "owners and members differ");
    let loads: Vec<usize> = table.loads().iter().map(|&(_, l)| l).collect();
    prop_assert_eq!(loads.iter().sum::<usize>(), SLOTS);
    let (min, max) = (loads.iter().min(), loads.iter().max());
    prop_assert!(
        matches!((min, max), (Some(a), Some(b)) if b - a <= 1),
        "unbalanced: {:?}",
        table
    );
    let decoded = SlotTable::from_bytes(&table.to_bytes());
    prop_assert_eq!(decoded.as_ref(), Ok(table));
    Ok(())
}

/// `after` is `before` plus `id`: only the slots `id` now owns moved, all of them from members
/// that stay, and there are `floor(S / (n + 1))` of them.
fn check_add(before: &SlotTable, after: &SlotTable, id: u16) -> Result<(), TestCaseError> {
    check_table(after)?;
    let moved = before.moved(after);
    let given: Vec<u16> = (0..SLOTS as u16)
        .filter(|&s| after.owner_of_slot(s) == Some(id))
        .collect();
    prop_assert_eq!(&moved, &given, "add {} moved other slots", id);
    prop_assert_eq!(moved.len(), SLOTS / (before.members().len() + 1));
    prop_assert_eq!(after.members().len(), before.members().len() + 1);
    prop_assert!(after.contains(id) && !before.contains(id));
    Ok(())
}

/// `after` is `before` without `id`: exactly `id`'s slots moved, to members that stay.
fn check_remove(before: &SlotTable, after: &SlotTable, id: u16) -> Result<(), TestCaseError> {
    check_table(after)?;
    let moved = before.moved(after);
    let owned: Vec<u16> = (0..SLOTS as u16)
        .filter(|&s| before.owner_of_slot(s) == Some(id))
        .collect();
    prop_assert_eq!(&moved, &owned, "remove {} moved other slots", id);
    prop_assert!(!after.contains(id));
    prop_assert_eq!(after.members().len() + 1, before.members().len());
    Ok(())
}

fn arb_members(max: usize) -> impl Strategy<Value = Vec<u16>> {
    prop::collection::btree_set(any::<u16>(), 1..=max)
        .prop_map(|s| s.into_iter().collect())
        .prop_shuffle()
}

fn arb_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(Addr::from_v4),
        any::<[u8; 16]>().prop_map(Addr::from_v6),
    ]
}

fn arb_tuple() -> impl Strategy<Value = FiveTuple> {
    (
        prop_oneof![Just(ip_proto::TCP), Just(ip_proto::UDP), any::<u8>()],
        arb_addr(),
        arb_addr(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(proto, src, dst, sport, dport)| FiveTuple {
            proto,
            src,
            dst,
            sport,
            dport,
        })
}

/// One step of a membership history: add this id, or remove the member at this index (mod n).
#[derive(Debug, Clone)]
enum Op {
    Add(u16),
    Remove(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u16>().prop_map(Op::Add),
        any::<usize>().prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn both_directions_have_one_owner(
        t in arb_tuple(),
        vlan in prop_oneof![Just(0u16), any::<u16>()],
        members in arb_members(16),
    ) {
        let back = FiveTuple { proto: t.proto, src: t.dst, dst: t.src, sport: t.dport, dport: t.sport };
        let (k1, k2) = (t.key(vlan).0, back.key(vlan).0);
        let table = SlotTable::initial(1, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(slot(&k1), slot(&k2));
        prop_assert_eq!(slot(&k1), shard(&k1, SLOTS as u16), "slot is jump hash onto S slots");
        prop_assert_eq!(table.owner(&k1), table.owner(&k2));
        prop_assert_eq!(Some(table.owner(&k1)), table.owner_of_slot(slot(&k1)));
    }

    /// Initial tables are balanced and do not depend on the order members are listed in.
    #[test]
    fn initial_is_balanced(members in arb_members(64), epoch in any::<u32>()) {
        let table = SlotTable::initial(epoch, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_table(&table)?;
        prop_assert_eq!(table.epoch(), epoch);
        let mut sorted = members.clone();
        sorted.sort_unstable();
        prop_assert_eq!(table.members(), &sorted[..]);
        let again = SlotTable::initial(epoch, &sorted);
        prop_assert_eq!(again.as_ref(), Ok(&table));
    }

    #[test]
    fn add_moves_only_the_new_members_slots(members in arb_members(32), id in any::<u16>()) {
        prop_assume!(!members.contains(&id));
        let before = SlotTable::initial(1, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let after = before.with_added(2, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_add(&before, &after, id)?;
        prop_assert_eq!(after.epoch(), 2);
    }

    #[test]
    fn remove_moves_only_the_removed_members_slots(members in arb_members(32), which in any::<usize>()) {
        prop_assume!(members.len() > 1);
        let before = SlotTable::initial(1, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let id = before.members()[which % members.len()];
        let after = before.with_removed(7, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_remove(&before, &after, id)?;
    }

    /// Whatever the bytes, decoding returns; what it accepts is a valid table.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(t) = SlotTable::from_bytes(&bytes) {
            check_table(&t)?;
        }
    }

    /// A valid encoding with a few bytes changed decodes to a valid table or a typed error.
    #[test]
    fn mutated_tables_are_valid_or_refused(
        members in arb_members(8),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let table = SlotTable::initial(3, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = table.to_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(t) = SlotTable::from_bytes(&bytes) {
            prop_assert!(t.members().windows(2).all(|w| w[0] < w[1]));
            prop_assert!(t.owners().iter().all(|o| t.contains(*o)));
            prop_assert!(t.members().iter().all(|&m| t.load(m) > 0));
        }
    }
}

proptest! {
    // Each case checks up to 40 tables of 4096 slots.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any history of adds and removes keeps every invariant, and replaying it gives the same
    /// table (what lets collectors compute a change independently).
    #[test]
    fn histories_stay_balanced(members in arb_members(8), ops in prop::collection::vec(arb_op(), 1..40)) {
        let mut table = SlotTable::initial(1, &members).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut replay = table.clone();
        for op in ops {
            let epoch = table.epoch() + 1;
            let next = match op {
                Op::Add(id) if table.contains(id) => {
                    prop_assert_eq!(table.with_added(epoch, id), Err(TableError::AlreadyMember(id)));
                    continue;
                }
                Op::Add(id) => {
                    let next = table.with_added(epoch, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    check_add(&table, &next, id)?;
                    replay = replay.with_added(epoch, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    next
                }
                Op::Remove(i) => {
                    let id = table.members()[i % table.members().len()];
                    if table.members().len() == 1 {
                        prop_assert_eq!(table.with_removed(epoch, id), Err(TableError::LastMember(id)));
                        continue;
                    }
                    let next = table.with_removed(epoch, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    check_remove(&table, &next, id)?;
                    replay = replay.with_removed(epoch, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    next
                }
            };
            prop_assert_eq!(next.epoch(), epoch);
            prop_assert_eq!(&next, &replay);
            table = next;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serialisation

fn table(epoch: u32, members: &[u16]) -> SlotTable {
    SlotTable::initial(epoch, members).expect("valid members")
}

/// Byte offsets of the version 1 layout (module docs of `slots.rs`).
const VERSION_AT: usize = 4;
const SLOT_COUNT_AT: usize = 9;
const MEMBER_COUNT_AT: usize = 11;

#[test]
fn round_trips_narrow_and_wide() {
    for members in [
        vec![0u16],
        vec![3, 1, 2],
        (0..256).collect(),
        (0..257).collect(),
        (0..SLOTS as u16).collect(),
    ] {
        let t = table(7, &members);
        let bytes = t.to_bytes();
        assert_eq!(bytes.len(), t.encoded_len());
        assert_eq!(&bytes[..4], &TABLE_MAGIC);
        assert_eq!(SlotTable::from_bytes(&bytes), Ok(t.clone()));
        let later = if members.len() < SLOTS {
            t.with_added(u32::MAX, u16::MAX).expect("add")
        } else {
            t.with_removed(u32::MAX, 0).expect("remove")
        };
        assert_eq!(SlotTable::from_bytes(&later.to_bytes()), Ok(later));
    }
    let t = table(1, &[5, 9]);
    assert_eq!(t.encoded_len(), TABLE_HEADER_LEN + 4 + SLOTS);
    let mut buf = vec![0xaa];
    t.encode(&mut buf);
    assert_eq!(&buf[1..], &t.to_bytes()[..], "encode appends");
}

#[test]
fn truncated_anywhere_is_truncated() {
    for members in [vec![1u16, 2, 3], (0..300).collect()] {
        let bytes = table(1, &members).to_bytes();
        for len in 0..bytes.len() {
            match SlotTable::from_bytes(&bytes[..len]) {
                Err(TableDecodeError::Truncated { needed, got }) => {
                    assert_eq!(got, len);
                    assert!(needed > len && needed <= bytes.len());
                }
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn malformed_fields_are_typed_errors() {
    let good = table(1, &[10, 20, 30]).to_bytes();
    let with = |at: usize, b: &[u8]| {
        let mut bytes = good.clone();
        bytes[at..at + b.len()].copy_from_slice(b);
        SlotTable::from_bytes(&bytes)
    };
    let body = TABLE_HEADER_LEN + 6;
    let cases: Vec<(Result<SlotTable, TableDecodeError>, TableDecodeError)> = vec![
        (with(0, b"TFSX"), TableDecodeError::BadMagic(*b"TFSX")),
        (
            with(VERSION_AT, &[2]),
            TableDecodeError::UnsupportedVersion(2),
        ),
        (
            with(VERSION_AT, &[0]),
            TableDecodeError::UnsupportedVersion(0),
        ),
        (
            with(SLOT_COUNT_AT, &4095u16.to_le_bytes()),
            TableDecodeError::WrongSlotCount(4095),
        ),
        (
            with(SLOT_COUNT_AT, &0u16.to_le_bytes()),
            TableDecodeError::WrongSlotCount(0),
        ),
        (
            with(MEMBER_COUNT_AT, &0u16.to_le_bytes()),
            TableDecodeError::NoMembers,
        ),
        (
            with(MEMBER_COUNT_AT, &4097u16.to_le_bytes()),
            TableDecodeError::TooManyMembers(4097),
        ),
        (
            with(TABLE_HEADER_LEN + 2, &10u16.to_le_bytes()),
            TableDecodeError::MembersNotAscending { prev: 10, id: 10 },
        ),
        (
            with(TABLE_HEADER_LEN, &25u16.to_le_bytes()),
            TableDecodeError::MembersNotAscending { prev: 25, id: 20 },
        ),
        (
            with(body + 7, &[3]),
            TableDecodeError::UnknownMember {
                slot: 7,
                index: 3,
                count: 3,
            },
        ),
        (
            with(body + 4095, &[255]),
            TableDecodeError::UnknownMember {
                slot: 4095,
                index: 255,
                count: 3,
            },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want.clone()), "{want}");
    }

    // Every slot given to member #0: members #1 and #2 own nothing.
    let mut idle = good.clone();
    idle[body..].fill(0);
    assert_eq!(
        SlotTable::from_bytes(&idle),
        Err(TableDecodeError::IdleMember(20))
    );

    let mut long = good.clone();
    long.extend_from_slice(&[0, 0]);
    assert_eq!(
        SlotTable::from_bytes(&long),
        Err(TableDecodeError::TrailingBytes(2))
    );

    // A member count that promises more ids than there are bytes.
    assert_eq!(
        with(MEMBER_COUNT_AT, &4000u16.to_le_bytes()),
        Err(TableDecodeError::Truncated {
            needed: TABLE_HEADER_LEN + 8000,
            got: good.len()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Measured fractions of flows that move

/// `RANDOM_KEYS` flow hashes of random keys from a fixed seed (v4/v6, TCP/UDP/ICMP).
fn random_hashes() -> Vec<u64> {
    let mut rng = SplitMix64(0x736c_6f74_7321_0008);
    (0..RANDOM_KEYS)
        .map(|_| {
            let r = rng.next();
            let addr = |rng: &mut SplitMix64| {
                let (a, b) = (rng.next().to_le_bytes(), rng.next().to_le_bytes());
                if r & 1 == 0 {
                    Addr::from_v4([a[0], a[1], a[2], a[3]])
                } else {
                    let mut v6 = [0u8; 16];
                    v6[..8].copy_from_slice(&a);
                    v6[8..].copy_from_slice(&b);
                    Addr::from_v6(v6)
                }
            };
            let (src, dst) = (addr(&mut rng), addr(&mut rng));
            let proto = [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP][(r >> 1) as usize % 3];
            let key: FlowKey = FiveTuple {
                proto,
                src,
                dst,
                sport: (r >> 8) as u16,
                dport: (r >> 24) as u16,
            }
            .key(0)
            .0;
            flow_hash(&key)
        })
        .collect()
}

/// Fraction of `hashes` whose owner differs between `before` and `after`.
fn flows_moved(hashes: &[u64], before: impl Fn(u64) -> u16, after: impl Fn(u64) -> u16) -> f64 {
    let moved = hashes.iter().filter(|&&h| before(h) != after(h)).count();
    moved as f64 / hashes.len() as f64
}

/// Processor ids 0..n.
fn ids(n: u16) -> Vec<u16> {
    (0..n).collect()
}

#[test]
fn adding_moves_one_in_n_plus_one_flows_to_the_new_member() {
    let hashes = random_hashes();
    println!("slot table, add one processor to n ({RANDOM_KEYS} random flows)");
    println!("  n -> n+1   slots moved   flows moved   ideal 1/(n+1)");
    for n in 1..=8u16 {
        let before = table(1, &ids(n));
        let after = before.with_added(2, n).expect("add");
        let flows = flows_moved(
            &hashes,
            |h| before.owner_of_hash(h),
            |h| after.owner_of_hash(h),
        );
        let ideal = 1.0 / f64::from(n + 1);
        println!(
            "  {n} -> {}      {:.4}        {flows:.4}        {ideal:.4}",
            n + 1,
            before.moved_fraction(&after)
        );
        for &h in &hashes {
            let (a, b) = (before.owner_of_hash(h), after.owner_of_hash(h));
            assert!(
                a == b || b == n,
                "flow {h:#x} moved {a} -> {b}, not to the new {n}"
            );
        }
        assert!(
            (flows - ideal).abs() <= TOLERANCE,
            "{n} -> {}: {flows:.4} of flows moved, ideal {ideal:.4}",
            n + 1
        );
    }
}

#[test]
fn removing_any_member_moves_only_its_share() {
    let hashes = random_hashes();
    println!("slot table, remove one of n processors ({RANDOM_KEYS} random flows)");
    println!("  n   removed   share    flows moved   max-min load after");
    for n in 3..=8u16 {
        for (name, id) in [("first", 0), ("middle", n / 2), ("last", n - 1)] {
            let before = table(1, &ids(n));
            let after = before.with_removed(2, id).expect("remove");
            let share = before.load(id) as f64 / SLOTS as f64;
            let flows = flows_moved(
                &hashes,
                |h| before.owner_of_hash(h),
                |h| after.owner_of_hash(h),
            );
            let loads: Vec<usize> = after.loads().iter().map(|&(_, l)| l).collect();
            let spread = loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0);
            println!("  {n}   {name:<7}   {share:.4}   {flows:.4}        {spread}");
            for &h in &hashes {
                let (a, b) = (before.owner_of_hash(h), after.owner_of_hash(h));
                assert!(a == b || a == id, "flow {h:#x} of {a} moved to {b}");
            }
            assert!(spread <= 1, "unbalanced after removing {id}: {after:?}");
            assert!(
                (flows - share).abs() <= TOLERANCE,
                "remove {name} of {n}: {flows:.4} of flows moved, share {share:.4}"
            );
        }
    }
}

/// What removing the middle of n processors costs with plain jump hash, where only the last
/// bucket can go: either shift the ids above it down (the collectors' `--processor` order) or
/// move the last processor into the gap. Both move far more than the slot table's 1/n.
#[test]
fn plain_jump_hash_moves_far_more_when_the_middle_goes() {
    let hashes = random_hashes();
    println!("remove the middle processor m = n/2 of n ({RANDOM_KEYS} random flows)");
    println!("  n   slot table   jump, shift ids down   jump, last into gap   ideal 1/n");
    for n in 3..=8u16 {
        let m = n / 2;
        let before = table(1, &ids(n));
        let after = before.with_removed(2, m).expect("remove");
        let slots = flows_moved(
            &hashes,
            |h| before.owner_of_hash(h),
            |h| after.owner_of_hash(h),
        );
        // Shard index i of n - 1 goes to processor i, or i + 1 past the gap.
        let shifted = |h: u64| {
            let i = shard_of_hash(h, n - 1);
            if i >= m {
                i + 1
            } else {
                i
            }
        };
        // Shard index m of n - 1 goes to the former last processor n - 1.
        let swapped = |h: u64| {
            let i = shard_of_hash(h, n - 1);
            if i == m {
                n - 1
            } else {
                i
            }
        };
        let old = |h: u64| shard_of_hash(h, n);
        let shift = flows_moved(&hashes, old, shifted);
        let swap = flows_moved(&hashes, old, swapped);
        let nf = f64::from(n);
        println!(
            "  {n}   {slots:.4}       {shift:.4}                 {swap:.4}                {:.4}",
            1.0 / nf
        );
        // Shift: shards m..n-2 all change processor, and shard n-1's keys land elsewhere
        // except the 1/(n-1) that fall on the last index. Swap: shard m's keys, and shard
        // n-1's except those that fall on index m.
        let shift_ideal = f64::from(n - 1 - m) / nf + (nf - 2.0) / (nf * (nf - 1.0));
        let swap_ideal = 1.0 / nf + (nf - 2.0) / (nf * (nf - 1.0));
        assert!(
            (shift - shift_ideal).abs() <= TOLERANCE,
            "shift, n = {n}: {shift:.4}"
        );
        assert!(
            (swap - swap_ideal).abs() <= TOLERANCE,
            "swap, n = {n}: {swap:.4}"
        );
        assert!(
            (slots - 1.0 / nf).abs() <= TOLERANCE,
            "slots, n = {n}: {slots:.4}"
        );
        assert!(shift > 0.4 && swap > slots + 0.08, "n = {n}");
    }
}

#[test]
fn slots_spread_random_keys_evenly() {
    let mut counts = vec![0u32; SLOTS];
    for h in random_hashes() {
        counts[usize::from(slot_of_hash(h))] += 1;
    }
    // About 49 keys a slot: a fair spread keeps every slot within a few dozen.
    let (min, max) = (counts.iter().min(), counts.iter().max());
    assert!(
        matches!((min, max), (Some(&a), Some(&b)) if a >= 15 && b <= 95),
        "slot counts from {min:?} to {max:?}"
    );
}
