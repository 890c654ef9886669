//! The aggregator's JSON-lines files: optional, buffered, reopened on SIGHUP.

use std::fs::File;
use std::io::{BufWriter, Write};

/// A log file could not be created, written or flushed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct LogError {
    pub path: String,
    pub source: std::io::Error,
}

/// An optional JSON-lines file.
pub struct LogFile {
    path: String,
    w: Option<BufWriter<File>>,
}

impl LogFile {
    pub fn create(path: Option<&std::path::Path>) -> Result<LogFile, LogError> {
        let Some(p) = path else {
            return Ok(LogFile {
                path: String::new(),
                w: None,
            });
        };
        let path = p.display().to_string();
        let f = File::create(p).map_err(|source| LogError {
            path: path.clone(),
            source,
        })?;
        Ok(LogFile {
            path,
            w: Some(BufWriter::with_capacity(1 << 16, f)),
        })
    }

    /// Flushes, then opens the path again (appending; created if logrotate moved it away).
    pub fn reopen(&mut self) -> Result<(), LogError> {
        if self.w.is_none() {
            return Ok(());
        }
        self.flush()?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| LogError {
                path: self.path.clone(),
                source,
            })?;
        self.w = Some(BufWriter::with_capacity(1 << 16, f));
        Ok(())
    }

    /// Appends `text` (whole lines) and clears it.
    pub fn write(&mut self, text: &mut String) -> Result<(), LogError> {
        if let Some(w) = self.w.as_mut() {
            w.write_all(text.as_bytes()).map_err(|source| LogError {
                path: self.path.clone(),
                source,
            })?;
        }
        text.clear();
        Ok(())
    }

    /// Writes `text` once it has grown past a chunk, so that the records released at the end of
    /// a capture (hundreds of thousands at once) never pile up in one string; the first error
    /// goes to `failed` (for callbacks that cannot return one).
    pub fn write_chunk(&mut self, text: &mut String, failed: &mut Option<LogError>) {
        const CHUNK: usize = 1 << 18;
        if text.len() >= CHUNK && failed.is_none() {
            if let Err(e) = self.write(text) {
                *failed = Some(e);
            }
        }
    }

    pub fn flush(&mut self) -> Result<(), LogError> {
        if let Some(w) = self.w.as_mut() {
            w.flush().map_err(|source| LogError {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}
