//! tapflow processor: PULL summaries from collectors -> account inputs (claims, gaps,
//! misrouting, watermarks) -> report to the aggregator over PUSH.
//!
//! `inputs` is sans-IO; `run` owns the sockets.

#![forbid(unsafe_code)]

pub mod config;
mod epochs;
pub mod inputs;
pub mod merge;
mod metrics;
pub mod run;
pub mod session;
pub mod traffic;

pub use config::{Args, Config};
pub use run::run;
