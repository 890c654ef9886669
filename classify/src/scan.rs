//! Bounded, panic-free byte scanning shared by the group A detectors (a cursor, lines, searches).

/// A cursor over a byte slice: every read checks its bounds and returns `None` past the end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed vector: a `u8` length then that many bytes.
    pub(crate) fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A length-prefixed vector: a `u16` length then that many bytes.
    pub(crate) fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The complete lines of a text stream (split at `\n`, a trailing `\r` removed), at most
/// `max` of them; an unterminated last line is left out.
pub(crate) fn lines(buf: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    buf[..complete]
        .split_inclusive(|&b| b == b'\n')
        .take(max)
        .map(|l| {
            let l = l.strip_suffix(b"\n").unwrap_or(l);
            l.strip_suffix(b"\r").unwrap_or(l)
        })
}

/// The lines of a text stream with the offset just past each (where the next byte starts).
pub(crate) fn lines_with_end(buf: &[u8], max: usize) -> impl Iterator<Item = (&[u8], usize)> {
    let mut end = 0usize;
    lines(buf, max).map(move |l| {
        // The line plus its terminator: find it again from `end` (cheap: lines are consecutive).
        let rest = buf.get(end..).unwrap_or(&[]);
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        end += len;
        (l, end)
    })
}

/// `a` starts with `prefix`, ASCII case-insensitively.
pub(crate) fn starts_with_ci(a: &[u8], prefix: &[u8]) -> bool {
    a.len() >= prefix.len() && a[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The first position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `hay` contains `needle`, ASCII case-insensitively.
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The leading run of ASCII digits as a number (at most 9 digits), and what follows.
pub(crate) fn leading_number(s: &[u8]) -> Option<(u32, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 9 {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    Some((v, &s[n..]))
}

/// Builds a `Found` for a list of services.
pub(crate) fn found(services: &[&'static str]) -> crate::Found {
    crate::Found {
        services: services.to_vec(),
        ..crate::Found::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_stops_at_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.u8(), None);
        assert_eq!(Reader::new(&[5, 1]).vec8(), None);
    }

    #[test]
    fn lines_leave_out_the_unterminated_tail() {
        let got: Vec<_> = lines(b"a\r\nbb\nccc", 10).collect();
        assert_eq!(got, vec![&b"a"[..], &b"bb"[..]]);
        let ends: Vec<_> = lines_with_end(b"a\r\nbb\nccc", 10)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(ends, vec![3, 6]);
        assert_eq!(leading_number(b"227 x"), Some((227, &b" x"[..])));
    }
}
