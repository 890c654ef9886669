//! Data connections announced on another connection (sans-IO): FTP's PORT, PASV, EPRT and EPSV,
//! IRC's DCC SEND. The announcing control connection and the data connection may live on
//! different processors; the aggregator sees both, so it labels the data connection here, as
//! each record is released in packet-time order.
//!
//! Zeek's rules (`Analyzer::schedule_analyzer` and `scheduled_analyzer_applied` in its FTP and
//! IRC scripts): an expectation is (originator or any, responder, responder port, TCP), valid for
//! five minutes of packet time from the announcement; every connection that starts in that time
//! and matches gets the service (an expectation is not used up). FTP's data connection is opened
//! by the server after PORT/EPRT (originator: the control connection's responder) and by the
//! client after PASV/EPSV (originator: the control connection's originator); IRC's by anyone.
//!
//! Shard invariance: a record is released only once every processor's watermark is past its
//! last packet (plus the settle time), and a processor sends an expectation before any batch
//! whose watermark is past the announcement, so every expectation that starts before the data
//! connection is here when that connection is released, with 1 or N processors. Expectations
//! that start after the connection are ignored by the lookup, so what else has arrived does not
//! matter. Pruning follows the release sequence, which is the same with any number of
//! processors: an expectation is forgotten once a record whose last packet is `RETAIN_NS`
//! past its expiry has been released (a data connection that lasts longer than that after its
//! expectation's expiry keeps no label). Only a full table (`cap`, counted) depends on timing.

use std::collections::HashMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;
use tapflow_proto::upstream::Expected;
use tapflow_proto::Addr;

/// Zeek's expectation timeout for FTP and IRC data connections (`5mins`).
pub const TIMEOUT_NS: u64 = 300_000_000_000;
/// How long past its expiry (in released packet time) an expectation is kept for data
/// connections that are still open.
pub const RETAIN_NS: u64 = 3_600_000_000_000;

/// The services an expectation may give (what a processor may announce).
pub const SERVICES: [&str; 2] = ["ftp-data", "irc-dcc-data"];

/// One expected data connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Packet time of the announcement.
    pub ts_ns: u64,
    /// The data connection's originator; `None`: any.
    pub orig: Option<Addr>,
    pub resp: Addr,
    pub resp_p: u16,
    /// One of [`SERVICES`].
    pub service: &'static str,
}

/// Counters of the expectation table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpectStats {
    /// Expectations received (valid or not).
    pub received: u64,
    /// Dropped: the service is not one an expectation may give, or the port is 0.
    pub invalid: u64,
    /// Dropped because `cap` expectations were held.
    pub over_cap: u64,
    /// Forgotten after their expiry.
    pub expired: u64,
    /// Records labelled from an expectation.
    pub labelled: u64,
}

impl Expectation {
    /// What a processor announced, as Zeek schedules it: `None` when it is not valid (see
    /// [`Expected::is_valid`]) or names a service no expectation gives.
    pub fn from_wire(e: &Expected) -> Option<Expectation> {
        if !e.is_valid() {
            return None;
        }
        let service = ExpectTable::service(&e.service)?;
        // FTP: after PASV/EPSV (the server's reply) the client connects; after PORT/EPRT the
        // server does. IRC DCC: whoever is told.
        let orig = match service {
            "ftp-data" => Some(if e.by_resp { e.orig_h } else { e.resp_h }),
            _ => None,
        };
        Some(Expectation {
            ts_ns: e.ts_ns,
            orig,
            resp: e.host(),
            resp_p: e.port,
            service,
        })
    }
}

impl ExpectStats {
    pub fn is_zero(&self) -> bool {
        *self == ExpectStats::default()
    }
}

