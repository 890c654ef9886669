//! `tapflow-processor`: parse flags, set up logging and signals, run.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tapflow_processor::{run, Args, Config};

/// mimalloc, not glibc's malloc: every connection record is built from a few small strings
/// and freed once encoded, and glibc's `malloc`/`free`/`unlink_chunk`/`malloc_consolidate`
/// were 13% of a processor's samples on a flood-heavy capture (bench/RESULTS.md, issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = &args.command {
        return tapflow_runtime::curve::run_command("tapflow-processor", command);
    }
    tapflow_runtime::init_logging(args.options.log_json);
    if args.options.check_config {
        return tapflow_runtime::config::check_config("tapflow-processor", Config::check(args));
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => return tapflow_runtime::config::config_failed("tapflow-processor", &e),
    };
    let shutdown = match tapflow_runtime::shutdown_flag() {
        Ok(flag) => flag,
        Err(e) => {
            eprintln!("tapflow-processor: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&config, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
