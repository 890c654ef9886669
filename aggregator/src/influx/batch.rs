//! Batches and what to do with InfluxDB's answers (sans-IO).
//!
//! A [`Batch`] is encoded lines, one point each, with their end offsets so any run of lines is
//! a slice of the body. A [`Delivery`] walks a batch through the server's answers: written
//! runs are counted, a run the server refuses for good is split in halves until the point at
//! fault is alone (so one bad point never takes the others down with it) and then counted as
//! rejected, and a run that may succeed later stays pending for a retry. [`classify`] maps an
//! HTTP status (or no answer) to one of those, and [`Backoff`] paces the retries.

use std::ops::Range;
use std::time::Duration;

/// Encoded lines and where each ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub body: Vec<u8>,
    /// `ends[i]` is the offset just past line `i`'s newline.
    pub ends: Vec<usize>,
}

impl Batch {
    /// Splits `body` (lines ending in `\n`) into a batch; a missing final newline is added.
    pub fn from_body(mut body: Vec<u8>) -> Batch {
        if body.last().is_some_and(|&b| b != b'\n') {
            body.push(b'\n');
        }
        let ends = body
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Batch { body, ends }
    }

    pub fn lines(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of lines `r`.
    pub fn slice(&self, r: Range<usize>) -> &[u8] {
        if r.start >= r.end {
            return &[];
        }
        let start = if r.start == 0 {
            0
        } else {
            self.ends[r.start - 1]
        };
        &self.body[start..self.ends[r.end - 1]]
    }

    /// A new batch of the lines in `runs`, in order.
    pub fn subset(&self, runs: &[Range<usize>]) -> Batch {
        let mut body = Vec::new();
        for r in runs {
            body.extend_from_slice(self.slice(r.clone()));
        }
        Batch::from_body(body)
    }

    pub fn clear(&mut self) {
        self.body.clear();
        self.ends.clear();
    }
}

/// The measurement of an encoded line, as written (escaped): up to the first unescaped comma
/// or space.
pub fn measurement_of(line: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b',' | b' ' | b'\n' => return &line[..i],
            _ => i += 1,
        }
    }
    &line[..line.len().min(i)]
}

/// What an answer means for the run of lines that was posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: written.
    Written,
    /// Refused for good (400, 422, other 4xx): bisect; a single line is rejected.
    Refused,
    /// 404 (database or bucket not found): nothing in the run can be written; all rejected.
    Unwritable,
    /// 413: too large; split (a single line is rejected).
    TooLarge,
    /// 429, 503, other 5xx, 401/403/408, no answer: try again later, after `after` when the
    /// server said (Retry-After).
    Retry { after: Option<Duration> },
}

/// Maps an HTTP status (`None`: no answer, e.g. connection refused or timed out) and the
/// `Retry-After` header (seconds) to an [`Outcome`].
///
/// 401 and 403 are retried rather than refused: wrong credentials are an operator's fix, and
/// points should wait in the spool for it rather than be thrown away.
pub fn classify(status: Option<u16>, retry_after: Option<&str>) -> Outcome {
    let after = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status {
        Some(200..=299) => Outcome::Written,
        Some(413) => Outcome::TooLarge,
        Some(429 | 503) => Outcome::Retry { after },
        Some(401 | 403 | 408) | Some(500..=599) | None => Outcome::Retry { after: None },
        Some(404) => Outcome::Unwritable,
        Some(_) => Outcome::Refused,
    }
}

/// What a [`Delivery`] step settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// These lines were written.
    Written(usize),
    /// These lines were refused for good (one, unless the run was unwritable).
    Rejected(Range<usize>),
    /// The run was split; nothing settled yet.
    Split,
    /// Stop and retry the pending lines later.
    Retry { after: Option<Duration> },
}

/// One batch being delivered: the runs of lines not settled yet, the next to post on top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    stack: Vec<Range<usize>>,
}

impl Delivery {
    pub fn new(lines: usize) -> Delivery {
        let mut stack = Vec::with_capacity(32);
        if lines > 0 {
            stack.push(0..lines);
        }
        Delivery { stack }
    }

    /// The run of lines to post next, if any.
    pub fn next(&self) -> Option<Range<usize>> {
        self.stack.last().cloned()
    }

    /// The server answered `outcome` for the run [`Delivery::next`] gave.
    pub fn answer(&mut self, outcome: Outcome) -> Settled {
        let Some(run) = self.stack.last().cloned() else {
            return Settled::Split;
        };
        match outcome {
            Outcome::Written => {
                self.stack.pop();
                Settled::Written(run.len())
            }
            Outcome::Unwritable => {
                self.stack.pop();
                Settled::Rejected(run)
            }
            Outcome::Refused | Outcome::TooLarge if run.len() <= 1 => {
                self.stack.pop();
                Settled::Rejected(run)
            }
            Outcome::Refused | Outcome::TooLarge => {
                self.stack.pop();
                let mid = run.start + run.len() / 2;
                // The first half is posted first.
                self.stack.push(mid..run.end);
                self.stack.push(run.start..mid);
                Settled::Split
            }
            Outcome::Retry { after } => Settled::Retry { after },
        }
    }

    /// Runs still unsettled, in line order.
    pub fn pending(&self) -> Vec<Range<usize>> {
        self.stack.iter().rev().cloned().collect()
    }

    pub fn pending_lines(&self) -> usize {
        self.stack.iter().map(|r| r.len()).sum()
    }

    pub fn is_done(&self) -> bool {
        self.stack.is_empty()
    }
}

