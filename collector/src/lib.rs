//! tapflow collector: capture (libpcap, live or file) -> decode -> packet summaries -> batches
//! sharded by flow over one ZeroMQ PUSH link per processor.
//!
//! `decode` is the sans-IO core; `source` (libpcap) and `link` (ZeroMQ) are the edges; `run`
//! wires them together.

pub mod config;
pub mod decode;
mod epochs;
pub mod link;
pub mod privileges;
mod progress;
pub mod run;
pub mod source;

pub use config::{Args, Config};
pub use run::{run, RunOutcome};
