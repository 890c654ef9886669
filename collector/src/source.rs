//! The capture edge: where packets come from. Everything past this module sees plain
//! `(timestamp, bytes, wire length)` records through [`PacketSource`].
//!
//! Each kind of source is one implementation of the trait in its own file: `file.rs` (a
//! capture file through libpcap, with `offline.rs`'s larger stdio buffer, or a pcapng file
//! through `pcapng.rs`, which reads the multi-interface files libpcap refuses) and `live.rs` (an
//! interface through libpcap, reopened after a failure). What differs between them (end of
//! input, idle reads, libpcap statistics, reopening, a progress bar's total) is said by the
//! implementation, so the capture loop has no case per kind. [`Source::open`] is the one
//! place that maps a configured [`SourceSpec`] to an implementation.

use pcap::Packet;
use tapflow_proto::CaptureStats;

use crate::config::{LiveSpec, SourceSpec};
use crate::decode::LinkType;

mod classic;
mod fanout;
mod file;
mod live;
mod offline;
pub mod pcapng;

pub use file::FileSource;
pub use live::LiveSource;

/// One packet as the source delivered it.
pub struct Record<'a> {
    /// How to decode it: a pcapng file's interfaces may each have their own.
    pub link: LinkType,
    pub ts_ns: u64,
    pub data: &'a [u8],
    pub wire_len: u32,
}

/// What a read gave.
pub enum Next<'a> {
    Packet(Record<'a>),
    /// Live capture: the read timeout passed with no packet.
    Idle,
    /// End of the capture file.
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open capture {what}: {msg}")]
    Open { what: String, msg: String },
    #[error("capture {what} has link type {dlt}, which tapflow does not decode")]
    UnsupportedLink { what: String, dlt: i32 },
    #[error("invalid BPF filter {filter:?}: {msg}")]
    Filter { filter: String, msg: String },
    #[error("capture file {what} is damaged after {packets} packets: {msg}")]
    Damaged {
        what: String,
        packets: u64,
        msg: String,
    },
    #[error("live capture on {what} failed: {msg}")]
    Live { what: String, msg: String },
}

/// A source of packets. The capture loop calls [`PacketSource::next_record`] until it gives
/// [`Next::End`] or an error, and hands an error to [`PacketSource::recover`].
///
/// With `--capture-threads N` there are N sources, one per handle of a `PACKET_FANOUT` group
/// ([`Source::open_fanout`]), each read by its own capture thread (`run/threads.rs`) and
/// reporting its own handle's statistics.
pub trait PacketSource {
    /// The source's link type, for logs: that of every record, except in a pcapng file whose
    /// interfaces differ, where it is the first interface's and each record has its own.
    fn link(&self) -> LinkType;

    /// The file or interface, for logs and errors.
    fn describe(&self) -> &str;

    /// The next packet. Timestamps are nanoseconds.
    fn next_record(&mut self) -> Result<Next<'_>, SourceError>;

    /// A live source: heartbeats let the watermark follow the clock, and statistics are read
    /// while capturing.
    fn is_live(&self) -> bool {
        false
    }

    /// libpcap's counters since the source was opened, over every handle it has had; `None`
    /// when there are none (a file). A source that cannot tell now keeps its last values.
    fn stats(&mut self) -> Option<CaptureStats> {
        None
    }

    /// Bytes the whole input holds, for a progress bar (`None`: unbounded).
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// After `next_record` failed with `error`: carry on if the source can (a live one
    /// reopens its interface), calling `pause` while it waits. The default gives up.
    fn recover(&mut self, error: SourceError, pause: &mut dyn Pause) -> Recovery {
        let _ = pause;
        Recovery::Failed(error)
    }
}

/// What the capture loop does while a source waits to recover.
pub trait Pause {
    /// Before the first wait: pass on what is pending (the wait may be long).
    fn begin(&mut self);
    /// Called about every 100 ms of waiting; false when the run is to stop (a signal).
    fn tick(&mut self) -> bool;
}

/// How [`PacketSource::recover`] ended.
pub enum Recovery {
    /// Reading can go on.
    Resumed,
    /// Stopped by a signal while waiting.
    Stopped,
    /// For good: the run ends with this error.
    Failed(SourceError),
}

/// An open source of whichever kind.
pub struct Source(Box<dyn PacketSource + Send>);

impl Source {
    /// Opens what `spec` names, with the BPF `filter` if any.
    pub fn open(spec: &SourceSpec, filter: Option<&str>) -> Result<Source, SourceError> {
        Ok(match spec {
            SourceSpec::File(path) => Source::new(FileSource::open(path, filter)?),
            SourceSpec::Live(live) => Source::new(LiveSource::open(live, filter, None)?),
        })
    }

    /// Opens the `threads` handles of a live capture, joined in one fanout group (one handle,
    /// in no group, when `threads` is 1): every one before any is read.
    pub fn open_fanout(live: &LiveSpec, filter: Option<&str>) -> Result<Vec<Source>, SourceError> {
        if live.threads <= 1 {
            return Ok(vec![Source::new(LiveSource::open(live, filter, None)?)]);
        }
        let group = fanout::group_id();
        (0..live.threads)
            .map(|_| Ok(Source::new(LiveSource::open(live, filter, Some(group))?)))
            .collect()
    }

    pub fn new(source: impl PacketSource + Send + 'static) -> Source {
        Source(Box::new(source))
    }

    pub fn link(&self) -> LinkType {
        self.0.link()
    }

    pub fn describe(&self) -> &str {
        self.0.describe()
    }

    pub fn next_record(&mut self) -> Result<Next<'_>, SourceError> {
        self.0.next_record()
    }

    pub fn is_live(&self) -> bool {
        self.0.is_live()
    }

    pub fn stats(&mut self) -> Option<CaptureStats> {
        self.0.stats()
    }

    pub fn size_bytes(&self) -> Option<u64> {
        self.0.size_bytes()
    }

    pub fn recover(&mut self, error: SourceError, pause: &mut dyn Pause) -> Recovery {
        self.0.recover(error, pause)
    }
}

/// Whether links should treat the capture `spec` names as live (before it is open, or when
/// it cannot be).
pub fn is_live(spec: &SourceSpec) -> bool {
    matches!(spec, SourceSpec::Live(_))
}

/// Whether the capture `spec` names may have to be opened again after the privileges are
/// dropped (so the capabilities to open it are kept, not effective).
pub fn may_reopen(spec: &SourceSpec) -> bool {
    match spec {
        SourceSpec::Live(l) => live::may_reopen(l),
        SourceSpec::File(_) => false,
    }
}

/// The decoder's link type for libpcap's `dlt`.
fn link_type(what: &str, dlt: i32) -> Result<LinkType, SourceError> {
    LinkType::from_dlt(dlt).ok_or_else(|| SourceError::UnsupportedLink {
        what: what.to_owned(),
        dlt,
    })
}

/// A BPF filter libpcap refused.
fn filter_error(filter: &str, e: pcap::Error) -> SourceError {
    SourceError::Filter {
        filter: filter.to_owned(),
        msg: e.to_string(),
    }
}

/// A libpcap packet of link type `link` as a record. Handles are opened with nanosecond
/// precision (libpcap scales microsecond files), so the fraction is nanoseconds.
fn record(p: Packet<'_>, link: LinkType) -> Record<'_> {
    let ts = &p.header.ts;
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let frac = u64::try_from(ts.tv_usec).unwrap_or(0);
    Record {
        link,
        ts_ns: secs.saturating_mul(1_000_000_000).saturating_add(frac),
        data: p.data,
        wire_len: p.header.len,
    }
}

#[cfg(test)]
mod tests;
