use super::*;

const SEC: u64 = 1_000_000_000;

fn limits(max_datagrams: usize, max_bytes: usize) -> Limits {
    Limits {
        max_datagrams,
        max_bytes,
        timeout_ns: 30 * SEC,
    }
}

fn key(id: u32) -> FragKey {
    FragKey {
        src: Addr::from_v4([10, 0, 0, 1]),
        dst: Addr::from_v4([10, 0, 0, 2]),
        id,
        proto: 17,
        v6: false,
        depth: 0,
        parent: None,
    }
}

/// The datagram byte at `at` (every fragment carries the matching slice of one datagram).
fn byte(id: u32, at: u32) -> u8 {
    (at.wrapping_mul(7).wrapping_add(id) % 251) as u8
}

/// One fragment: packet time, datagram id, offset, length, more fragments.
type Step = (u64, u32, u32, u32, bool);

#[derive(Debug, PartialEq, Eq)]
enum Want {
    Held,
    /// Completed with this many data bytes.
    Complete(usize),
    Dropped(DropReason),
}

/// Plays `steps` as the decoder would (expire, insert, account for the fragment itself),
/// checking each result, the reassembled bytes and the accounting invariant, then `finish`;
/// returns the counters.
fn check(limits: Limits, counted: bool, steps: &[Step], want: &[Want]) -> DecodeCounters {
    assert_eq!(steps.len(), want.len());
    let mut table = Table::new(limits);
    let mut c = DecodeCounters::default();
    for (&(ts, id, offset, len, more), want) in steps.iter().zip(want) {
        let data: Vec<u8> = (offset..offset + len).map(|at| byte(id, at)).collect();
        let piece = Piece {
            data: &data,
            len,
            offset,
            more,
            hdr_len: 20,
        };
        c.packets += 1;
        table.expire(ts, &mut c);
        let got = match table.insert(key(id), ts, piece, counted, &mut c) {
            Insert::Held => {
                if counted {
                    c.fragments_held += 1;
                }
                Want::Held
            }
            Insert::Complete(d) => {
                c.packets_summarised += 1;
                let expected: Vec<u8> = (0..d.data.len() as u32).map(|at| byte(id, at)).collect();
                assert_eq!(d.data, expected, "datagram {id} reassembled wrong");
                assert_eq!(d.hdr_len, 20);
                let n = d.data.len();
                table.recycle(d.data);
                Want::Complete(n)
            }
            Insert::Dropped(r) => {
                c.drops.add(r, 1);
                Want::Dropped(r)
            }
        };
        assert_eq!(&got, want, "step {:?}", (ts, id, offset, len, more));
        if counted {
            assert_invariant(&c);
        }
        assert!(table.bytes <= limits.max_bytes);
        assert!(table.len() <= limits.max_datagrams);
    }
    table.finish(&mut c);
    assert_eq!(table.len(), 0);
    assert_eq!(table.bytes, 0);
    assert_eq!(c.fragments_held, 0);
    if counted {
        assert_invariant(&c);
    }
    c
}

fn assert_invariant(c: &DecodeCounters) {
    assert_eq!(
        c.packets,
        c.packets_summarised + c.fragments_merged + c.fragments_held + c.drops.packet_drops(),
        "{c:?}"
    );
}

fn drops(c: &DecodeCounters, r: DropReason) -> u64 {
    c.drops.get(r)
}

use DropReason::*;
use Want::{Complete, Dropped, Held};

#[test]
fn in_order_reversed_and_duplicated() {
    let d = limits(16, 1 << 20);
    let c = check(
        d,
        true,
        &[
            (0, 1, 0, 16, true),
            (1, 1, 16, 16, true),
            (2, 1, 32, 5, false),
        ],
        &[Held, Held, Complete(37)],
    );
    assert_eq!((c.fragments_merged, c.packets_summarised), (2, 1));
    check(
        d,
        true,
        &[
            (0, 1, 32, 5, false),
            (1, 1, 16, 16, true),
            (2, 1, 0, 16, true),
        ],
        &[Held, Held, Complete(37)],
    );
    let c = check(
        d,
        true,
        &[
            (0, 1, 16, 16, true),
            (0, 1, 16, 16, true),
            (0, 1, 32, 5, false),
            (0, 1, 32, 5, false),
            (0, 1, 0, 16, true),
        ],
        &[Held, Held, Held, Held, Complete(37)],
    );
    assert_eq!(c.fragments_merged, 4);
    // Overlapping fragments (a 24-byte one across two 16-byte ones) and a zero-length last one.
    check(
        d,
        true,
        &[
            (0, 2, 8, 24, true),
            (0, 2, 32, 0, false),
            (0, 2, 16, 16, true),
            (0, 2, 0, 16, true),
        ],
        &[Held, Held, Held, Complete(32)],
    );
    // Two datagrams interleaved.
    check(
        d,
        true,
        &[
            (0, 1, 0, 8, true),
            (0, 2, 8, 1, false),
            (0, 1, 8, 1, false),
            (0, 2, 0, 8, true),
        ],
        &[Held, Held, Complete(9), Complete(9)],
    );
}

