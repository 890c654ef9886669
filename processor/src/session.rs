//! Session reassembly with Zeek's conn.log semantics, sans-IO: packet summaries in packet-time
//! order go in, finished connection records ([`ConnRecord`]) come out.
//!
//! [`FlowTable`] keeps one entry per open connection, keyed by the canonical [`FlowKey`]. Every
//! decision follows packet time, never the wall clock:
//! - **Per packet.** Before a summary is applied, the table asks whether the connection it
//!   belongs to has already ended by then: idle past its timeout (or, for UDP DNS, past
//!   Zeek's `dns_session_timeout` check), a TCP attempt unanswered for
//!   `tcp_attempt_delay`, a closed or reset TCP connection past `tcp_close_delay`, or a new SYN
//!   on a closed connection (Zeek's connection reuse). If so the old record is emitted first and
//!   the packet starts a new connection, exactly as Zeek's timers would have ended it.
//! - **Sweeps** ([`FlowTable::sweep`]) emit connections whose deadline is at or before the
//!   input-minimum watermark, so idle connections do not wait for the end of the stream.
//! - **End of stream** ([`FlowTable::flush`]) emits everything still open.
//!
//! What a record says is modelled on Zeek's own code: the TCP endpoint state machine and
//! history letters of its TCP analyzer (`TCPSessionAdapter`, `TCP_Endpoint`), byte counts from
//! sequence numbers (`TCP_Endpoint::Size`), content gaps as its reassembler reports them
//! (`missed_bytes`, `g`/`G`), `conn_state` as `base/protocols/conn/main.zeek` derives it, UDP and
//! ICMP sizes and states as their session adapters keep them (other IP protocols have no
//! analyzer in Zeek, so no sizes), packet and IP byte counts as the ConnSize analyzer counts
//! them, the originator flip heuristics (`likely_server_ports`, never towards the IPv4
//! broadcast address) and the DNS analyzer's session timer (`dns_session_timeout`).
//!
//! # Deliberate differences from Zeek
//! - `uid` is derived from the key and first packet time (Zeek's is random), so it is the same
//!   on every processor; `tunnel_parents` names outer flows by key, not by uid.
//! - Zeek's timers fire on global network time; tapflow decides on the connection's own packets
//!   and on sweeps. Zeek checks the linger time of half-closed or reset connections on a coarse
//!   6-minute timer; tapflow applies it exactly. Sweeps use whole seconds (a record may leave a
//!   sweep up to 1 s after its deadline; its content is the same).
//! - Interim records and the table cap with eviction have no Zeek counterpart.
//! - Bounded state where Zeek is unbounded: history at most 256 letters; scaled letters
//!   (`c t w g`) up to the 10,000th event; repeated `S F R` compared on the low 16 bits of their
//!   sequence numbers; at most 64 out-of-order ranges per TCP endpoint; a FIN's sequence number
//!   is the endpoint's highest.
//! - `likely_server_ports` is the list Zeek's default scripts register, whatever a bare
//!   (`-b`) Zeek would have loaded.
//! - `dns_session_timeout` is checked at `first packet + k * timeout`, where Zeek's re-armed
//!   timer falls when traffic is dense (Zeek re-arms it from the time it actually fired, which
//!   drifts later when the trace is quiet); the connections it applies to are those with a
//!   DNS responder port, whatever the payload (Zeek attaches its DNS analyzer by port, and
//!   drops it with its timer on a protocol violation, which tapflow cannot see).
//! - Not modelled (off or unhandled in Zeek's defaults): `detect_filtered_trace`,
//!   `tcp_max_old_segments`, the partial-close timer, `report_gaps_for_partial`.
//!
//! # Memory
//! Flows live in a slab preallocated for [`SessionConfig::max_flows`], indexed by an
//! open-addressing table of 32-bit slots (hashbrown's `HashTable`, starting small and growing
//! with the open flows to at most the power of two above 16/7 of the cap, where removals make it
//! rehash in place instead of growing), with deadlines in a binary heap of packed 8-byte
//! entries that drops stale entries instead of growing. A flow's state is a fixed-size record
//! with its history inline (15 letters); only tunnelled flows and flows with content gaps,
//! out-of-order data, TCP bad checksums or long histories get a boxed side record, once per
//! flow. Latency and jitter (issue 15, `timing`) live in a second box of
//! [`FlowTable::timing_box_bytes`] (320, five cache lines) bytes, made at a flow's second
//! counted packet: a flow of one packet (a scan probe, a lone datagram) never has one; ended
//! flows' boxes are kept for new ones, 8192 at most (2.6 MB). Steady-state packets allocate
//! nothing. [`FlowTable::flow_entry_bytes`], [`FlowTable::memory_bytes`] and
//! [`FlowTable::bytes_per_flow`] report the footprint at full table, computed from the sizes:
//! 232 bytes of entry, 263 bytes per flow with heap and index (262,971,664 bytes at 1M flows;
//! the index briefly 1.5 times its share while it grows), timing boxes not included.
//!
//! The end of stream does not turn the whole table into records at once (a [`ConnRecord`]
//! with its strings is ~390 bytes, more than the flow): [`FlowTable::begin_flush`] orders the
//! open flows and [`FlowTable::flush_next`] makes their records a message's worth at a time.

