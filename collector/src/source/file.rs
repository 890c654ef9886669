//! A capture file read to its end; a record that cannot be read ends it as damaged, after every
//! record before it was delivered. Classic pcap 2.4 of a link type tapflow decodes goes through
//! `classic.rs` (fewer copies than libpcap, the same records and messages), other pcap
//! variants, FIFOs and standard input through libpcap; pcapng (the first four bytes say which)
//! through `pcapng.rs`, which also reads the files libpcap 1.10
//! refuses (interfaces with different link types or snapshot lengths), each packet with its
//! own interface's link type, and runs the BPF filter compiled for that link type.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use pcap::{BpfProgram, Capture, Linktype};
use tapflow_proto::CaptureStats;

use super::classic::Classic;
use super::offline::{self, BufferedFile};
use super::pcapng::{self, PcapngError};
use super::{filter_error, link_type, record, Next, PacketSource, Record, SourceError};
use crate::decode::LinkType;

/// The first four bytes of a pcapng file (a Section Header Block's type, in either order).
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

pub struct FileSource {
    input: Input,
    link: LinkType,
    path: PathBuf,
    what: String,
    /// Records read so far (for the damage report).
    packets: u64,
}

enum Input {
    Libpcap(BufferedFile),
    Classic {
        reader: Box<Classic>,
        filter: Option<Filter>,
    },
    Pcapng {
        reader: Box<pcapng::Reader<BufReader<File>>>,
        filter: Option<Filter>,
    },
}

/// A BPF filter compiled once per link type met (a pcapng file's interfaces may differ).
struct Filter {
    text: String,
    programs: Vec<(u16, BpfProgram)>,
}

impl FileSource {
    /// Opens `path` with nanosecond timestamps and the BPF `filter` if any.
    pub fn open(path: &Path, filter: Option<&str>) -> Result<FileSource, SourceError> {
        let what = path.display().to_string();
        let open_error = |msg: String| SourceError::Open {
            what: what.clone(),
            msg,
        };
        // Only a regular file is opened to sniff its magic (and rewound): a FIFO or standard
        // input cannot give back the bytes read, nor be opened twice, so libpcap reads those
        // as before (pcap, or pcapng of one link type).
        let sniffed = if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            let mut file = File::open(path).map_err(|e| open_error(e.to_string()))?;
            let mut magic = [0u8; 4];
            let is_pcapng = file.read_exact(&mut magic).is_ok() && magic == PCAPNG_MAGIC;
            Some((file, is_pcapng))
        } else {
            None
        };
        let classic = match sniffed {
            Some((file, true)) => return Ok(finish(open_pcapng(file, &what, filter)?, path, what)),
            Some((mut file, false)) => {
                use std::io::Seek;
                file.rewind().map_err(|e| open_error(e.to_string()))?;
                Classic::open(file).map_err(|e| open_error(e.to_string()))?
            }
            None => None,
        };
        let (input, link) = if let Some(reader) = classic {
            open_classic(reader, &what, filter)?
        } else {
            let mut file = offline::open(path).map_err(|e| open_error(e.to_string()))?;
            let link = link_type(&what, file.capture.get_datalink().0)?;
            if let Some(f) = filter {
                file.capture
                    .filter(f, true)
                    .map_err(|e| filter_error(f, e))?;
            }
            (Input::Libpcap(file), link)
        };
        Ok(finish((input, link), path, what))
    }
}

fn finish((input, link): (Input, LinkType), path: &Path, what: String) -> FileSource {
    FileSource {
        input,
        link,
        path: path.to_owned(),
        what,
        packets: 0,
    }
}

/// A classic pcap file read by [`Classic`], with `filter` compiled for its link type.
fn open_classic(
    reader: Classic,
    what: &str,
    filter: Option<&str>,
) -> Result<(Input, LinkType), SourceError> {
    let link = link_type(what, reader.dlt())?;
    let filter = match filter {
        None => None,
        Some(text) => {
            let program = Capture::dead(Linktype(reader.dlt()))
                .and_then(|c| c.compile(text, true))
                .map_err(|e| filter_error(text, e))?;
            Some(Filter {
                text: text.to_owned(),
                programs: vec![(0, program)],
            })
        }
    };
    let reader = Box::new(reader);
    Ok((Input::Classic { reader, filter }, link))
}

