//! IEEE 802.11 as captured in monitor mode (DLT_IEEE802_11), bare or behind a radiotap header
//! (DLT_IEEE802_11_RADIO), read as Zeek's IEEE802_11 analyzers read it.
//!
//! Only data frames carry IP. Management and control frames, and the data subtypes without a
//! body (null data, CF-Ack/Poll alone), are `NonIp`. The MAC header is 24 bytes, 30 with the
//! fourth address (To DS and From DS both set), 2 more for a QoS subtype's QoS Control field and
//! 4 more for its HT Control field (the Order bit of a QoS frame). A frame with the Protected bit
//! carries ciphertext: `Encrypted`. The body starts with an LLC/SNAP header (`aa aa 03`, OUI
//! `00 00 00`) whose ethertype says what follows; other LLC payloads are `NonIp`. An A-MSDU
//! (several packets in one QoS frame) is counted as `UnsupportedLink`: one frame here gives at
//! most one IP packet. The frame check sequence at the end, when the capture kept it, is trailer
//! the IP layer cuts off by the IP total length, like Ethernet padding.

use tapflow_proto::DropReason;

use super::{ethertype, L3};

/// A radiotap header (its length is the little-endian u16 at offset 2), then an 802.11 frame.
pub(super) fn radiotap(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    let len = frame
        .get(2..4)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or(DropReason::Truncated)?;
    ieee80211(frame.get(len..).ok_or(DropReason::Truncated)?)
}

/// An 802.11 frame: the MAC header, sized by its frame control field, then LLC/SNAP.
pub(super) fn ieee80211(frame: &[u8]) -> Result<L3<'_>, DropReason> {
    let (fc, flags) = match frame {
        [fc, flags, ..] => (*fc, *flags),
        _ => return Err(DropReason::Truncated),
    };
    let subtype = fc >> 4;
    if (fc >> 2) & 0x03 != TYPE_DATA || subtype & SUBTYPE_NO_DATA != 0 {
        return Err(DropReason::NonIp);
    }
    if flags & PROTECTED != 0 {
        return Err(DropReason::Encrypted);
    }
    let mut len = MAC_HEADER_LEN;
    if flags & (TO_DS | FROM_DS) == TO_DS | FROM_DS {
        len += ADDR_LEN;
    }
    if subtype & SUBTYPE_QOS != 0 {
        if frame.get(len).ok_or(DropReason::Truncated)? & QOS_AMSDU != 0 {
            return Err(DropReason::UnsupportedLink);
        }
        len += QOS_CONTROL_LEN;
        if flags & ORDER != 0 {
            len += HT_CONTROL_LEN;
        }
    }
    llc_snap(frame.get(len..).ok_or(DropReason::Truncated)?)
}

/// An LLC/SNAP header with the zero OUI: its ethertype and what follows.
fn llc_snap(body: &[u8]) -> Result<L3<'_>, DropReason> {
    match body {
        [0xaa, 0xaa, 0x03, 0, 0, 0, hi, lo, rest @ ..] => {
            ethertype(u16::from_be_bytes([*hi, *lo]), rest, None)
        }
        _ if body.len() < SNAP_LEN => Err(DropReason::Truncated),
        _ => Err(DropReason::NonIp),
    }
}

/// Frame control: the type (bits 2-3) of data frames.
const TYPE_DATA: u8 = 2;
/// Data subtypes with this bit carry no body (null data, CF-Ack/Poll without data).
const SUBTYPE_NO_DATA: u8 = 0x04;
/// Data subtypes with this bit have a QoS Control field.
const SUBTYPE_QOS: u8 = 0x08;
const TO_DS: u8 = 0x01;
const FROM_DS: u8 = 0x02;
const PROTECTED: u8 = 0x40;
/// In a QoS data frame, the Order bit announces an HT Control field.
const ORDER: u8 = 0x80;
/// Frame control, duration, three addresses, sequence control.
const MAC_HEADER_LEN: usize = 24;
const ADDR_LEN: usize = 6;
const QOS_CONTROL_LEN: usize = 2;
const HT_CONTROL_LEN: usize = 4;
/// QoS Control, first byte: the body is an A-MSDU.
const QOS_AMSDU: u8 = 0x80;
/// DSAP, SSAP, control, OUI, ethertype.
const SNAP_LEN: usize = 8;
