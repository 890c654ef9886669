//! tapflow aggregator: PULL the processors' messages -> accounting (and, as they land, window
//! merging, detection and sinks).
//!
//! `state::Aggregator` is the sans-IO state machine (ordering, detection hand-over, accounting);
//! `sink` holds every output behind one trait; `run` owns the socket, signals and clock and
//! drives the machine.

#![forbid(unsafe_code)]

pub mod accounting;
pub mod config;
pub mod conn_writer;
pub mod conns;
pub mod control;
pub mod detect;
pub mod detect_thread;
pub mod durable;
pub mod health;
pub mod http;
pub mod inbox;
pub mod influx;
pub mod json;
pub mod latency;
pub mod logfile;
pub mod members;
pub mod points;
pub mod run;
pub mod sink;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod upstream;
pub mod wal;

pub use config::{Args, Config};
pub use run::run;