use serde::{Deserialize, Serialize};
use tapflow_proto::Addr;

mod endpoint;
mod evidence;
mod flow;
mod history;
mod table;
mod tcp;
#[cfg(test)]
mod tests;
mod timed;
mod timing;

pub use table::FlowTable;
pub use tapflow_proto::conn::{ConnRecord, ConnState};

const SECOND: u64 = 1_000_000_000;

/// Flow-table settings. Every default is Zeek's where Zeek has one (its name is given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Idle timeout of an established TCP connection (`tcp_inactivity_timeout`). Default 5 min.
    pub tcp_inactivity_ns: u64,
    /// Idle timeout of a TCP connection still in its handshake (both sides inactive or with
    /// only a SYN/SYN-ACK sent). Zeek's TCP analyzer starts every connection with
    /// `udp_inactivity_timeout` and switches to the TCP one once a side leaves the handshake.
    /// Default 1 min.
    pub tcp_handshake_inactivity_ns: u64,
    /// Idle timeout of a UDP flow (`udp_inactivity_timeout`). Default 1 min.
    pub udp_inactivity_ns: u64,
    /// A UDP DNS connection (responder port 53, 137, 5353 or 5355, where Zeek's DNS analyzer
    /// attaches) ends once idle for a second less than this, checked every this long from its
    /// first packet (`dns_session_timeout`, see `DNS_Analyzer::ExpireTimer`). 0 disables.
    /// Default 10 s.
    pub dns_session_timeout_ns: u64,
    /// Idle timeout of an ICMP flow (`icmp_inactivity_timeout`). Default 1 min.
    pub icmp_inactivity_ns: u64,
    /// Idle timeout of a flow of any other IP protocol. Default 1 min (Zeek's UDP/ICMP value).
    pub other_inactivity_ns: u64,
    /// A SYN (or SYN-ACK) that nothing answered ends its connection this long after it was
    /// first sent (`tcp_attempt_delay`): a retransmission after that starts a new connection.
    /// Default 5 s.
    pub tcp_attempt_delay_ns: u64,
    /// A TCP connection closed on both sides, reset, or closed facing a silent peer is removed
    /// this long after its last packet (`tcp_close_delay`). Default 5 s.
    pub tcp_close_delay_ns: u64,
    /// A RST after a FIN removes the connection this long after the RST (`tcp_reset_delay`).
    /// Default 5 s.
    pub tcp_reset_delay_ns: u64,
    /// A half-closed or reset TCP connection idle this long is considered over
    /// (`tcp_connection_linger`). Zeek checks it on a coarse timer (every `tcp_session_timer`,
    /// 6 min); tapflow applies it exactly. Default 5 s.
    pub tcp_linger_ns: u64,
    /// Long connections get an interim record (`interim: true`, cumulative) when their first
    /// packet at or past `start + k * active_timeout` arrives. 0 disables. Default 1 h.
    pub active_timeout_ns: u64,
    /// Most connections held at once. When a new connection finds the table full, the open
    /// connection with the earliest deadline (the one that would time out first) is evicted:
    /// emitted as a final record with `evicted: true` and counted in [`TableStats::evicted`].
    /// Default 1,000,000.
    pub max_flows: usize,
    /// Local networks as (address, prefix length in that address family's bits: 0-32 for IPv4,
    /// 0-128 for IPv6) (`Site::local_nets`). Empty (the default) leaves `local_orig` and
    /// `local_resp` unset, as Zeek does.
    pub local_nets: Vec<(Addr, u8)>,
    /// TCP ports where a server likely listens (`likely_server_ports`): a connection first seen
    /// mid-stream or with a SYN-ACK from such a port to another port is flipped (`^`). Default
    /// the ports Zeek's default scripts register.
    pub likely_server_ports_tcp: Vec<u16>,
    /// UDP ports where a server likely listens: a flow whose first packet comes from such a port
    /// to another port is flipped. Default the ports Zeek's default scripts register.
    pub likely_server_ports_udp: Vec<u16>,
    /// Log the outer flow of IP tunnels (GRE, IP-in-IP, IPv6-in-IPv4: summaries flagged
    /// `TUNNEL_OUTER` with protocol 47, 4 or 41) as connections. Zeek keeps those as tunnels, not
    /// connections, so the default is false. UDP-borne tunnels (VXLAN, GTP-U, Geneve) are
    /// always connections, as in Zeek.
    pub log_ip_tunnel_outer: bool,
    /// After this many changes of a connection's outer tunnel, Zeek stops reporting them and
    /// marks the connection `X` (`Tunnel::max_changes_per_connection`). Default 5; 0 = no limit.
    pub max_tunnel_changes: u32,
    /// Payload evidence kept per connection direction at most (bytes), whatever the
    /// collectors ship (their `--payload-bytes` budget). Default 4096.
    pub payload_bytes: u32,
    /// The classifier's settings (services disabled, Zeek's `dns_max_queries`).
    pub classify: tapflow_classify::Settings,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            tcp_inactivity_ns: 300 * SECOND,
            tcp_handshake_inactivity_ns: 60 * SECOND,
            udp_inactivity_ns: 60 * SECOND,
            dns_session_timeout_ns: 10 * SECOND,
            icmp_inactivity_ns: 60 * SECOND,
            other_inactivity_ns: 60 * SECOND,
            tcp_attempt_delay_ns: 5 * SECOND,
            tcp_close_delay_ns: 5 * SECOND,
            tcp_reset_delay_ns: 5 * SECOND,
            tcp_linger_ns: 5 * SECOND,
            active_timeout_ns: 3600 * SECOND,
            max_flows: 1_000_000,
            local_nets: Vec::new(),
            likely_server_ports_tcp: ZEEK_SERVER_PORTS_TCP.to_vec(),
            likely_server_ports_udp: ZEEK_SERVER_PORTS_UDP.to_vec(),
            log_ip_tunnel_outer: false,
            max_tunnel_changes: 5,
            payload_bytes: 4096,
            classify: tapflow_classify::Settings::default(),
        }
    }
}

