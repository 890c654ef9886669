//! The aggregator's control channel to collectors (issue 18): the processor-set history the
//! aggregator decided, so a processor that died is removed (and one that came back is added
//! again) without an operator.
//!
//! The message carries the whole history (epoch 1's members and every change with its packet-time
//! switch instant), not a delta: a collector that missed a message, or joined late, needs only
//! the latest one, and it applies it exactly as a SIGHUP reload of the set file
//! ([`ProcessorSet::with_history`], accepted only when it extends the history in use). The
//! aggregator sends it again every second, so PUB/SUB's late joiners lose nothing.
//!
//! Layout: `TFCT`, a version byte, then a MessagePack [`SetHistory`]. Decoding never panics:
//! anything else is a typed [`ControlError`].
//!
//! [`ProcessorSet::with_history`]: crate::procset::ProcessorSet::with_history

use serde::{Deserialize, Serialize};

use crate::procset::Change;

const MAGIC: &[u8; 4] = b"TFCT";
const VERSION: u8 = 1;
/// Changes a history may carry at most (a set changes a few times a year).
pub const MAX_CHANGES: usize = 4096;
/// Bytes a control message may take at most.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// The processor-set history the aggregator decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHistory {
    /// Bumped at each decision: a collector logs each new one once.
    pub seq: u64,
    /// Members of epoch 1.
    pub initial: Vec<u16>,
    /// Every change in order with its switch instant (packet time, ns since the Unix epoch).
    pub changes: Vec<(Change, u64)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("control message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("not a control message (bad magic)")]
    BadMagic,
    #[error("control message version {0} is not supported (this build reads {VERSION})")]
    Version(u8),
    #[error("control message body cannot be decoded: {0}")]
    Body(String),
    #[error("control message carries {0} changes, over the limit")]
    TooManyChanges(usize),
}

impl SetHistory {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 16 * self.changes.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Writing plain integers and enums into a Vec cannot fail.
        if let Ok(body) = rmp_serde::to_vec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SetHistory, ControlError> {
        if bytes.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLong(bytes.len()));
        }
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(ControlError::BadMagic);
        };
        let Some((&version, body)) = rest.split_first() else {
            return Err(ControlError::BadMagic);
        };
        if version != VERSION {
            return Err(ControlError::Version(version));
        }
        let h: SetHistory =
            rmp_serde::from_slice(body).map_err(|e| ControlError::Body(e.to_string()))?;
        if h.changes.len() > MAX_CHANGES || h.initial.len() > MAX_CHANGES {
            return Err(ControlError::TooManyChanges(h.changes.len()));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_one() {
        let h = SetHistory {
            seq: 3,
            initial: vec![0, 1, 2],
            changes: vec![(Change::Remove(1), 10_000), (Change::Add(1), 20_000)],
        };
        let bytes = h.encode();
        assert_eq!(SetHistory::decode(&bytes), Ok(h));
        assert_eq!(SetHistory::decode(b"TFC"), Err(ControlError::BadMagic));
        assert_eq!(SetHistory::decode(b"TFCT"), Err(ControlError::BadMagic));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(SetHistory::decode(&v2), Err(ControlError::Version(2)));
        // Every truncation is an error, never a panic.
        for n in 5..bytes.len() {
            assert!(SetHistory::decode(&bytes[..n]).is_err(), "{n}");
        }
        let big = vec![0u8; MAX_CONTROL_BYTES + 1];
        assert_eq!(
            SetHistory::decode(&big),
            Err(ControlError::TooLong(MAX_CONTROL_BYTES + 1))
        );
    }
}
