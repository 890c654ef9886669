//! The interim log: updates of long sessions, Zeek-style JSON lines in arrival order.

use std::collections::BTreeMap;
use std::path::Path;

use tapflow_proto::conn::ConnRecord;

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::conns::conn_json;
use crate::logfile::LogFile;

pub struct InterimLog {
    log: LogFile,
    text: String,
}

impl InterimLog {
    pub fn create(path: &Path) -> Result<InterimLog, SinkError> {
        Ok(InterimLog {
            log: LogFile::create(Some(path))?,
            text: String::new(),
        })
    }
}

impl Sink for InterimLog {
    fn on_interim(&mut self, r: &ConnRecord) -> Result<(), SinkError> {
        conn_json(r, &[], &mut self.text);
        self.log.write(&mut self.text);
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        self.log.reopen();
        Ok(())
    }

    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        self.log.flush();
        Ok(())
    }

    fn unwritten(&self, out: &mut BTreeMap<String, u64>) {
        super::count_unwritten(out, "conn_interim_log", self.log.unwritten());
    }
}
