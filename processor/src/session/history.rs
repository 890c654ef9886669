//! The history string as Zeek keeps it: letters appended in the order events happen, most of
//! them at most once per direction (a "seen" bit each), the scaled ones (`c t w g`) at the 1st,
//! 10th, 100th, ... occurrence.
//!
//! The first [`INLINE`] letters live in the flow record; more go to the flow's boxed side
//! record, up to [`MAX_LETTERS`] in all (Zeek has no limit; a RST storm with changing sequence
//! numbers would otherwise grow a history without bound).

use tapflow_proto::conn::CompactString;
use tapflow_proto::FlowKey;

/// Letters kept inline in the flow record.
pub(super) const INLINE: usize = 15;
/// Letters kept per connection; more are dropped and counted.
pub(super) const MAX_LETTERS: usize = 256;

/// Zeek's `HIST_*` bits, packed into 16: the TCP responder's are shifted by [`bit::RESP`]
/// (Zeek shifts by 16); UDP uses its own two.
pub(super) mod bit {
    pub const SYN: u16 = 0x1;
    pub const FIN: u16 = 0x2;
    pub const RST: u16 = 0x4;
    pub const FIN_RST: u16 = 0x8;
    pub const DATA: u16 = 0x10;
    pub const ACK: u16 = 0x20;
    pub const MULTI_FLAG: u16 = 0x40;
    /// Shift of the TCP responder's bits.
    pub const RESP: u32 = 7;
    /// UDP's `HIST_ORIG_DATA_PKT` / `HIST_RESP_DATA_PKT` (not shifted).
    pub const UDP_ORIG_DATA: u16 = 0x1;
    pub const UDP_RESP_DATA: u16 = 0x2;
    /// tapflow's own: the `X` of too many tunnel changes, once.
    pub const TUNNEL_X: u16 = 0x8000;
}

/// Inline history letters.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct History {
    buf: [u8; INLINE],
    len: u8,
}

/// What a flow keeps out of line, allocated once for the few flows that need it.
#[derive(Clone, Debug, Default)]
pub(super) struct Extra {
    /// History letters past the inline ones.
    pub hist_more: Vec<u8>,
    /// Distinct outer flows seen (unsorted).
    pub parents: Vec<FlowKey>,
    /// The outer flow of the latest packet.
    pub last_parent: Option<FlowKey>,
    /// Changes of outer flow between consecutive packets.
    pub tunnel_changes: u32,
    /// Bytes in reported content gaps.
    pub missed_bytes: u64,
    /// Bad-checksum counts of the two TCP endpoints (physical order: `lo`, `hi`).
    pub tcp_bad_checksums: [u16; 2],
    /// TCP data seen above each endpoint's delivery point: sorted, disjoint, non-adjacent
    /// `[start, end)` ranges of relative sequence numbers.
    pub ooo: [Vec<(u64, u64)>; 2],
    /// Payload evidence, once the connection got some (issue 17).
    pub evidence: Option<Box<super::evidence::EvState>>,
}

impl History {
    /// Appends a letter; returns false if it was dropped past [`MAX_LETTERS`].
    pub fn push(&mut self, c: u8, extra: &mut Option<Box<Extra>>) -> bool {
        let len = usize::from(self.len);
        if len < INLINE {
            self.buf[len] = c;
            self.len += 1;
            return true;
        }
        let more = &mut extra.get_or_insert_with(Box::default).hist_more;
        if INLINE + more.len() >= MAX_LETTERS {
            return false;
        }
        more.push(c);
        true
    }

    /// The letters (inline, no allocation, up to 24 of them).
    pub fn render(&self, extra: Option<&Extra>) -> CompactString {
        let more = extra.map_or(0, |e| e.hist_more.len());
        let mut s = CompactString::with_capacity(usize::from(self.len) + more);
        s.extend(
            self.buf[..usize::from(self.len)]
                .iter()
                .map(|&b| char::from(b)),
        );
        if let Some(e) = extra {
            s.extend(e.hist_more.iter().map(|&b| char::from(b)));
        }
        s
    }
}

/// Zeek's `ScaledHistoryEntry`: counts one event and says whether this occurrence gets a letter
/// (the 1st, 10th, 100th, ...). Counts saturate at `u16::MAX`, so the 6th letter (100,000
/// events) is never written.
pub(super) fn scaled(count: &mut u16) -> bool {
    if *count == u16::MAX {
        return false;
    }
    *count += 1;
    matches!(*count, 1 | 10 | 100 | 1000 | 10000)
}

/// Lower-cases a letter for the responder.
pub(super) fn cased(c: u8, is_orig: bool) -> u8 {
    if is_orig {
        c
    } else {
        c.to_ascii_lowercase()
    }
}

/// Zeek's RSTOS0 test, `/\^?S[^HAFGIQ]*R.*/ == history` (a whole-string match).
pub(super) fn looks_like_rstos0(h: &str) -> bool {
    let h = h.strip_prefix('^').unwrap_or(h);
    let Some(rest) = h.strip_prefix('S') else {
        return false;
    };
    for c in rest.chars() {
        match c {
            'R' => return true,
            'H' | 'A' | 'F' | 'G' | 'I' | 'Q' => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_scaled(events: u32, letters: usize) {
        let mut n = 0u16;
        let got = (0..events).filter(|_| scaled(&mut n)).count();
        assert_eq!(got, letters, "{events} events");
    }

    #[test]
    fn scaled_letters_at_powers_of_ten() {
        check_scaled(1, 1);
        check_scaled(9, 1);
        check_scaled(10, 2);
        check_scaled(99, 2);
        check_scaled(100, 3);
        check_scaled(70_000, 5);
    }

    #[test]
    fn rstos0_pattern() {
        for (h, want) in [
            ("SR", true),
            ("^SR", true),
            ("SsR", true),
            ("STR", true),
            ("SAR", false),
            ("ShR", true),
            ("R", false),
            ("S", false),
            ("SFR", false),
            ("DSR", false),
        ] {
            assert_eq!(looks_like_rstos0(h), want, "{h}");
        }
    }

    #[test]
    fn history_spills_and_caps() {
        let mut h = History::default();
        let mut extra = None;
        for i in 0..300u32 {
            let kept = h.push(b'a' + (i % 26) as u8, &mut extra);
            assert_eq!(kept, (i as usize) < MAX_LETTERS);
        }
        let s = h.render(extra.as_deref());
        assert_eq!(s.len(), MAX_LETTERS);
        assert!(s.starts_with("abcdefghijklmno"));
    }
}
