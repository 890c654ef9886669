//! MQTT (Zeek's `mqtt`): attached to TCP 1883 and by DPD signature (`^.{4,7}MQ`: the
//! protocol name of a CONNECT); confirmed on a CONNECT packet: type 1, a remaining length, then
//! the protocol name `MQTT` (3.1.1, 5) or `MQIsdp` (3.1).

use crate::util::found;
use crate::{Evidence, Found, TCP};

/// The detector.
pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    connect(ev.orig.stream()).then_some(())?;
    found("mqtt")
}

fn connect(b: &[u8]) -> bool {
    let Some((&0x10, rest)) = b.split_first() else {
        return false;
    };
    // The remaining length: one to four octets, seven bits each.
    let n = rest.iter().take(4).take_while(|&&c| c & 0x80 != 0).count() + 1;
    match rest.get(n..) {
        Some(p) => p.starts_with(b"\x00\x04MQTT") || p.starts_with(b"\x00\x06MQIsdp"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::run;

    #[test]
    fn connect_packets() {
        let c = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test";
        assert_eq!(run(detect, TCP, 1883, c, &[], false), Some("mqtt".into()));
        let old = b"\x10\x82\x01\x00\x06MQIsdp\x03";
        assert_eq!(run(detect, TCP, 8883, old, &[], false), Some("mqtt".into()));
        assert_eq!(
            run(detect, TCP, 1883, b"\x10\x10\x00\x04MQTX", &[], false),
            None
        );
        assert_eq!(
            run(detect, TCP, 1883, b"\x10\xff\xff\xff\xff", &[], false),
            None
        );
    }
}