#[test]
fn first_bytes_win_over_overlaps() {
    let mut table = Table::new(limits(4, 1 << 20));
    let mut c = DecodeCounters::default();
    let piece = |data: &'static [u8], offset, more| Piece {
        data,
        len: data.len() as u32,
        offset,
        more,
        hdr_len: 20,
    };
    assert!(matches!(
        table.insert(key(9), 0, piece(&[1; 16], 0, true), true, &mut c),
        Insert::Held
    ));
    assert!(matches!(
        table.insert(key(9), 0, piece(&[2; 16], 8, true), true, &mut c),
        Insert::Held
    ));
    match table.insert(key(9), 0, piece(&[3; 4], 24, false), true, &mut c) {
        Insert::Complete(d) => assert_eq!(d.data, [vec![1u8; 16], vec![2; 8], vec![3; 4]].concat()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_fragments_drop_their_datagram() {
    let d = limits(16, 1 << 20);
    // Beyond 65535 bytes.
    check(
        d,
        true,
        &[(0, 1, 65_512, 16, true)],
        &[Dropped(FragmentInvalid)],
    );
    check(
        d,
        true,
        &[(0, 1, 0, 16, true), (0, 1, 65_512, 8, false)],
        &[Held, Dropped(FragmentInvalid)],
    );
    // A middle fragment whose length is not a multiple of 8.
    check(d, true, &[(0, 1, 0, 12, true)], &[Dropped(FragmentInvalid)]);
    // Two last fragments that disagree; a last fragment before data already held.
    let c = check(
        d,
        true,
        &[
            (0, 1, 16, 16, true),
            (0, 1, 32, 5, false),
            (0, 1, 32, 9, false),
        ],
        &[Held, Held, Dropped(FragmentInvalid)],
    );
    assert_eq!(drops(&c, FragmentInvalid), 3);
    check(
        d,
        true,
        &[(0, 1, 16, 16, true), (0, 1, 0, 8, false)],
        &[Held, Dropped(FragmentInvalid)],
    );
    check(d, true, &[(0, 1, 0, 5, false)], &[Complete(5)]);
    check(
        d,
        true,
        &[(0, 1, 16, 5, false), (0, 1, 16, 16, true)],
        &[Held, Dropped(FragmentInvalid)],
    );
    // After a drop the datagram starts over.
    check(
        d,
        true,
        &[(0, 1, 0, 12, true), (0, 1, 0, 8, true), (0, 1, 8, 2, false)],
        &[Dropped(FragmentInvalid), Held, Complete(10)],
    );
}

#[test]
fn timeouts_by_packet_time() {
    let d = limits(16, 1 << 20);
    let c = check(
        d,
        true,
        &[(0, 1, 0, 8, true), (30 * SEC, 1, 8, 1, false)],
        &[Held, Complete(9)],
    );
    assert_eq!(drops(&c, FragmentTimeout), 0);
    let c = check(
        d,
        true,
        &[(0, 1, 0, 8, true), (30 * SEC + 1, 1, 8, 1, false)],
        &[Held, Held],
    );
    assert_eq!(
        (drops(&c, FragmentTimeout), drops(&c, FragmentIncomplete)),
        (1, 1)
    );
    // Another datagram's packet expires it too; time going backwards expires nothing.
    let c = check(
        d,
        true,
        &[
            (40 * SEC, 1, 0, 8, true),
            (SEC, 2, 0, 8, true),
            (71 * SEC, 3, 0, 8, true),
        ],
        &[Held, Held, Held],
    );
    assert_eq!(
        (drops(&c, FragmentTimeout), drops(&c, FragmentIncomplete)),
        (2, 1)
    );
}

#[test]
fn caps_evict_the_oldest() {
    let c = check(
        limits(2, 1 << 20),
        true,
        &[
            (0, 1, 0, 8, true),
            (0, 1, 16, 8, true),
            (1, 2, 0, 8, true),
            (2, 3, 0, 8, true),
            (3, 1, 8, 1, false),
        ],
        &[Held, Held, Held, Held, Held],
    );
    assert_eq!(drops(&c, FragmentTableFull), 3);
    assert_eq!(drops(&c, FragmentIncomplete), 2);
    // 40 bytes: a second datagram of 32 evicts the first; one of 48 alone cannot fit.
    let c = check(
        limits(16, 40),
        true,
        &[
            (0, 1, 0, 16, true),
            (1, 2, 0, 32, true),
            (2, 3, 40, 8, true),
        ],
        &[Held, Held, Dropped(FragmentTableFull)],
    );
    assert_eq!(drops(&c, FragmentTableFull), 3);
    check(
        limits(0, 1 << 20),
        true,
        &[(0, 1, 0, 8, true)],
        &[Dropped(FragmentTableFull)],
    );
    // The bytes a datagram already holds are not counted twice.
    check(
        limits(16, 40),
        true,
        &[
            (0, 1, 0, 32, true),
            (0, 1, 0, 32, true),
            (0, 1, 32, 8, false),
        ],
        &[Held, Held, Complete(40)],
    );
}

#[test]
fn inner_fragments_stay_out_of_the_packet_accounting() {
    let c = check(
        limits(1, 1 << 20),
        false,
        &[
            (0, 1, 0, 8, true),
            (0, 2, 0, 8, true),
            (0, 2, 8, 1, false),
            (0, 3, 0, 8, true),
        ],
        &[Held, Held, Complete(9), Held],
    );
    assert_eq!((c.fragments_merged, c.drops.packet_drops()), (0, 0));
    // Evicted 1, incomplete 3 at finish: never summarised.
    assert_eq!(c.inner_undecodable, 2);
}
