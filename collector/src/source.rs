//! The capture edge: libpcap, live or from a file. Everything past this module sees plain
//! `(timestamp, bytes, wire length)` records.

use std::path::Path;

use pcap::{Active, Capture, Precision};
use tapflow_proto::CaptureStats;

use crate::config::{LiveSpec, SourceSpec};
use crate::decode::LinkType;

mod offline;

/// One packet as libpcap delivered it.
pub struct Record<'a> {
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

enum Handle {
    File(offline::BufferedFile),
    Live(Capture<Active>),
}

pub struct Source {
    handle: Handle,
    link: LinkType,
    what: String,
    packets: u64,
}

impl Source {
    pub fn open(spec: &SourceSpec, filter: Option<&str>) -> Result<Source, SourceError> {
        let (handle, what) = match spec {
            SourceSpec::File(path) => (Handle::File(open_file(path)?), path.display().to_string()),
            SourceSpec::Live(live) => (Handle::Live(open_live(live)?), live.interface.clone()),
        };
        let dlt = match &handle {
            Handle::File(f) => f.capture.get_datalink().0,
            Handle::Live(c) => c.get_datalink().0,
        };
        let link = LinkType::from_dlt(dlt).ok_or_else(|| SourceError::UnsupportedLink {
            what: what.clone(),
            dlt,
        })?;
        let mut source = Source {
            handle,
            link,
            what,
            packets: 0,
        };
        if let Some(f) = filter {
            let res = match &mut source.handle {
                Handle::File(file) => file.capture.filter(f, true),
                Handle::Live(c) => c.filter(f, true),
            };
            res.map_err(|e| SourceError::Filter {
                filter: f.to_owned(),
                msg: e.to_string(),
            })?;
        }
        Ok(source)
    }

    pub fn link(&self) -> LinkType {
        self.link
    }

    pub fn is_live(&self) -> bool {
        matches!(self.handle, Handle::Live(_))
    }

    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The next packet. Timestamps are nanoseconds: files are opened with nanosecond precision
    /// (libpcap scales microsecond files), live captures ask for it too.
    pub fn next_record(&mut self) -> Result<Next<'_>, SourceError> {
        let is_file = matches!(self.handle, Handle::File(_));
        let res = match &mut self.handle {
            Handle::File(f) => f.capture.next_packet(),
            Handle::Live(c) => c.next_packet(),
        };
        match res {
            Ok(p) => {
                self.packets += 1;
                let ts = &p.header.ts;
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let frac = u64::try_from(ts.tv_usec).unwrap_or(0);
                let ts_ns = secs.saturating_mul(1_000_000_000).saturating_add(frac);
                Ok(Next::Packet(Record {
                    ts_ns,
                    data: p.data,
                    wire_len: p.header.len,
                }))
            }
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(pcap::Error::TimeoutExpired) => {
                // Non-blocking live capture with nothing buffered: wait a little rather than spin.
                // (A blocking read can sleep forever in immediate mode and miss SIGTERM.)
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(Next::Idle)
            }
            Err(e) if is_file => Err(SourceError::Damaged {
                what: self.what.clone(),
                packets: self.packets,
                msg: e.to_string(),
            }),
            Err(e) => Err(SourceError::Live {
                what: self.what.clone(),
                msg: e.to_string(),
            }),
        }
    }

    /// libpcap's statistics for a live capture; zero for files.
    /// libpcap's counters for a live capture since it was opened; `None` for a file, or when
    /// libpcap cannot tell (an interface that has disappeared): keep the last known values.
    pub fn stats(&mut self) -> Option<CaptureStats> {
        match &mut self.handle {
            Handle::Live(c) => c.stats().ok().map(|s| CaptureStats {
                received: u64::from(s.received),
                kernel_dropped: u64::from(s.dropped),
                if_dropped: u64::from(s.if_dropped),
            }),
            Handle::File(_) => None,
        }
    }
}

fn open_file(path: &Path) -> Result<offline::BufferedFile, SourceError> {
    let what = path.display().to_string();
    if let Err(e) = std::fs::metadata(path) {
        return Err(SourceError::Open {
            what,
            msg: e.to_string(),
        });
    }
    offline::open(path).map_err(|e| SourceError::Open {
        what,
        msg: e.to_string(),
    })
}

fn open_live(live: &LiveSpec) -> Result<Capture<Active>, SourceError> {
    let err = |e: pcap::Error| {
        let mut msg = e.to_string();
        if msg.contains("Operation not permitted") || msg.contains("permission") {
            msg.push_str(
                " (live capture needs CAP_NET_RAW, and CAP_NET_ADMIN for promiscuous mode: run \
                 under deploy/systemd/tapflow-collector@.service, or `setcap \
                 cap_net_raw,cap_net_admin=ep` on the binary, or as root)",
            );
        }
        SourceError::Open {
            what: live.interface.clone(),
            msg,
        }
    };
    Capture::from_device(live.interface.as_str())
        .map_err(err)?
        .promisc(live.promisc)
        .snaplen(live.snaplen)
        .buffer_size(live.buffer_bytes)
        .immediate_mode(live.immediate)
        .precision(Precision::Nano)
        .timeout(100)
        .open()
        .and_then(Capture::setnonblock)
        .map_err(err)
}
