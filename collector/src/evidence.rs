//! Payload evidence (issue 17), sans-IO: a bounded table of young flows that attaches each
//! flow's first payload bytes per direction to its packets' summaries, for the processor's
//! classifier (`service`, `server_name`).
//!
//! - **TCP**: bytes by their offset in the direction's stream, from the sequence number after
//!   the SYN's (a flow that started before the capture: from the first sequence number seen). Only
//!   offsets below the budget not shipped before are shipped, so a retransmission or a
//!   reordered segment never spends the budget twice.
//! - **UDP**: the direction's first datagrams (at most [`UDP_DATAGRAMS`]): one that starts
//!   within the budget goes whole up to [`UDP_WHOLE`] bytes even past the budget (a QUIC
//!   Initial is at least 1200 bytes, and a cut one cannot be decrypted), else cut there.
//! - **Early stops**: a direction whose stream starts with a TLS handshake record is complete
//!   at the end of that record; one that starts like HTTP at the end of its headers
//!   (`\r\n\r\n`). Nothing past that point is shipped, and its absence is no cut.
//! - **Giving up**: a direction whose first bytes (TCP: at stream offset 0; UDP: its first
//!   datagram) no detector of the classifier can use ([`tapflow_classify::may_match`], the
//!   same check the processor's classifier is tested against) ships nothing, like Zeek's DPD
//!   giving up; its packets are counted `gave_up`, and its absence is no cut. A flow given up
//!   in both directions keeps a finished entry, the first to go when the table is full.
//! - **FTP**: a port-21 direction whose budget is spent still ships, at its stream offset, the
//!   first line of a segment that may announce a data connection
//!   ([`tapflow_classify::ftp_late_line`]: `227`, `229`, `PORT`, `EPRT`), at most
//!   [`FTP_LATE_LINES`] of them: the `ftp-data` label needs them, and a long login message is
//!   enough to spend the budget before the first `PASV`.
//! - **Cuts**: a packet whose payload should have been shipped but was not, because the table
//!   was full or the direction's budget ran out before an early stop, is flagged
//!   [`flag::EVIDENCE_CUT`] and counted by reason ([`EvidenceCounters`]).
//! - **Two tiers.** Only a flow with a direction collecting (some bytes shipped, more to come)
//!   has a full entry in the young-flow table. One that no direction is collecting for — a
//!   handshake with no payload yet, or evidence complete both ways (an FTP control flow aside,
//!   whose announcements may still come) — is kept in a compact set ([`slim`]: 32 bytes a
//!   flow, one cache line per look-up): its stream bases, and why each direction ships
//!   nothing more, so its later packets are counted as such and are not taken for a new flow
//!   that started before the capture. Its first payload moves it to the table. Each tier holds
//!   at most `flows` flows: a full table counts and flags the payload it cannot take, a full
//!   set lets the flow that came in first give way.
//! - **Entries** end at an RST, at the second FIN, and when idle for [`IDLE_NS`] of packet
//!   time.

use slim::{Hash, Slim, SlimSet, State};
use tapflow_classify::{ftp_late_line, may_match, FTP_PORT, UDP_WHOLE};
use tapflow_proto::account::EvidenceCounters;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::{flag, merge_range_into, tcp, Payload, MAX_PAYLOAD};
use tapflow_proto::{FlowKey, PacketSummary};

/// A flow idle this long (packet time) leaves the table.
pub const IDLE_NS: u64 = 60_000_000_000;
/// [`IDLE_NS`] in seconds, as finished flows keep their packet time.
const IDLE_S: u32 = (IDLE_NS / 1_000_000_000) as u32;
/// Datagrams shipped per UDP direction at most.
pub const UDP_DATAGRAMS: u8 = 4;
/// Announcement lines an FTP direction ships past its budget at most.
pub const FTP_LATE_LINES: u8 = 32;
/// Disjoint shipped ranges remembered per TCP direction (reordering deeper than this is not
/// shipped until the gap fills).
const MAX_RANGES: usize = 4;

