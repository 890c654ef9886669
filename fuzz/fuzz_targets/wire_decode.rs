//! Any bytes into the wire decoders: `Message::decode` (collector -> processor) and
//! `UpMessage::decode` (processor -> aggregator). Neither may panic, whatever the bytes
//! (DESIGN invariant 7). What decodes must re-encode to bytes that decode to the same value,
//! and a strict prefix of those bytes must not decode (MessagePack is prefix-free).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow_proto::upstream::UpMessage;
use tapflow_proto::wire::{encode_batch, encode_eos, encode_heartbeat};
use tapflow_proto::Message;

fuzz_target!(|data: &[u8]| {
    let mut buf = Vec::new();
    if let Ok(m) = Message::decode(data) {
        match &m {
            Message::Batch { header, summaries } => encode_batch(header, summaries, &mut buf),
            Message::Heartbeat { header, counters } => encode_heartbeat(header, counters, &mut buf),
            Message::Eos {
                header,
                status,
                counters,
            } => encode_eos(header, status, counters, &mut buf),
        }
        assert_eq!(Message::decode(&buf).as_ref(), Ok(&m), "re-encoded {m:?}");
        assert!(
            Message::decode(&buf[..buf.len() - 1]).is_err(),
            "prefix of {m:?}"
        );
    }
    if let Ok(m) = UpMessage::decode(data) {
        m.encode(&mut buf);
        assert_eq!(UpMessage::decode(&buf).as_ref(), Ok(&m), "re-encoded {m:?}");
        assert!(
            UpMessage::decode(&buf[..buf.len() - 1]).is_err(),
            "prefix of {m:?}"
        );
    }
});
