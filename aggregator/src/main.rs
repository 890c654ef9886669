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
    tapflow_runtime::init_logging(args.log_json);
    if args.check_config {
        return check_config(args);
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapflow-aggregator: {e}");
            return ExitCode::from(2);
        }
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

/// `--check-config`: the resolved configuration on stdout and 0, or the error and 2; nothing
/// is opened.
fn check_config(args: Args) -> ExitCode {
    match Config::check(args) {
        Ok(text) => {
            print!("{text}");
            eprintln!("tapflow-aggregator: configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tapflow-aggregator: {e}");
            ExitCode::from(2)
        }
    }
}
