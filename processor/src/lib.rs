//! tapflow processor: PULL summaries from collectors -> account inputs (claims, gaps,
//! misrouting, watermarks) -> report to the aggregator over PUSH.
//!
//! `inputs` and `engine` are sans-IO (`Engine::send_conns` aside); `run` owns the sockets
//! (`run::links`) and drives one `run::node::Node` (inputs + engine) with them.

#![forbid(unsafe_code)]

pub mod config;
mod engine;
mod epochs;
pub mod inputs;
pub mod merge;
mod metrics;
pub mod run;
pub mod session;
pub mod traffic;

pub use config::{Args, Config};
pub use run::run;
