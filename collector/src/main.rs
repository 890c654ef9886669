//! `tapflow-collector`: parse flags, set up logging and signals, run, map the outcome to an exit
//! code (see `--help`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use tapflow_collector::{run, Args, Config, RunOutcome};
use tracing::{error, info};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_json);
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapflow-collector: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for a graceful stop (flush, end-of-stream); a second one,
        // while that is still waiting on an unreachable peer, exits at once with 130.
        let second = signal_hook::flag::register_conditional_shutdown(sig, 130, shutdown.clone());
        if let Err(e) = second.and_then(|_| signal_hook::flag::register(sig, shutdown.clone())) {
            eprintln!("tapflow-collector: cannot install signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    match run(&config, shutdown) {
        Ok((outcome, counters)) => {
            let r = counters.reconcile();
            info!(
                packets_read = counters.packets_read,
                summarised = counters.packets_summarised,
                fragments_merged = counters.fragments_merged,
                summaries = counters.summaries,
                sent = ?counters.summaries_sent,
                drops = ?counters.drops,
                pcap_received = counters.capture.received,
                kernel_dropped = counters.capture.kernel_dropped,
                if_dropped = counters.capture.if_dropped,
                reconciled = r.holds(),
                "collector finished"
            );
            match outcome {
                RunOutcome::Done { .. } => ExitCode::SUCCESS,
                RunOutcome::OpenFailed(e) => {
                    error!("{e}");
                    ExitCode::from(3)
                }
                RunOutcome::Damaged(e) => {
                    error!("{e}");
                    ExitCode::from(4)
                }
                RunOutcome::Failed(e) => {
                    error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
