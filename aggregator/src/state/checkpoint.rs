//! The machine's state as a checkpoint of the write-ahead log keeps it ([`crate::durable`]):
//! what the processors' data messages built that a restart cannot read back from its logs —
//! the records held for ordering and the sorter's watermarks and counters, each processor
//! incarnation's record sequence, the end-of-stream accounts received, the split records
//! counted. A restart restores it, then replays the messages logged after the checkpoint.
//!
//! Not in it (a restart from a checkpoint starts them afresh; see `durable`'s doc): the
//! detector's windows, episodes and baselines (it lives in `detect`, which has no snapshot
//! yet), announced data connections (FTP, IRC DCC) not yet used, and what sinks keep per
//! window (InfluxDB traffic partials).

use serde::{Deserialize, Serialize};
use tapflow_proto::upstream::ProcessorAccount;

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
    /// The state a checkpoint keeps (between messages).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sorter: self.sorter.snapshot(),
            records: self.upstream.record_seqs(),
            accounts: self.accounts.values().cloned().collect(),
            split_records: self.split_records,
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
    }

    /// Every line handed to the logs so far is written and synced. `Ok(false)`: a resumed
    /// log still skips lines it holds from before a restart (its length is not yet where
    /// this machine stands): no checkpoint now.
    pub fn sync_outputs(&mut self) -> Result<bool, SinkError> {
        self.sinks.sync()
    }
}