/// Keyed by flows off the wire: a fast hash, seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The table's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceConfig {
    /// Bytes shipped per direction at most (0: no evidence at all).
    pub bytes: u32,
    /// Flows tracked at once.
    pub flows: usize,
}

impl EvidenceConfig {
    pub const DEFAULT_BYTES: u32 = 4096;
    pub const DEFAULT_FLOWS: usize = 65_536;
    /// Evidence off.
    pub const OFF: EvidenceConfig = EvidenceConfig { bytes: 0, flows: 0 };
}

impl Default for EvidenceConfig {
    fn default() -> EvidenceConfig {
        EvidenceConfig {
            bytes: EvidenceConfig::DEFAULT_BYTES,
            flows: EvidenceConfig::DEFAULT_FLOWS,
        }
    }
}

/// One direction of a tracked flow.
#[derive(Clone, Copy, Debug, Default)]
struct Dir {
    /// TCP: the sequence number of stream offset 0 is known.
    based: bool,
    base: u32,
    /// TCP: shipped offset ranges `[start, end)`, sorted, disjoint; `n` in use.
    ranges: [(u32, u32); MAX_RANGES],
    n: u8,
    /// The offset where the identifying part ends (an early stop), `u32::MAX` unknown.
    stop: u32,
    /// The stream starts like HTTP: look for the end of its headers.
    http: bool,
    /// UDP: datagrams and bytes shipped.
    dgrams: u8,
    used: u32,
    /// Nothing more to ship (complete, or cut).
    done: bool,
    /// The cut was flagged already.
    cut: bool,
    /// The first bytes match no detector: nothing is shipped.
    gave_up: bool,
    /// FTP announcement lines shipped past the budget.
    late: u8,
    fin: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    dirs: [Dir; 2],
    last_ts: u64,
}

impl Entry {
    fn new(ts: u64) -> Entry {
        let d = Dir {
            stop: u32::MAX,
            ..Dir::default()
        };
        Entry {
            dirs: [d; 2],
            last_ts: ts,
        }
    }
}

/// The table of young flows.
#[derive(Debug)]
pub struct EvidenceTable {
    cfg: EvidenceConfig,
    flows: HashMap<FlowKey, Entry>,
    /// Flows no direction is collecting for.
    slim: SlimSet,
    counters: EvidenceCounters,
    /// Packet time of the last idle sweep.
    swept_at: u64,
}

/// What one packet's payload is to its direction.
enum Ship {
    /// These bytes, at this offset.
    Piece(u32, Vec<u8>),
    Nothing,
}

impl EvidenceTable {
    pub fn new(cfg: EvidenceConfig) -> EvidenceTable {
        let cfg = EvidenceConfig {
            bytes: cfg.bytes.min(MAX_PAYLOAD as u32),
            ..cfg
        };
        EvidenceTable {
            cfg,
            flows: HashMap::default(),
            slim: SlimSet::new(cfg.flows),
            counters: EvidenceCounters::default(),
            swept_at: 0,
        }
    }

    pub fn counters(&self) -> &EvidenceCounters {
        &self.counters
    }

