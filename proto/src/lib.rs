//! tapflow's shared vocabulary: canonical flow keys, packet summaries, the wire codec between
//! collectors, processors and the aggregator, and the shard function.
//!
//! This crate does no IO. Everything here is a plain function over bytes and values, so the
//! other crates (and the fuzz targets) can drive it directly.

#![forbid(unsafe_code)]

pub mod account;
pub mod conn;
pub mod control;
pub mod delivery;
pub mod key;
pub mod packed;
pub mod procset;
pub mod shard;
pub mod slots;
pub mod summary;
pub mod upstream;
pub mod wire;

pub use account::{CaptureStats, CollectorCounters, DropReason};
pub use key::{Addr, Direction, FiveTuple, FlowKey};
pub use shard::{flow_hash, shard};
pub use summary::PacketSummary;
pub use wire::{DecodeError, EosStatus, LinkHeader, Message};
