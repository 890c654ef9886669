//! tapflow's benchmark support: a deterministic synthetic traffic generator ([`gen`]), a
//! classic pcap writer ([`pcap`]) and synthetic connection records for the aggregator's
//! benches ([`records`]).
//!
//! The `tapflow-gen` binary writes the generator's packets to a capture file for `bench/run.sh`;
//! the criterion benches in `benches/` use [`gen::Generator`] directly to get frames in memory.

#![forbid(unsafe_code)]

pub mod gen;
pub mod pcap;
pub mod records;