    /// Flows with a direction collecting now (full entries).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Flows kept in the compact set now (a handshake seen, or evidence complete).
    pub fn slim_len(&self) -> usize {
        self.slim.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// One summarised packet and the captured bytes of its transport payload: attaches what
    /// is to be shipped to `s.payload`, flags a cut. TCP and UDP only; a packet with a bad
    /// checksum is left alone (Zeek does not analyse its payload).
    pub fn observe(&mut self, s: &mut PacketSummary, data: &[u8]) {
        let proto = s.key.proto;
        if self.cfg.bytes == 0
            || self.cfg.flows == 0
            || (proto != ip_proto::TCP && proto != ip_proto::UDP)
            || s.flags & flag::BAD_CHECKSUM != 0
        {
            return;
        }
        let data = &data[..data.len().min(s.payload_len as usize)];
        let syn = proto == ip_proto::TCP && s.tcp_flags & tcp::SYN != 0;
        let close = proto == ip_proto::TCP && s.tcp_flags & (tcp::FIN | tcp::RST) != 0;
        if data.is_empty() && !syn && !close {
            return;
        }
        let h = self.slim.hash(&s.key);
        let a = usize::from(s.flags & flag::REVERSE != 0);
        if let Some(mut dirs) = self.slim.touch(h, secs(s.ts_ns)) {
            if syn {
                syn_on(&mut dirs[a], s.seq);
                self.slim.set(h, dirs);
            }
            if data.is_empty() || dirs[a].state != State::Open {
                self.count_done(dirs[a], !data.is_empty());
                self.slim_close(s, h, a);
            } else {
                self.young(s, h, Some(dirs), data);
            }
            return;
        }
        if data.is_empty() && !syn {
            self.on_close(s);
            return;
        }
        self.sweep(s.ts_ns);
        let Some(e) = self.flows.get_mut(&s.key) else {
            self.counters.flows += 1;
            self.young(s, h, None, data);
            return;
        };
        let rest = apply(e, s, data, self.cfg.bytes, &mut self.counters);
        if close {
            self.on_close(s);
        }
        if let Some(rest) = at_rest(s, rest) {
            if self.flows.remove(&s.key).is_some() {
                self.slim.insert(h, rest, secs(s.ts_ns));
            }
        }
    }

    /// A packet of a flow not in the table (in the compact set as `dirs`, or new), applied
    /// to an entry made for it: if no direction collects after it, the flow is kept (or
    /// stays) in the compact set; else it takes a place in the table, if there is one (if not,
    /// its payload is not shipped but counted and flagged, and the flow is left as it was).
    fn young(&mut self, s: &mut PacketSummary, h: Hash, dirs: Option<[Slim; 2]>, data: &[u8]) {
        let mut e = Entry::new(s.ts_ns);
        if let Some(dirs) = dirs {
            e.dirs = dirs.map(|d| dir_of(&d));
        }
        let mut c = self.counters;
        let rest = apply(&mut e, s, data, self.cfg.bytes, &mut c);
        if let Some(rest) = at_rest(s, rest) {
            self.counters = c;
            match dirs {
                Some(_) => self.slim.set(h, rest),
                None => self.slim.insert(h, rest, secs(s.ts_ns)),
            }
            self.slim_close(s, h, usize::from(s.flags & flag::REVERSE != 0));
        } else if self.flows.len() < self.cfg.flows {
            self.counters = c;
            if dirs.is_some() {
                self.slim.remove(h);
            }
            self.flows.insert(s.key, e);
            if s.key.proto == ip_proto::TCP && s.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
                self.on_close(s);
            }
        } else {
            s.payload = None;
            if !data.is_empty() {
                self.counters.table_full += 1;
                s.flags |= flag::EVIDENCE_CUT;
            }
        }
    }

    /// Payload of a direction that ships nothing more, counted by why.
    fn count_done(&mut self, d: Slim, payload: bool) {
        let c = &mut self.counters;
        match (payload, d.state) {
            (false, _) | (_, State::Open) => {}
            (_, State::GaveUp) => c.gave_up += 1,
            (_, State::Budget) => c.budget += 1,
            (_, State::Complete) => c.complete += 1,
        }
    }

    /// A FIN or RST of a flow in the compact set: an RST, or the second direction's FIN, ends it.
    fn slim_close(&mut self, s: &PacketSummary, h: Hash, a: usize) {
        if s.key.proto != ip_proto::TCP {
            return;
        }
        let fin = s.tcp_flags & tcp::FIN != 0 && self.slim.fin(h, a);
        if s.tcp_flags & tcp::RST != 0 || fin {
            self.slim.remove(h);
        }
    }

    /// An RST ends the entry, and so does the second direction's FIN.
    fn on_close(&mut self, s: &PacketSummary) {
        let Some(e) = self.flows.get_mut(&s.key) else {
            return;
        };
        let a = usize::from(s.flags & flag::REVERSE != 0);
        e.dirs[a].fin |= s.tcp_flags & tcp::FIN != 0;
        if s.tcp_flags & tcp::RST != 0 || (e.dirs[0].fin && e.dirs[1].fin) {
            self.flows.remove(&s.key);
        }
    }

