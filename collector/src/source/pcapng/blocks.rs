//! Reading one block (header, length checks, body, trailer) and the two blocks that describe
//! what follows them: Section Header and Interface Description.

use std::io::Read;

use super::{
    Interface, PcapngError, Reader, BYTE_ORDER_MAGIC, IDB, MAX_BLOCK, MAX_INTERFACES, MAX_SHB,
    MAX_SNAPLEN, SHB,
};

/// The smallest Section Header Block: header, byte-order magic, versions, section length,
/// trailer.
const MIN_SHB: u32 = 28;
const OPT_END: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

impl<R: Read> Reader<R> {
    /// Reads the next block whole into `self.block` (its body, without header and trailer)
    /// and returns its type; `None` at a clean end of file (between blocks).
    pub(super) fn read_block(&mut self) -> Result<Option<u32>, PcapngError> {
        match self.read_header()? {
            None => Ok(None),
            Some((kind, len)) => {
                if kind == SHB {
                    self.section(len, false)?;
                }
                Ok(Some(kind))
            }
        }
    }

    /// Reads a block's header, checks its length and reads its body; a Section Header Block's
    /// byte-order magic decides the order its length (and its section) is read in. Leaves
    /// `self.offset` past the block.
    pub(super) fn read_header(&mut self) -> Result<Option<(u32, u32)>, PcapngError> {
        let at = self.offset;
        let mut head = [0u8; 8];
        let got = self.read_up_to(&mut head)?;
        if got == 0 {
            return Ok(None);
        }
        if got < head.len() {
            return Err(truncated(at, 8, got));
        }
        let kind_bytes: [u8; 4] = [head[0], head[1], head[2], head[3]];
        let len_bytes: [u8; 4] = [head[4], head[5], head[6], head[7]];
        self.block.clear();
        let kind = if u32::from_le_bytes(kind_bytes) == SHB {
            let mut magic = [0u8; 4];
            let got = self.read_up_to(&mut magic)?;
            if got < magic.len() {
                return Err(truncated(at, 12, 8 + got));
            }
            self.big_endian = match u32::from_le_bytes(magic) {
                BYTE_ORDER_MAGIC => false,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                _ if at == 0 => return Err(PcapngError::NotPcapng),
                _ => return Err(PcapngError::ByteOrder { at }),
            };
            self.block.extend_from_slice(&magic);
            SHB
        } else if at == 0 {
            return Err(PcapngError::NotPcapng);
        } else {
            self.order(kind_bytes)
        };
        let len = self.order(len_bytes);
        check_length(at, kind, len)?;
        let rest = u64::from(len) - 8 - self.block.len() as u64;
        let got = (&mut self.input)
            .take(rest)
            .read_to_end(&mut self.block)
            .map_err(|e| PcapngError::Io(e.to_string()))?;
        if (got as u64) < rest {
            return Err(truncated(at, u64::from(len), 8 + self.block.len()));
        }
        let tail_at = self.block.len() - 4;
        let tail = self.u32_at(tail_at).unwrap_or(0);
        if tail != len {
            return Err(PcapngError::LengthMismatch {
                at,
                head: len,
                tail,
            });
        }
        self.block.truncate(tail_at);
        self.offset = at + u64::from(len);
        Ok(Some((kind, len)))
    }

    /// A Section Header Block just read: checks the version (1.0 or 1.2 for the first section,
    /// as libpcap; major version 1 after) and starts a section with no interfaces.
    pub(super) fn section(&mut self, len: u32, first: bool) -> Result<(), PcapngError> {
        let at = self.offset - u64::from(len);
        let (major, minor) = match (self.u16_at(4), self.u16_at(6)) {
            (Some(major), Some(minor)) => (major, minor),
            _ => {
                return Err(PcapngError::Short {
                    at,
                    kind: SHB,
                    what: "its version",
                })
            }
        };
        let supported = major == 1 && (!first || minor == 0 || minor == 2);
        if !supported {
            return Err(PcapngError::Version { at, major, minor });
        }
        self.interfaces.clear();
        Ok(())
    }

