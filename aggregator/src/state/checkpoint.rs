//! The machine's state as a checkpoint of the write-ahead log keeps it ([`crate::durable`]):
//! what the processors' data messages built that a restart cannot read back from its logs —
//! the records held for ordering and the sorter's watermarks and counters, announced data
//! connections (FTP, IRC DCC) held, each processor incarnation's record sequence, the
//! end-of-stream accounts received, the split records counted, the detector's state (windows,
//! open episodes, latency baselines, counters: [`crate::detect::Detector::save`]) and what
//! sinks keep per window ([`crate::sink::Sink::state`]: InfluxDB's traffic, latency and
//! service partials and its unique point times). A restart restores it, then replays the
//! messages logged after the checkpoint.
//!
//! Taken between messages, in two steps: [`Aggregator::sync_outputs`] waits for detection to
//! catch up, writes the alert events it decided and syncs every output (so the logs' lengths
//! then noted hold everything decided before the state), and [`Aggregator::snapshot`] takes
//! the state.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tapflow_proto::upstream::ProcessorAccount;
use tracing::error;

use super::Aggregator;
use crate::conns::SorterSnapshot;
use crate::sink::SinkError;
use crate::upstream::RecordSeq;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    sorter: SorterSnapshot,
    records: Vec<(String, u64, RecordSeq)>,
    accounts: Vec<ProcessorAccount>,
    split_records: u64,
    /// The detector's state ([`crate::detect::Detector::save`]); `None`: detection had
    /// stopped (a restart starts it afresh).
    #[serde(default)]
    detect: Option<Bin>,
    /// Each sink's state that has one, by sink.
    #[serde(default)]
    sinks: Vec<(String, Bin)>,
}

/// Bytes as MessagePack's `bin` (not an array of numbers).
#[derive(Debug, Default)]
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bin, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Snapshot {
    /// The records held for ordering, taken out: see [`SorterSnapshot::take_records`].
    pub fn take_records(&mut self) -> Vec<tapflow_proto::conn::ConnRecord> {
        self.sorter.take_records()
    }

    pub fn put_records(&mut self, records: Vec<tapflow_proto::conn::ConnRecord>) {
        self.sorter.put_records(records);
    }
}

impl Aggregator {
    /// The state a checkpoint keeps (between messages, after [`Aggregator::sync_outputs`]:
    /// without it, the events the detector decided last may reach the logs after their
    /// lengths were noted).
    pub fn snapshot(&mut self) -> Snapshot {
        let detect = match self.detect_state.take() {
            Some(d) => d,
            None => self.detector.snapshot(),
        };
        Snapshot {
            sorter: self.sorter.snapshot(),
            records: self.upstream.record_seqs(),
            accounts: self.accounts.values().cloned().collect(),
            split_records: self.split_records,
            detect: detect
                .map_err(|e| error!(error = %e, "checkpoint without the detector's state: a restart from it starts detection afresh"))
                .ok()
                .map(Bin),
            sinks: self
                .sinks
                .state()
                .into_iter()
                .map(|(name, s)| (name.to_owned(), Bin(s)))
                .collect(),
        }
    }

    /// A new machine takes the state of a checkpoint (before any message); the processors
    /// that had ended end again.
    pub fn restore(&mut self, s: Snapshot) {
        self.sorter.restore(s.sorter);
        self.upstream.restore_record_seqs(s.records);
        self.split_records = s.split_records;
        for account in s.accounts {
            self.on_eos(account);
        }
        if let Some(Bin(d)) = s.detect {
            if let Err(e) = self.detector.restore(&d) {
                error!(error = %e, "the checkpoint's detector state cannot be restored: detection starts afresh (alerts whose windows span the checkpoint may differ)");
            }
        }
        for (name, Bin(state)) in s.sinks {
            self.sinks.restore_state(&name, &state);
        }
    }

    /// Detection caught up (its state kept for [`Aggregator::snapshot`]), the alert events it
    /// decided handed to the sinks, then every line handed to the logs so far is written and
    /// synced and every sink is where a restart can take it up. `Ok(false)`: a resumed log
    /// still skips lines it holds from before a restart (its length is not yet where this
    /// machine stands): no checkpoint now.
    pub fn sync_outputs(&mut self) -> Result<bool, SinkError> {
        self.detect_state = Some(self.detector.snapshot());
        self.detector.take_events(&mut self.events);
        let synced = self
            .emit_alerts()
            .and_then(|()| self.sinks.flush())
            .and_then(|()| self.sinks.sync());
        if !matches!(synced, Ok(true)) {
            // No snapshot now: the state is not kept until the next try.
            self.detect_state = None;
        }
        synced
    }
}
