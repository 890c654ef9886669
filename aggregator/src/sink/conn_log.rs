//! The conn log: final records as Zeek-style JSON lines, written on their own thread
//! ([`crate::conn_writer`]) in release order.

use std::collections::BTreeMap;
use std::path::Path;

use tapflow_proto::conn::ConnRecord;

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::conn_writer::ConnWriter;

pub struct ConnLog {
    /// `None` once finished.
    writer: Option<ConnWriter>,
    /// Records the log could not write (known once finished).
    unwritten: u64,
}

impl ConnLog {
    /// Opens the log at `path` for appending and starts its thread.
    pub fn start(path: &Path) -> Result<ConnLog, SinkError> {
        Ok(ConnLog {
            writer: Some(ConnWriter::start(Some(path))?),
            unwritten: 0,
        })
    }
}

impl Sink for ConnLog {
    fn takes_records(&self) -> bool {
        true
    }

    fn on_conn(&mut self, r: &ConnRecord, parents: &[String]) -> Result<(), SinkError> {
        self.on_conn_owned(Box::new(r.clone()), parents.to_vec())
    }

    fn on_conn_owned(&mut self, r: Box<ConnRecord>, parents: Vec<String>) -> Result<(), SinkError> {
        match self.writer.as_mut() {
            Some(w) => Ok(w.push(r, parents)?),
            None => Ok(()),
        }
    }

    fn on_released(&mut self) -> Result<(), SinkError> {
        match self.writer.as_mut() {
            Some(w) => Ok(w.flush()?),
            None => Ok(()),
        }
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        match self.writer.as_mut() {
            Some(w) => Ok(w.reopen()?),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> Result<bool, SinkError> {
        match self.writer.as_mut() {
            Some(w) => Ok(w.sync()?),
            None => Ok(true),
        }
    }

    /// Waits until every record is written and the file flushed.
    fn end_of_records(&mut self) -> Result<(), SinkError> {
        if let Some(w) = self.writer.take() {
            self.unwritten += w.finish()?.records;
        }
        Ok(())
    }

    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        self.end_of_records()
    }

    fn unwritten(&self, out: &mut BTreeMap<String, u64>) {
        super::count_unwritten(out, "conn_log", self.unwritten);
    }
}
