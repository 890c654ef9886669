//! The alerts log: one JSON line per alert event.

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
        Ok(self.log.write(&mut self.text)?)
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(self.log.reopen()?)
    }

    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        Ok(self.log.flush()?)
    }
}
