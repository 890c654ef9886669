//! What one connection record says about hosts (sans-IO).

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::tcp;
use tapflow_proto::Addr;

use super::{DetectConfig, DetectInput};

/// The record's contribution to detection. Roles: `orig` tried something of `resp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Observation {
    /// A failed attempt by orig: no answer, a RST, an ACK probe answered by RST, an unanswered
    /// UDP datagram or ping. Never a reply, never an established connection.
    pub failed: bool,
    /// A TCP probe with NULL, FIN, XMAS or SYN+FIN flags (no ACK, no RST).
    pub stealth: bool,
    /// Orig sent a SYN that was never answered by a SYN-ACK.
    pub unanswered_syn: bool,
    /// Orig sent a SYN (answered or not), for the SYN/answer ratio.
    pub syn: bool,
    /// A response with no request: (victim, reflector).
    pub unsolicited: Option<(Addr, Addr)>,
    /// Orig is allowlisted: it never counts as a scanner.
    pub allowed: bool,
}

pub(super) fn observe(r: &DetectInput, cfg: &DetectConfig) -> Observation {
    let mut o = Observation {
        allowed: cfg
            .allow
            .iter()
            .any(|(net, len)| r.orig_h.in_net(*net, *len)),
        ..Observation::default()
    };
    match r.proto {
        ip_proto::TCP => {
            let (of, rf) = (r.orig_tcp_flags, r.resp_tcp_flags);
            // Backscatter: SYN-ACKs or RSTs with no SYN, from whoever sent them to the other.
            // Such a "connection" starts with a response: it is never an attempt.
            if r.orig_pkts == 0 && r.resp_pkts > 0 {
                o.unsolicited = Some((r.orig_h, r.resp_h));
            } else if r.resp_pkts == 0 && matches!(r.history_first, b'H' | b'R') {
                o.unsolicited = Some((r.resp_h, r.orig_h));
            }
            o.failed = o.unsolicited.is_none()
                && r.orig_pkts > 0
                && !r.answered
                && (r.resp_pkts == 0 || rf & tcp::RST != 0);
            o.stealth = o.unsolicited.is_none()
                && r.orig_pkts > 0
                && of & (tcp::ACK | tcp::RST) == 0
                && (of == 0 || of & tcp::FIN != 0);
            o.syn = of & tcp::SYN != 0 && of & tcp::FIN == 0 && o.unsolicited.is_none();
            o.unanswered_syn = o.syn && !r.syn_acked;
        }
        ip_proto::UDP => {
            o.failed = r.orig_pkts > 0 && r.resp_pkts == 0;
            // Zeek orients a datagram from a service port towards its client: a response that
            // nobody asked for leaves the "originator" silent.
            if r.orig_pkts == 0 && r.resp_pkts > 0 {
                o.unsolicited = Some((r.orig_h, r.resp_h));
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let echo = (r.proto == ip_proto::ICMP && r.orig_p == 8)
                || (r.proto == ip_proto::ICMPV6 && r.orig_p == 128);
            o.failed = echo && r.orig_pkts > 0 && r.resp_pkts == 0;
        }
        _ => {}
    }
    o
}
