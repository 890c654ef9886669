//! `quic` (placeholder until the Initial decryption lands).
use crate::{Evidence, Found};

pub fn detect(_ev: &Evidence) -> Option<Found> {
    None
}
