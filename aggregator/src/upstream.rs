//! What the aggregator knows of each processor incarnation besides its end-of-stream account
//! (sans-IO): its last heartbeat (what it had received, its open flows) and the sequence of
//! its connection records. A processor incarnation that dies never sends its account; its last
//! heartbeat is then what the report says of it. A restarted aggregator sees each processor's
//! record sequence start above 0: that many records went to its previous incarnation.

use std::collections::BTreeMap;

use tapflow_proto::upstream::{ConnBatch, ProcessorAccount, ProcessorHeartbeat};

/// Processor incarnations remembered at most (each restart adds one); past it new ones are
/// counted, not kept.
const INCARNATIONS_CAP: usize = 4096;

/// The connection-record sequence of one processor incarnation as this aggregator saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordSeq {
    /// The sequence number of the first batch received: records handed to the socket before
    /// this aggregator heard from the processor (sent to an earlier aggregator incarnation).
    pub first: u64,
    pub received: u64,
    /// Records missing between batches (not sent at a full queue, or lost on the wire).
    pub gaps: u64,
}

#[derive(Default)]
pub struct Upstream {
    heartbeats: BTreeMap<(String, u64), ProcessorHeartbeat>,
    records: BTreeMap<(String, u64), RecordSeq>,
    /// Incarnations not remembered because the cap was reached.
    pub over_cap: u64,
}

impl Upstream {
    pub fn new() -> Upstream {
        Upstream::default()
    }

    /// The last heartbeat of `processor`'s latest incarnation heard.
    pub fn last_heartbeat(&self, processor: &str) -> Option<&ProcessorHeartbeat> {
        self.heartbeats
            .iter()
            .filter(|((p, _), _)| p == processor)
            .max_by_key(|((_, i), _)| *i)
            .map(|(_, hb)| hb)
    }

    /// Keeps the latest heartbeat of each incarnation. Returns the earlier incarnations of the
    /// same processor when this is the first heartbeat of a new one (it was restarted).
    pub fn on_heartbeat(&mut self, hb: &ProcessorHeartbeat) -> Vec<u64> {
        let key = (hb.processor.clone(), hb.incarnation);
        if let Some(last) = self.heartbeats.get_mut(&key) {
            *last = hb.clone();
            return Vec::new();
        }
        if self.heartbeats.len() >= INCARNATIONS_CAP {
            self.over_cap += 1;
            return Vec::new();
        }
        let earlier = self
            .heartbeats
            .keys()
            .filter(|(p, _)| *p == hb.processor)
            .map(|(_, i)| *i)
            .collect();
        self.heartbeats.insert(key, hb.clone());
        earlier
    }

    /// Counts a connection batch against its incarnation's record sequence.
    pub fn on_conns(&mut self, batch: &ConnBatch) {
        self.on_records(
            &batch.processor,
            batch.incarnation,
            batch.records_seq,
            batch.records.len() as u64,
        );
    }

    /// `n` records whose first has sequence number `records_seq`.
    pub fn on_records(&mut self, processor: &str, incarnation: u64, records_seq: u64, n: u64) {
        let key = (processor.to_owned(), incarnation);
        if !self.records.contains_key(&key) && self.records.len() >= INCARNATIONS_CAP {
            self.over_cap += 1;
            return;
        }
        let seq = self.records.entry(key).or_insert(RecordSeq {
            first: records_seq,
            ..RecordSeq::default()
        });
        let expected = seq.first + seq.received + seq.gaps;
        if records_seq > expected {
            seq.gaps += records_seq - expected;
        }
        seq.received += n;
    }

    /// Every incarnation's record sequence (a checkpoint of the write-ahead log).
    pub fn record_seqs(&self) -> Vec<(String, u64, RecordSeq)> {
        self.records
            .iter()
            .map(|((p, i), s)| (p.clone(), *i, *s))
            .collect()
    }

    /// Record sequences from a checkpoint, in place of those known.
    pub fn restore_record_seqs(&mut self, seqs: Vec<(String, u64, RecordSeq)>) {
        self.records = seqs.into_iter().map(|(p, i, s)| ((p, i), s)).collect();
    }

    pub fn records(&self, processor: &str, incarnation: u64) -> RecordSeq {
        self.records
            .get(&(processor.to_owned(), incarnation))
            .copied()
            .unwrap_or_default()
    }

    /// The last heartbeat of every incarnation that sent no end-of-stream account, and
    /// whether a newer incarnation of the same processor was heard (it was restarted).
    pub fn unended<'a>(
        &'a self,
        accounts: &'a [ProcessorAccount],
    ) -> impl Iterator<Item = (&'a ProcessorHeartbeat, bool)> + 'a {
        self.heartbeats.iter().filter_map(move |((p, i), hb)| {
            let ended = accounts
                .iter()
                .any(|a| a.processor == *p && a.incarnation == *i);
            // Incarnations are start times: a larger one started later.
            let superseded = self.heartbeats.keys().any(|(p2, i2)| p2 == p && i2 > i)
                || accounts
                    .iter()
                    .any(|a| a.processor == *p && a.incarnation > *i);
            (!ended).then_some((hb, superseded))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_aggregator_counts_what_it_missed() {
        let mut u = Upstream::new();
        u.on_records("p0", 1, 20, 3); // 20 went to the previous aggregator
        u.on_records("p0", 1, 23, 0);
        u.on_records("p0", 1, 25, 2); // 2 missing
        assert_eq!(
            u.records("p0", 1),
            RecordSeq {
                first: 20,
                received: 5,
                gaps: 2
            }
        );
    }

    #[test]
    fn a_dead_incarnation_is_its_last_heartbeat() {
        let mut u = Upstream::new();
        let hb = |inc, flows_open| ProcessorHeartbeat {
            processor: "p1".into(),
            incarnation: inc,
            flows_open,
            ..Default::default()
        };
        assert!(u.on_heartbeat(&hb(1, 5)).is_empty());
        assert!(u.on_heartbeat(&hb(1, 7)).is_empty());
        assert_eq!(u.on_heartbeat(&hb(2, 0)), vec![1]);
        let accounts = [ProcessorAccount {
            processor: "p1".into(),
            incarnation: 2,
            ..Default::default()
        }];
        let unended: Vec<_> = u
            .unended(&accounts)
            .map(|(h, s)| (h.incarnation, h.flows_open, s))
            .collect();
        assert_eq!(unended, [(1, 7, true)]);
    }
}
