use super::*;

/// Message `seq`'s bytes: its number repeated, of a length that varies with it.
fn message(seq: u64) -> Vec<u8> {
    let len = 40 + (seq as usize * 7) % 60;
    seq.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A spool in a new directory holding `max` bytes at most, with `seqs` pushed.
fn spool_with(max: u64, seqs: std::ops::Range<u64>) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut s = Spool::open(dir.path(), max);
    for seq in seqs {
        s.push(seq, &message(seq));
    }
    (dir, s)
}

/// Reads every message from `from` on, as sending again does: (number, bytes) in order.
fn read_all(s: &mut Spool, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut want = from;
    while let Some(seq) = s.read(want) {
        let frame = s.frame_mut().expect("the frame read").clone();
        out.push((seq, frame));
        want = seq + 1;
    }
    out
}

/// The files in `dir`, its `LOCK` left out.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the spool directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with(LOCK))
        .collect();
    files.sort();
    files
}

fn expected(seqs: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, message(s))).collect()
}

#[test]
fn messages_read_back_in_order_across_segments() {
    // 4 KiB segments: about 48 messages each, so several segments.
    let (dir, mut s) = spool_with(16 << 10, 5..105);
    assert!(segment_files(dir.path()).len() > 2);
    assert_eq!((s.first(), s.end()), (5, 105));
    assert_eq!(read_all(&mut s, 5), expected(5..105));
    // From the middle, after reading ahead, and again from the start (a second resend).
    assert_eq!(read_all(&mut s, 60), expected(60..105));
    assert_eq!(read_all(&mut s, 0), expected(5..105));
    assert_eq!(s.stats.spool_read, 100 + 45 + 100);
    let bytes: u64 = (5..105).map(|q| message(q).len() as u64).sum();
    assert_eq!(s.stats.spooled_frames, 100);
    assert_eq!(s.stats.spooled_bytes, bytes);
    assert_eq!(s.disk_bytes(), bytes + 100 * HEADER);
    assert_eq!(s.stats.spool_given_up, 0);
}

#[test]
fn acknowledgements_delete_whole_segments_only() {
    let (dir, mut s) = spool_with(16 << 10, 1..101);
    let files = segment_files(dir.path()).len();
    // Within the first segment: nothing deleted, the rest still read back.
    assert_eq!(s.acknowledge(3), 3);
    assert_eq!(segment_files(dir.path()).len(), files);
    assert_eq!(read_all(&mut s, 1), expected(4..101));
    assert_eq!(s.acknowledge(3), 0, "an acknowledgement seen again");
    assert_eq!(s.acknowledge(70), 67);
    let left = segment_files(dir.path());
    assert!(left.len() < files, "{left:?}");
    assert_eq!(read_all(&mut s, 1), expected(71..101));
    let on_disk: u64 = left
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    assert_eq!(on_disk, s.disk_bytes());
    assert_eq!(s.acknowledge(500), 30);
    assert!(s.is_empty());
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(read_all(&mut s, 1), Vec::new());
    // Spooling again after it emptied.
    s.push(101, &message(101));
    assert_eq!(read_all(&mut s, 0), expected(101..102));
}

#[test]
fn past_its_maximum_the_oldest_segments_are_given_up_and_counted() {
    let max = 4 << 10;
    let (dir, mut s) = spool_with(max, 1..201);
    assert!(s.disk_bytes() <= max);
    let kept = read_all(&mut s, 0);
    let first = kept.first().map(|k| k.0).expect("something kept");
    assert_eq!(kept, expected(first..201), "a run of the newest");
    let given_up: u64 = (1..first).map(|q| message(q).len() as u64).sum();
    assert_eq!(s.stats.spool_given_up, first - 1);
    assert_eq!(s.stats.spool_given_up_bytes, given_up);
    assert_eq!(s.stats.spooled_frames, 200);
    // Partly acknowledged, then given up: only what was not acknowledged counts.
    let before = s.stats;
    s.acknowledge(first + 2);
    while s.give_up_oldest("test") {}
    assert_eq!(
        s.stats.spool_given_up - before.spool_given_up,
        200 - (first + 2)
    );
    let bytes: u64 = (first + 3..201).map(|q| message(q).len() as u64).sum();
    assert_eq!(
        s.stats.spool_given_up_bytes - before.spool_given_up_bytes,
        bytes
    );
    assert!(segment_files(dir.path()).is_empty());
    // A message larger than the whole spool: given up at once, counted.
    let (_dir, mut s) = spool_with(64, 1..2);
    s.push(2, &[7u8; 100]);
    assert_eq!(s.stats.spool_given_up, 2);
    assert_eq!(s.stats.spool_given_up_bytes, message(1).len() as u64 + 100);
    assert!(s.is_empty());
}

#[test]
fn an_unwritable_directory_gives_every_message_up_counted() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("a file");
    let mut s = Spool::open(&file.join("spool"), 1 << 20);
    for seq in 1..11 {
        s.push(seq, &message(seq));
    }
    assert_eq!(s.stats.spool_given_up, 10);
    let bytes: u64 = (1..11).map(|q| message(q).len() as u64).sum();
    assert_eq!(s.stats.spool_given_up_bytes, bytes);
    assert_eq!(s.stats.spooled_frames, 0);
    assert!(s.is_empty());
    assert_eq!(read_all(&mut s, 0), Vec::new());
}

