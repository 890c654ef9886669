//! The health log: the accounting report as one JSON line at the end of the run. If the line
//! cannot be written, the report goes to the process log (stderr) instead, whole.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::error;

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
        self.log.reopen();
        Ok(())
    }

    fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        let mut line = format!("{json}\n");
        let before = self.log.unwritten();
        self.log.write(&mut line);
        self.log.flush();
        if self.log.unwritten() > before {
            error!(
                "the accounting report could not be written to {}; here it is: {json}",
                self.log.path()
            );
        }
        Ok(())
    }

    fn unwritten(&self, out: &mut BTreeMap<String, u64>) {
        super::count_unwritten(out, "health_log", self.log.unwritten());
    }
}