/// Exponential backoff: 100 ms doubling up to `max`, reset by a success. A `Retry-After` from
/// the server is honoured as given (bounded by an hour, against nonsense).
#[derive(Clone, Debug)]
pub struct Backoff {
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);

    pub fn new(max: Duration) -> Backoff {
        Backoff {
            max: max.max(Self::FIRST),
            failures: 0,
        }
    }

    /// The wait before the next attempt after one more failure.
    pub fn fail(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = Self::FIRST.saturating_mul(1u32 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        match retry_after {
            Some(after) => after.min(Duration::from_secs(3600)),
            None => exp.min(self.max),
        }
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        let body: String = (0..n).map(|i| format!("m v={i}i {i}\n")).collect();
        Batch::from_body(body.into_bytes())
    }

    #[test]
    fn slices_and_subsets() {
        let b = batch(4);
        assert_eq!(b.lines(), 4);
        assert_eq!(b.slice(1..3), b"m v=1i 1\nm v=2i 2\n");
        assert_eq!(b.slice(2..2), b"");
        assert_eq!(b.subset(&[0..1, 3..4]).body, b"m v=0i 0\nm v=3i 3\n");
        assert_eq!(Batch::from_body(b"a 1\nb 2".to_vec()).lines(), 2);
        assert!(Batch::from_body(Vec::new()).is_empty());
    }

    #[test]
    fn measurement_names() {
        for (line, want) in [
            (&b"m,t=v f=1 1\n"[..], &b"m"[..]),
            (b"tapflow_conn f=1 1\n", b"tapflow_conn"),
            (b"a\\ b\\,c,t=v f=1 1\n", b"a\\ b\\,c"),
            (b"", b""),
            (b"x\\", b"x\\"),
        ] {
            assert_eq!(measurement_of(line), want);
        }
    }

    #[test]
    fn classification() {
        let s = |n| Duration::from_secs(n);
        let cases = [
            (Some(204), None, Outcome::Written),
            (Some(200), None, Outcome::Written),
            (Some(400), None, Outcome::Refused),
            (Some(404), None, Outcome::Unwritable),
            (Some(405), None, Outcome::Refused),
            (Some(422), None, Outcome::Refused),
            (Some(413), None, Outcome::TooLarge),
            (Some(429), Some("7"), Outcome::Retry { after: Some(s(7)) }),
            (Some(503), Some(" 2 "), Outcome::Retry { after: Some(s(2)) }),
            (
                Some(503),
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                Outcome::Retry { after: None },
            ),
            (Some(500), Some("9"), Outcome::Retry { after: None }),
            (Some(401), None, Outcome::Retry { after: None }),
            (None, None, Outcome::Retry { after: None }),
        ];
        for (status, after, want) in cases {
            assert_eq!(classify(status, after), want, "{status:?} {after:?}");
        }
    }

    /// Delivers `n` lines to a server that refuses the lines in `bad` (and any run holding
    /// one); returns (written, rejected lines, posts).
    fn deliver(n: usize, bad: &[usize]) -> (usize, Vec<usize>, usize) {
        let mut d = Delivery::new(n);
        let (mut written, mut rejected, mut posts) = (0, vec![], 0);
        while let Some(run) = d.next() {
            posts += 1;
            let outcome = if bad.iter().any(|b| run.contains(b)) {
                Outcome::Refused
            } else {
                Outcome::Written
            };
            match d.answer(outcome) {
                Settled::Written(k) => written += k,
                Settled::Rejected(r) => rejected.extend(r),
                Settled::Split => {}
                Settled::Retry { .. } => unreachable!(),
            }
        }
        (written, rejected, posts)
    }

    #[test]
    fn bisection_isolates_bad_points() {
        let cases: &[(usize, &[usize], usize)] = &[
            // lines, bad lines, most posts allowed
            (1, &[], 1),
            (1, &[0], 1),
            (5000, &[], 1),
            (5000, &[1234], 1 + 2 * 13),
            (5000, &[0, 4999], 1 + 4 * 13),
            (7, &[0, 1, 2, 3, 4, 5, 6], 13),
        ];
        for &(n, bad, max_posts) in cases {
            let (written, rejected, posts) = deliver(n, bad);
            assert_eq!(written, n - bad.len(), "{n} {bad:?}");
            assert_eq!(rejected, bad, "{n}");
            assert!(posts <= max_posts, "{n} {bad:?}: {posts} posts");
        }
    }

    #[test]
    fn retry_keeps_everything_pending_and_too_large_splits() {
        let mut d = Delivery::new(10);
        assert_eq!(d.answer(Outcome::TooLarge), Settled::Split);
        assert_eq!(d.next(), Some(0..5));
        assert_eq!(d.answer(Outcome::Written), Settled::Written(5));
        let after = Some(Duration::from_secs(1));
        assert_eq!(d.answer(Outcome::Retry { after }), Settled::Retry { after });
        let rest = 5..10;
        assert_eq!((d.pending(), d.pending_lines()), (vec![rest], 5));
        assert!(!d.is_done());
        assert!(Delivery::new(0).is_done());
        assert_eq!(d.answer(Outcome::Unwritable), Settled::Rejected(5..10));
        assert!(d.is_done());
    }

    #[test]
    fn backoff_doubles_to_max_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let waits: Vec<u128> = (0..6).map(|_| b.fail(None).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.fail(Some(Duration::from_secs(5))), Duration::from_secs(5));
        b.succeed();
        assert_eq!(b.fail(None), Duration::from_millis(100));
    }
}
