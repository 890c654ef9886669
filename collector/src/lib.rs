//! tapflow collector: capture (libpcap, live or file) -> decode -> packet summaries -> batches
//! sharded by flow over one ZeroMQ PUSH link per processor.
//!
//! `decode` is the sans-IO core; `source` (libpcap, one `PacketSource` per kind) and `link`
//! (ZeroMQ) are the edges; `route` (shards and processor-set epochs) and `batch` sit between;
//! `pipeline` is the capture thread's per-packet path, and `run` wires them together.

mod batch;
pub mod config;
pub mod decode;
mod epochs;
pub mod evidence;
pub mod link;
mod metrics;
mod pipeline;
pub mod privileges;
mod progress;
mod route;
pub mod run;
pub mod source;

pub use config::{Args, Config};

/// The target of the capture thread's log events, wherever in the crate they are raised: what
/// users see and filter by (`RUST_LOG=tapflow_collector::run=...`) stays as it was when `run.rs`
/// held all of it.
pub(crate) const RUN_TARGET: &str = "tapflow_collector::run";
pub use run::{run, Finished, RunOutcome};