/// Opens a pcapng file (rewound to its start) up to its first interface, which must be of a
/// link type tapflow decodes, and compiles `filter` for it.
fn open_pcapng(
    mut file: File,
    what: &str,
    filter: Option<&str>,
) -> Result<(Input, LinkType), SourceError> {
    use std::io::Seek;
    let open_error = |msg: String| SourceError::Open {
        what: what.to_owned(),
        msg,
    };
    file.rewind().map_err(|e| open_error(e.to_string()))?;
    let input = BufReader::with_capacity(offline::BUFFER_BYTES, file);
    let reader = pcapng::Reader::new(input).map_err(|e| open_error(e.to_string()))?;
    let Some(first) = reader.first_interface() else {
        return Err(open_error(PcapngError::NoInterface.to_string()));
    };
    let link = link_type(what, i32::from(first.dlt))?;
    let filter = match filter {
        None => None,
        Some(text) => {
            let mut f = Filter {
                text: text.to_owned(),
                programs: Vec::new(),
            };
            f.program(first.dlt)?;
            Some(f)
        }
    };
    let reader = Box::new(reader);
    Ok((Input::Pcapng { reader, filter }, link))
}

impl Filter {
    /// The filter compiled for the LINKTYPE_ value `dlt` (compiled when first needed).
    fn program(&mut self, dlt: u16) -> Result<&BpfProgram, SourceError> {
        let i = match self.programs.iter().position(|(d, _)| *d == dlt) {
            Some(i) => i,
            None => {
                // pcapng holds LINKTYPE_ values; libpcap compiles for DLT_ ones, which differ
                // for raw IP (LINKTYPE_RAW 101 is DLT_RAW 12) among the types tapflow decodes.
                let for_libpcap = if dlt == 101 { 12 } else { i32::from(dlt) };
                let program = Capture::dead(Linktype(for_libpcap))
                    .and_then(|c| c.compile(&self.text, true))
                    .map_err(|e| filter_error(&self.text, e))?;
                self.programs.push((dlt, program));
                self.programs.len() - 1
            }
        };
        Ok(&self.programs[i].1)
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
        let FileSource {
            input,
            link,
            what,
            packets,
            ..
        } = self;
        match input {
            Input::Libpcap(file) => match file.capture.next_packet() {
                Ok(p) => {
                    *packets += 1;
                    Ok(Next::Packet(record(p, *link)))
                }
                Err(pcap::Error::NoMorePackets) => Ok(Next::End),
                Err(e) => Err(damaged(what, *packets, e.to_string())),
            },
            Input::Classic { reader, filter } => {
                next_classic(reader, filter.as_ref(), *link, what, packets)
            }
            Input::Pcapng { reader, filter } => next_pcapng(reader, filter.as_mut(), what, packets),
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

/// The next classic pcap record the filter accepts.
fn next_classic<'a>(
    reader: &'a mut Classic,
    filter: Option<&Filter>,
    link: LinkType,
    what: &str,
    packets: &mut u64,
) -> Result<Next<'a>, SourceError> {
    let header = loop {
        let header = match reader.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Next::End),
            Err(msg) => return Err(damaged(what, *packets, msg)),
        };
        match filter {
            Some(f)
                if !offline::filter_accepts(
                    &f.programs[0].1,
                    reader.data(&header),
                    header.wire_len,
                ) => {}
            _ => break header,
        }
    };
    *packets += 1;
    Ok(Next::Packet(Record {
        link,
        ts_ns: header.ts_ns,
        data: reader.data(&header),
        wire_len: header.wire_len,
    }))
}

/// The next pcapng packet the filter accepts; one on an interface of a link type tapflow does
/// not decode ends the file as `UnsupportedLink`.
fn next_pcapng<'a>(
    reader: &'a mut pcapng::Reader<BufReader<File>>,
    mut filter: Option<&mut Filter>,
    what: &str,
    packets: &mut u64,
) -> Result<Next<'a>, SourceError> {
    let (header, link) = loop {
        let header = match reader.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Next::End),
            Err(e) => return Err(damaged(what, *packets, e.to_string())),
        };
        let Some(link) = header.link else {
            return Err(SourceError::UnsupportedLink {
                what: what.to_owned(),
                dlt: i32::from(header.interface.dlt),
            });
        };
        let Some(f) = filter.as_deref_mut() else {
            break (header, link);
        };
        let program = f.program(header.interface.dlt)?;
        if offline::filter_accepts(program, reader.data(&header), header.wire_len) {
            break (header, link);
        }
    };
    *packets += 1;
    Ok(Next::Packet(Record {
        link,
        ts_ns: header.ts_ns,
        data: reader.data(&header),
        wire_len: header.wire_len,
    }))
}

fn damaged(what: &str, packets: u64, msg: String) -> SourceError {
    SourceError::Damaged {
        what: what.to_owned(),
        packets,
        msg,
    }
}