    /// Removes flows idle for [`IDLE_NS`], at most once per second of packet time.
    fn sweep(&mut self, now: u64) {
        if now < self.swept_at.saturating_add(1_000_000_000) {
            return;
        }
        self.swept_at = now;
        let before = now.saturating_sub(IDLE_NS);
        self.flows.retain(|_, e| e.last_ts >= before);
    }
}

/// One packet applied to its flow's entry: its piece, if any, attached to `s` and counted;
/// returns the entry's directions as the compact set would keep them (a FIN noted).
fn apply(
    e: &mut Entry,
    s: &mut PacketSummary,
    data: &[u8],
    budget: u32,
    c: &mut EvidenceCounters,
) -> [Option<Slim>; 2] {
    e.last_ts = s.ts_ns;
    let a = usize::from(s.flags & flag::REVERSE != 0);
    let tcp = s.key.proto == ip_proto::TCP;
    let ship = if tcp {
        tcp_piece(&mut e.dirs[a], s, data, budget, c)
    } else {
        udp_piece(&mut e.dirs[a], s, data, budget, c)
    };
    if let Ship::Piece(offset, bytes) = ship {
        c.bytes_shipped += bytes.len() as u64;
        c.pieces_shipped += 1;
        s.payload = Some(Box::new(Payload { offset, bytes }));
    }
    let mut rest = e.dirs.map(|d| slim_of(&d));
    if let Some(d) = rest[a].as_mut() {
        d.fin |= tcp && s.tcp_flags & tcp::FIN != 0;
    }
    rest
}

/// The directions as the compact set keeps them, when no direction collects for the flow (an
/// FTP control flow that is done one way stays in the table: its announcements may come past
/// its budget).
fn at_rest(s: &PacketSummary, rest: [Option<Slim>; 2]) -> Option<[Slim; 2]> {
    let [Some(a), Some(b)] = rest else {
        return None;
    };
    let ftp = s.key.lo_port == FTP_PORT || s.key.hi_port == FTP_PORT;
    let done = a.state != State::Open || b.state != State::Open;
    (!(ftp && done)).then_some([a, b])
}

/// Packet time in seconds, as the compact set keeps it.
fn secs(ts_ns: u64) -> u32 {
    u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX)
}

/// A direction as the compact set keeps it: open (nothing shipped or cut, no early stop
/// known) or done; `None` while it is collecting.
fn slim_of(d: &Dir) -> Option<Slim> {
    let state = if d.gave_up {
        State::GaveUp
    } else if d.done && d.cut {
        State::Budget
    } else if d.done {
        State::Complete
    } else if d.n == 0 && d.dgrams == 0 && !d.cut && !d.http && d.stop == u32::MAX && d.late == 0 {
        State::Open
    } else {
        return None;
    };
    let flag = if state == State::Open {
        d.based
    } else {
        d.n > 0
    };
    Some(Slim {
        state,
        base: d.base,
        flag,
        fin: d.fin,
    })
}

/// A direction back from the compact set, as it was (a done one with a range at offset 0 if
/// it shipped, so a SYN with the same base keeps it).
fn dir_of(d: &Slim) -> Dir {
    let open = d.state == State::Open;
    Dir {
        based: !open || d.flag,
        base: d.base,
        n: u8::from(!open && d.flag),
        stop: u32::MAX,
        done: !open,
        gave_up: d.state == State::GaveUp,
        cut: d.state == State::Budget,
        fin: d.fin,
        ..Dir::default()
    }
}

/// A SYN in the compact set, as [`base_on`] takes it in the table: the base after it; a
/// direction that shipped nothing, or had another base, starts afresh.
fn syn_on(d: &mut Slim, seq: u32) {
    let base = seq.wrapping_add(1);
    let keep = d.state != State::Open && d.flag && d.base == base;
    if !keep {
        *d = Slim {
            flag: true,
            base,
            ..Slim::OPEN
        };
    }
}