/// TCP ports registered in `likely_server_ports` by Zeek's default protocol scripts.
pub const ZEEK_SERVER_PORTS_TCP: &[u16] = &[
    21, 22, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585, 587, 614, 631,
    636, 750, 989, 990, 992, 993, 995, 1080, 1433, 1434, 1883, 2811, 3128, 3268, 3306, 3389, 5222,
    5223, 5269, 5432, 5900, 6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000,
];

/// UDP ports registered in `likely_server_ports` by Zeek's default protocol and tunnel scripts.
pub const ZEEK_SERVER_PORTS_UDP: &[u16] = &[
    53, 67, 88, 123, 137, 161, 162, 389, 443, 514, 750, 1812, 2123, 2152, 3544, 4789, 5060, 5072,
    5353, 5355, 6081, 20000,
];

/// UDP ports Zeek's DNS analyzer is registered for (`DNS::ports`): a connection with one of
/// them as responder port gets `dns_session_timeout`.
pub const ZEEK_DNS_PORTS_UDP: &[u16] = &[53, 137, 5353, 5355];

/// Counters of a [`FlowTable`], cumulative since it was made (except `open_flows`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Connections open now.
    pub open_flows: u64,
    /// Summaries given to [`FlowTable::on_summary`].
    pub summaries: u64,
    /// Summaries of IP-tunnel outer flows not tracked (see `log_ip_tunnel_outer`).
    pub tunnel_outer_skipped: u64,
    /// Summaries with a bad transport checksum (recorded in history, not counted).
    pub bad_checksum: u64,
    /// Connections started.
    pub flows_created: u64,
    /// Final records emitted (by any path below).
    pub records: u64,
    /// Interim records emitted.
    pub interim_records: u64,
    /// Connections ended because a packet arrived after their deadline (a timeout split).
    pub ended_by_packet: u64,
    /// Connections ended by a new SYN on the same key (Zeek's connection reuse).
    pub ended_by_reuse: u64,
    /// Connections ended by a sweep.
    pub ended_by_sweep: u64,
    /// Connections ended at end of stream.
    pub ended_by_flush: u64,
    /// Connections evicted because the table was full (cap hits).
    pub evicted: u64,
    /// Connections whose history reached the limit (256 letters) and lost letters.
    pub history_truncated: u64,
    /// UDP and ICMP packets cut short by the capture length: in history and size, not in the
    /// packet and IP byte counts (Zeek's size analyzer does not see them).
    pub truncated_uncounted: u64,
}
