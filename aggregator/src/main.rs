//! `tapflow-aggregator`: parse flags, set up logging and signals, run.

use std::process::ExitCode;

use clap::Parser;
use tapflow_aggregator::{run, Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    tapflow_runtime::init_logging(args.log_json);
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