/// A TCP packet's piece: the part of `data` (at sequence number `s.seq`) in the direction's
/// window `[0, min(budget, stop))` not shipped before.
fn tcp_piece(
    d: &mut Dir,
    s: &mut PacketSummary,
    data: &[u8],
    budget: u32,
    c: &mut EvidenceCounters,
) -> Ship {
    let seq = base_on(d, s);
    if data.is_empty() {
        return Ship::Nothing;
    }
    if d.done {
        if let Some(line) = ftp_late(d, s, seq, data) {
            return line;
        }
        count_unshipped(d, c);
        return Ship::Nothing;
    }
    // Where the piece starts in the stream; one starting before offset 0 is clipped.
    let rel = seq.wrapping_sub(d.base);
    let (start, data) = if rel > u32::MAX / 2 {
        let skip = (u32::MAX - rel).saturating_add(1) as usize;
        (0, data.get(skip..).unwrap_or_default())
    } else {
        (rel, data)
    };
    if start == 0 && !(d.n > 0 && d.ranges[0].0 == 0) {
        if !may_match(ip_proto::TCP, [s.key.lo_port, s.key.hi_port], data) {
            give_up(d, c);
            return Ship::Nothing;
        }
        d.stop = early_stop(data).unwrap_or(u32::MAX);
        d.http = looks_like_http(data);
    }
    let end = start.saturating_add(data.len() as u32);
    let mut shipped = Ship::Nothing;
    if start < budget.min(d.stop) {
        if let Some((from, mut to)) = unshipped(d, start, end.min(budget.min(d.stop))) {
            let piece = &data[(from - start) as usize..(to - start) as usize];
            let headers_end = (d.http && d.stop == u32::MAX)
                .then(|| find_headers_end(piece))
                .flatten();
            if let Some(pos) = headers_end {
                to = from + pos;
            }
            if add_range(d, from, to) {
                if headers_end.is_some() {
                    d.stop = to;
                }
                shipped = Ship::Piece(
                    from,
                    data[(from - start) as usize..(to - start) as usize].to_vec(),
                );
            } else {
                c.reordered += 1;
            }
        }
    }
    if end > budget && d.stop > budget && !d.cut {
        // Payload past the budget before the identifying part was complete.
        d.cut = true;
        s.flags |= flag::EVIDENCE_CUT;
    }
    let limit = budget.min(d.stop);
    if d.n == 1 && d.ranges[0].0 == 0 && d.ranges[0].1 >= limit {
        d.done = true;
    }
    if matches!(shipped, Ship::Nothing) {
        count_unshipped(d, c);
    }
    shipped
}

/// Past the budget of an FTP control direction: the packet's first line that may announce a
/// data connection, at its stream offset.
fn ftp_late(d: &mut Dir, s: &PacketSummary, seq: u32, data: &[u8]) -> Option<Ship> {
    let ftp = s.key.lo_port == FTP_PORT || s.key.hi_port == FTP_PORT;
    if !ftp || !d.cut || d.late >= FTP_LATE_LINES {
        return None;
    }
    let rel = seq.wrapping_sub(d.base);
    if rel > u32::MAX / 2 {
        return None;
    }
    let r = ftp_late_line(data)?;
    let offset = rel.checked_add(r.start as u32)?;
    d.late += 1;
    Some(Ship::Piece(offset, data[r].to_vec()))
}

/// Sets the direction's stream base: after a SYN (a new connection, or its SYN again, starts
/// offsets afresh), else at the first sequence number seen; returns the sequence number of
/// the packet's first payload byte.
fn base_on(d: &mut Dir, s: &PacketSummary) -> u32 {
    if s.tcp_flags & tcp::SYN != 0 {
        let base = s.seq.wrapping_add(1);
        if d.n == 0 || d.base != base {
            *d = Dir {
                stop: u32::MAX,
                ..Dir::default()
            };
        }
        d.based = true;
        d.base = base;
        return base;
    }
    if !d.based {
        d.based = true;
        d.base = s.seq;
    }
    s.seq
}