/// (announcement time, originator or any, service).
type Held = (u64, Option<Addr>, &'static str);

pub struct ExpectTable {
    /// (responder, port) -> what was announced for it.
    by_resp: HashMap<(Addr, u16), Vec<Held>>,
    len: usize,
    cap: usize,
    /// Smallest announcement time held (prunes only when something can go).
    oldest: u64,
    stats: ExpectStats,
}

impl ExpectTable {
    pub fn new(cap: usize) -> ExpectTable {
        ExpectTable {
            by_resp: HashMap::new(),
            len: 0,
            cap,
            oldest: u64::MAX,
            stats: ExpectStats::default(),
        }
    }

    /// The service an expectation named on the wire, if it is one of [`SERVICES`].
    pub fn service(name: &str) -> Option<&'static str> {
        SERVICES.iter().copied().find(|s| *s == name)
    }

    /// Counts one expectation that failed validation before it became an [`Expectation`].
    pub fn reject(&mut self) {
        self.stats.received += 1;
        self.stats.invalid += 1;
    }

    /// A processor's announcements: each valid one held, the rest counted as invalid.
    pub fn push(&mut self, expects: &[Expected]) {
        for e in expects {
            match Expectation::from_wire(e) {
                Some(x) => self.insert(x),
                None => self.reject(),
            }
        }
    }

    /// Holds `e` (counted and dropped when the table is full or the port is 0).
    pub fn insert(&mut self, e: Expectation) {
        self.stats.received += 1;
        if e.resp_p == 0 {
            self.stats.invalid += 1;
            return;
        }
        if self.len >= self.cap {
            self.stats.over_cap += 1;
            return;
        }
        let v = self.by_resp.entry((e.resp, e.resp_p)).or_default();
        let item = (e.ts_ns, e.orig, e.service);
        if v.contains(&item) {
            // The same announcement again (a retransmitted reply on another path): one is enough.
            return;
        }
        v.push(item);
        self.len += 1;
        self.oldest = self.oldest.min(e.ts_ns);
    }

    /// The service `r` gets from an expectation, if it is a TCP connection that started within
    /// the timeout after a matching announcement (the latest such announcement's service).
    pub fn lookup(&self, r: &ConnRecord) -> Option<&'static str> {
        if r.proto != ip_proto::TCP || self.len == 0 {
            return None;
        }
        self.by_resp
            .get(&(r.resp_h, r.resp_p))?
            .iter()
            .filter(|(ts, orig, _)| {
                *ts <= r.ts_ns
                    && r.ts_ns <= ts.saturating_add(TIMEOUT_NS)
                    && orig.is_none_or(|o| o == r.orig_h)
            })
            .max()
            .map(|&(_, _, service)| service)
    }

    /// Labels `r` when it has no service and an expectation gives it one.
    pub fn label(&mut self, r: &mut ConnRecord) {
        if r.service.is_some() {
            return;
        }
        if let Some(s) = self.lookup(r) {
            r.service = Some(s.to_owned());
            self.stats.labelled += 1;
        }
    }

    /// A record whose last packet is at `last_ns` was released: expectations that expired
    /// `RETAIN_NS` before it are forgotten.
    pub fn released(&mut self, last_ns: u64) {
        let horizon = last_ns.saturating_sub(RETAIN_NS.saturating_add(TIMEOUT_NS));
        if self.oldest >= horizon {
            return;
        }
        let mut oldest = u64::MAX;
        let mut expired = 0u64;
        self.by_resp.retain(|_, v| {
            let before = v.len();
            v.retain(|(ts, _, _)| *ts >= horizon);
            expired += (before - v.len()) as u64;
            oldest = v.iter().map(|(ts, _, _)| *ts).fold(oldest, u64::min);
            !v.is_empty()
        });
        self.len -= expired as usize;
        self.stats.expired += expired;
        self.oldest = oldest;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> ExpectStats {
        self.stats
    }

    /// What a checkpoint keeps of the table: every expectation held (in a fixed order) and the
    /// counters. [`ExpectTable::restore`] of it labels and prunes as this table would.
    pub fn snapshot(&self) -> ExpectSnapshot {
        let mut held: Vec<_> = self
            .by_resp
            .iter()
            .flat_map(|(&(resp, port), v)| {
                v.iter()
                    .map(move |&(ts, orig, service)| (resp, port, ts, orig, service.to_owned()))
            })
            .collect();
        held.sort();
        ExpectSnapshot {
            held,
            stats: self.stats,
        }
    }

    /// Takes the state of `s` (a new table, before any record). An expectation naming a
    /// service no expectation gives (not one a snapshot holds) is left out.
    pub fn restore(&mut self, s: ExpectSnapshot) {
        self.by_resp.clear();
        self.len = 0;
        self.oldest = u64::MAX;
        for (resp, port, ts, orig, service) in s.held {
            if let Some(service) = ExpectTable::service(&service) {
                self.by_resp
                    .entry((resp, port))
                    .or_default()
                    .push((ts, orig, service));
                self.len += 1;
                self.oldest = self.oldest.min(ts);
            }
        }
        self.stats = s.stats;
    }
}

/// The expectations a checkpoint keeps: (responder, port, announcement time, originator or
/// any, service), and the counters.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpectSnapshot {
    held: Vec<(Addr, u16, u64, Option<Addr>, String)>,
    stats: ExpectStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(ts_s: u64, orig: Option<[u8; 4]>, port: u16, service: &'static str) -> Expectation {
        Expectation {
            ts_ns: ts_s * 1_000_000_000,
            orig: orig.map(Addr::from_v4),
            resp: Addr::from_v4([10, 0, 0, 2]),
            resp_p: port,
            service,
        }
    }

    /// A table restored from a snapshot labels and prunes as the table it was taken from.
    #[test]
    fn a_restored_table_labels_and_prunes_as_the_one_it_was_taken_from() {
        let mut a = ExpectTable::new(100);
        a.insert(x(10, Some([10, 0, 0, 1]), 2000, "ftp-data"));
        a.insert(x(20, None, 3000, "irc-dcc-data"));
        a.insert(x(20, None, 0, "irc-dcc-data"));
        let s = a.snapshot();
        let bytes = rmp_serde::to_vec_named(&s).expect("encode");
        let mut b = ExpectTable::new(100);
        b.restore(rmp_serde::from_slice(&bytes).expect("decode"));
        assert_eq!(b.snapshot(), s);
        assert_eq!((b.len(), b.stats()), (a.len(), a.stats()));
        let mut r = crate::testutil::scan_and_sessions(1).remove(0);
        (r.orig_h, r.resp_h, r.resp_p, r.ts_ns) = (
            Addr::from_v4([10, 0, 0, 1]),
            Addr::from_v4([10, 0, 0, 2]),
            2000,
            15_000_000_000,
        );
        for t in [&mut a, &mut b] {
            let mut r = r.clone();
            t.label(&mut r);
            assert_eq!(r.service.as_deref(), Some("ftp-data"));
            t.released(RETAIN_NS + TIMEOUT_NS + 15_000_000_000);
        }
        assert_eq!(b.snapshot(), a.snapshot());
        assert_eq!((b.len(), b.stats().expired), (1, 1));
    }
}
