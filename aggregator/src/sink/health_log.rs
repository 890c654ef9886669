//! The health log: the accounting report as one JSON line at the end of the run.

use std::path::Path;

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::logfile::LogFile;

pub struct HealthLog {
    log: LogFile,
}

impl HealthLog {
    pub fn create(path: &Path) -> Result<HealthLog, SinkError> {
        Ok(HealthLog {
            log: LogFile::create(Some(path))?,
        })
    }
}

impl Sink for HealthLog {
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(self.log.reopen()?)
    }

    fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        let mut line = serde_json::to_string(report).unwrap_or_default();
        line.push('\n');
        self.log.write(&mut line)?;
        Ok(self.log.flush()?)
    }
}
