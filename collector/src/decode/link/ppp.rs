//! PPP as a link type: DLT_PPP (RFC 1661 frames, with or without RFC 1662's HDLC-like `ff 03`
//! address and control bytes) and DLT_PPP_SERIAL (always HDLC-framed; BSD also captures Cisco
//! HDLC under it, whose protocol field is an ethertype). The 2-byte protocol field says what
//! follows: IPv4 (0x0021), IPv6 (0x0057) or MPLS (0x0281), the three Zeek's PPP analyzers
//! forward; LCP, IPCP and the other control protocols are `NonIp`. Protocol-field compression
//! (a 1-byte field) is not accepted, as in Zeek.

use tapflow_proto::DropReason;

use super::{be16, ethertype, mpls, L3, PPP_IPV4, PPP_IPV6};

/// A DLT_PPP frame: `ff 03` is skipped when it is there.
pub(super) fn ppp(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    let body = match frame {
        [HDLC_ADDRESS, HDLC_CONTROL, rest @ ..] => rest,
        _ => frame,
    };
    protocol(body)
}

/// A DLT_PPP_SERIAL frame: address, control, then PPP's protocol field, or Cisco HDLC's
/// ethertype when the address is Cisco's unicast (0x0f) or broadcast (0x8f) one.
pub(super) fn serial(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    match frame.first() {
        Some(&(CISCO_UNICAST | CISCO_BROADCAST)) => {
            let ty = be16(frame, 2).ok_or(DropReason::Truncated)?;
            ethertype(ty, frame.get(4..).ok_or(DropReason::Truncated)?, None)
        }
        Some(_) => protocol(frame.get(2..).ok_or(DropReason::Truncated)?),
        None => Err(DropReason::Truncated),
    }
}

/// PPP's protocol field and what it announces.
fn protocol(body: &[u8]) -> Result<L3<'_>, DropReason> {
    let proto = be16(body, 0).ok_or(DropReason::Truncated)?;
    let rest = body.get(2..).ok_or(DropReason::Truncated)?;
    match proto {
        PPP_IPV4 | PPP_IPV6 => Ok(L3 {
            ip: rest,
            vlan: None,
        }),
        PPP_MPLS_UNICAST => mpls(rest, None),
        _ => Err(DropReason::NonIp),
    }
}

const HDLC_ADDRESS: u8 = 0xff;
const HDLC_CONTROL: u8 = 0x03;
const CISCO_UNICAST: u8 = 0x0f;
const CISCO_BROADCAST: u8 = 0x8f;
const PPP_MPLS_UNICAST: u16 = 0x0281;
