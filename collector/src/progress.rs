//! A one-line progress display on stderr for file input on a terminal.

use std::io::Write;
use std::time::Instant;

pub struct Progress {
    total_bytes: u64,
    read_bytes: u64,
    started: Instant,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Progress {
        Progress {
            total_bytes: total_bytes.max(1),
            read_bytes: 0,
            started: Instant::now(),
        }
    }

    /// Counts one record (captured bytes plus a pcap record header's worth).
    pub fn record(&mut self, captured: usize) {
        self.read_bytes += captured as u64 + 16;
    }

    pub fn draw(&self, packets: u64) {
        let pct = (self.read_bytes as f64 / self.total_bytes as f64 * 100.0).min(100.0);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{pct:5.1}%  {packets} packets  {:.0} packets/s ",
            packets as f64 / secs
        );
        let _ = err.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let _ = writeln!(std::io::stderr());
    }
}