    /// An Interface Description Block just read: its link type, snapshot length and timestamp
    /// options become the section's next interface.
    pub(super) fn interface(&mut self, at: u64) -> Result<(), PcapngError> {
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(PcapngError::TooManyInterfaces { at });
        }
        let (Some(dlt), Some(snaplen)) = (self.u16_at(0), self.u32_at(4)) else {
            return Err(PcapngError::Short {
                at,
                kind: IDB,
                what: "its fixed fields",
            });
        };
        let mut iface = Interface {
            dlt,
            snaplen: adjust_snaplen(dlt, snaplen),
            tsresol: 1_000_000,
            tsoffset: 0,
        };
        self.idb_options(at, &mut iface)?;
        self.interfaces.push(iface);
        Ok(())
    }

    /// The IDB's options from byte 8 of its body: `if_tsresol` and `if_tsoffset` (each at most
    /// once, of the right length), up to `opt_endofopt` or the end of the body.
    fn idb_options(&self, at: u64, iface: &mut Interface) -> Result<(), PcapngError> {
        let bad = |why: String| PcapngError::BadOption { at, why };
        let (mut saw_resol, mut saw_offset) = (false, false);
        let mut pos = 8;
        while pos < self.block.len() {
            let (Some(code), Some(len)) = (self.u16_at(pos), self.u16_at(pos + 2)) else {
                return Err(PcapngError::Short {
                    at,
                    kind: IDB,
                    what: "an option header",
                });
            };
            let value_at = pos + 4;
            let padded = usize::from(len).div_ceil(4) * 4;
            let Some(value) = self.block.get(value_at..value_at + padded) else {
                return Err(PcapngError::Short {
                    at,
                    kind: IDB,
                    what: "an option value",
                });
            };
            pos = value_at + padded;
            match code {
                OPT_END if len != 0 => return Err(bad(format!("opt_endofopt has length {len}"))),
                OPT_END => break,
                IF_TSRESOL if len != 1 => return Err(bad(format!("if_tsresol has length {len}"))),
                IF_TSRESOL if saw_resol => return Err(bad("two if_tsresol options".into())),
                IF_TSRESOL => {
                    saw_resol = true;
                    iface.tsresol = tsresol(value[0])
                        .ok_or_else(|| bad(format!("if_tsresol {:#04x} is too fine", value[0])))?;
                }
                IF_TSOFFSET if len != 8 => {
                    return Err(bad(format!("if_tsoffset has length {len}")))
                }
                IF_TSOFFSET if saw_offset => return Err(bad("two if_tsoffset options".into())),
                IF_TSOFFSET => {
                    saw_offset = true;
                    let b: [u8; 8] = value[..8].try_into().unwrap_or_default();
                    iface.tsoffset = if self.big_endian {
                        i64::from_be_bytes(b)
                    } else {
                        i64::from_le_bytes(b)
                    };
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A u32 in the current section's byte order.
    fn order(&self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Fills `buf` as far as the input goes; how many bytes it got.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, PcapngError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PcapngError::Io(e.to_string())),
            }
        }
        Ok(got)
    }
}

fn truncated(at: u64, need: u64, got: usize) -> PcapngError {
    PcapngError::Truncated {
        at,
        need,
        got: got as u64,
    }
}

/// A block length libpcap would accept: header plus trailer at least, a multiple of 4, and
/// within the cap (a Section Header Block within its own, and long enough for its fields).
fn check_length(at: u64, kind: u32, len: u32) -> Result<(), PcapngError> {
    let why = if len < 12 {
        "less than a block header and trailer (12 bytes)"
    } else if !len.is_multiple_of(4) {
        "not a multiple of 4"
    } else if kind == SHB && len < MIN_SHB {
        "less than a Section Header Block's fields (28 bytes)"
    } else if kind == SHB && len > MAX_SHB {
        "more than the 1 MiB a Section Header Block may have"
    } else if len > MAX_BLOCK {
        "more than the 16 MiB a block may have"
    } else {
        return Ok(());
    };
    Err(PcapngError::BadLength { at, len, why })
}

/// Timestamp units per second for an `if_tsresol` byte: 10^n, or 2^n with the top bit set;
/// `None` past what 64 bits hold (as libpcap refuses).
fn tsresol(v: u8) -> Option<u64> {
    if v & 0x80 != 0 {
        let shift = u32::from(v & 0x7F);
        (shift <= 63).then(|| 1u64 << shift)
    } else {
        10u64.checked_pow(u32::from(v))
    }
}

/// libpcap's `pcapint_adjust_snapshot`: 0 or past the link type's maximum is the maximum.
fn adjust_snaplen(dlt: u16, snaplen: u32) -> u32 {
    let max = match dlt {
        231 => 128 * 1024 * 1024, // DBUS
        279 => 8 * 1024 * 1024,   // EBHSCR
        249 => 1024 * 1024,       // USBPCAP
        _ => MAX_SNAPLEN,
    };
    if snaplen == 0 || snaplen > max {
        max
    } else {
        snaplen
    }
}