/// A full disk: `/dev/full` answers every write with ENOSPC. The spool gives up its oldest
/// to make room, then the message itself; nothing panics, everything is counted.
#[test]
fn a_full_disk_gives_up_the_oldest_then_the_message() {
    let (dir, mut s) = spool_with(1 << 20, 1..21);
    let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full on this system");
        return;
    };
    s.writer = Some(full);
    s.push(21, &message(21));
    assert_eq!(s.stats.spool_given_up, 20, "the spool held, given up");
    // The message itself went to a new segment (the directory is writable).
    assert_eq!(read_all(&mut s, 0), expected(21..22));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn damaged_frames_are_skipped_and_counted() {
    let (dir, mut s) = spool_with(1 << 20, 1..11);
    let files = segment_files(dir.path());
    let [path] = files.as_slice() else {
        panic!("one segment expected: {files:?}");
    };
    let mut bytes = std::fs::read(path).expect("the segment");
    // A payload byte of message 3: its checksum fails, the rest reads on.
    let at: u64 = (1..3)
        .map(|q| HEADER + message(q).len() as u64)
        .sum::<u64>()
        + HEADER
        + 5;
    bytes[at as usize] ^= 0xff;
    std::fs::write(path, &bytes).expect("write the segment back");
    let mut want: Vec<(u64, Vec<u8>)> = expected(1..11);
    want.remove(2);
    assert_eq!(read_all(&mut s, 0), want);
    assert_eq!((s.stats.spool_damaged, s.damaged()), (1, Some(3)));
    // Read again: the same, counted once.
    assert_eq!(read_all(&mut s, 0), want);
    assert_eq!(s.stats.spool_damaged, 1);
    // A damaged length (message 8's header): the rest of the segment is lost, counted.
    let at: u64 = (1..8).map(|q| HEADER + message(q).len() as u64).sum();
    bytes[at as usize + 3] = 0x7f;
    std::fs::write(path, &bytes).expect("write the segment back");
    want.truncate(6);
    assert_eq!(read_all(&mut s, 0), want);
    assert_eq!((s.stats.spool_damaged, s.damaged()), (4, Some(10)));
}

#[test]
fn a_torn_tail_is_cut_off_and_the_next_message_goes_to_a_new_segment() {
    let (dir, mut s) = spool_with(1 << 20, 1..6);
    // A torn write: half a frame appended past the good length, then the segment sealed.
    if let Some(w) = s.writer.as_mut() {
        w.write_all(&[1, 2, 3, 4, 5, 6, 7]).expect("append");
    }
    s.seal();
    let files = segment_files(dir.path());
    let good: u64 = (1..6).map(|q| HEADER + message(q).len() as u64).sum();
    assert_eq!(
        std::fs::metadata(&files[0]).map(|m| m.len()).ok(),
        Some(good)
    );
    s.push(6, &message(6));
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(read_all(&mut s, 0), expected(1..7));
    assert_eq!(s.stats.spool_damaged, 0);
}

#[test]
fn an_earlier_incarnations_spool_is_discarded_and_this_ones_deleted_at_the_end() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"kept").expect("a file");
    {
        let mut s = Spool::open(dir.path(), 1 << 20);
        for seq in 1..4 {
            s.push(seq, &message(seq));
        }
        // A crash leaves its segments: forget the spool without dropping it.
        std::mem::forget(s);
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    let mut s = Spool::open(dir.path(), 1 << 20);
    assert_eq!(segment_files(dir.path()), vec![other.clone()]);
    assert!(s.is_empty());
    s.push(1, &message(1));
    assert_eq!(read_all(&mut s, 0), expected(1..2));
    drop(s);
    assert_eq!(segment_files(dir.path()), vec![other]);
}

#[test]
fn a_directory_another_live_process_holds_is_not_used() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Process 1 (init) is always running.
    std::fs::write(dir.path().join(LOCK), "1\n").expect("a lock");
    let left = seg_path(dir.path(), 1);
    std::fs::write(&left, b"the other processor's").expect("a segment");
    let mut s = Spool::open(dir.path(), 1 << 20);
    assert!(left.exists(), "the other processor's segment was deleted");
    s.push(1, &message(1));
    assert_eq!((s.stats.spooled_frames, s.stats.spool_given_up), (0, 1));
    drop(s);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(LOCK))
            .ok()
            .as_deref(),
        Some("1\n")
    );
    // A lock a dead process left (no such pid): taken over.
    std::fs::write(dir.path().join(LOCK), "4294967295\n").expect("a stale lock");
    let mut s = Spool::open(dir.path(), 1 << 20);
    assert!(
        !left.exists(),
        "an earlier incarnation's segment is discarded"
    );
    s.push(1, &message(1));
    assert_eq!(s.stats.spooled_frames, 1);
    drop(s);
    assert!(!dir.path().join(LOCK).exists());
}