/// The direction's first bytes match no detector: it is done, nothing shipped or cut.
fn give_up(d: &mut Dir, c: &mut EvidenceCounters) {
    d.gave_up = true;
    d.done = true;
    c.gave_up += 1;
}

/// A payload packet that shipped nothing: given up (`gave_up`), past an early stop
/// (`complete`), past the budget (`budget`), or a repeat of shipped bytes (`repeated`).
fn count_unshipped(d: &Dir, c: &mut EvidenceCounters) {
    if d.gave_up {
        c.gave_up += 1;
    } else if d.cut {
        c.budget += 1;
    } else if d.stop != u32::MAX || d.done {
        c.complete += 1;
    } else {
        c.repeated += 1;
    }
}

/// A UDP datagram's piece: whole, or cut at the direction's budget ([`UDP_WHOLE`] bytes at
/// least, for a datagram that starts within it).
fn udp_piece(
    d: &mut Dir,
    s: &mut PacketSummary,
    data: &[u8],
    budget: u32,
    c: &mut EvidenceCounters,
) -> Ship {
    if d.done {
        count_unshipped(d, c);
        return Ship::Nothing;
    }
    if d.dgrams == 0 && !may_match(ip_proto::UDP, [s.key.lo_port, s.key.hi_port], data) {
        give_up(d, c);
        return Ship::Nothing;
    }
    let room = match budget.saturating_sub(d.used) {
        0 => 0,
        room => room.max(UDP_WHOLE) as usize,
    };
    let take = data.len().min(room);
    if take < data.len() {
        d.cut = true;
        d.done = true;
        s.flags |= flag::EVIDENCE_CUT;
        if take == 0 {
            c.budget += 1;
            return Ship::Nothing;
        }
    }
    let index = u32::from(d.dgrams);
    d.dgrams += 1;
    d.used += take as u32;
    if d.dgrams >= UDP_DATAGRAMS {
        d.done = true;
    }
    Ship::Piece(index, data[..take].to_vec())
}

/// The first part of `[start, end)` not yet shipped, if any.
fn unshipped(d: &Dir, mut start: u32, end: u32) -> Option<(u32, u32)> {
    for &(a, b) in &d.ranges[..usize::from(d.n)] {
        if start >= a && start < b {
            start = b;
        }
    }
    if start >= end {
        return None;
    }
    // Stop at the next shipped range.
    let to = d.ranges[..usize::from(d.n)]
        .iter()
        .filter(|&&(a, _)| a > start)
        .map(|&(a, _)| a)
        .min()
        .unwrap_or(end)
        .min(end);
    Some((start, to))
}

/// Records `[from, to)` as shipped, merging neighbours; false (nothing changed) when it would
/// need more than [`MAX_RANGES`] ranges.
fn add_range(d: &mut Dir, from: u32, to: u32) -> bool {
    let held = d.ranges;
    let n = usize::from(d.n).min(MAX_RANGES);
    match merge_range_into(&held[..n], from, to, &mut d.ranges) {
        Some(m) => {
            d.n = m as u8;
            true
        }
        None => {
            d.ranges = held;
            false
        }
    }
}

/// The end of the identifying part when the stream starts with a TLS handshake record
/// (content type 22, version 3.x): the record's end.
fn early_stop(data: &[u8]) -> Option<u32> {
    match data {
        [22, 3, _, hi, lo, ..] => Some(5 + u32::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// The stream starts with an HTTP request method or a status line.
fn looks_like_http(data: &[u8]) -> bool {
    const STARTS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
        b"HTTP/1.",
    ];
    STARTS.iter().any(|m| data.starts_with(m))
}

/// The offset just past `\r\n\r\n` in `bytes`.
fn find_headers_end(bytes: &[u8]) -> Option<u32> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p as u32 + 4)
}

mod slim;
#[cfg(test)]
mod tests;
