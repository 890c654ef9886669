//! `tapflow-aggregator`: parse flags, set up logging and signals, run.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tapflow_aggregator::{run, Args, Config};

/// mimalloc, not glibc's malloc: at the end of a capture the aggregator decodes, holds and frees
/// a few hundred thousand records at once, and glibc spent a quarter of that time in
/// `free`/`malloc_consolidate` (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = &args.command {
        return tapflow_runtime::curve::run_command("tapflow-aggregator", command);
    }
    tapflow_runtime::init_logging(args.options.log_json);
    if args.options.check_config {
        return tapflow_runtime::config::check_config("tapflow-aggregator", Config::check(args));
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => return tapflow_runtime::config::config_failed("tapflow-aggregator", &e),
    };
    let shutdown = match tapflow_runtime::shutdown_flag() {
        Ok(flag) => flag,
        Err(e) => {
            eprintln!("tapflow-aggregator: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let reopen = match tapflow_runtime::reopen_flag() {
        Ok(flag) => flag,
        Err(e) => {
            eprintln!("tapflow-aggregator: cannot install the SIGHUP handler: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&config, &shutdown, &reopen) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
