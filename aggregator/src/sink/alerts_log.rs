//! The alerts log: one JSON line per alert event.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::detect::AlertEvent;
use crate::logfile::LogFile;

pub struct AlertsLog {
    log: LogFile,
    text: String,
}

impl AlertsLog {
    pub fn create(path: &Path) -> Result<AlertsLog, SinkError> {
        Ok(AlertsLog {
            log: LogFile::create(Some(path))?,
            text: String::new(),
        })
    }
}

impl Sink for AlertsLog {
    fn on_alerts(&mut self, events: &[AlertEvent]) -> Result<(), SinkError> {
        for e in events {
            e.to_json(&mut self.text);
        }
        self.log.write(&mut self.text);
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        self.log.reopen();
        Ok(())
    }

    fn sync(&mut self) -> Result<bool, SinkError> {
        Ok(self.log.sync())
    }

    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        self.log.flush();
        Ok(())
    }

    fn unwritten(&self, out: &mut BTreeMap<String, u64>) {
        super::count_unwritten(out, "alerts_log", self.log.unwritten());
    }
}
