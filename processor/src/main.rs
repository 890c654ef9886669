//! `tapflow-processor`: parse flags, set up logging and signals, run.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use tapflow_processor::{run, Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapflow-processor: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for a graceful stop (flush, end-of-stream); a second one,
        // while that is still waiting on an unreachable peer, exits at once with 130.
        let second = signal_hook::flag::register_conditional_shutdown(sig, 130, shutdown.clone());
        if let Err(e) = second.and_then(|_| signal_hook::flag::register(sig, shutdown.clone())) {
            eprintln!("tapflow-processor: cannot install signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    match run(&config, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
