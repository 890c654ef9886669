//! A capture file (pcap, nanosecond pcap, pcapng) through libpcap: read to its end; a record
//! libpcap cannot read ends it as damaged, after every record before it was delivered.

use std::path::{Path, PathBuf};

use tapflow_proto::CaptureStats;

use super::offline::{self, BufferedFile};
use super::{filter_error, link_type, record, Next, PacketSource, SourceError};
use crate::decode::LinkType;

pub struct FileSource {
    file: BufferedFile,
    link: LinkType,
    path: PathBuf,
    what: String,
    /// Records read so far (for the damage report).
    packets: u64,
}

impl FileSource {
    /// Opens `path` with nanosecond timestamps and the BPF `filter` if any.
    pub fn open(path: &Path, filter: Option<&str>) -> Result<FileSource, SourceError> {
        let what = path.display().to_string();
        if let Err(e) = std::fs::metadata(path) {
            return Err(SourceError::Open {
                what,
                msg: e.to_string(),
            });
        }
        let mut file = offline::open(path).map_err(|e| SourceError::Open {
            what: what.clone(),
            msg: e.to_string(),
        })?;
        let link = link_type(&what, file.capture.get_datalink().0)?;
        if let Some(f) = filter {
            file.capture
                .filter(f, true)
                .map_err(|e| filter_error(f, e))?;
        }
        Ok(FileSource {
            file,
            link,
            path: path.to_owned(),
            what,
            packets: 0,
        })
    }
}

impl PacketSource for FileSource {
    fn link(&self) -> LinkType {
        self.link
    }

    fn describe(&self) -> &str {
        &self.what
    }

    fn next_record(&mut self) -> Result<Next<'_>, SourceError> {
        match self.file.capture.next_packet() {
            Ok(p) => {
                self.packets += 1;
                Ok(Next::Packet(record(p)))
            }
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(e) => Err(SourceError::Damaged {
                what: self.what.clone(),
                packets: self.packets,
                msg: e.to_string(),
            }),
        }
    }

    /// A file has no capture statistics.
    fn stats(&mut self) -> Option<CaptureStats> {
        None
    }

    fn size_bytes(&self) -> Option<u64> {
        std::fs::metadata(&self.path).ok().map(|m| m.len())
    }
}
